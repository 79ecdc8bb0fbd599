"""Reference data: the Bắc Ninh category catalogue, the development app's API key and the
agencies whose responses need leader approval (``INTAKE_LEADER_APPROVAL_AGENCIES``)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from intake import repository
from intake.auth import hash_key
from intake.settings import IntakeSettings
from paht_common.db import Conn
from paht_common.runtime import connect_with_retry

CATEGORIES_FILE = Path(__file__).resolve().parents[2] / "seeds" / "categories_bn.json"
DEV_APP = "demo-app"
DEV_SCOPES = ("reports:write", "reports:read", "reports:feedback")


def _description(group_name: str, name: str) -> str:
    """'Hạ tầng – Chiếu sáng công cộng'; a top-level category is just its name."""
    return name if group_name == name else f"{group_name} – {name}"


async def seed_leader_approval(conn: Conn, settings: IntakeSettings) -> None:
    """Flag ``settings.leader_approval_agencies`` in the directory (an unknown agency is added,
    named by its id until routing names it); call inside a transaction. Idempotent."""
    if settings.leader_approval_agencies:
        await repository.require_leader_approval(
            conn, agency_ids=sorted(set(settings.leader_approval_agencies))
        )


async def seed(settings: IntakeSettings) -> None:
    """Upsert the catalogue; register the dev key for ``demo-app`` unless disabled; turn on
    leader approval for ``settings.leader_approval_agencies``."""
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
                dev_key_id = uuid.uuid5(uuid.NAMESPACE_URL, "paht:dev-app")
                await repository.insert_key(
                    conn,
                    key_id=dev_key_id,
                    app_id=DEV_APP,
                    key_hash=hash_key(settings.dev_api_key),
                    scopes=DEV_SCOPES,
                    rate_per_minute=100_000,
                )
                # a dev key seeded before a scope existed gains it
                await repository.add_key_scopes(conn, key_id=dev_key_id, scopes=DEV_SCOPES)
            await seed_leader_approval(conn, settings)
    finally:
        await pool.close()
