"""The Starlette app: TF Serving's REST URLs, body limits, back-pressure, error JSON.

Routes `/v1/models/...` by TF Serving's own URL grammar to `handlers`, runs the handlers
in the thread pool, inflates gzip bodies, answers CORS preflights (and adds CORS headers
with `cors=True`), answers 429 with Retry-After beyond `--max-inflight` predict requests
in flight and 413 beyond `--max-body-bytes`, counts requests in the Prometheus metrics
and serves their page, and starts and stops the registry's poller with the app's lifespan.

Example (needs an export under exports/setnet-default)::

    import uvicorn
    registry = ModelRegistry([ModelConfig("setnet", "exports/setnet-default")])
    registry.poll_once()
    uvicorn.run(create_app(registry, Limits()), port=8501)
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import zlib

from serving.server.config import Limits
from serving.server.errors import ServingError, invalid
from serving.server.handlers import handle_get, handle_predict, parse_version
from serving.server.memory import HeapTrimmer, detach
from serving.server.metrics import DEFAULT_PATH as DEFAULT_METRICS_PATH
from serving.server.metrics import Metrics, served_version
from serving.server.versions import ModelRegistry

log = logging.getLogger(__name__)

# TF Serving's URL grammar (http_rest_api_util.cc); matched case-insensitively.
PREDICT_RE = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                        r":(classify|regress|predict)", re.IGNORECASE)
STATUS_RE = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                       r"(?:/(metadata))?", re.IGNORECASE)
V1_RE = re.compile(r"/v1/.*", re.IGNORECASE)


def answer(handler, *args) -> tuple[str | None, ServingError | None]:
    """`handler(*args)` in the calling (worker) thread: `(text, None)`, or `(None, error)`
    with the error detached from its frames, so that no exception and none of the
    request's data outlives the call (see `memory.detach`)."""
    try:
        return handler(*args), None
    except ServingError as err:
        return None, detach(err)
    except Exception as err:  # never let one request take the server down
        log.exception("unexpected error in %s", handler.__name__)
        detach(err)
        return None, ServingError("INTERNAL", f"{type(err).__name__}: {err}")


def inflate_gzip(body: bytes, limit: int) -> bytes:
    """A `Content-Encoding: gzip` body inflated, as TF Serving's HTTP server does, but never
    to more than `limit` bytes (413, like a plain body over --max-body-bytes)."""
    out, size = [], 0
    data = body
    try:
        while data:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(data, limit + 1 - size)
            size += len(chunk)
            if size > limit:
                raise ServingError("PAYLOAD_TOO_LARGE", f"The request body inflates to more "
                                   f"than this server's maximum of {limit} bytes "
                                   f"(--max-body-bytes); send fewer clouds per request.")
            if not inflater.eof:
                raise zlib.error("the compressed data ends early")
            out.append(chunk)
            data = inflater.unused_data.lstrip(b"\0")
    except zlib.error as err:
        # TF Serving's message: a body it cannot inflate reaches the JSON parser empty.
        raise invalid(f"JSON Parse error: The document is empty (the body says "
                      f"Content-Encoding: gzip but does not inflate: {err}; send gzip data "
                      f"or leave the header out)")
    return b"".join(out)


def predict_body(registry, limits, name, version, label, method, body, gzipped):
    """`handle_predict` on the request body, inflated first if it came gzipped."""
    if gzipped:
        body = inflate_gzip(body, limits.max_body_bytes)
    return handle_predict(registry, limits, name, version, label, method, body)


