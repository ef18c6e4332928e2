"""Request bodies: capped per route, read as they arrive, and parsed off the event loop when large.

Only two routes read a body. A status update is a few hundred bytes: `STATUS_BODY_LIMIT` (64 KiB) is far
above any real one and it is parsed inline. A ConversionReview from the kube-apiserver carries one object
(1.8 kB for a shadow with its status and managedFields, as v1.34 sends them, one review per object) or, from
a kube-apiserver that converts a list at once, 500 of them (kubectl's page size, about 0.9 MB);
`CONVERSION_BODY_LIMIT` (3 MiB, the kube-apiserver's own request limit) fits both and the largest object
etcd stores (1.5 MiB). A declared `Content-Length` over the limit is refused before anything is read; a
chunked body is counted as it arrives and refused at the limit: 413 either way.

A review larger than `INLINE_LIMIT` is parsed, converted and encoded in a worker thread, one at a time
(`large_bodies`): the event loop keeps answering `/ping`, and memory holds at most one large review's
objects however many arrive. Reading such a body waits its turn too, so queued requests hold only what the
server buffers per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from brupop.kube.memory import release_freed_memory
from brupop.models.conversion import ReviewError, handle_conversion_review
from brupop.models.wire import WireError, loads

STATUS_BODY_LIMIT: Final = 64 * 1024
CONVERSION_BODY_LIMIT: Final = 3 * 1024 * 1024
INLINE_LIMIT: Final = 64 * 1024


class BodyTooLargeError(Exception):
    """A request body over its route's limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than this route's limit of {limit} bytes")
        self.limit = limit


def declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length", "")
    return int(raw) if raw.isascii() and raw.isdigit() else None


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, read chunk by chunk; BodyTooLargeError as soon as it is known to exceed `limit`."""
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise BodyTooLargeError(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _json(status: int, content: Any) -> tuple[int, bytes]:
    return status, json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def answer_review(body: bytes) -> tuple[int, bytes]:
    """The webhook's HTTP status and JSON answer for a ConversionReview body (pure CPU: thread-safe)."""
    try:
        review = loads(body)
    except WireError as err:
        return _json(400, {"error": f"the body is not a ConversionReview: {err.message}"})
    if not isinstance(review, dict):
        return _json(400, {"error": "a ConversionReview must be a JSON object"})
    try:
        return _json(200, handle_conversion_review(review))
    except ReviewError as err:
        return _json(400, {"error": f"cannot answer this ConversionReview: {err}"})


class ConversionWebhook:
    """`POST /crdconvert`: small reviews inline, large ones in a worker thread, one at a time."""

    def __init__(self) -> None:
        self.large_bodies = asyncio.Semaphore(1)

    async def __call__(self, request: Request) -> Response:
        declared = declared_length(request)
        small = declared is not None and declared <= INLINE_LIMIT
        async with contextlib.nullcontext() if small else self.large_bodies:
            body = await read_body(request, CONVERSION_BODY_LIMIT)
            if len(body) <= INLINE_LIMIT:
                status, content = answer_review(body)
            else:
                status, content = await asyncio.to_thread(_answer_large, body)
        return Response(content, status_code=status, media_type="application/json")


def _answer_large(body: bytes) -> tuple[int, bytes]:
    try:
        return answer_review(body)
    finally:
        release_freed_memory()  # give the parsed objects' pages back, or the peak stays resident


async def too_large(request: Request, err: Exception) -> JSONResponse:
    """The exception handler for BodyTooLargeError."""
    return JSONResponse({"error": str(err)}, status_code=413)
