"""Intake use cases: submit a report, act on it, keep the view current from other services.

Every state change and its event commit in one transaction (outbox); nothing here talks
to Kafka.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from intake import media, repository
from intake.domain import (
    PUBLISHED_STATES,
    TERMINAL_STATES,
    Action,
    Actor,
    AssignAction,
    CloseAction,
    DomainError,
    Forbidden,
    MergeAction,
    ReportSnapshot,
    Role,
    RuleViolation,
    State,
    Transition,
    closes_after_rating,
    content_warnings,
    decide,
    fold_diacritics,
    haversine_m,
    human_number,
    sees_every_agency,
)
from intake.media import StoredMedia
from intake.metrics import SUBMISSIONS, SUBMIT_BATCH, TRANSITIONS
from intake.schemas import ReportIn
from intake.settings import IntakeSettings
from paht_common.clock import LOCAL_TZ, Clock
from paht_common.db import Conn
from paht_common.events import (
    AddedMedia,
    Envelope,
    Payload,
    ReportMediaAdded,
    ReportRouted,
    ReportSubmitted,
    ReportTransitioned,
    SlaClocksChanged,
    SlaThresholdReached,
    new_envelope,
)
from paht_common.outbox import add_to_outbox, outbox_record
from paht_common.topics import REPORT_EVENTS

logger = logging.getLogger(__name__)

SOURCE = "/intake"
MAX_DUPLICATE_HINTS = 50
"""Most possible duplicates named on one report (the table lookup has the same limit)."""


class InputError(Exception):
    """Bad input discovered after schema validation; answered 4xx naming the field."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message


class NotFound(LookupError):
    """What the request names does not exist, or is not the caller's to see."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request body."""

    def __init__(self, report_id: uuid.UUID) -> None:
        super().__init__(str(report_id))
        self.report_id = report_id


@dataclass(frozen=True)
class SubmitResult:
    """The stored report and whether this call created it."""

    report: dict[str, Any]
    created: bool


@dataclass
class IntakeContext:
    """What the handlers need besides the connection; ``bind`` adds the database parts."""

    settings: IntakeSettings
    clock: Clock
    communes: frozenset[str]
    pool: asyncpg.Pool | None = None
    catalogue: CategoryCatalogue | None = None
    writer: SubmissionWriter | None = None

    def bind(self, pool: asyncpg.Pool) -> SubmissionWriter:
        """Attach the pool, the category cache and the group-commit writer (run its loops)."""
        self.pool = pool
        self.catalogue = CategoryCatalogue(pool, ttl=self.settings.category_cache_seconds)
        self.writer = SubmissionWriter(pool, ctx=self)
        return self.writer

    def submissions(self) -> tuple[CategoryCatalogue, SubmissionWriter]:
        """The category cache and the writer; RuntimeError before ``bind``."""
        if self.catalogue is None or self.writer is None:
            raise RuntimeError("the intake context is not bound to a database yet")
        return self.catalogue, self.writer

    def database(self) -> asyncpg.Pool:
        """The bound pool; RuntimeError before ``bind``."""
        if self.pool is None:
            raise RuntimeError("the intake context is not bound to a database yet")
        return self.pool


def request_hash(body: ReportIn, media_digests: Sequence[str] = ()) -> bytes:
    """Fingerprint of a submission, to tell an idempotent replay from a conflicting reuse."""
    digest = hashlib.sha256(body.model_dump_json().encode())  # fields in declaration order
    for sha in media_digests:
        digest.update(b"\x00" + sha.encode())
    return digest.digest()


def check_location(body: ReportIn, ctx: IntakeContext) -> None:
    """InputError 422 when the location is outside the province or the commune unknown."""
    loc = body.location
    if loc.lat is not None and loc.lon is not None:
        lat_min, lon_min, lat_max, lon_max = ctx.settings.bbox
        if not (lat_min <= loc.lat <= lat_max and lon_min <= loc.lon <= lon_max):
            raise InputError(422, "location", f"the point is outside {ctx.settings.province_name}")
    if loc.commune_code is not None and loc.commune_code not in ctx.communes:
        raise InputError(
            422, "location.commune_code", f"not a commune or ward of {ctx.settings.province_name}"
        )


class CategoryCatalogue:
    """Active category codes, cached; an unknown code reloads the catalogue (at most 1/s)."""

    def __init__(self, pool: asyncpg.Pool, *, ttl: float) -> None:
        self._pool = pool
        self._ttl = ttl
        self._codes: frozenset[str] = frozenset()
        self._loaded_at = -math.inf

    async def exists(self, code: str) -> bool:
        """Whether ``code`` is an active category."""
        age = time.monotonic() - self._loaded_at
        if age > self._ttl or (code not in self._codes and age > 1.0):
            async with self._pool.acquire() as conn:
                self._codes = frozenset(c["code"] for c in await repository.categories(conn))
            self._loaded_at = time.monotonic()
        return code in self._codes


