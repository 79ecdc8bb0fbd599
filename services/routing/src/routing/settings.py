"""Settings of the routing service (env prefix ROUTING_)."""

from __future__ import annotations

from paht_common.settings import BaseServiceSettings, env_setting


class RoutingSettings(BaseServiceSettings):
    """Routing worker and API settings."""

    model_config = env_setting("ROUTING_")

    http_port: int = 8081
    database_url: str = "postgresql://postgres@127.0.0.1:5433/paht_routing"
    faust_app_id: str = "paht-routing"
