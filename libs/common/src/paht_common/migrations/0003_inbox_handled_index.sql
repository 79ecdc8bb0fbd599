-- Inbox rows are purged once older than <SVC>_INBOX_RETENTION_DAYS; the purge reads them
-- oldest first through this index. Writers to the inbox wait while it is built.
CREATE INDEX IF NOT EXISTS inbox_handled ON inbox (handled_at);
