-- The relay purges published rows older than its retention. Without an index on
-- published_at each purge read the whole retained outbox: 150 ms at 300,000 rows (ten
-- minutes at 500 events/s), every 50 relay cycles, even with nothing to delete.
-- Plain CREATE INDEX (migrations run in a transaction): writers to the outbox wait while
-- it is built, a few seconds for a large outbox.
CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at)
    WHERE published_at IS NOT NULL;
