"""Notice a client that goes away while its chat completion is in flight.

uvicorn does not tell an ASGI app that the client left: ``send`` after a disconnect is
silently dropped, and only ``receive()`` returns ``http.disconnect``. So once the body
is read, ``DisconnectWatch`` awaits ``receive()`` in a small task and, on a disconnect,
cancels the request's task. The cancellation reaches whatever the request awaits (the
upstream call, the next chunk, a write), which closes the upstream connection at once:
the engine (and vLLM) abort a request whose connection closes. The request's handler
catches the ``CancelledError``, asks ``absorb()`` whether it was ours, and records 499.

``stop()`` must come before the response's last write: after it, uvicorn's ``receive()``
answers ``http.disconnect`` for a finished response too. No work per chunk; the watching
task starts only once a request has run ``START_AFTER_S`` (a timer until then: a task
per request would cost ~20 µs, a tenth of the gateway's added latency), so a client that
leaves is noticed within that delay, and requests faster than it cost one timer.

    watch = DisconnectWatch(receive)
    try:
        reply = await upstream_call()
    except asyncio.CancelledError:
        if not watch.absorb():
            raise
        ...  # 499
    watch.stop()
    await send(last_message)
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.errors import ClientClosed

START_AFTER_S = 0.05
CLOSED_MESSAGE = "The client closed the connection before the response was complete."


def client_closed(relayed_tokens: int | None = None) -> ClientClosed:
    """The error recorded for a 499 (``relayed_tokens``: streamed deltas counted as tokens)."""
    if relayed_tokens is None:
        return ClientClosed(CLOSED_MESSAGE)
    return ClientClosed(f"{CLOSED_MESSAGE} completion_tokens counts the {relayed_tokens} streamed "
                        "deltas relayed before it (the upstream reports usage only at the end).")


class DisconnectWatch:
    __slots__ = ("_task", "_receive", "_timer", "_watcher", "gone")

    def __init__(self, receive: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._receive = receive
        self.gone = False
        self._watcher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(START_AFTER_S, self._start)

    def _start(self) -> None:
        self._timer = None
        self._watcher = asyncio.get_running_loop().create_task(self._watch(self._receive))

    async def _watch(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self._watcher = None
        self._task.cancel()

    def stop(self) -> None:
        """No more watching (call before the last write). Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def absorb(self) -> bool:
        """In ``except CancelledError``: True (and the cancellation undone) if the client left."""
        if not self.gone:
            return False
        if self._task.cancelling():
            return self._task.uncancel() == 0  # someone else cancelled it too: theirs stands
        return True
