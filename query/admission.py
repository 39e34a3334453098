"""Admission control for searches: a photo that cannot start within the queue budget is shed.

Why this design, and not a concurrency limit. The load-shedding designs of production RPC
stacks, Envoy's adaptive concurrency filter and Netflix's concurrency-limits (Vegas, Gradient2),
discover how many requests may be in flight from measured latency, and count every request
alike. Here two facts are known that they cannot use: what a request will cost before it
starts, since its header says how many pixels it decodes (a thumbnail and a 6300 x 6300 WebP are
a thousand times apart), and what waiting it may bear, the budget. So the service predicts each
photo's wait from the work queued ahead of it (decode seconds, from decoded pixels times a rate
learned per format from every decode, and embed seconds, from photos waiting times the measured
seconds per photo) and refuses, at once, a photo that could not start within the budget. A
concurrency limit learned from latency would converge on the same point, but only after the
queue had already formed, and would admit a 40 MP photo as readily as a 40 KP one.

A prediction can be wrong, so the sojourn is checked as well, as CoDel does with its target
delay: a photo whose turn comes after its deadline is refused then instead of being started, and
one that waits for its embedding past the answer deadline is answered 503 at that point. Every
answer, result or 503, thus comes within one and a half budgets (ANSWER_BUDGETS) plus the
decode already running, which leaves the rest of twice the budget to a busy machine's delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from models.images import ImageProbe
from query.errors import OverloadedError

Clock = Callable[[], float]
# Seconds per decoded pixel, one decode thread, measured with models.images.decode_image and the
# model's preprocessing on the 2-core development machine (2026-12-02): a 12 MP JPEG decoded at
# 1/8 scale in 23 ms, a 6300 x 6300 WebP in 0.57 s, a 12 MP photo as PNG in 0.46 s. These are
# only the starting point; every decode moves them (an EWMA), so other hardware learns its own.
INITIAL_SECONDS_PER_PIXEL = {"JPEG": 80e-9, "MPO": 80e-9, "WEBP": 15e-9, "PNG": 40e-9}
DEFAULT_SECONDS_PER_PIXEL = 40e-9
# Resizing to the model's input and cropping, whatever the size decoded.
FIT_SECONDS = 0.001
INITIAL_EMBED_SECONDS_PER_PHOTO = 0.02
# Reading a header: 0.2 to 0.5 ms for a photo, up to 0.2 s for a hostile PNG of text chunks.
INITIAL_PROBE_SECONDS = 0.0005
# A photo let in must be answered within this many budgets of its arrival.
ANSWER_BUDGETS = 1.5
# Weight of each new observation: the rates follow a load change within tens of photos.
EWMA_WEIGHT = 0.2


def _ewma(old: float, new: float) -> float:
    return old + EWMA_WEIGHT * (new - old)


@dataclass
class CostModel:
    """What decoding and embedding one photo costs, learned from every one done."""

    seconds_per_pixel: dict[str, float] = field(
        default_factory=lambda: dict(INITIAL_SECONDS_PER_PIXEL)
    )
    embed_seconds_per_photo: float = INITIAL_EMBED_SECONDS_PER_PHOTO
    probe_seconds: float = INITIAL_PROBE_SECONDS

    def decode_seconds(self, probe: ImageProbe) -> float:
        rate = self.seconds_per_pixel.get(probe.format, DEFAULT_SECONDS_PER_PIXEL)
        return FIT_SECONDS + rate * probe.decoded_pixels

    def observe_decode(self, probe: ImageProbe, seconds: float) -> None:
        if probe.decoded_pixels <= 0:
            return
        old = self.seconds_per_pixel.get(probe.format, DEFAULT_SECONDS_PER_PIXEL)
        sample = max(0.0, seconds - FIT_SECONDS) / probe.decoded_pixels
        self.seconds_per_pixel[probe.format] = _ewma(old, sample)

    def observe_pass(self, photos: int, seconds: float) -> None:
        if photos > 0:
            self.embed_seconds_per_photo = _ewma(self.embed_seconds_per_photo, seconds / photos)

    def observe_probe(self, seconds: float) -> None:
        self.probe_seconds = _ewma(self.probe_seconds, seconds)


@dataclass(eq=False)
class _Waiter:
    cost_s: float
    deadline: float
    # Set to the slot reserved for it, or to OverloadedError when its turn came too late.
    granted: asyncio.Future[int]


@dataclass(frozen=True)
class Admitted:
    """A photo let in: when its answer is due."""

    answer_by: float


class Admission:
    """The header probes (one thread), the decode queue (at most `decode_slots` photos
    decoding, first come first served) and the count of photos waiting for the embedder, with
    the shedding rule described above. Times count from when a request's photo is in hand (its
    body read, its image_url fetched): a slow uploader is not charged for its own network."""

    def __init__(
        self,
        budget_s: float,
        decode_slots: int,
        embed_streams: int,
        *,
        clock: Clock = time.monotonic,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        if budget_s <= 0 or decode_slots < 1 or embed_streams < 1:
            raise ValueError("budget, decode slots and embed streams must be positive")
        self.budget_s = budget_s
        self.costs = CostModel()
        self._slots = decode_slots
        self._streams = embed_streams
        self._clock = clock
        self._on_wait = on_wait
        # Start time and predicted cost of each photo decoding now.
        self._running: dict[int, tuple[float, float]] = {}
        self._next_id = 0
        self._queue: deque[_Waiter] = deque()
        self._embedding = 0
        self._probing = 0

    @property
    def busy(self) -> bool:
        """Whether any photo is queued, decoding or embedding."""
        return bool(self._running or self._queue or self._embedding or self._probing)

    def predicted_wait(self) -> float:
        """Seconds a photo arriving now would wait before it starts: for the probes, a decode
        slot, or the embedder to get through the photos ahead of it, whichever is longest."""
        now = self._clock()
        decode = 0.0
        if len(self._running) >= self._slots or self._queue:
            left = sum(max(0.0, cost - (now - start)) for start, cost in self._running.values())
            decode = (left + sum(w.cost_s for w in self._queue)) / self._slots
        ahead = self._embedding + len(self._running) + len(self._queue)
        embed = ahead * self.costs.embed_seconds_per_photo / self._streams
        probes = self._probing * self.costs.probe_seconds
        wait = max(probes, decode, embed)
        if self._on_wait is not None:
            self._on_wait(wait)
        return wait

    def check_arrival(self) -> None:
        """Refuse a request before its body is read when the queue is already over budget."""
        wait = self.predicted_wait()
        if wait > self.budget_s:
            raise OverloadedError(wait, "arrival")

    @contextlib.contextmanager
    def probing(self) -> Iterator[None]:
        """Count a photo whose header is being read, and learn how long that takes."""
        self._probing += 1
        started = self._clock()
        try:
            yield
        finally:
            self._probing -= 1
            self.costs.observe_probe(self._clock() - started)

    @contextlib.asynccontextmanager
    async def decoding(self, probe: ImageProbe, arrived: float) -> AsyncIterator[Admitted]:
        """Hold a decode slot for the photo `probe` describes, in hand since `arrived`, or
        raise OverloadedError when it could not start within the budget; the decode time
        teaches the cost model."""
        cost = self.costs.decode_seconds(probe)
        waited = self._clock() - arrived
        wait = waited + self.predicted_wait()
        idle = not self._running and not self._queue
        # It must start within the budget and, unless it has the service to itself, be done
        # by its answer deadline. (Alone it always runs: else a rate learned in a storm would
        # shed such photos forever, and never learn again.)
        answer_by = arrived + ANSWER_BUDGETS * self.budget_s
        if wait > self.budget_s or (not idle and wait + cost > answer_by - arrived):
            raise OverloadedError(wait + cost, "admission")
        if len(self._running) < self._slots and not self._queue:
            slot = self._reserve(cost)
        else:
            slot = await self._wait_turn(_Waiter(cost, arrived + self.budget_s, _future()))
        started = self._clock()
        try:
            yield Admitted(answer_by=answer_by)
        finally:
            self.costs.observe_decode(probe, self._clock() - started)
            self._release(slot)

    @contextlib.contextmanager
    def embedding(self) -> Iterator[None]:
        """Count a decoded photo as waiting for (or in) an embedding pass."""
        self._embedding += 1
        try:
            yield
        finally:
            self._embedding -= 1

    def _reserve(self, cost: float) -> int:
        self._next_id += 1
        self._running[self._next_id] = (self._clock(), cost)
        return self._next_id

    async def _wait_turn(self, waiter: _Waiter) -> int:
        self._queue.append(waiter)
        try:
            # Shielded: on a timeout the future must stay readable, to learn whether a slot was
            # granted in the same instant.
            async with asyncio.timeout(max(0.0, waiter.deadline - self._clock())):
                return await asyncio.shield(waiter.granted)
        except (asyncio.CancelledError, TimeoutError) as exc:
            if waiter in self._queue:
                self._queue.remove(waiter)
            granted = waiter.granted
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                # Granted in the same instant the caller gave up: pass the slot on.
                self._release(granted.result())
            elif not granted.done():
                granted.cancel()
            if isinstance(exc, TimeoutError):
                # Its turn did not come within the budget: shed at its deadline, not later.
                raise OverloadedError(self.predicted_wait(), "queue") from None
            raise

    def _release(self, slot: int) -> None:
        self._running.pop(slot, None)
        while self._queue and len(self._running) < self._slots:
            waiter = self._queue.popleft()
            if waiter.granted.done():
                continue
            if self._clock() > waiter.deadline:
                waiter.granted.set_exception(OverloadedError(self.predicted_wait(), "queue"))
                continue
            # Reserved now, so that no newcomer takes the slot before the waiter resumes.
            waiter.granted.set_result(self._reserve(waiter.cost_s))


def _future() -> asyncio.Future[int]:
    return asyncio.get_running_loop().create_future()
