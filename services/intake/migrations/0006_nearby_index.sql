-- Duplicate hints look for reports of one category inside a box of about 100 m: an index on
-- (category, lat) reads a band a hundred metres high instead of every report of the category
-- in the window.
DROP INDEX IF EXISTS reports_nearby;
CREATE INDEX reports_nearby ON reports (category, lat) WHERE lat IS NOT NULL;
