"""Floods of searches against the real query service over loopback: what is answered, what is
shed, how fast, and what memory the service holds before, at the peak and after."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image
from tqdm import tqdm

from bench.results import save
from tests.photos import photo
from tests.query_support import start_service

DEFAULT_OUT = Path(__file__).parent / "results" / "overload.json"
# The flood of 6300 x 6300 WebPs runs against a service that accepts 40 MP (its default,
# 24 MP, refuses them from the header in microseconds): each one then costs its full decode.
FLOOD_MAX_PIXELS = 40_000_000


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def small_photo() -> bytes:
    return jpeg(photo("coffee").resize((640, 480)))


def phone_photo() -> bytes:
    """A 12 MP photo, as phones take them."""
    return jpeg(photo("chelsea").resize((4000, 3000)))


def huge_webp() -> bytes:
    """6300 x 6300 pixels in a few KB: no reduced-size decoding, so every pixel is paid for."""
    out = io.BytesIO()
    Image.new("RGB", (6300, 6300), (180, 120, 60)).save(out, format="WEBP", lossless=True)
    return out.getvalue()


def _own_rss(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0  # gone meanwhile (a decoder replaced)
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return kids


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (its decoders) (Linux)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += _own_rss(current)
        todo += _children(current)
    return total


@dataclass
class Answer:
    status: int
    seconds: float
    retry_after: str | None = None


@dataclass
class FloodResult:
    """Everything one flood measured."""

    name: str
    clients: int
    seconds: float
    answers: list[Answer] = field(default_factory=list)
    lone: list[Answer] = field(default_factory=list)
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for a in self.answers:
            counts[a.status] = counts.get(a.status, 0) + 1
        return counts

    def summary(self) -> dict[str, Any]:
        ok = sorted(a.seconds for a in self.answers if a.status == 200)
        shed = [a for a in self.answers if a.status == 503]
        lone = [a.seconds for a in self.lone]
        return {
            "flood": self.name,
            "clients": self.clients,
            "req_s": len(self.answers) / self.seconds,
            "ok_p50_ms": _pct(ok, 0.5) * 1000,
            "ok_p99_ms": _pct(ok, 0.99) * 1000,
            "shed_share": len(shed) / max(1, len(self.answers)),
            "max_ms": max((a.seconds for a in self.answers), default=0.0) * 1000,
            "max_ok_ms": max(ok, default=0.0) * 1000,
            "shed_p50_ms": _pct(sorted(a.seconds for a in shed), 0.5) * 1000,
            "shed_max_ms": max((a.seconds for a in shed), default=0.0) * 1000,
            "lone_median_ms": (statistics.median(lone) if lone else 0.0) * 1000,
            "lone_max_ms": max(lone, default=0.0) * 1000,
            "lone_statuses": sorted({a.status for a in self.lone}),
            "statuses": self.statuses(),
            "rss_before_mb": self.rss_before / 2**20,
            "rss_peak_mb": self.rss_peak / 2**20,
            "rss_after_mb": self.rss_after / 2**20,
        }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


_BOUNDARY = "lookalike-bench"
_FORM_HEADERS = {"Content-Type": f"multipart/form-data; boundary={_BOUNDARY}"}


def form_body(data: bytes) -> bytes:
    """A multipart body with the photo as field 'image', built once per flood: a load generator
    on the same cores must spend as little of them as it can."""
    head = (
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="photo"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{_BOUNDARY}--\r\n".encode()


async def search(session: aiohttp.ClientSession, base: str, body: bytes) -> Answer:
    """One search with a body from form_body."""
    started = time.perf_counter()
    async with session.post(f"{base}/v1/search?k=5", data=body, headers=_FORM_HEADERS) as resp:
        await resp.read()
        return Answer(resp.status, time.perf_counter() - started, resp.headers.get("Retry-After"))


async def flood(
    base: str,
    pid: int,
    name: str,
    body: bytes,
    clients: int,
    seconds: float,
    *,
    lone_body: bytes | None = None,
    settle_s: float = 3.0,
    on_answer: Callable[[], None] | None = None,
) -> FloodResult:
    """`clients` loops posting the photo `body` for `seconds`, a lone small search every 0.5 s
    beside them, and the service's RSS sampled throughout and `settle_s` after."""
    body = form_body(body)
    lone_body = None if lone_body is None else form_body(lone_body)
    result = FloodResult(name, clients, seconds)
    result.rss_before = rss_bytes(pid)
    result.rss_peak = result.rss_before
    stop_at = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:

        async def client() -> None:
            while time.monotonic() < stop_at:
                result.answers.append(await search(session, base, body))
                if on_answer is not None:
                    on_answer()

        async def lone() -> None:
            while time.monotonic() < stop_at:
                await asyncio.sleep(0.5)
                if lone_body is not None:
                    result.lone.append(await search(session, base, lone_body))

        async def sample() -> None:
            while time.monotonic() < stop_at:
                result.rss_peak = max(result.rss_peak, rss_bytes(pid))
                await asyncio.sleep(0.05)

        await asyncio.gather(*(client() for _ in range(clients)), lone(), sample())
    result.seconds = max(seconds, time.monotonic() - (stop_at - seconds))
    await asyncio.sleep(settle_s)
    result.rss_after = rss_bytes(pid)
    return result


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'flood':<22}{'clients':>8}{'req/s':>8}{'p50 ok':>9}{'p99 ok':>9}{'shed':>7}"
        f"{'max':>8}{'lone p50':>10}{'lone max':>10}{'RSS before/peak/after MB':>28}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        rss = f"{r['rss_before_mb']:.0f} / {r['rss_peak_mb']:.0f} / {r['rss_after_mb']:.0f}"
        print(
            f"{r['flood']:<22}{r['clients']:>8}{r['req_s']:>8.1f}{r['ok_p50_ms']:>7.0f}ms"
            f"{r['ok_p99_ms']:>7.0f}ms{r['shed_share']:>7.0%}{r['max_ms']:>6.0f}ms"
            f"{r['lone_median_ms']:>8.0f}ms{r['lone_max_ms']:>8.0f}ms{rss:>28}"
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    floods = [
        ("small photos", small_photo(), args.clients),
        ("12 MP photos", phone_photo(), args.clients),
        ("6300x6300 WebP", huge_webp(), args.clients),
    ]
    lone_body = small_photo()
    env = {
        "LOOKALIKE_QUEUE_BUDGET_MS": str(args.budget_ms),
        "LOOKALIKE_API_MAX_IMAGE_PIXELS": str(FLOOD_MAX_PIXELS),
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp:
        proc, base = await start_service(Path(tmp) / "index", env, timeout_s=300)
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(5):  # warm-up, not reported
                    await search(session, base, form_body(lone_body))
            bar = tqdm(total=len(floods), desc="floods", unit="flood")
            for name, body, clients in floods:
                result = await flood(
                    base, proc.pid, name, body, clients, args.seconds, lone_body=lone_body
                )
                rows.append(result.summary())
                bar.update()
            bar.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), timeout=60)
    print(
        f"{platform.node()} · {os.cpu_count()} CPUs · load {os.getloadavg()[0]:.1f} · budget "
        f"{args.budget_ms:g} ms · {args.seconds:g} s per flood · {datetime.now(UTC):%Y-%m-%d}"
    )
    print_table(rows)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "budget_ms": args.budget_ms,
        "seconds": args.seconds,
        "floods": rows,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each flood")
    parser.add_argument("--budget-ms", type=float, default=1000.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    save(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
