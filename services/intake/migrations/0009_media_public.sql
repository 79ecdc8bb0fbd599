-- Whether the coordinator released a report's file to the public (PUT
-- /v1/reports/{id}/media/{sha256}). Anyone may then read the file while that report is
-- published and public; staff read a file when they may see a report that carries it. The
-- flag is per report: the same bytes attached to another report stay as that report decides.
ALTER TABLE report_media ADD COLUMN public boolean NOT NULL DEFAULT false;

-- Every read of a file looks for the reports that carry it: (report_id, sha256), the key,
-- cannot serve a lookup by sha256 alone.
CREATE INDEX report_media_sha256 ON report_media (sha256);
