"""Demo reference data: Bắc Ninh (merged with Bắc Giang in 2025) agencies and routing rules.

Communes come from the ``vietnam-provinces`` dataset (2025 two-level units); each commune's
People's Committee handles local matters, provincial departments and utilities the rest,
and the provincial People's Committee Office (the coordinator) catches what nothing else does.
"""

from __future__ import annotations

import unicodedata

from vietnam_provinces import Province, Ward

from paht_common.runtime import connect_with_retry
from routing import repository
from routing.settings import RoutingSettings

PROVINCE_NAME = "Bắc Ninh"

DEPARTMENTS: tuple[tuple[str, str, str], ...] = (
    ("vp-ubnd", "Văn phòng UBND tỉnh Bắc Ninh", "coordinator"),
    ("so-xd", "Sở Xây dựng tỉnh Bắc Ninh", "department"),
    ("so-nnmt", "Sở Nông nghiệp và Môi trường tỉnh Bắc Ninh", "department"),
    ("so-yt", "Sở Y tế tỉnh Bắc Ninh", "department"),
    ("so-gddt", "Sở Giáo dục và Đào tạo tỉnh Bắc Ninh", "department"),
    ("so-vhttdl", "Sở Văn hóa, Thể thao và Du lịch tỉnh Bắc Ninh", "department"),
    ("so-khcn", "Sở Khoa học và Công nghệ tỉnh Bắc Ninh", "department"),
    ("ban-dan-toc", "Ban Dân tộc tỉnh Bắc Ninh", "department"),
    ("ca-tinh", "Công an tỉnh Bắc Ninh", "police"),
    ("dien-luc", "Công ty Điện lực Bắc Ninh", "utility"),
    ("vnpt", "VNPT Bắc Ninh", "utility"),
    ("cap-nuoc", "Công ty Cổ phần Nước sạch Bắc Ninh", "utility"),
)

# (rule id suffix, priority, category, agency) for province-wide rules.
PROVINCE_RULES: tuple[tuple[str, int, str | None, str], ...] = (
    ("power", 10, "INFRA.POWER", "dien-luc"),
    ("telecom", 10, "INFRA.TELECOM", "vnpt"),
    ("water", 10, "INFRA.WATER", "cap-nuoc"),
    ("security", 10, "SECURITY_ORDER", "ca-tinh"),
    ("health", 10, "HEALTH", "so-yt"),
    ("food", 10, "FOOD_SAFETY", "so-yt"),
    ("education", 10, "EDUCATION", "so-gddt"),
    ("tourism", 10, "TOURISM", "so-vhttdl"),
    ("agriculture", 10, "AGRICULTURE_DISASTER", "so-nnmt"),
    ("bus", 10, "TRAFFIC.BUS", "so-xd"),
    ("signals", 10, "TRAFFIC.SIGNALS", "so-xd"),
    ("admin", 10, "ADMIN_CONDUCT", "vp-ubnd"),
    ("infra", 90, "INFRA", "so-xd"),
    ("urban", 90, "URBAN_ORDER", "so-xd"),
    ("environment", 90, "ENVIRONMENT", "so-nnmt"),
    ("traffic", 90, "TRAFFIC", "ca-tinh"),
    ("fallback", 1000, None, "vp-ubnd"),
)

# Categories a commune People's Committee leads inside its own commune.
COMMUNE_CATEGORIES: tuple[str, ...] = (
    "URBAN_ORDER",
    "ENVIRONMENT",
    "INFRA.ROAD",
    "INFRA.DRAINAGE",
    "INFRA.LIGHTING",
    "INFRA.TREES",
    "TRAFFIC.SAFETY",
)


def commune_agency_name(ward_name: str) -> str:
    """'Xã Đại Sơn' -> 'UBND xã Đại Sơn' (NFC)."""
    kind, _, rest = ward_name.partition(" ")
    return unicodedata.normalize("NFC", f"UBND {kind.lower()} {rest}")


def bac_ninh_communes() -> list[tuple[str, str]]:
    """(ward code, ward name) of every commune and ward of Bắc Ninh, sorted by code."""
    province = next(p for p in Province.iter_all() if p.name == PROVINCE_NAME)
    wards = [w for w in Ward.iter_all() if w.province_code == province.code]
    return sorted((f"{int(w.code):05d}", w.name) for w in wards)


async def seed(settings: RoutingSettings) -> None:
    """Upsert the demo agencies and rules (idempotent)."""
    pool = await connect_with_retry(settings)
    try:
        async with pool.acquire() as conn, conn.transaction():
            for agency_id, name, kind in DEPARTMENTS:
                await repository.upsert_agency(
                    conn, agency_id=agency_id, name=name, kind=kind, commune_code=None
                )
            for suffix, priority, category, agency_id in PROVINCE_RULES:
                await repository.upsert_rule(
                    conn,
                    rule_id=f"bn-{suffix}",
                    priority=priority,
                    category=category,
                    commune_code=None,
                    agency_id=agency_id,
                )
            for code, name in bac_ninh_communes():
                agency_id = f"ubnd-{code}"
                await repository.upsert_agency(
                    conn,
                    agency_id=agency_id,
                    name=commune_agency_name(name),
                    kind="commune",
                    commune_code=code,
                )
                for category in COMMUNE_CATEGORIES:
                    await repository.upsert_rule(
                        conn,
                        rule_id=f"bn-{code}-{category.lower()}",
                        priority=50,
                        category=category,
                        commune_code=code,
                        agency_id=agency_id,
                    )
    finally:
        await pool.close()
