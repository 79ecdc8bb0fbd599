"""The notify service: SLA events to signed webhooks (Web Push and email to come)."""
