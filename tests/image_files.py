"""Real image files made in memory: good ones in several formats, and broken ones."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    """Return ``image`` encoded as JPEG."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    """Return ``image`` encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """Return a tiny PNG whose header claims a ``width`` x ``height`` canvas."""
    small = png_bytes(Image.new("RGB", (1, 1), (255, 0, 0)))
    header = struct.pack(">II", width, height) + small[24:29]
    chunk = b"IHDR" + header
    crc = struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    return small[:12] + chunk + crc + small[33:]


def noise_image(seed: int, size=(100, 100), mode="RGB") -> Image.Image:
    """Return a seeded image of smooth random colours."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BILINEAR).convert(mode)
