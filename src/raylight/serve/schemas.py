"""Request and response models generated from a bundle's input schema.

The request model is built at replica start from ``bundle.json``'s ``input_schema``, so the
OpenAPI page (``/docs``) shows the real feature names, types, ranges and categories, and a bad
request is refused with 422 naming the field before it reaches the model.

This module deliberately does not use ``from __future__ import annotations``: FastAPI resolves
endpoint annotations at runtime, and the generated models are local objects.
"""

import keyword
import math
import re
from typing import Annotated, Any, Literal, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    Tag,
    create_model,
)

# A JSON body may hold one record or a list of records; both map to a list of dicts.
_STRICT = ConfigDict(extra="forbid", strict=True, populate_by_name=False)


def _identifier(name: str, taken: set[str]) -> str:
    """A Python identifier for a feature name (``education-num`` -> ``education_num``)."""
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit() or keyword.iskeyword(ident) or ident.startswith("_"):
        ident = f"f_{ident}"
    base, i = ident, 2
    while ident in taken or ident in BaseModel.__dict__ or ident.startswith("model_"):
        ident, i = f"{base}_{i}", i + 1
    taken.add(ident)
    return ident


def _field(col: dict[str, Any], reject_unknown_categories: bool) -> tuple[Any, Any]:
    """(annotation, FieldInfo) for one contract column."""
    dtype = col["dtype"]
    bounds: dict[str, Any] = {}
    # The contract's min/max are what training accepted; outside them serving refuses too.
    if col.get("min") is not None and math.isfinite(col["min"]):
        bounds["ge"] = col["min"]
    if col.get("max") is not None and math.isfinite(col["max"]):
        bounds["le"] = col["max"]
    if dtype == "int":
        annotation: Any = int
    elif dtype == "float":
        annotation = float
        bounds["allow_inf_nan"] = False
    elif dtype == "bool":
        annotation = bool
    elif dtype == "image":
        # base64 PNG/JPEG, or pixel values flat / [H][W] / [C][H][W] (checked when encoded)
        annotation = str | list[float] | list[list[float]] | list[list[list[float]]]
    elif dtype == "text":
        annotation = str
        # Blank text is refused here; invalid UTF-8 never gets this far (JSON decoding).
        bounds = {"min_length": 1, "pattern": r"\S"}
        if col.get("max_chars"):
            bounds["max_length"] = int(col["max_chars"])
    elif dtype == "category":
        cats = col.get("categories") or []
        annotation = Literal[tuple(cats)] if cats and reject_unknown_categories else str
    else:  # "string" and anything textual
        annotation = str
    description = f"{dtype}" + (f"; one of {col['categories']}" if col.get("categories") else "")
    if dtype == "image":
        bounds = {}  # min/max are the pixel range, checked per pixel by the image parser
        description = (
            f"image {'x'.join(map(str, col['shape']))}: base64 PNG/JPEG, or pixel values in "
            f"[{col.get('min', 0)}, {col.get('max', 255)}] (flat or nested)"
        )
    if dtype == "text":
        description = "text" + (
            f" (at most {col['max_chars']} characters)" if col.get("max_chars") else ""
        )
    if col.get("nullable"):
        return Optional[annotation], Field(  # noqa: UP045 - annotation is a runtime value
            None, alias=col["name"], description=description, **bounds
        )
    return annotation, Field(..., alias=col["name"], description=description, **bounds)


