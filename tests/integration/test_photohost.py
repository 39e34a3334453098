"""The benches' lean photo host: photo n modulo those it holds, 404 elsewhere, kept alive."""

from __future__ import annotations

import aiohttp

from bench.photohost import photo_host


async def test_photo_host_serves_its_photos_by_number() -> None:
    photos = [b"\xff\xd8first", b"\xff\xd8second"]
    with photo_host(photos) as host:
        connector = aiohttp.TCPConnector(limit=1)  # one connection: every answer on it
        async with aiohttp.ClientSession(connector=connector) as session:
            for n in (0, 1, 2, 7):
                async with session.get(host.url(n)) as resp:
                    assert resp.status == 200
                    assert resp.content_type == "image/jpeg"
                    assert await resp.read() == photos[n % 2]
            async with session.get(f"http://127.0.0.1:{host.port}/other.png") as resp:
                assert resp.status == 404
            async with session.get(host.url(3)) as resp:
                assert await resp.read() == photos[1]
