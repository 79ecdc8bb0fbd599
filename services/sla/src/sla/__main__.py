"""``python -m sla [serve|migrate|seed]``: the SLA service's entry point."""

from __future__ import annotations

import sys

from paht_common.cli import service_main
from sla.api import MIGRATIONS, build_app
from sla.settings import SlaSettings

if __name__ == "__main__":
    settings = SlaSettings()
    sys.exit(
        service_main(
            service="sla",
            settings=settings,
            build_app=lambda: build_app(settings),
            migrations=MIGRATIONS,
        )
    )
