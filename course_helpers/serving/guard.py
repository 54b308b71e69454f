"""The HTTP edge of the server: one error shape, the body limit, metrics for /predict.

Every 4xx answer is ``{"error": "<one sentence>"}``. The body of ``POST /predict`` is read
here before the app sees it, so that every early answer (413, 415, empty body) is sent
after the client finished sending: a server that answers and closes while the client is
still writing makes ordinary clients (urllib, requests) see a connection reset, not the
answer.
"""

from __future__ import annotations

import json
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import metrics

#: Past this many bytes an oversized body is no longer read: answer 413 and close.
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024

EXAMPLE = 'send {"row": {...}} for one input or {"rows": [{...}, ...]} for a batch'


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def describe(errors: list[dict]) -> str:
    """Pydantic validation errors as one readable sentence (at most five of them)."""
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        if e.get("type") == "extra_forbidden":
            parts.append(f"unexpected field '{loc}'")
        elif e.get("type") == "missing":
            parts.append(f"missing field '{loc}'")
        else:
            parts.append(f"{loc or 'body'}: {e.get('msg')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def install_error_handlers(app: FastAPI) -> None:
    """Validation errors and HTTP errors (404, 405, parse errors) in the one shape."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        for e in errors:
            if e.get("type") == "json_invalid":
                why = (e.get("ctx") or {}).get("error", "")
                return error(400, f"the request body is not valid JSON ({why}): check quotes, "
                                  f"commas and brackets")
        return error(422, describe(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        headers = getattr(exc, "headers", None)
        path, method = request.url.path, request.method
        if exc.status_code == 405:
            allowed = (headers or {}).get("Allow") or (headers or {}).get("allow") or "another method"
            msg = f"{method} is not allowed on {path}: use {allowed}"
        elif exc.status_code == 404:
            msg = f"there is no {path} here: see /docs for the endpoints"
        elif exc.status_code == 400:
            msg = "the request body could not be parsed as JSON: send UTF-8 encoded JSON"
        else:
            msg = str(exc.detail)
        return error(exc.status_code, msg, headers=headers)


def _content_type_ok(value: bytes | None) -> bool:
    if not value:
        return True  # FastAPI reads a body without a content type as JSON
    mime = value.split(b";", 1)[0].strip().lower()
    return mime == b"application/json" or mime.endswith(b"+json")


async def _send_error(send, status: int, message: str, close: bool = False) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware for ``/predict``: read the body (bounded), answer 413/415/422 for
    bodies the app must not see, count requests and latency by status and model version.

    Status and latency are recorded when the response starts, before the client can see
    it, so /metrics read right after a response always counts that response.
    """

    def __init__(self, app, state) -> None:
        self.app, self.state = app, state
        self.per_connection: dict[tuple, int] = {}
        self.faults = getattr(state, "faults", None)  # lesson 08's fault switch

    def _should_close(self, scope) -> bool:
        """Count requests on this connection; True on the last one allowed."""
        cap = self.state.settings.max_requests_per_connection
        client = scope.get("client")
        if cap <= 0 or not client:
            return False
        key = tuple(client)
        n = self.per_connection.get(key, 0) + 1
        if n >= cap:
            self.per_connection.pop(key, None)
            return True
        if len(self.per_connection) > 10_000:  # forget connections that went away
            self.per_connection.clear()
        self.per_connection[key] = n
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/predict":
            return await self.app(scope, receive, send)
        version = self.state.model.version if self.state.model else "none"
        t0 = time.perf_counter()
        recorded = False
        close = self._should_close(scope)

        async def capture(message):
            nonlocal recorded
            if message["type"] == "http.response.start" and close:
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"connection", b"close")]}
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                metrics.REQUESTS.labels(str(message["status"]), version).inc()
                metrics.LATENCY.labels(version).observe(time.perf_counter() - t0)
            await send(message)

        gauge = metrics.IN_FLIGHT.labels(version)
        gauge.inc()
        try:
            if scope["method"] != "POST":
                return await self.app(scope, receive, capture)  # 405 in the one shape
            await self._post(scope, receive, capture)
        finally:
            gauge.dec()
            if not recorded:  # the app failed before answering
                metrics.REQUESTS.labels("500", version).inc()
                metrics.LATENCY.labels(version).observe(time.perf_counter() - t0)

    async def _post(self, scope, receive, send) -> None:
        limit = self.state.settings.max_body_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > DRAIN_LIMIT_BYTES:
            # far too large to read: answer now and close (the client may see a reset)
            return await _send_error(send, 413, _too_large(limit), close=True)
        chunks, size, complete = [], 0, False
        while size <= DRAIN_LIMIT_BYTES:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size <= limit:
                chunks.append(body)
            if not message.get("more_body", False):
                complete = True
                break
        if size > limit:
            return await _send_error(send, 413, _too_large(limit), close=not complete)
        if not _content_type_ok(headers.get(b"content-type")):
            got = headers[b"content-type"].decode(errors="replace")[:60]
            return await _send_error(send, 415, f"send the body as JSON with the header "
                                                f"Content-Type: application/json (got {got})")
        body = b"".join(chunks)
        if not body.strip():
            return await _send_error(send, 422, f"the request body is empty: {EXAMPLE}")
        if self.faults is not None and self.faults.fail():
            return await _send_error(send, 500, "injected fault (POST /admin/fault {} clears it)")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes: send smaller batches"