class NumberBlocks:
    """Report numbers reserved from the sequence a block at a time (one query per block).

    Numbers stay unique and increase within a process; a restart skips the rest of its block
    and several processes interleave, so numbers have gaps and only roughly follow time.
    """

    def __init__(self, block: int) -> None:
        self._block = block
        self._free: list[int] = []

    async def take(self, conn: Conn, count: int) -> list[int]:
        """``count`` fresh numbers, in increasing order."""
        if len(self._free) < count:
            self._free.extend(await repository.next_numbers(conn, max(count, self._block)))
        taken, self._free = self._free[:count], self._free[count:]
        return taken


@dataclass(frozen=True)
class Submission:
    """A validated report on its way to the database."""

    body: ReportIn
    app_id: str
    idempotency_key: str | None
    fingerprint: bytes
    flags: tuple[str, ...]
    media: tuple[StoredMedia, ...] = ()


async def validate_submission(
    body: ReportIn,
    *,
    app_id: str,
    idempotency_key: str | None,
    catalogue: CategoryCatalogue,
    ctx: IntakeContext,
    media_digests: Sequence[str] = (),
) -> Submission:
    """Checks that need reference data; InputError 422 naming the field.

    ``media_digests`` are the SHA-256 of the files sent with the report: they are part of
    the idempotency fingerprint. The stored files join the submission later (``media``).
    """
    if not await catalogue.exists(body.category):
        raise InputError(422, "category", f"unknown category {body.category!r}")
    check_location(body, ctx)
    return Submission(
        body=body,
        app_id=app_id,
        idempotency_key=idempotency_key,
        fingerprint=request_hash(body, media_digests),
        flags=tuple(content_warnings(body.description)),
    )


def _nearby_query(body: ReportIn, ctx: IntakeContext) -> repository.NearbyQuery | None:
    loc = body.location
    if loc.lat is None or loc.lon is None:
        return None
    radius = ctx.settings.duplicate_radius_m
    dlat = radius / 111_320.0
    dlon = radius / (111_320.0 * max(math.cos(math.radians(loc.lat)), 0.01))
    return repository.NearbyQuery(
        category=body.category,
        lat_min=loc.lat - dlat,
        lat_max=loc.lat + dlat,
        lon_min=loc.lon - dlon,
        lon_max=loc.lon + dlon,
    )


async def find_duplicates(
    conn: Conn,
    batch: Sequence[Submission],
    *,
    ids: Sequence[uuid.UUID],
    now: datetime,
    ctx: IntakeContext,
) -> list[list[uuid.UUID]]:
    """For each submission, open reports of the same category within the radius and window.

    Earlier submissions of the same batch count too (``ids`` are the batch's new report
    ids), since a burst of reports about one flood lands in one batch; one that turns out
    to be a retry of a stored report is left out (the stored one is found in the table).
    """
    bodies = [s.body for s in batch]
    queries = [_nearby_query(b, ctx) for b in bodies]
    asked = [(i, q) for i, q in enumerate(queries) if q is not None]
    result: list[list[uuid.UUID]] = [[] for _ in bodies]
    found = await repository.nearby(  # no query at all when nothing has a point
        conn,
        [q for _, q in asked],
        since=now - timedelta(days=ctx.settings.duplicate_window_days),
    )
    radius = ctx.settings.duplicate_radius_m
    max_dlat = radius / 111_000.0  # a degree of latitude is never shorter than 110.5 km
    points = [(i, bodies[i].location.lat or 0.0, bodies[i].location.lon or 0.0) for i, _ in asked]
    retries: dict[int, bool] = {}
    for (i, lat, lon), rows in zip(points, found, strict=True):
        result[i] = [r["id"] for r in rows if haversine_m(lat, lon, r["lat"], r["lon"]) <= radius]
        for j, other_lat, other_lon in points:
            if j >= i or len(result[i]) >= MAX_DUPLICATE_HINTS:
                break
            if abs(lat - other_lat) > max_dlat or bodies[j].category != bodies[i].category:
                continue  # the cheap tests first: a big batch compares every earlier item
            if haversine_m(lat, lon, other_lat, other_lon) > radius:
                continue
            if j not in retries:  # rare: only for close pairs inside one batch
                retries[j] = any(_same_request(batch[k], batch[j]) for k in range(j)) or (
                    await _is_retry(conn, batch[j])
                )
            if not retries[j]:
                result[i].append(ids[j])
    return result


