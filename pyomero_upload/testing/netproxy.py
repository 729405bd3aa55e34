"""A TCP proxy on 127.0.0.1 for tests: the network between a client and a server,
made to drop, stall or delay on command.

Bytes pass through unchanged (TLS included: the proxy never decrypts), one
upstream connection per client connection, on an asyncio loop in a thread of
its own::

    with NetProxy(double.host, double.port) as proxy:
        client = omero.client("127.0.0.1", proxy.port)
        proxy.delay(0.05)        # every chunk, each way, 50 ms late
        proxy.stall(5.0)         # nothing passes for 5 s (connections stay open)
        proxy.drop()             # every open connection cut at once, as a network would

Only for tests: nothing in the package imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from typing import Any

CHUNK = 64 * 1024


class NetProxy:
    """Forward ``127.0.0.1:port`` to ``host:target_port``, with faults on command."""

    def __init__(self, host: str, target_port: int, listen_host: str = "127.0.0.1"):
        self.host, self.target_port, self.listen_host = host, target_port, listen_host
        self.port = 0
        self._delay = 0.0
        self._stalled_until = 0.0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="netproxy",
                                        daemon=True)
        #: Bytes forwarded, client to server and back.
        self.sent = self.received = 0
        #: Connections accepted so far.
        self.connections = 0

    # --- control (from any thread) --------------------------------------------------------
    def delay(self, seconds: float) -> None:
        """Hold every chunk this long before passing it on (0: none)."""
        self._delay = seconds

    def stall(self, seconds: float) -> None:
        """Pass nothing, either way, for this long; connections stay open."""
        self._stalled_until = time.monotonic() + seconds

    def drop(self) -> None:
        """Cut every open connection (both ends), as a lost network does."""
        asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(timeout=10)

    # --- life -------------------------------------------------------------------------
    def start(self) -> NetProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, self.listen_host, 0), self._loop
        ).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._drop()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> NetProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the loop ---------------------------------------------------------------------
    async def _drop(self) -> None:
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                sock = w.get_extra_info("socket")
                if sock is not None:  # a reset, not a polite close
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    b"\x01\x00\x00\x00\x00\x00\x00\x00")
                w.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer, "sent"),
                             self._pipe(up_reader, writer, "received"),
                             return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                w.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    counter: str) -> None:
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                while (wait := self._stalled_until - time.monotonic()) > 0:
                    await asyncio.sleep(min(wait, 0.1))
                if self._delay:
                    await asyncio.sleep(self._delay)
                if dst.is_closing():
                    break
                dst.write(data)
                await dst.drain()
                setattr(self, counter, getattr(self, counter) + len(data))
        finally:
            with contextlib.suppress(Exception):
                dst.close()


__all__ = ["NetProxy"]
