-- Open311 GeoReport v2 batch intake: POST /open311/v2/requests answers a token, and
-- GET /open311/v2/tokens/{token} resolves it to the report's number. One token per report,
-- so an idempotent replay of the POST is answered with the token it got the first time.
CREATE TABLE open311_tokens (
    token text PRIMARY KEY CHECK (token ~ '^[A-Za-z0-9_-]{16,64}$'),
    report_id uuid NOT NULL UNIQUE REFERENCES reports (id),
    created_at timestamptz NOT NULL DEFAULT now()
);