def _same_request(a: Submission, b: Submission) -> bool:
    """Whether ``b`` retries ``a`` (same app and idempotency key or client report id)."""
    if a.app_id != b.app_id:
        return False
    same_key = a.idempotency_key is not None and a.idempotency_key == b.idempotency_key
    client = a.body.client_report_id
    return same_key or (client is not None and client == b.body.client_report_id)


async def _is_retry(conn: Conn, s: Submission) -> bool:
    stored = await repository.find_replay(
        conn,
        source_app=s.app_id,
        client_report_id=s.body.client_report_id,
        idempotency_key=s.idempotency_key,
    )
    return stored is not None


NEEDS_SCREENING = "needs_screening"
"""Flag of a report held for the coordinator's triage: routing does not route it, so it
waits in SUBMITTED until the coordinator screens and assigns it (domain.md §3.3 #2, #5)."""


def needs_screening(body: ReportIn, *, flags: Sequence[str], settings: IntakeSettings) -> bool:
    """Whether a new report goes to the coordinator's triage instead of automatic routing:
    its channel is in ``INTAKE_SCREENING_CHANNELS``, its category (or a parent category,
    dot-separated) in ``INTAKE_SCREENING_CATEGORIES``, or one of its flags in
    ``INTAKE_SCREENING_FLAGS`` (e.g. ``possible_duplicate``, ``profanity``)."""
    if body.channel in settings.screening_channels:
        return True
    if any(
        body.category == c or body.category.startswith(c + ".")
        for c in settings.screening_categories
    ):
        return True
    return any(f in settings.screening_flags for f in flags)


def _new_report(
    s: Submission,
    *,
    report_id: uuid.UUID,
    number: str,
    duplicates: list[uuid.UUID],
    now: datetime,
    ctx: IntakeContext,
) -> repository.NewReport:
    body = s.body
    flags = [*s.flags, "possible_duplicate"] if duplicates else list(s.flags)
    if needs_screening(body, flags=flags, settings=ctx.settings):
        flags.append(NEEDS_SCREENING)
    envelope = new_envelope(
        ReportSubmitted(
            report_id=report_id,
            number=number,
            category=body.category,
            commune_code=body.location.commune_code,
            lat=body.location.lat,
            lon=body.location.lon,
            channel=body.channel,
            urgency=body.urgency,
            source_app=s.app_id,
            submitted_at=now,
            flags=flags,
            possible_duplicates=duplicates,
        ),
        source=SOURCE,
        province=ctx.settings.province_code,
        occurred_at=now,
    )
    key, value, headers = outbox_record(envelope)
    details: dict[str, Any] = {"channel": body.channel}
    if s.media:
        details["media"] = len(s.media)
    return repository.NewReport(
        values={
            "id": report_id,
            "number": number,
            "source_app": s.app_id,
            "client_report_id": body.client_report_id,
            "idempotency_key": s.idempotency_key,
            "request_hash": s.fingerprint,
            "category": body.category,
            "description": body.description,
            "search_text": fold_diacritics(body.description + " " + (body.location.address or "")),
            "commune_code": body.location.commune_code,
            "lat": body.location.lat,
            "lon": body.location.lon,
            "address": body.location.address,
            "channel": body.channel,
            "urgency": body.urgency,
            "media_urls": [str(u) for u in body.media_urls],
            "state": State.SUBMITTED.value,
            "flags": flags,
            "possible_duplicates": duplicates,
            "submitted_at": now,
            "reporter_name": body.reporter.name,
            "reporter_phone": body.reporter.phone,
            "reporter_email": body.reporter.email,
            "reporter_anonymous": body.reporter.anonymous,
            "event_id": envelope.event_id,
            "details": details,
            "event_key": key,
            "event_value": value,
            "event_headers": headers,
        },
        media=[(m.sha256, m.content_type, m.size, m.thumbnail_sha256) for m in s.media],
    )


