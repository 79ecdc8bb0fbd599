-- One database per service on the shared PostgreSQL server (deploy/compose.yaml).
-- The postgres image runs this once, when its data volume is empty. Each service
-- creates its own tables with `python -m <service> migrate`.
CREATE DATABASE paht_intake;
CREATE DATABASE paht_routing;
CREATE DATABASE paht_sla;
CREATE DATABASE paht_notify;
