"""Reference data the intake service needs at start: communes and staff token keys."""

from __future__ import annotations

from vietnam_provinces import Ward

from intake.auth import JwtVerifier, dev_key_pair, load_public_keys
from intake.settings import IntakeSettings


def province_communes(settings: IntakeSettings) -> frozenset[str]:
    """Five-digit codes of the province's communes and wards (2025 two-level units)."""
    return frozenset(
        f"{int(w.code):05d}"
        for w in Ward.iter_all()
        if int(w.province_code) == settings.province_code_numeric
    )


def staff_verifier(settings: IntakeSettings) -> JwtVerifier:
    """Verifier for staff JWTs: PEM keys and/or a JWKS URL, else the development key pair.

    With a JWKS URL the caller must ``await verifier.start()`` (and ``stop()``) around serving.
    """
    if settings.jwt_public_keys:
        keys = load_public_keys(settings.jwt_public_keys)
    elif settings.jwks_url:
        keys = []
    else:
        _, public = dev_key_pair(settings.jwt_dev_key_dir)
        keys = [public]
    return JwtVerifier(
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        jwks_url=settings.jwks_url,
        jwks_refresh_seconds=settings.jwks_refresh_seconds,
    )
