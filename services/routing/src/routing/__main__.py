"""``python -m routing [serve|migrate|seed]``: the routing service's entry point."""

from __future__ import annotations

import sys

from paht_common.cli import service_main
from routing.api import MIGRATIONS, build_app
from routing.seed import seed
from routing.settings import RoutingSettings

if __name__ == "__main__":
    settings = RoutingSettings()
    sys.exit(
        service_main(
            service="routing",
            settings=settings,
            build_app=lambda: build_app(settings),
            migrations=MIGRATIONS,
            seed=seed,
        )
    )
