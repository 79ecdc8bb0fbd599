"""Reference data: the Bắc Ninh category catalogue and the development app's API key."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from intake import repository
from intake.auth import hash_key
from intake.settings import IntakeSettings
from paht_common.runtime import connect_with_retry

CATEGORIES_FILE = Path(__file__).resolve().parents[2] / "seeds" / "categories_bn.json"
DEV_APP = "demo-app"
DEV_SCOPES = ("reports:write", "reports:read")


def _description(group_name: str, name: str) -> str:
    """'Hạ tầng – Chiếu sáng công cộng'; a top-level category is just its name."""
    return name if group_name == name else f"{group_name} – {name}"


async def seed(settings: IntakeSettings) -> None:
    """Upsert the catalogue; register the dev key for ``demo-app`` unless disabled."""
    data = json.loads(CATEGORIES_FILE.read_text(encoding="utf-8"))
    pool = await connect_with_retry(settings)
    try:
        async with pool.acquire() as conn, conn.transaction():
            for c in data["categories"]:
                await repository.upsert_category(
                    conn,
                    code=c["code"],
                    group_code=c["group"],
                    name_vi=c["name_vi"],
                    name_en=c["name_en"],
                    description=_description(data["groups"][c["group"]], c["name_vi"]),
                    keywords=c["keywords"],
                )
            if settings.dev_api_key and settings.env != "production":
                await repository.insert_key(
                    conn,
                    key_id=uuid.uuid5(uuid.NAMESPACE_URL, "paht:dev-app"),
                    app_id=DEV_APP,
                    key_hash=hash_key(settings.dev_api_key),
                    scopes=DEV_SCOPES,
                    rate_per_minute=100_000,
                )
    finally:
        await pool.close()
