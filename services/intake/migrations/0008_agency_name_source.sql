-- Who set an agency's name: routing (learned from report.routed, and the id placeholder an
-- agency gets from INTAKE_LEADER_APPROVAL_AGENCIES) or an admin (PUT /v1/admin/agencies/{id}
-- with a name). Routing never replaces a name an admin set. Names stored before this
-- migration cannot be told apart and count as routing's.
ALTER TABLE agencies
    ADD COLUMN name_source text NOT NULL DEFAULT 'routing'
        CHECK (name_source IN ('routing', 'admin'));
