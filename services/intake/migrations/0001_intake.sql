-- Upstream applications and their API keys (stored hashed).
CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    app_id text NOT NULL,
    key_hash bytea NOT NULL UNIQUE,
    scopes text[] NOT NULL,
    rate_per_minute int NOT NULL DEFAULT 600 CHECK (rate_per_minute > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_app ON api_keys (app_id);

-- Category catalogue (Open311 services); codes are stable across versions.
CREATE TABLE categories (
    code text PRIMARY KEY,
    group_code text NOT NULL,
    name_vi text NOT NULL CHECK (name_vi = normalize(name_vi, NFC)),
    name_en text NOT NULL,
    description text NOT NULL DEFAULT '',
    keywords text NOT NULL DEFAULT '',
    active boolean NOT NULL DEFAULT true,
    version int NOT NULL DEFAULT 1
);

CREATE SEQUENCE report_number_seq;

CREATE TABLE reports (
    id uuid PRIMARY KEY,
    number text NOT NULL UNIQUE,
    source_app text NOT NULL,
    client_report_id text,
    idempotency_key text,
    request_hash bytea NOT NULL,
    category text NOT NULL REFERENCES categories (code),
    description text NOT NULL CHECK (description = normalize(description, NFC)),
    search_text text NOT NULL,
    commune_code text,
    lat double precision CHECK (lat BETWEEN -90 AND 90),
    lon double precision CHECK (lon BETWEEN -180 AND 180),
    address text,
    channel text NOT NULL,
    urgency text NOT NULL CHECK (urgency IN ('urgent', 'normal', 'complex')),
    media_urls text[] NOT NULL DEFAULT '{}',
    state text NOT NULL,
    agency_id text,
    agency_name text,
    requires_leader_approval boolean NOT NULL DEFAULT false,
    reopen_count int NOT NULL DEFAULT 0,
    extension_count int NOT NULL DEFAULT 0,
    waiting_for_reporter boolean NOT NULL DEFAULT false,
    public boolean NOT NULL DEFAULT true,
    flags text[] NOT NULL DEFAULT '{}',
    possible_duplicates uuid[] NOT NULL DEFAULT '{}',
    duplicate_of uuid,
    rating int CHECK (rating BETWEEN 1 AND 5),
    response_text text,
    screening_due_at timestamptz,
    acknowledgement_due_at timestamptz,
    resolution_due_at timestamptz,
    overdue boolean NOT NULL DEFAULT false,
    sla_version bigint NOT NULL DEFAULT 0,
    submitted_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    closed_at timestamptz,
    CHECK ((lat IS NULL) = (lon IS NULL))
);
CREATE UNIQUE INDEX reports_client_id ON reports (source_app, client_report_id)
    WHERE client_report_id IS NOT NULL;
CREATE UNIQUE INDEX reports_idempotency ON reports (source_app, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX reports_submitted ON reports (submitted_at DESC, id);
CREATE INDEX reports_updated ON reports (updated_at, id);
CREATE INDEX reports_agency ON reports (agency_id, submitted_at DESC);
CREATE INDEX reports_nearby ON reports (category, submitted_at) WHERE lat IS NOT NULL;

-- Reporter identity, kept apart from the report: only the coordinator reads it.
CREATE TABLE reporters (
    report_id uuid PRIMARY KEY REFERENCES reports (id),
    name text,
    phone text,
    email text,
    anonymous boolean NOT NULL DEFAULT false
);

-- Append-only audit timeline of every transition.
CREATE TABLE report_timeline (
    id bigserial PRIMARY KEY,
    report_id uuid NOT NULL REFERENCES reports (id),
    event_id uuid NOT NULL UNIQUE,
    at timestamptz NOT NULL,
    actor_role text NOT NULL,
    actor_subject text NOT NULL,
    actor_agency_id text,
    action text NOT NULL,
    from_state text NOT NULL,
    to_state text NOT NULL,
    reason text,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX report_timeline_report ON report_timeline (report_id, id);

CREATE FUNCTION report_timeline_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'report_timeline is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER report_timeline_no_update BEFORE UPDATE OR DELETE ON report_timeline
    FOR EACH ROW EXECUTE FUNCTION report_timeline_append_only();
