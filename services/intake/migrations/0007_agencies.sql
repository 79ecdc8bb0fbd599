-- Agency directory of the intake service: names learned from routing (report.routed) or set
-- by an admin, and whether the agency's responses need its leader's approval before they
-- count as resolved (domain.md §2-3, PENDING_APPROVAL). A report copies the flag into
-- reports.requires_leader_approval when it is assigned to the agency.
CREATE TABLE agencies (
    id text PRIMARY KEY,
    name text NOT NULL CHECK (name = normalize(name, NFC)),
    requires_leader_approval boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Names already known from earlier routing; a manual assignment stored the id as its name.
INSERT INTO agencies (id, name)
SELECT DISTINCT ON (agency_id) agency_id, normalize(agency_name, NFC)
FROM reports
WHERE agency_id IS NOT NULL AND agency_name IS NOT NULL AND agency_name <> agency_id
    AND btrim(agency_name) <> ''
ORDER BY agency_id, updated_at DESC;
