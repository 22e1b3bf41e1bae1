"""Streamed answers: ``Stream`` (an iterator, for ``Client``) and
``AsyncStream`` (an async iterator, for ``AsyncClient``).

Each chunk is a ``Response`` over its own document in locked memory (the
``data`` of one server-sent event, in OpenAI's ``chat.completion.chunk`` or
``text_completion`` shape), with ``wipe()``, a redacted repr and the display
rules every ``Response`` has. The core requires the stream's own end
(``data: [DONE]`` or a chunk with a ``finish_reason``): a stream cut short
raises ``IncompleteStreamError`` after its last authentic chunk, and a frame
that fails to authenticate raises ``SecurityError`` at once.

Closing a stream early (``close()``, leaving a ``with``/``async with``
block, cancelling the task awaiting it, or dropping the last reference)
cancels the call: the connection is closed and the server sees it go.
"""

import asyncio
from typing import Any, Callable, Optional

from . import _core
from .memory_lock import checked

__all__ = ["Stream", "AsyncStream"]


class Stream:
    """The chunks of one streamed call, as an iterator (from ``Client``).

    ``next()`` waits with the GIL released, so other threads run meanwhile.
    """

    def __init__(self, core_stream: "_core.Stream") -> None:
        self._stream = core_stream

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> _core.Response:
        return checked(next(self._stream))

    @property
    def done(self) -> bool:
        """True once no chunk will come: ended, failed or closed."""
        return self._stream.done

    @property
    def payload_id(self) -> str:
        return self._stream.payload_id

    def close(self) -> None:
        """End the stream early (cancelling the call); idempotent."""
        self._stream.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<hushcall.Stream %r>" % (self._stream,)


class AsyncStream:
    """The chunks of one streamed call, as an async iterator (from ``AsyncClient``).

    The call runs on the client's engine; ``wake`` is called on this
    stream's loop whenever the engine announces it (chunks waiting, or the
    call done). ``__anext__`` takes every chunk waiting before it waits again,
    as the engine requires.
    """

    def __init__(
        self,
        call: "_core.Call",
        loop: asyncio.AbstractEventLoop,
        forget: Callable[["_core.Call"], None],
    ) -> None:
        self._call: Optional[_core.Call] = call
        self._loop = loop
        self._forget = forget
        self._waiter: Optional[asyncio.Future] = None
        self._failed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def wake(self) -> None:
        """Resume a pending ``__anext__`` (on this stream's loop)."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> _core.Response:
        while True:
            call = self._call
            if call is None:
                raise StopAsyncIteration
            try:
                chunk = call.next_chunk()
            except BaseException:  # the call's failure, raised again by every later call
                self._failed = True
                raise
            if chunk is _core.STREAM_END:
                self.close()
                raise StopAsyncIteration
            if chunk is not None:
                return checked(chunk)
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                self.close()  # the awaiting task was cancelled: so is the call
                raise

    @property
    def done(self) -> bool:
        """True once no chunk will come: ended, failed or closed."""
        return self._call is None or self._failed

    @property
    def payload_id(self) -> Optional[str]:
        return self._call.payload_id if self._call is not None else None

    def close(self) -> None:
        """End the stream early (cancelling the call); idempotent."""
        call, self._call = self._call, None
        if call is None:
            return
        self._forget(call)
        call.close()
        self.wake()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # An abandoned stream: cancel its call (Call.close is safe from any thread).
        call = getattr(self, "_call", None)
        if call is not None:
            self._call = None
            call.close()

    def __repr__(self) -> str:
        return "<hushcall.AsyncStream %r>" % (self._call,)
