-- Subscriptions: where an agency wants to hear about its reports. Only the webhook channel
-- exists today; Web Push and email add their own columns and CHECKs in later migrations.
CREATE TABLE subscriptions (
    id uuid PRIMARY KEY,
    agency_id text NOT NULL CHECK (agency_id <> ''),
    channel text NOT NULL CHECK (channel IN ('webhook')),
    url text,
    -- The signing secret must stay readable: HMAC needs the key itself. Never returned by the API.
    secret text,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    deactivated_at timestamptz,
    deactivated_reason text,
    CHECK (channel <> 'webhook' OR (url IS NOT NULL AND secret LIKE 'whsec\_%')),
    CHECK (active = (deactivated_at IS NULL))
);
CREATE INDEX subscriptions_agency ON subscriptions (agency_id, created_at);
CREATE INDEX subscriptions_agency_active ON subscriptions (agency_id) WHERE active;

-- One row per (event, subscription). The id is uuid5(event_id, subscription_id), sent as the
-- webhook-id: a redelivered event can never create a second delivery, and receivers use it
-- as their idempotency key. The body is frozen at creation: every attempt signs the same bytes.
CREATE TABLE deliveries (
    id uuid PRIMARY KEY,
    event_id uuid NOT NULL,
    subscription_id uuid NOT NULL REFERENCES subscriptions (id),
    agency_id text NOT NULL,
    channel text NOT NULL,
    event_type text NOT NULL,
    report_id uuid NOT NULL,
    body text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_status_code integer,
    last_error text,
    -- While pending: when the next attempt may start. A claimed row carries its lease expiry
    -- here, so a dispatcher that dies mid-send leaves the row to be retried after the lease.
    next_attempt_at timestamptz DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    UNIQUE (event_id, subscription_id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_pending_subscription ON deliveries (subscription_id)
    WHERE status = 'pending';
CREATE INDEX deliveries_report ON deliveries (report_id, created_at);

-- Wakes the dispatcher as soon as a transaction creating deliveries commits.
CREATE FUNCTION deliveries_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('notify_deliveries', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER deliveries_notify AFTER INSERT ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_notify();
