"""Real local peers the services talk to in tests and benches (SMTP server, Web Push service)."""
