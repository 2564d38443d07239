"""The HTTP face's WebSub callback: ``GET`` and ``POST /websub/{callback_id}``.

The only routes of the HTTP face that write, mounted only when ``settings.websub`` is
set: a hub's verification GET (answered with its challenge) and its content delivery
POST (its body read up to ``max_body_bytes``, then handed to the ``Receiver``).
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .protocol import Answer
from .receiver import Receiver

PATH = "/websub/{callback_id}"


class _TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused past ``limit`` bytes (announced or read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _TooLarge
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        parts.append(chunk)
    return b"".join(parts)


def _answer(answer: Answer) -> Response:
    return PlainTextResponse(answer.body, status_code=answer.status)


def routes(receiver: Receiver) -> list[Route]:
    async def callback(request: Request) -> Response:
        callback_id = request.path_params["callback_id"]
        if request.method == "HEAD":  # Starlette adds it to GET routes; it answers nothing
            return Response(status_code=405, headers={"Allow": "GET, POST"})
        if request.method == "GET":
            return _answer(await receiver.verify(callback_id, request.query_params))
        sub = await receiver.lookup(callback_id)
        refusal = receiver.refusal(sub)
        if refusal is not None:
            return _answer(refusal)
        assert sub is not None
        async with receiver.slots:
            limit = receiver.max_body_bytes
            try:
                body = await _body(request, limit)
            except _TooLarge:
                return PlainTextResponse(
                    f"the body is larger than max_body_bytes ({limit} bytes)", status_code=413
                )
            except ClientDisconnect:
                return Response(status_code=400)
            return _answer(await receiver.deliver(sub, body, request.headers))

    return [Route(PATH, callback, methods=["GET", "POST"])]
