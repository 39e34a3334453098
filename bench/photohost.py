"""A lean photo host for the benches: preloaded JPEG bytes answered by a bare asyncio protocol
in a process of its own, so that serving photos costs the measured indexer little.

The test image server (tests/imageserver.py) is an aiohttp app on the caller's event loop: it
parses every request fully and shares the loop and the GIL with the worker it feeds, so a bench
that used it measured part of its own photo host as indexing cost. This one parses only the
request line, answers `GET /img/<n>.jpg` with photo n modulo the photos it holds (so every URL
is distinct while the bytes repeat), keeps connections alive, and runs in a spawned process.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

_PATH = re.compile(rb"^GET /img/(\d+)\.jpg HTTP/1\.[01]$")
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class _PhotoProtocol(asyncio.Protocol):
    def __init__(self, answers: Sequence[bytes]) -> None:
        self.answers = answers
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            match = _PATH.match(head.split(b"\r\n", 1)[0])
            if match is None:
                self.transport.write(_NOT_FOUND)
            else:
                self.transport.write(self.answers[int(match[1]) % len(self.answers)])


def _serve(photos: Sequence[bytes], reply: Connection) -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(p) + p
        for p in photos
    ]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _PhotoProtocol(answers), "127.0.0.1", 0)
        reply.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


@dataclass(frozen=True)
class PhotoHost:
    """Where the host listens; `url(n)` is photo n modulo the photos it holds."""

    port: int

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.port}/img/{n}.jpg"


@contextlib.contextmanager
def photo_host(photos: Sequence[bytes]) -> Iterator[PhotoHost]:
    """Serve `photos` from a spawned process on a free loopback port; stop it on exit."""
    if not photos:
        raise ValueError("a photo host needs at least one photo")
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_serve, args=(list(photos), sender), daemon=True)
    process.start()
    try:
        if not receiver.poll(60):
            raise RuntimeError("the photo host did not start within 60 s")
        yield PhotoHost(port=int(receiver.recv()))
    finally:
        process.terminate()
        process.join(10)
