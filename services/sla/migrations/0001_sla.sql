-- Business calendar: editable overrides (days off / make-up working days) and office hours.
CREATE TABLE calendar_overrides (
    day date PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('day_off', 'working_day')),
    reason text NOT NULL CHECK (length(reason) > 0),
    document text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE calendar_seasons (
    name text PRIMARY KEY,
    start_month int NOT NULL CHECK (start_month BETWEEN 1 AND 12),
    start_day int NOT NULL CHECK (start_day BETWEEN 1 AND 31),
    end_month int NOT NULL CHECK (end_month BETWEEN 1 AND 12),
    end_day int NOT NULL CHECK (end_day BETWEEN 1 AND 31),
    periods jsonb NOT NULL,           -- [["08:00","12:00"],["13:00","17:00"]]
    weekdays int[] NOT NULL DEFAULT '{0,1,2,3,4}'
);
-- Bumped on every calendar edit; instances reload when it changes.
CREATE TABLE calendar_revision (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    revision int NOT NULL DEFAULT 0
);
INSERT INTO calendar_revision (revision) VALUES (0);

-- Overrides and seasons are seeded from sla.calendar (SEED_OVERRIDES, DEFAULT_SEASONS)
-- by the service on first start, while the revision is still 0.

CREATE TABLE policies (
    id text PRIMARY KEY,
    priority int NOT NULL,
    category text,
    urgency text CHECK (urgency IN ('urgent', 'normal', 'complex')),
    agency_id text,
    screening_amount numeric NOT NULL CHECK (screening_amount > 0),
    screening_unit text NOT NULL,
    acknowledgement_amount numeric NOT NULL CHECK (acknowledgement_amount > 0),
    acknowledgement_unit text NOT NULL,
    resolution_amount numeric NOT NULL CHECK (resolution_amount > 0),
    resolution_unit text NOT NULL,
    resolution_starts text NOT NULL DEFAULT 'acknowledged'
        CHECK (resolution_starts IN ('assigned', 'acknowledged')),
    on_reroute text NOT NULL DEFAULT 'restart' CHECK (on_reroute IN ('restart', 'continue')),
    version int NOT NULL DEFAULT 1,
    active boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO policies (id, priority, urgency, screening_amount, screening_unit,
                      acknowledgement_amount, acknowledgement_unit, resolution_amount,
                      resolution_unit) VALUES
    ('default-urgent', 100, 'urgent', 4, 'working_hours', 8, 'working_hours', 4, 'working_hours'),
    ('default-normal', 100, 'normal', 4, 'working_hours', 8, 'working_hours', 5, 'working_days'),
    ('default-complex', 100, 'complex', 4, 'working_hours', 8, 'working_hours', 10, 'working_days');

-- What the SLA knows of each report.
CREATE TABLE sla_reports (
    report_id uuid PRIMARY KEY,
    number text NOT NULL,
    category text NOT NULL,
    urgency text NOT NULL,
    agency_id text,
    policy_id text,
    calendar_version text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every lifecycle fact heard, the input of the clock computation.
CREATE TABLE sla_facts (
    event_id uuid PRIMARY KEY,
    report_id uuid NOT NULL,
    kind text NOT NULL,
    at timestamptz NOT NULL,
    seq bigint NOT NULL,
    agency_id text,
    extension_days numeric NOT NULL DEFAULT 0
);
CREATE INDEX sla_facts_report ON sla_facts (report_id, at, seq);

-- The computed clocks (a projection, rewritten on every fact).
CREATE TABLE clocks (
    report_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('screening', 'acknowledgement', 'resolution')),
    generation int NOT NULL,
    status text NOT NULL,
    amount numeric NOT NULL,
    unit text NOT NULL,
    agency_id text,
    started_at timestamptz,
    stopped_at timestamptz,
    due_at timestamptz,
    consumed_s double precision NOT NULL DEFAULT 0,
    breached boolean NOT NULL DEFAULT false,
    calendar_version text NOT NULL,
    PRIMARY KEY (report_id, kind)
);
CREATE INDEX clocks_overdue ON clocks (agency_id, due_at) WHERE status = 'running';

-- Threshold instants; the partial index keeps the scan proportional to what is due.
CREATE TABLE thresholds (
    report_id uuid NOT NULL,
    clock text NOT NULL,
    generation int NOT NULL,
    mark text NOT NULL,
    percent int NOT NULL,
    level text NOT NULL,
    fire_at timestamptz NOT NULL,
    due_at timestamptz NOT NULL,
    fired_at timestamptz,
    PRIMARY KEY (report_id, clock, generation, mark)
);
CREATE INDEX thresholds_due ON thresholds (fire_at) WHERE fired_at IS NULL;
