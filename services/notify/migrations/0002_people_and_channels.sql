-- Staff known to notify, as their tokens name them: every authenticated call refreshes the
-- row from the token's claims (sub, role, agency_id, name, email). The identity provider stays
-- the one source of truth; this is its read-only projection for choosing recipients.
CREATE TABLE staff (
    user_id text PRIMARY KEY CHECK (user_id <> ''),
    role text NOT NULL,
    agency_id text,
    display_name text,
    email text,
    quiet_hours boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX staff_agency_role ON staff (agency_id, role);
CREATE INDEX staff_role ON staff (role);

-- Per user, event kind and channel: whether to send (no row: send).
CREATE TABLE preferences (
    user_id text NOT NULL REFERENCES staff (user_id),
    event_kind text NOT NULL,
    channel text NOT NULL CHECK (channel IN ('web_push', 'email')),
    enabled boolean NOT NULL,
    PRIMARY KEY (user_id, event_kind, channel)
);

-- Subscriptions now belong to an agency (its webhooks), an upstream app (its webhook for the
-- citizens' status updates) or a staff user (their browsers' Web Push, their email).
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_channel_check;
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_check;
ALTER TABLE subscriptions ALTER COLUMN agency_id DROP NOT NULL;
ALTER TABLE subscriptions
    ADD COLUMN owner_kind text NOT NULL DEFAULT 'agency'
        CHECK (owner_kind IN ('agency', 'app', 'user')),
    ADD COLUMN user_id text,
    ADD COLUMN app_id text,
    ADD COLUMN p256dh text,
    ADD COLUMN auth_secret text,
    ADD COLUMN email text,
    ADD COLUMN created_by text,
    ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0,
    ADD COLUMN circuit_open_until timestamptz,
    ADD CONSTRAINT subscriptions_channel CHECK (channel IN ('webhook', 'web_push', 'email')),
    ADD CONSTRAINT subscriptions_webhook
        CHECK (channel <> 'webhook' OR (url IS NOT NULL AND secret LIKE 'whsec\_%')),
    ADD CONSTRAINT subscriptions_web_push
        CHECK (channel <> 'web_push' OR (url IS NOT NULL AND p256dh IS NOT NULL
                                         AND auth_secret IS NOT NULL)),
    ADD CONSTRAINT subscriptions_email CHECK (channel <> 'email' OR email IS NOT NULL),
    ADD CONSTRAINT subscriptions_owner CHECK (
        (owner_kind = 'agency' AND agency_id IS NOT NULL AND user_id IS NULL AND app_id IS NULL
            AND channel = 'webhook')
        OR (owner_kind = 'app' AND app_id IS NOT NULL AND user_id IS NULL AND agency_id IS NULL
            AND channel = 'webhook')
        OR (owner_kind = 'user' AND user_id IS NOT NULL AND app_id IS NULL
            AND channel IN ('web_push', 'email')));
-- The same browser subscribing again, or a second email address, replaces nothing silently:
-- one active push subscription per endpoint and one active email subscription per user.
CREATE UNIQUE INDEX subscriptions_push_endpoint ON subscriptions (url)
    WHERE active AND channel = 'web_push';
CREATE UNIQUE INDEX subscriptions_user_email ON subscriptions (user_id)
    WHERE active AND channel = 'email';
CREATE INDEX subscriptions_user_active ON subscriptions (user_id) WHERE active;
CREATE INDEX subscriptions_app_active ON subscriptions (app_id) WHERE active;

-- Deliveries to people carry who they are for and how a push service should treat them.
ALTER TABLE deliveries
    ADD COLUMN recipient text,
    ADD COLUMN urgency text NOT NULL DEFAULT 'normal'
        CHECK (urgency IN ('very-low', 'low', 'normal', 'high')),
    ADD COLUMN topic text,
    ADD COLUMN ttl_seconds integer NOT NULL DEFAULT 86400 CHECK (ttl_seconds >= 0),
    ADD COLUMN held_until timestamptz;
CREATE INDEX deliveries_recipient ON deliveries (recipient, created_at) WHERE recipient IS NOT NULL;

-- What notify knows of a report, from the report, routing and SLA events: enough to word an
-- alert and to find the upstream app that submitted it.
CREATE TABLE reports (
    report_id uuid PRIMARY KEY,
    number text,
    category text,
    commune_code text,
    urgency text,
    source_app text,
    agency_id text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Alerts for province-wide roles (escalations, returned reports) belong to no agency.
ALTER TABLE deliveries ALTER COLUMN agency_id DROP NOT NULL;
