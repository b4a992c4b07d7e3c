"""Image values: what a contract column of ``dtype: image`` accepts and how it is parsed.

One parser for every path (files read by Ray Data, batch prediction, a Serve request), so a
PNG sent to an endpoint is the same tensor training saw. An image value is any of:

- PNG or JPEG bytes (or their base64 text, with or without a ``data:`` prefix), decoded with
  Pillow, converted to the column's channels, its 8-bit values mapped linearly onto the
  column's pixel range ``[min, max]`` (default 0..255);
- raw pixels: ``C*H*W`` bytes (uint8), or numbers flat or nested (``[H][W]``, ``[C][H][W]``),
  inside the pixel range.

The size must match the column's ``shape`` exactly: a wrong-sized image is a bad row (or a
422), never silently resized, because a resize the model never saw changes its answers.
Parsed images travel between stages as float32 bytes (C*H*W values), which Arrow stores as a
plain binary column whatever the shape.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np

PNG = b"\x89PNG\r\n\x1a\n"
JPEG = b"\xff\xd8\xff"


def image_geometry(rule: dict[str, Any]) -> tuple[int, int, int]:
    """(channels, height, width) of a contract rule's ``shape`` ([H, W] or [C, H, W])."""
    shape = list(rule["shape"])
    return (1, *shape) if len(shape) == 2 else tuple(shape)  # type: ignore[return-value]


def pixel_range(rule: dict[str, Any]) -> tuple[float, float]:
    lo, hi = rule.get("min"), rule.get("max")
    return (0.0 if lo is None else float(lo), 255.0 if hi is None else float(hi))


def _decode(data: bytes, rule: dict[str, Any]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    c, h, w = image_geometry(rule)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"not a decodable PNG/JPEG ({exc.__class__.__name__})") from None
    if img.size != (w, h):
        raise ValueError(f"{img.size[0]}x{img.size[1]} image, expected {w}x{h} (width x height)")
    arr = np.asarray(img.convert("L" if c == 1 else "RGB"), dtype=np.float64)
    arr = arr[None] if c == 1 else arr.transpose(2, 0, 1)  # HWC -> CHW
    lo, hi = pixel_range(rule)
    return lo + arr / 255.0 * (hi - lo)


def parse_image(value: Any, rule: dict[str, Any]) -> np.ndarray:
    """One image value → float32 [C*H*W] in the column's pixel range.

    Raises:
        ValueError: with a reason that names the problem (size, format, range), never the data.
    """
    c, h, w = image_geometry(rule)
    size = c * h * w
    if isinstance(value, memoryview | bytearray):
        value = bytes(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a string must be a base64 PNG/JPEG") from None
        if not value.startswith((PNG, JPEG)):
            raise ValueError("a string must be a base64 PNG/JPEG")
    if isinstance(value, bytes):
        if value.startswith((PNG, JPEG)):
            arr = _decode(value, rule)
        elif len(value) == size:
            arr = np.frombuffer(value, dtype=np.uint8).astype(np.float64)
        else:
            raise ValueError(f"{len(value)} bytes: neither a PNG/JPEG nor {size} raw pixels")
    elif isinstance(value, list | tuple | np.ndarray):
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError):
            raise ValueError(
                "pixel values must be numbers in a regular (not ragged) array"
            ) from None
        if arr.size != size:
            raise ValueError(f"{arr.size} pixel values, expected {size} ({c}x{h}x{w})")
        if not np.isfinite(arr).all():
            raise ValueError("pixel values must be finite")
    else:
        raise ValueError(f"not an image ({type(value).__name__})")
    lo, hi = pixel_range(rule)
    flat = arr.reshape(-1)
    if flat.min() < lo or flat.max() > hi:
        raise ValueError(f"pixel values outside [{lo:g}, {hi:g}]")
    return flat.astype(np.float32)


def matrix(values: Any, size: int | None = None) -> np.ndarray:
    """A column of parsed images (float32 bytes) → float32 [n, size]."""
    raw = [bytes(v) for v in values]
    if not raw:
        return np.zeros((0, size or 0), np.float32)
    return np.frombuffer(b"".join(raw), dtype=np.float32).reshape(len(raw), size or -1)


def to_png(pixels: np.ndarray, rule: dict[str, Any]) -> bytes:
    """Pixels in the column's range → PNG bytes (examples, tests, the demo client)."""
    from PIL import Image

    c, h, w = image_geometry(rule)
    lo, hi = pixel_range(rule)
    arr = np.asarray(pixels, dtype=np.float64).reshape(c, h, w)
    u8 = np.clip(np.round((arr - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
    img = Image.fromarray(u8[0] if c == 1 else u8.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
