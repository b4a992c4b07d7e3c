"""Image columns: one parser for files, batch prediction and requests; the preprocessor's
pixel standardisation; the serving fast path equals the bundle's pandas path."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from raylight import bundle
from raylight.data.contract import ERROR_COL, RAW_COL, check_batch
from raylight.data.images import matrix, parse_image, to_png
from raylight.data.preprocess import Preprocessor, merge_stats, partial_stats
from raylight.models.vision import ImageCNN
from raylight.serve.app import encode_validated

RULE = {"dtype": "image", "shape": [8, 8], "min": 0, "max": 16}
LABEL = {"dtype": "category", "categories": [str(i) for i in range(10)]}
PX = (np.arange(64) % 17).astype(np.float64)


def test_every_accepted_form_parses_to_the_same_pixels() -> None:
    png = to_png(PX, RULE)
    assert np.array_equal(parse_image(bytes(PX.astype(np.uint8)), RULE), PX)
    assert np.array_equal(parse_image(PX.reshape(8, 8).tolist(), RULE), PX)
    assert np.array_equal(parse_image(PX.reshape(1, 8, 8), RULE), PX)
    decoded = parse_image(png, RULE)  # 8-bit PNG mapped back onto 0..16
    assert np.abs(decoded - PX).max() < 16 / 255 + 1e-6
    text = base64.b64encode(png).decode()
    assert np.array_equal(parse_image(text, RULE), decoded)
    assert np.array_equal(parse_image("data:image/png;base64," + text, RULE), decoded)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (list(range(63)), "63 pixel values, expected 64"),
        ((PX * 2).tolist(), "outside [0, 16]"),
        ([[1, 2], [3]], "not ragged"),
        ("not an image", "base64 PNG/JPEG"),
        (b"\x00" * 10, "10 bytes"),
        (to_png(np.zeros(100), {"dtype": "image", "shape": [10, 10]}), "10x10 image, expected 8x8"),
        (b"\x89PNG\r\n\x1a\n" + b"junk", "not a decodable PNG/JPEG"),
        ([float("nan")] * 64, "finite"),
        (7, "not an image"),
    ],
)
def test_a_bad_image_names_the_problem(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_image(value, RULE)


def test_contract_quarantines_bad_images_and_the_preprocessor_standardises_pixels() -> None:
    df = pd.DataFrame({
        "image": [bytes(PX.astype(np.uint8)), b"xx", to_png(PX, RULE), None, bytes(64)],
        "label": ["1", "2", "3", "4", "5"],
    })  # fmt: skip
    out = check_batch(df, {"image": RULE, "label": LABEL}, True, ["label"], (1.0, 0.0, 0.0), 0)
    errors = out[ERROR_COL].tolist()
    assert pd.isna(errors[0]) and pd.isna(errors[2]) and pd.isna(errors[4])
    assert "image: 2 bytes" in errors[1] and "image: missing value" in errors[3]
    assert '"image": "eHg="' in out[RAW_COL][1]  # raw bytes kept (base64) for the quarantine
    stats = merge_stats(
        [partial_stats(out, [], [], "label", "classification", images=["image"])["stats"][0]]
    )
    good = matrix(out["image"][out[ERROR_COL].isna()]).astype(np.float64)
    assert stats["num"]["image"][0] == good.size
    pre = Preprocessor.fit(stats, {"image": RULE, "label": LABEL}, ["image"], "label",
                           "classification", 64)  # fmt: skip
    assert pre.images["image"]["shape"] == [1, 8, 8]
    assert pre.images["image"]["mean"] == pytest.approx(good.mean())
    assert pre.images["image"]["std"] == pytest.approx(good.std())
    assert pre.num_features == 64 and set(pre.output_source) == {"image"}
    x = pre.transform_features(out)
    assert x.shape == (5, 64)
    assert np.allclose(x[0], (PX - good.mean()) / good.std(), atol=1e-5)


def _image_bundle(path: Path) -> bundle.Bundle:
    pre = Preprocessor(target="label", classes=[str(i) for i in range(10)], feature_order=["image"],
                       images={"image": {"mean": 5.0, "std": 6.0, "shape": [1, 8, 8]}})  # fmt: skip
    torch.manual_seed(0)
    args = {"input_dim": 64, "output_dim": 10, "task": "classification",
            "image_shape": [1, 8, 8], "channels": [4], "hidden_dim": 8}  # fmt: skip
    model = ImageCNN(**args)
    manifest = {
        "model": {"target": "raylight.models.vision.ImageCNN", "init_args": args},
        "task": "classification", "classes": pre.classes,
        "input_schema": {"features": [{"name": "image", **RULE, "nullable": False}],
                         "id_column": None, "target": "label", "strict_categories": True},
        "preprocessor": pre.to_dict(), "reference": {}, "config": {},
        "lineage": {"data_fingerprint": "sha256:x"}, "metrics": {},
    }  # fmt: skip
    bundle.write(str(path), model.eval().state_dict(), manifest)
    return bundle.load(str(path))


def test_fast_encode_of_images_equals_the_bundle_encode_and_the_cnn_predicts(
    tmp_path: Path,
) -> None:
    b = _image_bundle(tmp_path)
    png = to_png(PX, RULE)
    records = [
        {"image": PX.tolist()},
        {"image": base64.b64encode(png).decode()},
        {"image": PX.reshape(8, 8).tolist()},
        {"image": list(range(10))},  # wrong size
    ]
    fast, fast_errors = encode_validated(b, records)
    slow, slow_errors = b.encode(pd.DataFrame({"image": [r["image"] for r in records]}))
    assert np.allclose(fast[:3], slow[:3]) and np.array_equal(fast[0], fast[2])
    assert [e is None for e in fast_errors] == [pd.isna(e) for e in slow_errors]
    assert "10 pixel values" in fast_errors[3]
    proba = b.predict_encoded(fast[:3])["proba"]
    assert proba.shape == (3, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)


def test_cnn_refuses_a_shape_that_is_not_its_input() -> None:
    with pytest.raises(ValueError, match="exactly one image column"):
        ImageCNN(input_dim=70, output_dim=10, image_shape=[1, 8, 8])


def test_binary_split_keys_hash_without_decoding_as_text() -> None:
    from raylight.data.contract import assign_split

    raw = [bytes([255, 0, i]) * 3 for i in range(200)]  # not UTF-8
    a = assign_split(pd.DataFrame({"image": raw}), (0.7, 0.15, 0.15), seed=3)
    b = assign_split(pd.DataFrame({"image": list(reversed(raw))}), (0.7, 0.15, 0.15), seed=3)
    assert np.array_equal(a, b[::-1])  # a row's split depends on its bytes only
    assert set(a) == {0, 1, 2}
