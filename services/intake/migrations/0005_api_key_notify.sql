-- Every change to the API keys is announced, so each intake process drops its key cache at
-- once (a revoked key stops working everywhere without waiting for the cache to expire).
CREATE OR REPLACE FUNCTION api_keys_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('api_keys', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_keys_notify AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION api_keys_notify();