def record_model(
    input_schema: dict[str, Any], reject_unknown_categories: bool = True, name: str = "Record"
) -> type[BaseModel]:
    """The pydantic model of one input record.

    Args:
        input_schema: ``bundle.json``'s ``input_schema`` (``features``: name, dtype, nullable,
            min, max, categories).
        reject_unknown_categories: A category value training never saw is a 422 (True), or
            passed to the preprocessor, which maps it to its ``__other__`` slot (False).
        name: The model's name in the OpenAPI schema.

    Returns:
        A strict model (no extra fields, no type coercion from strings) whose field aliases are
        the feature names. Nullable features may be omitted or null.
    """
    taken: set[str] = set()
    fields = {
        _identifier(col["name"], taken): _field(col, reject_unknown_categories)
        for col in input_schema["features"]
    }
    pii = (input_schema.get("pii") or {}).get("columns") or []
    for col in pii:
        # Optional pass-through (e.g. a customer id to join labels to the request log later):
        # the model never sees it, the request log holds it only dropped or salted-hashed.
        annotation, info = _field({**col, "nullable": True, "categories": None}, False)
        info.description = f"{col['dtype']}; pii: not used by the model, never logged raw"
        fields[_identifier(col["name"], taken)] = (annotation, info)
    return create_model(name, __config__=_STRICT, **fields)  # type: ignore[call-overload]


async def record_from_form(form: Any, input_schema: dict[str, Any]) -> dict[str, Any]:
    """A multipart form as a JSON-like record: image file parts as base64 text, other fields
    as JSON values when they parse as JSON numbers/booleans, else as text."""
    import base64
    import json

    images = {f["name"] for f in input_schema["features"] if f["dtype"] == "image"}
    out: dict[str, Any] = {}
    for key, value in form.multi_items():
        if hasattr(value, "read"):  # an uploaded file
            data = await value.read()
            out[key] = (
                base64.b64encode(data).decode()
                if key in images
                else data.decode("utf-8", "replace")
            )
            continue
        if key in images:
            out[key] = value  # base64 text in a plain field
            continue
        try:
            parsed = json.loads(value)
            out[key] = parsed if isinstance(parsed, int | float | bool) else value
        except ValueError:
            out[key] = value
    return out


def _one_or_many(value: Any) -> str:
    return "many" if isinstance(value, list) else "one"


def request_model(record: type[BaseModel], max_records: int) -> type[RootModel]:
    """The body of ``POST /predict``: one record, or a non-empty list of at most ``max_records``.

    A callable discriminator picks the branch from the JSON type, so a bad record gets one error
    naming its field instead of one per union branch.
    """
    many = Annotated[list[record], Field(min_length=1, max_length=max_records)]  # type: ignore[valid-type]
    body = Annotated[
        Annotated[record, Tag("one")] | Annotated[many, Tag("many")],
        Discriminator(_one_or_many),
    ]
    return RootModel[body]  # type: ignore[valid-type]


class Prediction(BaseModel):
    """One record's prediction."""

    prediction: str | float
    probabilities: dict[str, float] | None = Field(
        None, description="Class probabilities (classification)."
    )


class ModelInfo(BaseModel):
    """Which model answered."""

    name: str
    version: str
    route: Literal["stable", "canary"] = "stable"


class PredictResponse(BaseModel):
    """``POST /predict``'s answer: one prediction per record, in order."""

    predictions: list[Prediction]
    model: ModelInfo


class Problem(BaseModel):
    """One thing wrong with a request."""

    field: str
    message: str


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: what went wrong and, for invalid requests, where."""

    error: str
    problems: list[Problem] = Field(default_factory=list)


def problems_from_validation(errors: list[dict[str, Any]]) -> list[Problem]:
    """Pydantic/FastAPI validation errors as ``field: message`` pairs.

    The location drops FastAPI's ``body`` prefix and the union-branch names pydantic inserts,
    so a user reads ``[2].age`` rather than ``body.list[Record].2.age``.
    """
    out = []
    for e in errors:
        parts: list[str] = []
        for p in e.get("loc", ()):
            if p == "body" and not parts:
                continue
            if p in ("one", "many") and not parts:
                continue  # the discriminator's branch tag
            parts.append(f"[{p}]" if isinstance(p, int) else str(p))
        loc = "".join(p if p.startswith("[") else f".{p}" for p in parts).lstrip(".")
        out.append(Problem(field=loc or "body", message=str(e.get("msg", "invalid"))))
    return out
