"""Cost of the outbox relay's purge against the outbox it keeps.

`uv run python bench/bench_outbox_purge.py [--rows 300000]` starts its own PostgreSQL, fills
an outbox with published rows (about 1 KB each, as report events are) inside the retention,
and times ``OutboxRelay.purge_published``: with nothing due, then with 20,000 rows due. It
prints one JSON document and writes it to ``bench/results/outbox_purge.json``;
``--without-index`` drops the ``outbox_published`` index first (and writes no file), to show
the purge as it was before migration 0002.

The relay purges every 50 cycles, so under load this runs every few seconds; before the
``outbox_published`` index it read the whole retained outbox each time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from paht_common.db import apply_migrations, create_pool
from paht_common.outbox import PURGE_PUBLISHED, OutboxRelay
from paht_devenv.postgres import PostgresServer
from paht_devenv.procs import free_port

RESULTS = Path(__file__).resolve().parent / "results" / "outbox_purge.json"
RETENTION_SECONDS = 3600.0
DUE = 20_000
REPEATS = 5

FILL = """
INSERT INTO outbox (event_id, topic, key, value, headers, created_at, published_at)
SELECT gen_random_uuid(), 'paht.report.events.v1', NULL,
       convert_to(repeat(md5(i::text), 30), 'UTF8'), '{}'::jsonb,
       now() - interval '30 minutes', now() - interval '30 minutes' + i * interval '1 ms'
FROM generate_series(1, $1) i
"""


async def timed_ms(call: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    result = await call()
    return (time.perf_counter() - began) * 1000, result


async def measure(dsn: str, rows: int, migrations: Path, *, index: bool) -> dict[str, Any]:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, migrations)
            if not index:  # the outbox as it was before migration 0002
                await conn.execute("DROP INDEX outbox_published")
            await conn.execute(FILL, rows)
            await conn.execute("VACUUM ANALYZE outbox")
            size = await conn.fetchval("SELECT pg_total_relation_size('outbox')")
            plan = [
                r[0]
                for r in await conn.fetch(
                    "EXPLAIN (COSTS OFF) "
                    + PURGE_PUBLISHED.replace("$1", str(RETENTION_SECONDS)).replace("$2", "5000")
                )
            ]
        relay = OutboxRelay(pool, producer=None, service="bench")  # type: ignore[arg-type]
        idle = []
        for _ in range(REPEATS):
            ms, deleted = await timed_ms(relay.purge_published)
            assert deleted == 0
            idle.append(ms)
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE outbox SET published_at = published_at - interval '40 minutes'"
                " WHERE id <= $1",
                DUE,
            )
            await conn.execute("ANALYZE outbox")
        due_ms, deleted = await timed_ms(relay.purge_published)
    finally:
        await pool.close()
    return {
        "outbox_published_index": index,
        "retained_rows": rows,
        "outbox_bytes": size,
        "plan": plan,
        "nothing_due_ms": {"median": round(statistics.median(idle), 2), "runs": len(idle)},
        "rows_due": DUE,
        "rows_deleted": deleted,
        "due_ms": round(due_ms, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument(
        "--without-index",
        action="store_true",
        help="drop the outbox_published index first, to see the purge as it was before it",
    )
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="paht-bench-purge-"))
    server = PostgresServer(
        data_dir=state / "pg", port=free_port(), log_file=state / "postgres.log"
    )
    try:
        with contextlib.redirect_stdout(sys.stderr):
            server.start()
        common_only = state / "no-service-migrations"
        common_only.mkdir()
        result = asyncio.run(
            measure(server.dsn, args.rows, common_only, index=not args.without_index)
        )
    finally:
        with contextlib.redirect_stdout(sys.stderr):
            server.stop(mode="immediate")
        shutil.rmtree(state, ignore_errors=True)
    report = {
        "benchmark": "outbox purge (OutboxRelay.purge_published) vs retained outbox size",
        "command": " ".join(["uv run python bench/bench_outbox_purge.py", *sys.argv[1:]]),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "results": result,
    }
    text = json.dumps(report, indent=2)
    if not args.without_index:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
