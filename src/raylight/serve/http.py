"""The HTTP surface of a model replica: routes, request limits, auth and error bodies.

Every error is JSON (:class:`~raylight.serve.schemas.ErrorResponse`) with a status that says
whose fault it was: 400 malformed JSON, 401 missing/wrong API key, 413 body too large, 422 a
field that breaks the schema (named), 503 not ready or overloaded, 504 too slow. A 500 means a
bug in raylight.

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations, and the
request model is a local, generated class.
"""

import asyncio
import hmac
import time
import urllib.request
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from raylight.serve import schemas

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorResponse, "description": text}
    for code, text in (
        (400, "Malformed JSON."),
        (401, "Missing or wrong API key (when auth is on)."),
        (413, "Body larger than max_body_bytes."),
        (422, "A field breaks the input schema; `problems` names each one."),
        (503, "Model not loaded yet, or the server is overloaded: retry later."),
        (504, "The prediction took longer than request_timeout_s."),
    )
}


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413, declared or streamed."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await _send_error(send, 400, "bad Content-Length header")
                return
            if too_big:
                await _send_error(send, 413, f"body larger than {self.max_bytes} bytes")
                return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI lets HTTPException out of its body reading; the handler makes it JSON.
                    raise HTTPException(413, f"body larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


async def _send_error(send: Any, status: int, message: str) -> None:
    body = schemas.ErrorResponse(error=message).model_dump_json().encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


async def _within(awaitable: Any, timeout_s: float) -> Any:
    """``await`` with a deadline; raises asyncio.TimeoutError past it.

    ``asyncio.timeout`` (Python 3.11+) runs it in the current task; ``wait_for`` would wrap it
    in a new task on every request.
    """
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(timeout_s):
            return await awaitable
    return await asyncio.wait_for(awaitable, timeout=timeout_s)


def _node_metrics_url() -> str | None:
    """This node's Prometheus endpoint (Ray's metrics agent), where Serve metrics land."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id and node.get("MetricsExportPort"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return None


def _serve_metrics(text: str) -> str:
    """Keep the Serve and raylight families of a Prometheus exposition."""
    keep = ("raylight_serve", "ray_serve_")
    lines = []
    for line in text.splitlines():
        name = line.split()[2] if line.startswith("# ") and len(line.split()) > 2 else line
        if any(k in name.split("{")[0] for k in keep):
            lines.append(line)
    return "\n".join(lines) + "\n"


def build_fastapi(server: Any) -> FastAPI:
    """The FastAPI app of one replica of :class:`~raylight.serve.app.ModelServer`."""
    args = server.args
    record = schemas.record_model(server.input_schema, args.reject_unknown_categories)
    body_model = schemas.request_model(record, args.max_records)
    metrics = server.metrics
    app = FastAPI(
        title="raylight model server",
        description="Predictions from a raylight model bundle. The request schema is the "
        "bundle's input schema; see /metadata for the served version and its lineage.",
    )
    app.add_middleware(BodyLimit, max_bytes=args.max_body_bytes)

    def error(
        status: int, message: str, kind: str, problems: Any = (), **headers: str
    ) -> JSONResponse:
        metrics.errors.inc(tags={"kind": kind})
        body = schemas.ErrorResponse(error=message, problems=list(problems))
        return JSONResponse(body.model_dump(), status_code=status, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            where = schemas.problems_from_validation(errors)
            return error(400, "malformed JSON", "bad_json", where)
        return error(422, "invalid request", "invalid", schemas.problems_from_validation(errors))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {401: "auth", 413: "too_large"}.get(exc.status_code, f"http_{exc.status_code}")
        return error(exc.status_code, str(exc.detail), kind, **(exc.headers or {}))

    async def require_key(request: Request) -> None:
        if server.api_key is None:
            return
        got = request.headers.get(args.auth.header)
        if got is None:
            scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
            got = token if scheme.lower() == "bearer" else None
        # Constant-time compare; neither key is ever logged.
        if not got or not hmac.compare_digest(got.encode(), server.api_key.encode()):
            raise HTTPException(401, "missing or wrong API key", {"WWW-Authenticate": "Bearer"})

    # No dependency at all without a key: FastAPI's dependency solving costs every request.
    guarded = [Depends(require_key)] if server.api_key is not None else []

    @app.post(
        "/predict",
        response_model=schemas.PredictResponse,
        responses=ERROR_RESPONSES,
        dependencies=guarded,
        summary="Predict one record or a list of records",
    )
    async def predict(body: body_model) -> JSONResponse:  # type: ignore[valid-type]
        root = body.root
        records = [
            r.model_dump(by_alias=True) for r in (root if isinstance(root, list) else [root])
        ]
        return await answer(records, time.perf_counter())

    image_columns = [f["name"] for f in server.input_schema["features"] if f["dtype"] == "image"]
    if image_columns:

        @app.post(
            "/predict/upload",
            response_model=schemas.PredictResponse,
            responses=ERROR_RESPONSES,
            dependencies=guarded,
            summary="Predict one record sent as multipart/form-data (image files as parts)",
            description="Each image column is a file part named after the column (PNG or JPEG, "
            "as a browser or `curl -F image=@digit.png` sends it); other features are form "
            "fields (numbers as text). The record is then checked like a JSON one.",
        )
        async def predict_upload(request: Request) -> JSONResponse:
            t0 = time.perf_counter()
            try:
                form = await request.form(max_files=len(image_columns), max_fields=1000)
            except Exception as exc:  # starlette raises its own and multipart parser errors
                return error(400, f"malformed multipart/form-data body: {exc}", "bad_form")
            raw = await schemas.record_from_form(form, server.input_schema)
            try:
                parsed = record.model_validate(raw)
            except ValidationError as exc:
                problems = schemas.problems_from_validation(exc.errors())
                return error(422, "invalid request", "invalid", problems)
            return await answer([parsed.model_dump(by_alias=True)], t0)

    async def answer(records: list[dict[str, Any]], t0: float) -> JSONResponse:
        if "stable" not in server.versions:
            return error(503, "model not loaded yet", "not_ready", **{"Retry-After": "1"})
        try:
            info, preds = await _within(server.predict_records(records), args.request_timeout_s)
        except asyncio.TimeoutError:
            return error(504, f"prediction took longer than {args.request_timeout_s} s", "timeout")
        bad = [
            schemas.Problem(field=f"[{i}]", message=p["error"])
            for i, p in enumerate(preds)
            if "error" in p
        ]
        if bad:
            # The request schema cannot express every contract rule; the bundle's check can.
            return error(422, "record(s) break the model's data contract", "contract", bad)
        server.count_request(info["route"], info["version"])
        metrics.latency.observe((time.perf_counter() - t0) * 1000, tags={"route": info["route"]})
        return JSONResponse({"predictions": preds, "model": info})

    @app.get("/health", summary="Ready once the model is loaded (503 before)")
    async def health() -> JSONResponse:
        if "stable" not in server.versions:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({
            "status": "ready",
            "versions": {r: v.info(r) for r, v in server.versions.items()},
        })  # fmt: skip

    @app.get("/metadata", dependencies=guarded, summary="Served versions, schema and lineage")
    async def metadata() -> JSONResponse:
        versions = {}
        for route, v in server.versions.items():
            m = v.bundle.manifest
            versions[route] = {
                **v.info(route),
                "bundle": v.uri,
                "task": m.get("task"),
                "classes": m.get("classes"),
                "lineage": m.get("lineage"),
                "metrics": m.get("metrics"),
            }
        recent = list(server.batch_log)
        return JSONResponse({
            "versions": versions,
            "canary_weight": server.canary_weight,
            "previous": server.previous,
            "registry": server.registry,
            "input_schema": server.input_schema,
            "settings": args.model_dump(mode="json"),
            "uptime_s": round(time.time() - server.started, 3),
            "batches": {"count": len(recent), "max_requests": max(recent, default=0),
                        "mean_requests": (sum(recent) / len(recent)) if recent else 0.0},
        })  # fmt: skip

    @app.get("/drift", dependencies=guarded, summary="Input drift and traffic per served version")
    async def drift() -> JSONResponse:
        if server.monitor is None:
            return error(404, "monitoring is off (drift.enabled=false, no request log)", "off")
        try:
            report = await asyncio.wait_for(server.drift_report(), timeout=args.request_timeout_s)
        except asyncio.TimeoutError:
            return error(504, "the monitor did not answer in time", "timeout")
        return JSONResponse(report)

    @app.get("/metrics", dependencies=guarded, summary="Prometheus: Serve + raylight metrics")
    async def prometheus() -> PlainTextResponse:
        url = await asyncio.to_thread(_node_metrics_url)
        if url is None:
            return PlainTextResponse("# Ray's metrics agent is not running on this node\n", 503)
        try:
            text = await asyncio.to_thread(
                lambda: urllib.request.urlopen(url, timeout=5).read().decode()
            )
        except OSError as exc:
            return PlainTextResponse(f"# metrics agent unreachable: {exc}\n", 503)
        return PlainTextResponse(_serve_metrics(text), media_type="text/plain; version=0.0.4")

    return app
