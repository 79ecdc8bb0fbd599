-- Bumped by every change to the policies (a statement trigger, whatever writes them), so an
-- instance keeps its policies in memory and reloads them only when the revision it reads
-- with a report's facts has moved: an edit is seen by the very next event, in every instance.
CREATE TABLE policy_revision (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    revision bigint NOT NULL DEFAULT 0
);
INSERT INTO policy_revision (revision) VALUES (0);

CREATE FUNCTION bump_policy_revision() RETURNS trigger AS $$
BEGIN
    UPDATE policy_revision SET revision = revision + 1;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER policies_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON policies
    FOR EACH STATEMENT EXECUTE FUNCTION bump_policy_revision();