async def write_submissions(
    conn: Conn, batch: Sequence[Submission], *, numbers: NumberBlocks, ctx: IntakeContext
) -> list[SubmitResult | Exception]:
    """Store a batch of reports with their events in one statement; replays get the original.

    Each item's outcome is a SubmitResult, or the exception its caller should see
    (IdempotencyConflict when a key was reused with another body).
    """
    now = ctx.clock.now()
    year = now.astimezone(LOCAL_TZ).year
    sequence = await numbers.take(conn, len(batch))
    ids = [uuid.uuid4() for _ in batch]
    duplicates = await find_duplicates(conn, batch, ids=ids, now=now, ctx=ctx)
    new = [
        _new_report(
            s,
            report_id=report_id,
            number=human_number(ctx.settings.number_prefix, year, seq),
            duplicates=dups,
            now=now,
            ctx=ctx,
        )
        for s, report_id, seq, dups in zip(batch, ids, sequence, duplicates, strict=True)
    ]
    inserted = await repository.insert_submissions(conn, new, topic=REPORT_EVENTS)
    outcomes: list[SubmitResult | Exception] = []
    for s, report in zip(batch, new, strict=True):
        if report.values["id"] in inserted:
            SUBMISSIONS.labels(s.body.channel, "created").inc()
            outcomes.append(SubmitResult(report=report.values, created=True))
            continue
        # the key was used before (or by another item of this batch): answer with that report
        replay = await repository.find_replay(
            conn,
            source_app=s.app_id,
            client_report_id=s.body.client_report_id,
            idempotency_key=s.idempotency_key,
        )
        if replay is None:  # a conflict on a unique column that is not an idempotency key
            outcomes.append(RuntimeError(f"report {report.values['number']} was not stored"))
            continue
        try:
            outcomes.append(_replayed(replay, s.fingerprint))
        except IdempotencyConflict as exc:
            outcomes.append(exc)
    return outcomes


_Waiting = tuple[Submission, "asyncio.Future[SubmitResult]"]

WRITER_SESSION = "SET plan_cache_mode = force_generic_plan"
"""The writer's two statements take arrays, for which PostgreSQL keeps planning a custom
plan per batch; the generic plan is the same index scans, and halved the duplicate lookup
(0.57 -> 0.29 ms for six reports). Pool release resets it."""


