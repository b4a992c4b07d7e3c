"""The evaluation report: one self-contained HTML file (plots embedded as PNG data URIs, no
scripts, no external assets) and ``report.json`` with every number behind it."""

from __future__ import annotations

import base64
import html
import json
import math
from typing import Any

SECTIONS = ("summary", "gate", "metrics", "plots", "slices", "fairness", "explanations")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}tr.worst td{background:#fde8e8}
.note{color:#666;font-size:.9rem}img{max-width:100%;margin:.5rem 1rem .5rem 0}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def render(report: dict[str, Any], plots: dict[str, bytes]) -> str:
    """The HTML of a report dict (see ``run.run_evaluation``) and its plots."""
    s = report["summary"]
    m = report["metrics"]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(s['title'])}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(s['title'])}</h1>",
        '<section id="summary"><h2>Summary</h2>',
        _table(["", ""], [[k, v] for k, v in s["facts"].items()]),
    ]
    if s.get("privacy"):
        parts.append(f"<p class='note'>{html.escape(s['privacy'])}</p>")
    parts.append("</section>")

    g = report.get("gate")
    parts.append('<section id="gate"><h2>Promotion gate</h2>')
    if g:
        verdict = "passed" if g["passed"] else "FAILED"
        parts.append(f"<p><b>{verdict}</b></p>")
        parts.append(_table(
            ["check", "value", "threshold", "ok"],
            [[c["name"], c["value"], f"{c['op']} {c['threshold']:g}", "yes" if c["ok"] else "NO"] for c in g["checks"]]
            + [[k, "missing", "", "NO"] for k in g["missing"]],
            ["" if c["ok"] else "worst" for c in g["checks"]] + ["worst"] * len(g["missing"]),
        ))  # fmt: skip
    else:
        parts.append("<p class='note'>No thresholds configured (gate.min / gate.max).</p>")
    parts.append("</section>")

    scalar = [[k, v] for k, v in m.items() if isinstance(v, int | float)]
    parts += ['<section id="metrics"><h2>Metrics</h2>', _table(["metric", "value"], scalar)]
    if "per_class" in m:
        rows = [
            [c, v["precision"], v["recall"], v["f1"], v["support"]]
            for c, v in m["per_class"].items()
        ]
        parts.append(_table(["class", "precision", "recall", "F1", "support"], rows))
    parts.append("</section>")

    parts.append('<section id="plots"><h2>Plots</h2>')
    for name in ("confusion", "roc_pr", "calibration", "residuals"):
        if name in plots:
            parts.append(_img(plots[name], name))
    parts.append("</section>")

    sl = report.get("slices") or {}
    parts.append('<section id="slices"><h2>Slices</h2>')
    if sl.get("columns"):
        key = sl["metric"]
        parts.append(
            f"<p class='note'>{key} per value, with a {sl['level']:.0%} bootstrap interval; "
            "the worst slices are highlighted.</p>"
        )
        for col, rows in sl["columns"].items():
            parts.append(f"<h3>{html.escape(col)}</h3>")
            parts.append(_table(
                ["value", "rows", key, "interval"],
                [[r["value"], r["n"], r["metrics"][key], f"{_fmt(r['ci'][0])} to {_fmt(r['ci'][1])}"] for r in rows],
                ["worst" if r.get("worst") else "" for r in rows],
            ))  # fmt: skip
            if f"slice:{col}" in plots:
                parts.append(_img(plots[f"slice:{col}"], f"{key} by {col}"))
    else:
        parts.append("<p class='note'>No slice columns configured (evaluate.slices).</p>")
    parts.append("</section>")

    fair = report.get("fairness") or {}
    parts.append('<section id="fairness"><h2>Fairness</h2>')
    if fair.get("attributes"):
        parts.append(f"<p class='note'>{html.escape(fair['note'])}</p>")
        for col, f in fair["attributes"].items():
            parts.append(f"<h3>{html.escape(col)}</h3>")
            parts.append(_table(
                ["group", "rows", "selection rate", "TPR", "FPR", "accuracy"],
                [[g, int(v["count"]), v["selection_rate"], v["tpr"], v["fpr"], v["accuracy"]] for g, v in f["groups"].items()],
            ))  # fmt: skip
            parts.append(_table(["gap", "value"], [
                ["demographic parity difference", f["demographic_parity_difference"]],
                ["demographic parity ratio", f["demographic_parity_ratio"]],
                ["equalized odds difference", f["equalized_odds_difference"]],
            ]))  # fmt: skip
    else:
        parts.append(
            "<p class='note'>No sensitive attributes configured (evaluate.sensitive), or not a "
            "classifier.</p>"
        )
    parts.append("</section>")

    ex = report.get("explanations") or {}
    parts.append('<section id="explanations"><h2>Explanations</h2>')
    if ex.get("importance"):
        parts.append(
            f"<p class='note'>{html.escape(ex['method'])}; {ex['rows']} rows; attributions of "
            "encoded columns summed per original column.</p>"
        )
        if "importance" in plots:
            parts.append(_img(plots["importance"], "feature importance"))
        parts.append(
            _table(["feature", "mean |attribution|"], [[k, v] for k, v in ex["importance"].items()])
        )
        for i, e in enumerate(ex.get("examples", [])):
            label = (
                f" (explaining class {e['explained_class']})" if e.get("explained_class") else ""
            )
            parts.append(f"<h3>example {i + 1}{html.escape(label)}</h3>")
            parts.append(_table(
                ["feature", "value", "attribution"],
                [[k, e["row"].get(k), v] for k, v in e["attributions"].items()],
            ))  # fmt: skip
            if f"attribution:{i}" in plots:
                parts.append(_img(plots[f"attribution:{i}"], f"pixel attributions {i + 1}"))
            if e.get("tokens"):
                parts.append(_table(
                    ["token", "attribution"], [[t["token"], t["attribution"]] for t in e["tokens"]]
                ))  # fmt: skip
    else:
        parts.append(
            "<p class='note'>Explanations were switched off (evaluate.explain.rows=0).</p>"
        )
    parts.append("</section></body></html>")
    return "".join(parts)


def to_json(report: dict[str, Any]) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(report), indent=2, default=str)
