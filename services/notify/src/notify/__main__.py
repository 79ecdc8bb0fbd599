"""``python -m notify [serve|migrate|seed]``: the notify service's entry point.

``seed`` only applies migrations: subscriptions are created by agencies through the API.
"""

from __future__ import annotations

import sys

from notify.api import MIGRATIONS, build_app
from notify.settings import NotifySettings
from paht_common.cli import service_main


async def seed(settings: NotifySettings) -> None:
    """Nothing to seed: notify has no reference data."""


if __name__ == "__main__":
    settings = NotifySettings()
    sys.exit(
        service_main(
            service="notify",
            settings=settings,
            build_app=lambda: build_app(settings),
            migrations=MIGRATIONS,
            seed=seed,
        )
    )
