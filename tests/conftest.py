"""Test tiers: unit (no I/O), integration and e2e (real PostgreSQL + Kafka from the harness)."""

pytest_plugins = ["paht_devenv.pytest_plugin"]
