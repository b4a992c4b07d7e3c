"""Image augmentation in Ray Data: K randomly transformed copies of every training row.

The copies are made once, in the data stage (``map_batches`` over the checked rows, train split
only, after the preprocessor was fitted on the originals), so augmentation scales out with Ray
Data and costs the training loop nothing. Each copy's transform is drawn from a generator
seeded by the global seed, the row's content and the copy's number: the same data and seed give
the same augmented set on any cluster layout, and runs stay reproducible. (Fresh transforms
every epoch would need the epoch inside a Ray Data task, which the streaming executor does
not expose; with the per-epoch shuffle buffer, K fixed copies give the model K+1 views of each
image in a different order every epoch.)
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from raylight.data.contract import ERROR_COL, SPLIT_COL


def _shift(img: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """Translate a [C, H, W] image by (dy, dx) pixels, filling the uncovered border."""
    out = np.full_like(img, fill)
    h, w = img.shape[1:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[:, yd, xd] = img[:, ys, xs]
    return out


def augment_image(
    img: np.ndarray, rng: np.random.Generator, settings: dict[str, Any], lo: float, hi: float
) -> np.ndarray:
    """One random variant of a [C, H, W] float32 image whose pixel range is [lo, hi]."""
    out = img
    if settings.get("rotate_deg"):
        from scipy.ndimage import rotate

        angle = rng.uniform(-settings["rotate_deg"], settings["rotate_deg"])
        out = rotate(out, angle, axes=(1, 2), reshape=False, order=1, mode="constant", cval=lo)
    shift = int(settings.get("max_shift") or 0)
    if shift:
        dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, size=2))
        out = _shift(out, dy, dx, lo)
    if settings.get("hflip") and rng.random() < 0.5:
        out = out[:, :, ::-1]
    if settings.get("noise_std"):
        out = out + rng.normal(0.0, settings["noise_std"] * (hi - lo), size=out.shape)
    return np.clip(out, lo, hi).astype(np.float32)


def augment_batch(
    batch: pd.DataFrame,
    images: dict[str, dict[str, Any]],
    settings: dict[str, Any],
    seed: int,
) -> pd.DataFrame:
    """The batch plus ``settings["copies"]`` augmented copies of each good train row.

    Args:
        batch: Checked rows (parsed images as float32 bytes, ``__split__``, ``__error__``).
        images: Image column → ``{"shape": [C, H, W], "min": lo, "max": hi}``.
        settings: ``data.augment`` (copies, max_shift, rotate_deg, hflip, noise_std).
        seed: The global seed.
    """
    copies = int(settings.get("copies") or 0)
    train = batch[(batch[SPLIT_COL] == 0).to_numpy() & batch[ERROR_COL].isna().to_numpy()]
    if not copies or train.empty or not images:
        return batch
    extra = []
    for k in range(1, copies + 1):
        variant = train.copy()
        for col, geo in images.items():
            shape = tuple(geo["shape"])
            values = []
            for raw in variant[col].to_numpy(dtype=object):
                data = bytes(raw)
                digest = hashlib.blake2b(data, digest_size=8).digest()
                rng = np.random.default_rng(
                    [seed & 0xFFFFFFFF, k, int.from_bytes(digest, "little")]
                )
                img = np.frombuffer(data, dtype=np.float32).reshape(shape)
                values.append(augment_image(img, rng, settings, geo["min"], geo["max"]).tobytes())
            variant[col] = values
        extra.append(variant)
    return pd.concat([batch, *extra], ignore_index=True)
