CREATE TABLE agencies (
    id text PRIMARY KEY,
    name text NOT NULL CHECK (name = normalize(name, NFC)),
    kind text NOT NULL CHECK (kind IN ('province', 'department', 'commune', 'utility', 'police', 'coordinator')),
    commune_code text,
    active boolean NOT NULL DEFAULT true
);

-- Ordered rules: the lowest priority that matches wins; NULL matches anything.
-- category matches the report's category or any sub-category of it (INFRA matches INFRA.ROAD).
CREATE TABLE routing_rules (
    id text PRIMARY KEY,
    priority integer NOT NULL,
    category text,
    commune_code text,
    agency_id text NOT NULL REFERENCES agencies (id),
    active boolean NOT NULL DEFAULT true,
    note text NOT NULL DEFAULT ''
);
CREATE INDEX routing_rules_commune ON routing_rules (commune_code, priority) WHERE active;

CREATE TABLE assignments (
    id bigserial PRIMARY KEY,
    report_id uuid NOT NULL,
    event_id uuid NOT NULL UNIQUE,
    agency_id text NOT NULL REFERENCES agencies (id),
    rule_id text,
    category text NOT NULL,
    commune_code text,
    source text NOT NULL CHECK (source IN ('auto', 'manual')),
    routed_at timestamptz NOT NULL,
    is_current boolean NOT NULL DEFAULT true
);
CREATE UNIQUE INDEX assignments_one_current ON assignments (report_id) WHERE is_current;
CREATE INDEX assignments_report ON assignments (report_id, routed_at);
