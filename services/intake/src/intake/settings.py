"""Settings of the intake service (env prefix INTAKE_)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import StringConstraints

from paht_common.settings import env_setting
from paht_common.staff_auth import StaffTokenSettings

DEV_ADMIN_TOKEN = "dev-admin-token"
AgencyId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class IntakeSettings(StaffTokenSettings):
    """Intake API settings."""

    model_config = env_setting("INTAKE_")

    http_port: int = 8080
    database_url: str = "postgresql://postgres@127.0.0.1:5433/paht_intake"
    number_prefix: str = "BN"
    province_name: str = "Bắc Ninh"
    province_code_numeric: int = 24
    """Code of the province in the 2025 two-level units (vietnam-provinces)."""
    bbox: tuple[float, float, float, float] = (20.95, 105.85, 21.75, 107.05)
    """min lat, min lon, max lat, max lon of the province (coarse check before polygons)."""
    jurisdiction_id: str = "bacninh.gov.vn"
    dev_api_key: str = "dev-only-key"
    """Key of the development app ``demo-app``; refused when PAHT_ENV=production."""
    duplicate_radius_m: float = 50.0
    duplicate_window_days: int = 7
    max_body_bytes: int = 1_000_000
    media_dir: Path = Path(".paht/media")
    """Content-addressed store of uploaded photos and videos (and their thumbnails)."""
    max_media_bytes: int = 10_000_000
    max_media_files: int = 5
    """Most files one report may carry."""
    admin_token: str = DEV_ADMIN_TOKEN
    """Bearer token of the key admin API (/v1/admin); refused when PAHT_ENV=production."""
    api_key_cache_seconds: float = 60.0
    """How long a looked-up API key is cached. Key changes also clear the cache at once
    (PostgreSQL NOTIFY); this bounds staleness should a notification ever be missed."""
    category_cache_seconds: float = 30.0
    """How long the category catalogue is cached (an unknown code is always re-checked)."""
    submit_batch_max: int = 200
    """Most submissions written in one database statement (group commit)."""
    submit_writers: int = 1
    """Concurrent group-commit writers, each holding one pooled connection while busy. One
    gives the largest batches, hence the least CPU per report; more lower the latency only
    when the database, not this process, is the bottleneck (see bench/bench_intake.py)."""
    number_block: int = 32
    """Report numbers reserved per sequence query (a restart leaves a gap of at most this)."""
    max_reopens: int = 2
    reopen_window_days: int = 30
    """The reporter (or the coordinator) may reopen a report within this many calendar days
    of its publication (of its closing, once closed), at most ``max_reopens`` times."""
    rating_window_days: float = 7.0
    """Calendar days after publication when a report with no rating, or a positive one
    (``domain.POSITIVE_RATING`` or more), is closed by the system (domain.md §4.3)."""
    close_scan_interval_seconds: float = 30.0
    """How often the rating-window scanner looks for due reports (a full batch: at once)."""
    close_scan_batch: int = 100
    screening_channels: list[str] = []
    """Channels whose reports go to the coordinator's triage instead of automatic routing
    (a JSON list, e.g. ``["hotline"]``)."""
    screening_categories: list[str] = []
    """Categories (a parent covers its sub-categories) that go to the coordinator's triage."""
    screening_flags: list[str] = []
    """Flags that send a report to triage, e.g. ``["possible_duplicate", "profanity"]``."""
    max_extensions: int = 1
    max_extension_days: int = 5
    leader_approval_agencies: list[AgencyId] = []
    """Agencies whose responses need their leader's approval (a JSON list of agency ids).
    ``python -m intake seed`` turns the flag on in the agency directory; it never turns it
    off (that is ``PUT /v1/admin/agencies/{id}``). A report takes the flag when assigned."""

    @property
    def max_multipart_bytes(self) -> int:
        """Body limit of a media upload: every file at its largest plus 1 MB of framing."""
        return self.max_media_files * self.max_media_bytes + 1_000_000

    def secret_fields(self) -> dict[str, str]:
        """Secrets refused when they keep a development default in production."""
        secrets = super().secret_fields()
        if self.dev_api_key:  # empty means: no development app at all
            secrets["INTAKE_DEV_API_KEY"] = self.dev_api_key
        # the development default is refused as if it were empty
        secrets["INTAKE_ADMIN_TOKEN"] = (
            "" if self.admin_token == DEV_ADMIN_TOKEN else self.admin_token
        )
        return secrets
