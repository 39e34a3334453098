"""Admission control: photos priced by their pixels, shed when they could not start in time."""

from __future__ import annotations

import asyncio
import time

import pytest

from models.images import ImageProbe
from query.admission import FIT_SECONDS, Admission
from query.errors import OverloadedError

RATE = 1e-8  # seconds per pixel, set on the model so that costs are exact


def png(seconds: float) -> ImageProbe:
    """A photo whose decode is predicted to take `seconds`."""
    pixels = round((seconds - FIT_SECONDS) / RATE)
    return ImageProbe(format="PNG", width=pixels, height=1, decoded_pixels=pixels)


def admission(budget_s: float, slots: int = 1) -> Admission:
    a = Admission(budget_s, decode_slots=slots, embed_streams=1)
    a.costs.seconds_per_pixel["PNG"] = RATE
    a.costs.embed_seconds_per_photo = 0.0
    return a


async def hold(a: Admission, probe: ImageProbe, release: asyncio.Event) -> None:
    async with a.decoding(probe, time.monotonic()):
        await release.wait()


async def test_an_idle_service_admits_at_once() -> None:
    a = admission(0.5)
    assert a.predicted_wait() == 0
    a.check_arrival()
    async with a.decoding(png(3.0), time.monotonic()) as admitted:
        # However costly, the first photo starts: it waits for nobody.
        assert admitted.answer_by - time.monotonic() == pytest.approx(0.75, abs=0.05)
        assert a.busy
    assert not a.busy


async def test_photos_queue_while_they_fit_in_the_budget_and_are_shed_beyond() -> None:
    a = admission(0.5)
    release = asyncio.Event()
    first = asyncio.create_task(hold(a, png(0.3), release))
    await asyncio.sleep(0)
    assert a.predicted_wait() == pytest.approx(0.3, abs=0.02)
    # 0.3 s of decoding ahead fits the budget: it queues.
    second = asyncio.create_task(hold(a, png(0.3), release))
    await asyncio.sleep(0)
    # 0.6 s ahead does not: refused at once, before the body of a request would be read too.
    with pytest.raises(OverloadedError) as refused:
        async with a.decoding(png(0.01), time.monotonic()):
            pass
    assert refused.value.stage == "admission"
    assert refused.value.status == 503 and refused.value.code == "overloaded"
    assert refused.value.headers == {"Retry-After": "1"}
    with pytest.raises(OverloadedError) as early:
        a.check_arrival()
    assert early.value.stage == "arrival"
    release.set()
    await asyncio.gather(first, second)
    assert not a.busy


async def test_the_cost_of_a_photo_is_its_pixels() -> None:
    a = admission(0.5)
    release = asyncio.Event()
    running = asyncio.create_task(hold(a, png(0.45), release))
    await asyncio.sleep(0)
    small = ImageProbe(format="JPEG", width=640, height=480, decoded_pixels=320 * 240)
    big = ImageProbe(format="WEBP", width=6300, height=6300, decoded_pixels=6300 * 6300)
    assert a.costs.decode_seconds(big) > 50 * a.costs.decode_seconds(small)
    # Behind 0.45 s of decoding, a small photo queues; a big one would start in time but not be
    # done within twice the budget, so it is refused.
    queued = asyncio.create_task(hold(a, small, release))
    await asyncio.sleep(0)
    with pytest.raises(OverloadedError) as refused:
        async with a.decoding(big, time.monotonic()):
            pass
    assert refused.value.stage == "admission"
    release.set()
    await asyncio.gather(running, queued)


async def test_a_photo_whose_turn_does_not_come_in_time_is_shed_at_its_deadline() -> None:
    a = admission(0.2)
    release = asyncio.Event()
    # Predicted at 0.1 s, the running decode really takes until released (2 s from now).
    running = asyncio.create_task(hold(a, png(0.1), release))
    await asyncio.sleep(0)
    started = time.monotonic()
    with pytest.raises(OverloadedError) as late:
        async with a.decoding(png(0.05), time.monotonic()):
            pass
    waited = time.monotonic() - started
    assert late.value.stage == "queue"
    assert 0.15 < waited < 1.0
    release.set()
    await running
    assert not a.busy


async def test_a_waiter_that_gives_up_passes_its_turn_on() -> None:
    a = admission(5.0)
    release = asyncio.Event()
    running = asyncio.create_task(hold(a, png(0.1), release))
    await asyncio.sleep(0)
    quitter = asyncio.create_task(hold(a, png(0.1), asyncio.Event()))
    patient_release = asyncio.Event()
    patient = asyncio.create_task(hold(a, png(0.1), patient_release))
    await asyncio.sleep(0)
    quitter.cancel()
    release.set()
    await running
    patient_release.set()
    await asyncio.wait_for(patient, 2)
    with pytest.raises(asyncio.CancelledError):
        await quitter
    assert not a.busy


async def test_decodes_teach_the_rate_and_embeds_count_as_waiting() -> None:
    a = admission(0.5)
    probe = png(0.01)
    before = a.costs.seconds_per_pixel["PNG"]
    async with a.decoding(probe, time.monotonic()):
        await asyncio.sleep(0.2)
    # Twenty times slower than predicted: the rate moves a fifth of the way there.
    assert a.costs.seconds_per_pixel["PNG"] > before * 3
    a.costs.observe_pass(4, 0.4)
    assert a.costs.embed_seconds_per_photo == pytest.approx(0.02)
    for _ in range(30):
        a._embedding += 1  # photos decoded, waiting for the embedder
    assert a.predicted_wait() == pytest.approx(30 * 0.02)
    with pytest.raises(OverloadedError):
        a.check_arrival()


async def test_header_probes_in_flight_count_as_waiting() -> None:
    a = admission(0.5)
    a.costs.probe_seconds = 0.01
    with a.probing(), a.probing(), a.probing():
        assert a.predicted_wait() == pytest.approx(0.03)
        assert a.busy
    assert a.predicted_wait() == 0


async def test_time_since_the_photo_arrived_counts_against_the_budget() -> None:
    a = admission(0.5)
    release = asyncio.Event()
    running = asyncio.create_task(hold(a, png(0.1), release))
    await asyncio.sleep(0)
    # In hand for 0.45 s already (its probe queued): 0.1 s more of waiting is over the budget.
    with pytest.raises(OverloadedError):
        async with a.decoding(png(0.01), time.monotonic() - 0.45):
            pass
    release.set()
    await running