def create_app(registry: ModelRegistry, limits: Limits | None = None, *, manage_registry=True,
               cors: bool = False, metrics: Metrics | None = None,
               metrics_path: str = DEFAULT_METRICS_PATH):
    """The Starlette app serving TF Serving's REST API for the models in `registry`.

    Args:
        registry: the served models; the app answers from whatever it has loaded.
        limits: maxima per request (default `Limits()`).
        manage_registry: start the registry's poller when the app starts and stop it when
            the app stops (False when the caller runs the poller itself).
        cors: add TF Serving's CORS headers to every answer
            (`--rest_api_enable_cors_support`).
        metrics: count and time every request there, and serve the Prometheus page at
            `metrics_path` (`--monitoring_config_file`); None: neither.
        metrics_path: where the page is served (outside /v1/).

    Returns:
        A Starlette ASGI app (run it with uvicorn).
    """
    import contextlib

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect
    from starlette.responses import Response
    from starlette.routing import Route

    limits = limits or Limits()
    trimmer = HeapTrimmer()
    inflight = {"n": 0}
    lock = threading.Lock()

    # TF Serving's AddCORSHeaders (http_rest_api_util.cc).
    cors_headers = {"Access-Control-Allow-Origin": "*",
                    "Access-Control-Allow-Methods": "POST, GET",
                    "Access-Control-Allow-Headers": "Content-Type"} if cors else {}

    def reply(status: int, text: str, headers=None) -> Response:
        return Response(text, status_code=status, media_type="application/json",
                        headers={**cors_headers, **(headers or {})})

    def error_reply(err: ServingError) -> Response:
        return reply(err.http_status, json.dumps({"error": err.message}), err.headers)

    async def read_body(request) -> bytes:
        length = request.headers.get("content-length")
        too_big = ServingError(
            "PAYLOAD_TOO_LARGE",
            f"The request body is over this server's maximum of {limits.max_body_bytes} bytes "
            f"(--max-body-bytes); send fewer clouds per request (client: --batch-size) or "
            f"fewer points per cloud (client: --num-points).")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    async def v1(request):
        """One request: (the answer, its status code name, what to label its metrics)."""
        path, method = request.url.path, request.method
        about = {"model": "", "version": None, "label": None, "api": ""}
        try:
            if method == "OPTIONS":
                # A CORS preflight: TF Serving answers it whatever the path, and wants an
                # Origin; it sends no body, the error JSON here says what was missing.
                about["api"] = "preflight"
                if re.search(r"https?://", request.headers.get("origin", "")):
                    return Response(status_code=200, headers=cors_headers), "OK", about
                raise ServingError("FAILED_PRECONDITION",
                                   "Origin header is missing in CORS preflight")
            m = PREDICT_RE.fullmatch(path) if method == "POST" else None
            g = STATUS_RE.fullmatch(path) if method == "GET" else None
            if m is None and g is None:
                raise invalid(f"Malformed request: {method} {path}")
            if m is not None:
                name, version, label, verb = m.groups()
                about.update(model=name, label=label, api=verb.lower())
                version = about["version"] = parse_version(version)
                with lock:
                    if inflight["n"] >= limits.max_inflight:
                        raise ServingError(
                            "RESOURCE_EXHAUSTED",
                            f"The server is busy: {inflight['n']} requests in flight "
                            f"(--max-inflight {limits.max_inflight}); retry with backoff.",
                            {"Retry-After": "1"})
                    inflight["n"] += 1
                try:
                    body = await read_body(request)
                    gzipped = "gzip" in request.headers.get("content-encoding", "").lower()
                    text, err = await run_in_threadpool(
                        answer, predict_body, registry, limits, name, version, label,
                        verb.lower(), body, gzipped)
                    trimmer.note(len(body))
                finally:
                    with lock:
                        inflight["n"] -= 1
            else:
                name, version, label, sub = g.groups()
                about.update(model=name or "", label=label,
                             api="metadata" if sub else "status")
                version = about["version"] = parse_version(version)
                text, err = await run_in_threadpool(answer, handle_get, registry, name,
                                                    version, label, sub)
            if err is not None:
                return error_reply(err), err.code, about
            return reply(200, text), "OK", about
        except ServingError as err:
            return error_reply(detach(err)), err.code, about
        except ClientDisconnect:
            return Response(status_code=499), "CANCELLED", about
        except Exception as err:  # never let one request take the server down
            log.exception("unexpected error for %s %s", method, path)
            return (error_reply(ServingError("INTERNAL", f"{type(err).__name__}: {err}")),
                    "INTERNAL", about)

    async def route(request):
        path = request.url.path
        if metrics is not None and path == metrics_path:
            page, content_type = metrics.page()
            return Response(page, media_type=content_type)
        if not V1_RE.fullmatch(path):
            return Response(status_code=404)
        start = time.perf_counter()
        response, code, about = await v1(request)
        if metrics is not None:
            # A status without a version is about every version.
            version = ("" if about["api"] == "status" and about["version"] is None else
                       served_version(registry, about["model"], about["version"],
                                      about["label"]))
            metrics.observe(about["model"], version, about["api"], "REST", code,
                            time.perf_counter() - start)
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if manage_registry:
            registry.start()
        try:
            yield
        finally:
            trimmer.close()
            if manage_registry:
                registry.stop()

    return Starlette(routes=[Route("/{path:path}", route, methods=["GET", "POST", "PUT", "DELETE",
                                                                  "PATCH", "OPTIONS"])],
                     lifespan=lifespan)
