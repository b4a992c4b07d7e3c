"""Explanations: Integrated Gradients (captum) on the encoded features, folded back onto the
original columns.

The model sees one-hot categories and standardized numbers; a user thinks in ``workclass`` and
``age``. Each original column's attribution is the sum of its encoded columns' attributions
(``Preprocessor.output_source`` says which encoded column came from which), so the per-example
attributions of a row add up (with the baseline's output) to the model's output for it —
captum's completeness property, which :func:`attribute` reports as ``convergence_delta``.

Baseline: the all-zeros encoded row — every number at its training mean, no category set —
"an average row with nothing known about its categories".
"""

from __future__ import annotations

from typing import Any

import numpy as np


def attribute(
    model: Any,
    features: np.ndarray,
    task: str,
    target: np.ndarray | None,
    steps: int = 32,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Integrated Gradients of each row's output w.r.t. its encoded features.

    Args:
        model: The bundle's torch module (eval mode).
        features: Encoded rows [n, d].
        task: Classification attributes the probability of ``target`` (per row); regression
            the model's (standardized) output.
        target: Class index per row (classification).
        steps: Riemann steps of the path integral.
        batch_size: Rows per captum call.

    Returns:
        (attributions [n, d], convergence deltas [n]).
    """
    import torch
    from captum.attr import IntegratedGradients

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return torch.softmax(out, dim=-1) if task == "classification" else out.reshape(-1, 1)

    ig = IntegratedGradients(forward)
    attrs, deltas = [], []
    for i in range(0, len(features), batch_size):
        x = torch.as_tensor(features[i : i + batch_size], dtype=torch.float32)
        t = (
            torch.as_tensor(target[i : i + batch_size], dtype=torch.long)
            if task == "classification" and target is not None
            else 0
        )
        a, d = ig.attribute(
            x, baselines=torch.zeros_like(x), target=t, n_steps=steps,
            return_convergence_delta=True,
        )  # fmt: skip
        attrs.append(a.detach().numpy())
        deltas.append(d.detach().numpy())
    return np.concatenate(attrs), np.concatenate(deltas)


def fold(attr: np.ndarray, sources: list[str]) -> tuple[list[str], np.ndarray]:
    """Sum encoded columns' attributions per original column: (columns, [n, columns])."""
    columns = list(dict.fromkeys(sources))
    index = {c: i for i, c in enumerate(columns)}
    out = np.zeros((attr.shape[0], len(columns)))
    for j, src in enumerate(sources):
        out[:, index[src]] += attr[:, j]
    return columns, out


# Integrated Gradients through a transformer costs steps x (forward + backward) per row: text
# explanations use at most this many rows (a CPU explains them in under a minute).
TEXT_ROWS = 32
TOP_TOKENS = 10


def explain_text(
    bundle: Any,
    features: np.ndarray,
    raw_rows: list[dict[str, Any]],
    sample: int,
    examples: int,
    steps: int,
    seed: int,
) -> dict[str, Any]:
    """Token attributions of a text model: Layer Integrated Gradients on the word embeddings.

    Token ids are not a continuous input, so the path runs from the ``[PAD]`` embedding to each
    token's embedding (the attention mask stays the real one). A row's attributions sum to its
    output minus the baseline's (completeness, reported as the convergence delta); the text
    column's importance is the mean summed |attribution|, and each example lists its most
    influential tokens (word pieces, signed: + pushes toward the explained class).
    """
    import torch
    from captum.attr import LayerIntegratedGradients

    from raylight.data.text import resolve_base

    (col, spec), *_ = bundle.preprocessor.texts.items()
    model = bundle.model.eval()
    rng = np.random.default_rng(seed)
    n = len(features)
    idx = np.sort(rng.choice(n, size=min(sample, TEXT_ROWS, n), replace=False)) if n else []
    idx = np.asarray(idx, dtype=np.int64)
    x = torch.as_tensor(features[idx], dtype=torch.float32)
    target = bundle.predict_encoded(features[idx])["class_id"] if len(idx) else np.zeros(0, int)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(inputs), dim=-1)

    lig = LayerIntegratedGradients(forward, model.encoder.embeddings.word_embeddings)
    attrs, deltas = [], []
    for i in range(0, len(idx), 8):
        xb = x[i : i + 8]
        a, d = lig.attribute(
            xb, baselines=torch.full_like(xb, float(spec["pad_id"])),
            target=torch.as_tensor(target[i : i + 8], dtype=torch.long), n_steps=steps,
            return_convergence_delta=True,
        )  # fmt: skip
        attrs.append(a.sum(-1).detach().numpy())
        deltas.append(d.detach().numpy())
    tok_attr = np.concatenate(attrs) if attrs else np.zeros((0, x.shape[1]))
    delta = np.concatenate(deltas) if deltas else np.zeros(0)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(resolve_base(spec["base"]) / "tokenizer.json"))
    special = {spec["pad_id"], tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")}
    per_example = []
    for k in range(min(examples, len(idx))):
        ids = x[k].long().tolist()
        pairs = [(tok.id_to_token(t), float(a)) for t, a in zip(ids, tok_attr[k], strict=True)
                 if t not in special]  # fmt: skip
        top = sorted(pairs, key=lambda p: -abs(p[1]))[:TOP_TOKENS]
        per_example.append({
            "row": {col: raw_rows[idx[k]].get(col)},
            "attributions": {col: float(tok_attr[k].sum())},
            "tokens": [{"token": t, "attribution": a} for t, a in top],
            "explained_class": bundle.classes[int(target[k])],
        })  # fmt: skip
    return {
        "method": f"Layer Integrated Gradients (captum) on the word embeddings, {steps} steps, "
        "[PAD] baseline",
        "rows": len(idx),
        "importance": {col: float(np.abs(tok_attr.sum(1)).mean()) if len(idx) else 0.0},
        "max_convergence_delta": float(np.abs(delta).max()) if len(delta) else 0.0,
        "examples": per_example,
    }


def explain(
    bundle: Any,
    features: np.ndarray,
    raw_rows: list[dict[str, Any]],
    sample: int = 256,
    examples: int = 5,
    steps: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Global importance (mean |attribution| per original column over a sample of rows) and
    per-example attributions for the first ``examples`` of that sample."""
    if bundle.preprocessor.texts:
        return explain_text(bundle, features, raw_rows, sample, examples, steps, seed)
    rng = np.random.default_rng(seed)
    n = len(features)
    idx = np.sort(rng.choice(n, size=min(sample, n), replace=False)) if n else np.array([], int)
    x = features[idx]
    target = None
    if bundle.task == "classification":
        target = bundle.predict_encoded(x)["class_id"]
    model = bundle.model.eval()
    attr, delta = attribute(model, x, bundle.task, target, steps=steps)
    columns, folded = fold(attr, bundle.preprocessor.output_source)
    importance = np.abs(folded).mean(axis=0) if len(folded) else np.zeros(len(columns))
    order = np.argsort(-importance)
    per_example = []
    pixel_maps = []
    for k in range(min(examples, len(idx))):
        # Image models: the attribution of every pixel, as a map beside the image (a plot; not
        # in the JSON report, whose per-column sums are the same numbers folded).
        for c, st in bundle.preprocessor.images.items():
            cols = [j for j, src in enumerate(bundle.preprocessor.output_source) if src == c]
            shape = tuple(st["shape"])
            pixel_maps.append((k, c, x[k, cols].reshape(shape), attr[k, cols].reshape(shape)))
        row = {
            "row": {c: raw_rows[idx[k]].get(c) for c in columns},
            "attributions": {columns[j]: float(folded[k, j]) for j in order},
        }
        if target is not None:
            row["explained_class"] = bundle.classes[int(target[k])]
        per_example.append(row)
    return {
        "method": f"Integrated Gradients (captum), {steps} steps, all-zeros encoded baseline",
        "rows": len(idx),
        "importance": {columns[j]: float(importance[j]) for j in order},
        "max_convergence_delta": float(np.abs(delta).max()) if len(delta) else 0.0,
        "examples": per_example,
        # (example index, column, standardized pixels, attributions): plotted, then dropped
        "_pixel_maps": pixel_maps,
    }
