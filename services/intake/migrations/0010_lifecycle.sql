-- The rest of the lifecycle (issue 19): co-handling agencies stored on the report, when it
-- was published (the reopen window runs from then) and when its rating window ends.
--
-- closes_at is the durable timer of the rating window: set when the report is published,
-- kept by a positive rating, cleared by a low one and by every other move. The intake
-- scanner claims due rows with FOR UPDATE SKIP LOCKED and closes each in the transaction
-- that clears closes_at and writes the outbox row, so it fires once across restarts and
-- instances.
ALTER TABLE reports
    ADD COLUMN co_agency_ids text[] NOT NULL DEFAULT '{}',
    ADD COLUMN published_at timestamptz,
    ADD COLUMN closes_at timestamptz;

CREATE INDEX reports_closes_at ON reports (closes_at) WHERE closes_at IS NOT NULL;
CREATE INDEX reports_co_agencies ON reports USING gin (co_agency_ids)
    WHERE co_agency_ids <> '{}';

-- Reports already published: publication time from the timeline, the default 7-day window.
UPDATE reports r SET published_at = p.at
FROM (
    SELECT report_id, max(at) AS at FROM report_timeline WHERE action = 'publish'
    GROUP BY report_id
) p
WHERE p.report_id = r.id AND r.state IN ('published', 'rated', 'closed');
UPDATE reports SET closes_at = coalesce(published_at, updated_at) + interval '7 days'
WHERE state = 'published' OR (state = 'rated' AND rating >= 3);