class SubmissionWriter:
    """Group commit: concurrent submissions are written together, one statement per batch.

    Requests queue their validated submission and wait; each of ``writers`` tasks takes
    everything queued (up to ``batch_max``) and writes it with ``write_submissions``. Under
    light load a batch is one report and nothing waits for a timer; under heavy load the
    cost of a round trip and a commit is shared by the batch. If a batch fails, its items
    are retried one by one, so a bad item fails alone.
    """

    def __init__(self, pool: asyncpg.Pool, *, ctx: IntakeContext) -> None:
        self._pool = pool
        self._ctx = ctx
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self._numbers = NumberBlocks(ctx.settings.number_block)

    async def submit(self, submission: Submission) -> SubmitResult:
        """Store a submission (or find its original); raises what its write raised."""
        future: asyncio.Future[SubmitResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((submission, future))
        return await future

    async def run(self) -> None:
        """One writer loop; run several concurrently.

        A writer holds one connection while there is work and gives it back when idle; if
        the database cannot be reached, the waiting requests get the error (answered 503).
        """
        while True:
            batch = [await self._queue.get()]
            try:
                async with self._pool.acquire() as conn:
                    await conn.execute(WRITER_SESSION)
                    while batch:
                        self._fill(batch)
                        await self._write(conn, batch)
                        if conn.is_closed():  # the pool replaces it; take a fresh one
                            break
                        batch = [] if self._queue.empty() else [self._queue.get_nowait()]
            except Exception as exc:
                self._settle(batch, [exc] * len(batch))

    def _fill(self, batch: list[_Waiting]) -> None:
        limit = self._ctx.settings.submit_batch_max
        while len(batch) < limit and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        SUBMIT_BATCH.observe(len(batch))

    async def _write(self, conn: Conn, batch: list[_Waiting]) -> None:
        try:
            outcomes = await write_submissions(
                conn, [s for s, _ in batch], numbers=self._numbers, ctx=self._ctx
            )
        except Exception as exc:
            if len(batch) > 1 and not conn.is_closed():
                for item in batch:
                    await self._write(conn, [item])
                return
            outcomes = [exc] * len(batch)
        self._settle(batch, outcomes)

    @staticmethod
    def _settle(batch: list[_Waiting], outcomes: Sequence[SubmitResult | Exception]) -> None:
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the caller went away; the report is stored all the same
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


async def submit_report(
    body: ReportIn,
    *,
    app_id: str,
    idempotency_key: str | None,
    ctx: IntakeContext,
    files: Mapping[str, bytes] | None = None,
    files_field: str = "files",
) -> SubmitResult:
    """Validate and store a report with its ReportSubmitted event (or find the original).

    ``files`` (by SHA-256, as ``media.read_uploads`` gives them) are stored only once the
    report is valid, and attached in the same statement that stores the report.
    """
    files = files or {}
    catalogue, writer = ctx.submissions()
    submission = await validate_submission(
        body,
        app_id=app_id,
        idempotency_key=idempotency_key,
        catalogue=catalogue,
        ctx=ctx,
        media_digests=list(files),
    )
    if files:
        stored = await media.store_all(
            files.values(), root=ctx.settings.media_dir, field=files_field
        )
        submission = replace(submission, media=tuple(stored))
    return await writer.submit(submission)


def _replayed(report: dict[str, Any], fingerprint: bytes) -> SubmitResult:
    if bytes(report["request_hash"]) != fingerprint:
        SUBMISSIONS.labels(report["channel"], "conflict").inc()
        raise IdempotencyConflict(report["id"])
    SUBMISSIONS.labels(report["channel"], "replayed").inc()
    return SubmitResult(report=report, created=False)


async def attach_media(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    app_id: str,
    files: Mapping[str, bytes],
    ctx: IntakeContext,
    field: str = "files",
) -> list[StoredMedia]:
    """Attach checked files to a report ``app_id`` submitted; call inside a transaction.

    ``files`` are by SHA-256, as ``media.read_uploads`` gives them. A file already attached
    is attached once (idempotent); the files new to the report get one ``add_media``
    timeline row and one ReportMediaAdded event, nothing when every file was attached
    before. Files are stored only once the checks pass. Raises LookupError when the report
    is unknown or another app's, and InputError 422 naming ``field`` when the report would
    carry more than ``INTAKE_MAX_MEDIA_FILES`` files. Returns every file of the request.
    """
    await _room_for(conn, report_id=report_id, app_id=app_id, files=files, ctx=ctx, field=field)
    # thumbnails take a while: store before locking, so staff actions on the report do not
    # wait for them (an attachment that then fails leaves files media GC removes)
    stored = await media.store_all(files.values(), root=ctx.settings.media_dir, field=field)
    report, attached = await _room_for(  # again under the lock: a concurrent upload counts
        conn, report_id=report_id, app_id=app_id, files=files, ctx=ctx, field=field, lock=True
    )
    for item in stored:
        await repository.attach_media(
            conn,
            report_id=report_id,
            sha256=item.sha256,
            content_type=item.content_type,
            size=item.size,
            thumbnail_sha256=item.thumbnail_sha256,
        )
    added = [item for item in stored if item.sha256 not in attached]
    if added:
        await _record_media_added(conn, report, added=added, app_id=app_id, ctx=ctx)
    return stored


async def _room_for(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    app_id: str,
    files: Mapping[str, bytes],
    ctx: IntakeContext,
    field: str,
    lock: bool = False,
) -> tuple[dict[str, Any], set[str]]:
    """The report and the digests attached to it, once the files fit on it.

    LookupError when the report is unknown or another app's; InputError 422 naming
    ``field`` when the files new to it would exceed ``INTAKE_MAX_MEDIA_FILES``.
    """
    report = await repository.get_report(conn, report_id=report_id, for_update=lock)
    if report is None or report["source_app"] != app_id:
        raise LookupError(str(report_id))
    limit = ctx.settings.max_media_files
    attached = await repository.media_shas_of(conn, report_id=report_id)
    new = [sha for sha in files if sha not in attached]
    if len(attached) + len(new) > limit:
        raise InputError(
            422, field, f"a report carries at most {limit} files ({len(attached)} already attached)"
        )
    return report, attached


async def _record_media_added(
    conn: Conn,
    report: dict[str, Any],
    *,
    added: Sequence[StoredMedia],
    app_id: str,
    ctx: IntakeContext,
) -> None:
    """The timeline row and the ReportMediaAdded event of an attachment (state unchanged)."""
    now = ctx.clock.now()
    envelope = new_envelope(
        ReportMediaAdded(
            report_id=report["id"],
            number=report["number"],
            count=len(added),
            media=[AddedMedia(sha256=m.sha256, content_type=m.content_type) for m in added],
            added_at=now,
        ),
        source=SOURCE,
        province=ctx.settings.province_code,
        occurred_at=now,
    )
    await repository.append_timeline(
        conn,
        report_id=report["id"],
        event_id=envelope.event_id,
        at=now,
        actor_role=Role.REPORTER.value,
        actor_subject=f"app:{app_id}",
        actor_agency_id=None,
        action="add_media",
        from_state=report["state"],
        to_state=report["state"],
        reason=None,
        details={"media": len(added), "sha256": [m.sha256 for m in added]},
    )
    await repository.touch_report(conn, report_id=report["id"], at=now)  # updated_after sees it
    await add_to_outbox(conn, REPORT_EVENTS, envelope)


_PUBLISHED = sorted(s.value for s in PUBLISHED_STATES)


async def readable_media(
    conn: Conn, *, sha256: str, role: Role | None, agency_id: str | None = None
) -> dict[str, Any] | None:
    """The file's record when the caller may read it, else None (as for an unknown file).

    A file follows the reports that carry it. Staff (``role``) read it when they may see one
    of them: coordinators and supervisors any, the others one assigned to ``agency_id``.
    The public (``role`` None) reads it when the coordinator released it on a report that is
    public and published (PUBLISHED_STATES). The thumbnail follows its file.
    """
    if role is None:
        return await repository.public_readable_media(conn, sha256=sha256, published=_PUBLISHED)
    return await repository.staff_readable_media(
        conn, sha256=sha256, every_agency=sees_every_agency(role), agency_id=agency_id
    )


async def released_media_of(conn: Conn, *, report_id: uuid.UUID) -> list[dict[str, Any]]:
    """The files of a report the public may read (see ``readable_media``), in upload order."""
    return await repository.released_media_of(conn, report_id=report_id, published=_PUBLISHED)


async def set_media_public(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    sha256: str,
    public: bool,
    actor: Actor,
    ctx: IntakeContext,
) -> dict[str, Any]:
    """Release a report's file to the public, or withdraw it; call inside a transaction.

    Only the coordinator may (Forbidden otherwise, whatever the report). NotFound names
    ``report_id`` for an unknown report and ``sha256`` for a file the report does not carry.
    A change appends one audit-only ``set_media_public`` timeline row (no event: no other
    service keeps media) and touches the report; setting the flag it already has records
    nothing. The public sees the file only while the report is published (PUBLISHED_STATES)
    and public. Returns the file's record with its ``public`` flag.
    """
    if actor.role is not Role.COORDINATOR:
        raise Forbidden("only the coordinator releases media to the public")
    # locked: the timeline row names the state the report is in when the flag changes
    report = await repository.get_report(conn, report_id=report_id, for_update=True)
    if report is None:
        raise NotFound("report_id", f"no report {report_id}")
    row = await repository.attached_media_for_update(conn, report_id=report_id, sha256=sha256)
    if row is None:
        raise NotFound("sha256", f"report {report_id} carries no media {sha256}")
    if row["public"] is public:
        return row
    now = ctx.clock.now()
    await repository.set_media_public(conn, report_id=report_id, sha256=sha256, public=public)
    await repository.append_timeline(
        conn,
        report_id=report_id,
        event_id=uuid.uuid4(),  # the row's own id: no event is published
        at=now,
        actor_role=actor.role.value,
        actor_subject=actor.subject,
        actor_agency_id=actor.agency_id,
        action="set_media_public",
        from_state=report["state"],
        to_state=report["state"],
        reason=None,
        details={"sha256": sha256, "public": public},
    )
    await repository.touch_report(conn, report_id=report_id, at=now)  # the public view changed
    return {**row, "public": public}


def snapshot_of(report: dict[str, Any]) -> ReportSnapshot:
    """The state machine's view of a stored report (its reporter is the submitting app)."""
    return ReportSnapshot(
        reporter_subject=reporter_subject(report["source_app"]),
        co_agency_ids=tuple(report.get("co_agency_ids") or ()),
        published_at=report.get("published_at"),
        state=State(report["state"]),
        agency_id=report["agency_id"],
        requires_leader_approval=report["requires_leader_approval"],
        reopen_count=report["reopen_count"],
        extension_count=report["extension_count"],
        closed_at=report["closed_at"],
        waiting_for_reporter=report["waiting_for_reporter"],
    )


def reporter_subject(app_id: str) -> str:
    """The subject a submitting app acts under as its reports' reporter."""
    return f"app:{app_id}"


@dataclass(frozen=True)
class AssignedAgency:
    """What a report takes from the agency directory when it is assigned."""

    name: str
    requires_leader_approval: bool


async def assigned_agency(
    conn: Conn, *, agency_id: str, agency_name: str | None = None
) -> AssignedAgency:
    """The name and approval rule a report takes on being assigned to ``agency_id``.

    The rule: the flag is taken when the agency is assigned. Every assignment (automatic
    routing, a coordinator's ``assign``, re-routing after a return or a reopen) copies the
    agency's ``requires_leader_approval`` from the directory into the report, false when
    the agency is unknown. Changing an agency's flag later does not touch the reports it
    already holds: a report in IN_PROGRESS keeps the rule its officer started under (a
    report already in PENDING_APPROVAL is still approved or sent back by the leader), and
    it takes the new rule only if it is assigned again. The name is the directory's when an
    admin set it, else ``agency_name`` when the caller knows it (routing), else the
    directory's, else the id itself.
    """
    known = await repository.agency(conn, agency_id=agency_id)
    if known is None:
        return AssignedAgency(name=agency_name or agency_id, requires_leader_approval=False)
    name = known["name"] if known["name_source"] == "admin" else agency_name or known["name"]
    return AssignedAgency(
        name=name or agency_id,
        requires_leader_approval=known["requires_leader_approval"],
    )


def _fields_after(
    report: dict[str, Any],
    t: Transition,
    *,
    agency: AssignedAgency | None,
    now: datetime,
    rating_window: timedelta,
) -> dict[str, Any]:
    d = t.details
    fields = {
        k: report[k]
        for k in (
            "agency_id",
            "agency_name",
            "requires_leader_approval",
            "reopen_count",
            "extension_count",
            "waiting_for_reporter",
            "duplicate_of",
            "rating",
            "response_text",
            "closed_at",
            "public",
            "urgency",
            "co_agency_ids",
            "published_at",
            "closes_at",
        )
    }
    fields["state"] = t.to_state.value
    if "agency_id" in d and t.action_type.value == "assign":
        fields["agency_id"] = d["agency_id"]
        fields["agency_name"] = agency.name if agency else d["agency_id"]
        fields["requires_leader_approval"] = agency.requires_leader_approval if agency else False
        if d.get("urgency"):
            fields["urgency"] = d["urgency"]
        co = d.get("co_agency_ids")
        fields["co_agency_ids"] = [str(a) for a in co] if isinstance(co, list | tuple) else []
    for key in ("reopen_count", "extension_count", "waiting_for_reporter", "rating", "public"):
        if key in d and d[key] is not None:
            fields[key] = d[key]
    if "duplicate_of" in d:
        fields["duplicate_of"] = uuid.UUID(str(d["duplicate_of"]))
    if "text" in d and t.action_type.value == "respond":
        fields["response_text"] = d["text"]
    if t.to_state is State.CLOSED:
        fields["closed_at"] = now
    elif t.to_state is State.REOPENED:
        fields["closed_at"] = None
    # the rating window: opened by publication, kept by a positive rating, else closed
    if t.to_state is State.PUBLISHED and t.from_state is not State.PUBLISHED:
        fields["published_at"] = now
        fields["closes_at"] = now + rating_window
    elif t.to_state is State.RATED and t.action_type.value == "rate":
        rating = d.get("rating")
        if not (isinstance(rating, int) and closes_after_rating(rating)):
            fields["closes_at"] = None
    elif t.to_state is not t.from_state:
        fields["closes_at"] = None
    return fields


def _event_details(
    details: dict[str, object],
) -> dict[str, str | int | float | bool | None | list[str]]:
    out: dict[str, str | int | float | bool | None | list[str]] = {}
    for key, value in details.items():
        if isinstance(value, list | tuple):
            out[key] = [str(v) for v in value]
        elif value is None or isinstance(value, str | int | float | bool):
            out[key] = value
        else:
            out[key] = str(value)
    return out


async def _check_master(conn: Conn, *, report_id: uuid.UUID, duplicate_of: str) -> None:
    """RuleViolation unless ``duplicate_of`` names another report that is still open."""
    try:
        master_id = uuid.UUID(duplicate_of)
    except ValueError as exc:
        raise RuleViolation("duplicate_of", "not a report id") from exc
    master = await repository.get_report(conn, report_id=master_id)
    if master is None or master_id == report_id:
        raise RuleViolation("duplicate_of", f"no other report {master_id}")
    if State(master["state"]) in TERMINAL_STATES:
        raise RuleViolation("duplicate_of", f"report {master_id} is {master['state']}, not open")


async def apply_action(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    action: Action,
    actor: Actor,
    ctx: IntakeContext,
    agency_name: str | None = None,
    event_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> Transition:
    """Decide and persist one transition with its event; call inside a transaction.

    An assignment takes the agency's name (``agency_name`` when given) and its approval rule
    from the directory (see ``assigned_agency``). Raises LookupError for an unknown report
    and the domain's IllegalTransition, Forbidden and RuleViolation.
    """
    report = await repository.get_report(conn, report_id=report_id, for_update=True)
    if report is None:
        raise LookupError(str(report_id))
    s = ctx.settings
    now = ctx.clock.now()
    transition = decide(
        snapshot_of(report),
        action,
        actor,
        now=now,
        max_reopens=s.max_reopens,
        reopen_window_days=s.reopen_window_days,
        max_extensions=s.max_extensions,
        max_extension_days=s.max_extension_days,
    )
    if isinstance(action, MergeAction):
        await _check_master(conn, report_id=report_id, duplicate_of=action.duplicate_of)
    agency, recorded = None, dict(transition.details)
    if isinstance(action, AssignAction):
        agency = await assigned_agency(conn, agency_id=action.agency_id, agency_name=agency_name)
        # the timeline records which approval rule the assignment gave the report
        recorded["requires_leader_approval"] = agency.requires_leader_approval
    fields = _fields_after(
        report,
        transition,
        agency=agency,
        now=now,
        rating_window=timedelta(days=s.rating_window_days),
    )
    if isinstance(action, AssignAction):
        # routing records the assignment; it knows the report only from its submission
        recorded["category"] = report["category"]
        recorded["commune_code"] = report["commune_code"]
    co_agencies = list(fields["co_agency_ids"])
    if co_agencies:  # every event names the co-handling agencies (notices, statistics)
        recorded["co_agency_ids"] = co_agencies
    await repository.update_after_transition(conn, report_id=report_id, fields=fields, at=now)
    details = _event_details(recorded)
    envelope = new_envelope(
        ReportTransitioned(
            report_id=report_id,
            action=transition.action_type.value,
            from_state=transition.from_state.value,
            to_state=transition.to_state.value,
            actor_role=actor.role.value,
            agency_id=fields["agency_id"],
            reason=transition.reason,
            details=details,
            at=now,
        ),
        source=SOURCE,
        province=s.province_code,
        occurred_at=now,
        event_id=event_id,
        correlation_id=correlation_id,
    )
    await repository.append_timeline(
        conn,
        report_id=report_id,
        event_id=envelope.event_id,
        at=now,
        actor_role=actor.role.value,
        actor_subject=actor.subject,
        actor_agency_id=actor.agency_id,
        action=transition.action_type.value,
        from_state=transition.from_state.value,
        to_state=transition.to_state.value,
        reason=transition.reason,
        details=details,
    )
    await add_to_outbox(conn, REPORT_EVENTS, envelope)
    TRANSITIONS.labels(transition.action_type.value).inc()
    return transition


SYSTEM = Actor(role=Role.SYSTEM, subject="service:routing")
RATING_WINDOW = Actor(role=Role.SYSTEM, subject="service:intake:rating-window")
"""Who closes a report when its rating window ends."""
WINDOW_ENDED = "the rating window ended"


async def close_expired(conn: Conn, *, ctx: IntakeContext, limit: int) -> int:
    """Close the reports whose rating window ended; call inside a transaction.

    Due reports are claimed with FOR UPDATE SKIP LOCKED, so concurrent scanners take
    different ones; each is closed by the system (a timeline row and a report.transitioned
    event through the outbox) in this transaction, which also clears its ``closes_at``: a
    window fires once, whatever restarts or other instances do. Returns how many closed.
    """
    due = await repository.claim_due_to_close(conn, now=ctx.clock.now(), limit=limit)
    for report_id in due:
        await apply_action(
            conn,
            report_id=report_id,
            action=CloseAction(note=WINDOW_ENDED),
            actor=RATING_WINDOW,
            ctx=ctx,
        )
    return len(due)


async def handle_external_event(
    conn: Conn, envelope: Envelope[Payload], *, ctx: IntakeContext
) -> None:
    """Keep the report view current from routing and SLA events (inside the transaction).

    A ReportRouted also records the agency's name in the directory, in the same transaction,
    unless an admin named the agency.
    """
    p = envelope.payload
    if isinstance(p, ReportRouted):
        await _on_routed(conn, envelope, p, ctx=ctx)
    elif isinstance(p, SlaClocksChanged):
        due = {c.kind: c.due_at for c in p.clocks}
        overdue = any(c.breached for c in p.clocks)
        await repository.update_sla(
            conn,
            report_id=p.report_id,
            screening=due.get("screening"),
            acknowledgement=due.get("acknowledgement"),
            resolution=due.get("resolution"),
            overdue=overdue,
            version=int(envelope.occurred_at.timestamp() * 1_000_000),
            at=ctx.clock.now(),
        )
    elif isinstance(p, SlaThresholdReached) and p.percent >= 100:
        await repository.set_overdue(conn, report_id=p.report_id, at=ctx.clock.now())


async def _on_routed(
    conn: Conn, envelope: Envelope[Payload], routed: ReportRouted, *, ctx: IntakeContext
) -> None:
    action = AssignAction(agency_id=routed.agency_id)
    # learn routing's name even if the assignment below is not applied (an admin's name stays)
    name = unicodedata.normalize("NFC", routed.agency_name).strip() or None
    if name is not None:
        await repository.learn_agency_name(conn, agency_id=action.agency_id, name=name)
    try:
        async with conn.transaction():
            await apply_action(
                conn,
                report_id=routed.report_id,
                action=action,
                actor=SYSTEM,
                ctx=ctx,
                agency_name=name,
                event_id=uuid.uuid5(envelope.event_id, "intake.assign"),
                correlation_id=envelope.correlation_id,
            )
    except LookupError:
        logger.warning("routed event for unknown report %s", routed.report_id)
    except DomainError as exc:
        # the coordinator acted first (rejected, merged, assigned by hand): keep their decision
        logger.info("automatic assignment not applied: %s", exc)
