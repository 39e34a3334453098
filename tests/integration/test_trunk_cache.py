"""The trunk cache streams: photos arrive in chunks, and spilled to a file it serves the same
inputs as in memory, mirrored or not, frozen trunk or raw pixels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.network import load_model
from models.training.data import TrunkCache
from tests.photos import PHOTO_FILES, photo

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("start", [0, 14])
def test_a_spilled_cache_serves_what_the_memory_one_does(tmp_path: Path, start: int) -> None:
    net = load_model()
    images = [photo(name) for name in list(PHOTO_FILES)[:5]]
    chunks = [images[:2], images[2:4], images[4:]]
    device = torch.device("cpu")
    memory = TrunkCache(net, iter(chunks), len(images), start, device)
    spilled = TrunkCache(net, iter(chunks), len(images), start, device, spill=tmp_path)
    assert len(list(tmp_path.iterdir())) == 0  # the file is unlinked from the start
    indices = torch.tensor([4, 0, 2, 2])
    mirrored = torch.tensor([True, False, True, False])
    for flags in (None, mirrored):
        a, b = memory.batch(indices, flags), spilled.batch(indices, flags)
        assert torch.equal(a, b)
    # The mirrored view of a photo differs from the plain one.
    assert not torch.equal(spilled.batch(indices[:1], mirrored[:1]), spilled.batch(indices[:1]))
    spilled.close()
    with pytest.raises(ValueError, match="announced"):
        TrunkCache(net, iter(chunks), len(images) + 1, start, device)
