"""Uploaded media: type sniffed from the bytes, stored content-addressed, thumbnailed.

A file lives at ``root/<sha[:2]>/<sha>`` where ``sha`` is the SHA-256 of its bytes; a file
already there is never rewritten (same bytes, same path). Image thumbnails are JPEG files
stored the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av
from PIL import Image, ImageOps
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

THUMBNAIL_PX = 320
MAX_IMAGE_PIXELS = 50_000_000
"""Larger images are refused before decoding (decompression bombs)."""
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
SUPPORTED_TYPES = IMAGE_TYPES | {"video/mp4", "video/quicktime"}

_MP4_BRANDS = frozenset(
    {
        b"isom",
        b"iso2",
        b"iso3",
        b"iso4",
        b"iso5",
        b"iso6",
        b"mp41",
        b"mp42",
        b"avc1",
        b"M4V ",
        b"M4VH",
        b"M4VP",
        b"dash",
        b"mmp4",
        b"MSNV",
        b"f4v ",
    }
)
"""Major brands of an ``ftyp`` box that are MP4 video (HEIC/AVIF share the box: refused)."""


class MediaError(Exception):
    """The bytes cannot be stored as media (unsupported or corrupt)."""


@dataclass(frozen=True)
class StoredMedia:
    """One stored file."""

    sha256: str
    content_type: str
    size: int
    path: Path
    thumbnail_sha256: str | None


def sniff(data: bytes) -> str | None:
    """The media type of ``data`` from its magic bytes; None when not a supported type."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand == b"qt  ":
            return "video/quicktime"
        if brand in _MP4_BRANDS:
            return "video/mp4"
        return None
    if len(data) >= 8 and data[4:8] in (b"moov", b"wide") and int.from_bytes(data[:4]) >= 8:
        return "video/quicktime"  # QuickTime files older than the ftyp box
    return None


def path_of(root: Path, sha256: str) -> Path:
    """Where the file with this digest is (or would be) stored."""
    if not SHA256_RE.match(sha256):
        raise ValueError("not a SHA-256 hex digest")
    return root / sha256[:2] / sha256


def thumbnail(data: bytes) -> bytes:
    """A JPEG at most THUMBNAIL_PX on its longer side, upright per its EXIF orientation."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise MediaError("image too large in pixels")
            opened.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))  # JPEG: decode downscaled
            return _jpeg_thumbnail(ImageOps.exif_transpose(opened))
    except MediaError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError("not a valid image") from exc


def video_thumbnail(data: bytes) -> bytes:
    """A JPEG of the video's first frame (FFmpeg through PyAV); MediaError when undecodable."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise MediaError("no video stream")
            stream = container.streams.video[0]
            if stream.codec_context.width * stream.codec_context.height > MAX_IMAGE_PIXELS:
                raise MediaError("video too large in pixels")
            for frame in container.decode(stream):
                return _jpeg_thumbnail(frame.to_image())  # type: ignore[no-untyped-call]
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError("not a valid video") from exc
    raise MediaError("no decodable video frame")


def _jpeg_thumbnail(image: Image.Image) -> bytes:
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    elif image.mode != "RGB":
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80, optimize=True)
    return out.getvalue()


def _write_once(data: bytes, *, root: Path) -> tuple[str, Path]:
    """Store ``data`` content-addressed (atomically, only if absent); its digest and path."""
    sha = hashlib.sha256(data).hexdigest()
    target = path_of(root, sha)
    if target.exists():
        return sha, target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{sha}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha, target


def store(data: bytes, *, root: Path) -> StoredMedia:
    """Store media bytes (and an image's thumbnail); MediaError when unsupported or corrupt."""
    content_type = sniff(data)
    if content_type is None:
        raise MediaError("unsupported media type")
    # the thumbnail is made first: it proves the bytes decode before anything is stored
    thumb = thumbnail(data) if content_type in IMAGE_TYPES else video_thumbnail(data)
    sha, target = _write_once(data, root=root)
    thumb_sha = _write_once(thumb, root=root)[0] if thumb is not None else None
    return StoredMedia(
        sha256=sha,
        content_type=content_type,
        size=len(data),
        path=target,
        thumbnail_sha256=thumb_sha,
    )


class UploadError(Exception):
    """An upload refused before anything is stored: status 413, 415 or 422, and the field."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message


@asynccontextmanager
async def multipart_form(
    request: Request, *, max_files: int, max_fields: int, max_part_size: int
) -> AsyncIterator[FormData]:
    """The parsed multipart form (its files closed on exit); a malformed body is
    UploadError 400 naming ``body``, more parts than allowed 422 naming ``files``."""
    try:
        form = await request.form(
            max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
        )
    except (HTTPException, MultiPartException) as exc:
        # Starlette raises a form over its limits as a 400 inside an app, bare outside one
        if isinstance(exc, HTTPException) and exc.status_code == 413:
            raise  # the body limit, raised while it was read
        detail = str(exc.detail) if isinstance(exc, HTTPException) else exc.message
        if "files" in detail:
            raise UploadError(422, "files", detail) from exc
        raise UploadError(400, "body", f"malformed multipart body: {detail}") from exc
    except ValueError as exc:
        raise UploadError(400, "body", f"malformed multipart body: {exc}") from exc
    try:
        yield form
    finally:
        await form.close()


class Upload(Protocol):
    """A multipart file part (Starlette's UploadFile)."""

    async def read(self, size: int = -1) -> bytes: ...


async def read_uploads(
    files: Sequence[Upload | str], *, field: str, max_files: int, max_bytes: int
) -> dict[str, bytes]:
    """The parts' bytes by SHA-256 (in upload order), checked: at most ``max_files``, each
    sized and sniffed. The same bytes sent twice count once (attached to a report once).
    """
    if len(files) > max_files:
        raise UploadError(422, field, f"a report carries at most {max_files} files")
    blobs: dict[str, bytes] = {}
    for index, upload in enumerate(files):
        if isinstance(upload, str):
            raise UploadError(422, field, f"{field}[{index}]: not a file")
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise UploadError(413, field, f"{field}[{index}]: at most {max_bytes} bytes")
        if sniff(data) is None:
            raise UploadError(
                415, field, f"{field}[{index}]: not JPEG, PNG, WebP, MP4 or QuickTime"
            )
        blobs.setdefault(hashlib.sha256(data).hexdigest(), data)
    return blobs


async def store_all(blobs: Iterable[bytes], *, root: Path, field: str) -> list[StoredMedia]:
    """Store checked files off the event loop; UploadError 415 when one proves corrupt."""
    stored = []
    for index, data in enumerate(blobs):
        try:
            stored.append(await asyncio.to_thread(store, data, root=root))
        except MediaError as exc:
            raise UploadError(415, field, f"{field}[{index}]: {exc}") from exc
    return stored


def orphans(root: Path, referenced: set[str], *, older_than_seconds: float) -> list[Path]:
    """Stored files no row refers to, and abandoned temp files, older than the age given.

    A file is written before the statement that records it commits; the age keeps files of
    submissions still in flight (and a crash in between leaves exactly such an orphan).
    """
    if not root.is_dir():
        return []
    cutoff = time.time() - older_than_seconds
    found = []
    for path in sorted(root.glob("??/*")):
        name = path.name
        is_blob = SHA256_RE.match(name) is not None and name[:2] == path.parent.name
        is_temp = name.startswith(".") and name.endswith(".tmp")
        if not (is_blob or is_temp) or not path.is_file():
            continue
        if (is_temp or name not in referenced) and path.stat().st_mtime < cutoff:
            found.append(path)
    return found
