"""``python -m intake [serve|migrate|seed|create-api-key|revoke-api-key|gc-media|issue-token]``.

python -m intake create-api-key --app hue-s --scopes reports:write reports:read
python -m intake create-api-key --app hue-s --label "Huế-S 2026" --expires-in-days 365
python -m intake revoke-api-key KEY_ID
python -m intake gc-media --older-than-hours 24 [--dry-run]     # delete unrecorded files
python -m intake issue-token --role coordinator --sub alice          # development only
python -m intake issue-token --role officer --sub bob --agency ubnd-07627
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from intake import media, repository
from intake.admin import issue_key
from intake.api import MIGRATIONS, build_app
from intake.auth import dev_key_pair, issue_token
from intake.seed import seed
from intake.settings import IntakeSettings
from paht_common.cli import service_main
from paht_common.clock import utcnow
from paht_common.runtime import connect_with_retry, migrate


async def _create_key(
    settings: IntakeSettings,
    app: str,
    scopes: list[str],
    rate: int,
    *,
    label: str | None = None,
    expires_in_days: float | None = None,
) -> str:
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    await migrate(settings, MIGRATIONS)
    pool = await connect_with_retry(settings)
    try:
        async with pool.acquire() as conn:
            row, key = await issue_key(
                conn,
                app_id=app,
                scopes=scopes,
                rate_per_minute=rate,
                label=label,
                expires_at=expires_at,
            )
    finally:
        await pool.close()
    key_id = row["id"]
    return f"key_id={key_id}\napi_key={key}\n"


async def _revoke_key(settings: IntakeSettings, key_id: uuid.UUID) -> bool:
    pool = await connect_with_retry(settings)
    try:
        async with pool.acquire() as conn:
            return await repository.revoke_key(conn, key_id=key_id)
    finally:
        await pool.close()


async def collect_media_garbage(
    settings: IntakeSettings, *, older_than_hours: float, dry_run: bool
) -> list[Path]:
    """Delete stored files no media row records (older than the age); returns them."""
    pool = await connect_with_retry(settings)
    try:
        async with pool.acquire() as conn:
            referenced = await repository.stored_digests(conn)
    finally:
        await pool.close()
    found = media.orphans(
        settings.media_dir, referenced, older_than_seconds=older_than_hours * 3600
    )
    if not dry_run:
        for path in found:
            path.unlink(missing_ok=True)
    return found


def admin(settings: IntakeSettings, argv: list[str]) -> int:
    """The admin commands; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m intake")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-api-key")
    create.add_argument("--app", required=True)
    create.add_argument("--scopes", nargs="+", default=["reports:write", "reports:read"])
    create.add_argument("--rate", type=int, default=600)
    create.add_argument("--label")
    create.add_argument("--expires-in-days", type=float, help="default: never expires")
    revoke = sub.add_parser("revoke-api-key")
    revoke.add_argument("key_id", type=uuid.UUID)
    gc = sub.add_parser("gc-media", help="delete stored files that no report refers to")
    gc.add_argument("--older-than-hours", type=float, default=24.0)
    gc.add_argument("--dry-run", action="store_true")
    token = sub.add_parser("issue-token")
    token.add_argument(
        "--role", required=True, choices=["coordinator", "officer", "leader", "supervisor"]
    )
    token.add_argument("--sub", required=True)
    token.add_argument("--agency")
    token.add_argument("--ttl", type=int, default=8 * 3600)
    token.add_argument("--name", help="display name (notify greets and lists staff by it)")
    token.add_argument("--email", help="address notify emails this staff member at")
    args = parser.parse_args(argv)
    if args.command == "create-api-key":
        created = _create_key(
            settings,
            args.app,
            args.scopes,
            args.rate,
            label=args.label,
            expires_in_days=args.expires_in_days,
        )
        sys.stdout.write(asyncio.run(created))
        return 0
    if args.command == "revoke-api-key":
        return 0 if asyncio.run(_revoke_key(settings, args.key_id)) else 1
    if args.command == "gc-media":
        removed = asyncio.run(
            collect_media_garbage(
                settings, older_than_hours=args.older_than_hours, dry_run=args.dry_run
            )
        )
        verb = "would delete" if args.dry_run else "deleted"
        sys.stdout.write("".join(f"{verb} {p}\n" for p in removed))
        sys.stdout.write(f"{len(removed)} orphaned file(s)\n")
        return 0
    if settings.env == "production":
        sys.stderr.write("issue-token uses the development key and is disabled in production\n")
        return 2
    private, _ = dev_key_pair(settings.jwt_dev_key_dir)
    sys.stdout.write(
        issue_token(
            private,
            subject=args.sub,
            role=args.role,
            agency_id=args.agency,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=args.ttl,
            name=args.name,
            email=args.email,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    settings = IntakeSettings()
    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    if command in {"create-api-key", "revoke-api-key", "gc-media", "issue-token"}:
        sys.exit(admin(settings, sys.argv[1:]))
    sys.exit(
        service_main(
            service="intake",
            settings=settings,
            build_app=lambda: build_app(settings),
            migrations=MIGRATIONS,
            seed=seed,
        )
    )
