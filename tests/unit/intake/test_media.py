"""Media sniffing and content-addressed storage (Pillow-generated files, a temp directory)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import av
import pytest
from PIL import Image

from intake import media
from intake.media import MediaError, sniff, store

MP4_HEADER = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00\x00\x00\x08free"
MOV_HEADER = b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  " + b"\x00\x00\x00\x08wide"
HEIC_HEADER = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48), **save: object) -> bytes:
    out = io.BytesIO()
    mode = "RGBA" if fmt == "PNG" else "RGB"
    Image.new(mode, size, (200, 30, 30)).save(out, format=fmt, **save)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")],
)
def test_sniffs_images_generated_by_pillow(fmt, expected):
    assert sniff(image_bytes(fmt)) == expected


def test_sniffs_mp4_and_quicktime_by_their_ftyp_box():
    assert sniff(MP4_HEADER) == "video/mp4"
    assert sniff(MOV_HEADER) == "video/quicktime"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is plain text\n",
        b"<!DOCTYPE html><html><body>hi</body></html>",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
        b"GIF89a\x01\x00\x01\x00",
        HEIC_HEADER,
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
    ],
    ids=["empty", "text", "html", "pdf", "gif", "heic", "wav"],
)
def test_refuses_other_content(data):
    assert sniff(data) is None


def test_store_writes_content_addressed_file(tmp_path: Path):
    data = image_bytes("PNG")

    stored = store(data, root=tmp_path)

    sha = hashlib.sha256(data).hexdigest()
    assert stored.sha256 == sha
    assert stored.content_type == "image/png"
    assert stored.size == len(data)
    assert stored.path == tmp_path / sha[:2] / sha
    assert stored.path.read_bytes() == data
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_thumbnail_is_a_jpeg_of_at_most_320_px(tmp_path: Path):
    stored = store(image_bytes("JPEG", size=(1600, 900)), root=tmp_path)

    assert stored.thumbnail_sha256 is not None
    thumb = media.path_of(tmp_path, stored.thumbnail_sha256)
    with Image.open(thumb) as image:
        assert image.format == "JPEG"
        assert max(image.size) <= 320
        assert image.size == (320, 180)


def test_thumbnail_follows_exif_orientation(tmp_path: Path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = image_bytes("JPEG", size=(640, 320), exif=exif.tobytes())

    stored = store(data, root=tmp_path)

    assert stored.thumbnail_sha256 is not None
    with Image.open(media.path_of(tmp_path, stored.thumbnail_sha256)) as image:
        assert image.size == (160, 320)


def test_transparent_png_and_webp_get_thumbnails(tmp_path: Path):
    for data in (image_bytes("PNG"), image_bytes("WEBP")):
        stored = store(data, root=tmp_path)
        assert stored.thumbnail_sha256 is not None


def video_bytes(container: str, size: tuple[int, int] = (96, 64)) -> bytes:
    """A short H.264 video encoded by FFmpeg (through PyAV): five frames, first one red."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as muxer:
        stream = muxer.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(5):
            image = Image.new("RGB", size, (220, 20, 20) if i == 0 else (20, 20, 220))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                muxer.mux(packet)
        for packet in stream.encode():
            muxer.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize(
    ("container", "expected"), [("mp4", "video/mp4"), ("mov", "video/quicktime")]
)
def test_video_gets_a_thumbnail_of_its_first_frame(tmp_path: Path, container, expected):
    data = video_bytes(container)

    stored = store(data, root=tmp_path)

    assert stored.content_type == expected
    assert stored.path.read_bytes() == data
    assert stored.thumbnail_sha256 is not None
    thumb = Image.open(media.path_of(tmp_path, stored.thumbnail_sha256))
    assert thumb.format == "JPEG"
    assert thumb.size == (96, 64)
    red, _, blue = thumb.convert("RGB").getpixel((48, 32))
    assert red > 150  # the first frame (red), not a later one (blue)
    assert blue < 100


def test_a_video_header_without_frames_is_refused_and_not_stored(tmp_path: Path):
    with pytest.raises(MediaError, match="video"):
        store(MP4_HEADER, root=tmp_path)

    assert not any(tmp_path.rglob("*"))


def test_same_bytes_same_path_written_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    replaced: list[str] = []
    real_replace = os.replace

    def counting_replace(src: str, dst: str) -> None:
        replaced.append(str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(media.os, "replace", counting_replace)
    data = image_bytes("PNG")

    first = store(data, root=tmp_path)
    second = store(data, root=tmp_path)

    assert first == second
    assert replaced == [str(first.path), str(media.path_of(tmp_path, first.thumbnail_sha256))]


def test_corrupt_png_is_refused_and_nothing_written(tmp_path: Path):
    data = image_bytes("PNG")
    corrupt = data[:40]  # valid signature, truncated image data

    with pytest.raises(MediaError, match="not a valid image"):
        store(corrupt, root=tmp_path)
    assert not list(tmp_path.iterdir())


def test_unsupported_bytes_are_refused(tmp_path: Path):
    with pytest.raises(MediaError):
        store(b"just text", root=tmp_path)


def test_path_of_refuses_non_digests(tmp_path: Path):
    with pytest.raises(ValueError, match="SHA-256"):
        media.path_of(tmp_path, "../etc/passwd")
