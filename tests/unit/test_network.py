"""EfficientNet-Lite network, its preprocessing, model ids and checkpoint export, on real photos."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.network import (
    VARIANTS,
    CheckpointError,
    EfficientNetLite,
    EmbeddingNet,
    Preprocessing,
    SameConv2d,
    export_checkpoint,
    load_model,
    pretrained_weights_path,
)
from tests.photos import PHOTO_FILES, photo, rephotographed

pytestmark = pytest.mark.slow

# ImageNet classes each bundled photo may sensibly be given (checked by eye against the photos).
SENSIBLE_CLASSES: dict[str, dict[int, str]] = {
    "chelsea": {
        281: "tabby",
        282: "tiger cat",
        283: "Persian",
        284: "Siamese",
        285: "Egyptian cat",
    },
    "coffee": {504: "coffee mug", 967: "espresso", 968: "cup"},
    "motorcycle": {665: "moped", 670: "motor scooter"},
    "rocket": {657: "missile", 744: "projectile"},
    "flower": {985: "daisy"},
    "china": {442: "bell cote", 663: "monastery", 698: "palace"},
}


@pytest.fixture(scope="module")
def net() -> EmbeddingNet:
    return load_model()


def embed(net: EmbeddingNet, images: list[Image.Image]) -> torch.Tensor:
    with torch.inference_mode():
        out: torch.Tensor = net(net.preprocessing.to_tensor(images))
    return out


def test_wheel_checkpoint_loads_strictly_with_lite0_shapes() -> None:
    state = torch.load(pretrained_weights_path("efficientnet-lite0"), weights_only=True)
    model = EfficientNetLite(VARIANTS["efficientnet-lite0"])
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys
    assert not result.unexpected_keys
    assert len(model._blocks) == 16
    # 4.65M parameters, as published for EfficientNet-Lite0.
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 4.65
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    assert all(m.eps == 1e-3 and m.momentum == 0.01 for m in norms)


def test_stride_two_convolutions_pad_like_tensorflow_same() -> None:
    conv = SameConv2d(1, 1, 3, stride=2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        out = conv(torch.ones(1, 1, 4, 4))
    # TF SAME pads an even input only at the bottom/right: the first window sees 9 real pixels
    # (symmetric padding would give 4), the last one 2x2.
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]
    with torch.no_grad():
        assert conv(torch.ones(1, 1, 225, 225)).shape[-2:] == (113, 113)


@pytest.mark.parametrize("name", sorted(SENSIBLE_CLASSES))
def test_bundled_photos_get_a_sensible_imagenet_class(net: EmbeddingNet, name: str) -> None:
    with torch.inference_mode():
        logits = net.logits(net.preprocessing.to_tensor([photo(name)]))
    top1 = int(logits.argmax(dim=1).item())
    assert top1 in SENSIBLE_CLASSES[name], f"{name} classified as {top1}"


def test_cat_is_confidently_a_cat(net: EmbeddingNet) -> None:
    with torch.inference_mode():
        probs = net.logits(net.preprocessing.to_tensor([photo("chelsea")])).softmax(dim=1)[0]
    # The five domestic-cat classes together hold nearly all of the probability mass.
    assert float(probs[281:286].sum()) > 0.8


@pytest.mark.parametrize("angle", [4.0, 0.0])
def test_rephotographed_photo_finds_its_original(net: EmbeddingNet, angle: float) -> None:
    names = list(PHOTO_FILES)
    originals = embed(net, [photo(n) for n in names])
    queries = embed(
        net,
        [Image.open(io.BytesIO(rephotographed(n, angle=angle))).convert("RGB") for n in names],
    )
    sims = queries @ originals.T
    for i, name in enumerate(names):
        own = float(sims[i, i])
        others = torch.cat([sims[i, :i], sims[i, i + 1 :]])
        assert own - float(others.max()) >= 0.3, f"{name}: own {own:.2f}, next {others.max():.2f}"


def test_embeddings_are_l2_normalised_float32(net: EmbeddingNet) -> None:
    out = embed(net, [photo("coffee"), photo("astronaut")])
    assert out.shape == (2, 1280)
    assert out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    assert net.dim == 1280


def test_model_id_is_the_weights_digest_and_stable(net: EmbeddingNet) -> None:
    path = pretrained_weights_path("efficientnet-lite0")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert net.model_id == f"efficientnet-lite0-{digest[:8]}"
    assert load_model().model_id == net.model_id
    # It becomes part of a Qdrant collection name.
    assert re.fullmatch(r"[a-z0-9_-]+", net.model_id)


def _with_projection(net: EmbeddingNet, dim: int, seed: int) -> EmbeddingNet:
    torch.manual_seed(seed)
    projected = EmbeddingNet(net.name, net.backbone, net.model_id, projection_dim=dim)
    return projected.eval()


def test_exported_checkpoint_round_trips_with_its_own_id(net: EmbeddingNet, tmp_path: Path) -> None:
    projected = _with_projection(net, 128, seed=1)
    model_id = export_checkpoint(projected, tmp_path / "a.pt", {"epochs": 3, "data": "unit"})
    loaded = load_model("efficientnet-lite0", tmp_path / "a.pt")
    assert loaded.model_id == model_id
    assert model_id != net.model_id
    assert re.fullmatch(r"[a-z0-9_-]+", model_id)
    assert loaded.dim == 128
    images = [photo("chelsea"), photo("rocket")]
    want, got = embed(projected, images), embed(loaded, images)
    assert got.shape == (2, 128)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(got.norm(dim=1), torch.ones(2), atol=1e-5)
    assert load_model("efficientnet-lite0", tmp_path / "a.pt").model_id == model_id


def test_model_id_differs_for_other_weights_or_projection(
    net: EmbeddingNet, tmp_path: Path
) -> None:
    ids = {
        export_checkpoint(net, tmp_path / "plain.pt"),
        export_checkpoint(_with_projection(net, 128, seed=1), tmp_path / "p128a.pt"),
        export_checkpoint(_with_projection(net, 128, seed=2), tmp_path / "p128b.pt"),
        export_checkpoint(_with_projection(net, 64, seed=1), tmp_path / "p64.pt"),
    }
    assert len(ids) == 4
    assert net.model_id not in ids


def test_a_checkpoint_brings_its_own_variant_and_preprocessing(
    net: EmbeddingNet, tmp_path: Path
) -> None:
    trained = _with_projection(net, 32, seed=3)
    trained.preprocessing = dataclasses.replace(net.preprocessing, size=200, crop_padding=16)
    model_id = export_checkpoint(trained, tmp_path / "lite0.pt")
    # Whatever variant the settings name, the checkpoint says what it is and what it was fed.
    loaded = load_model("efficientnet-lite1", tmp_path / "lite0.pt")
    assert (loaded.name, loaded.model_id) == ("efficientnet-lite0", model_id)
    assert loaded.preprocessing == trained.preprocessing
    # Exports from before the top-level field: the JSON in their metadata, else the variant's.
    payload = torch.load(tmp_path / "lite0.pt", weights_only=True)
    stored = payload.pop("preprocessing")
    torch.save({**payload, "metadata": {"preprocessing": json.dumps(stored)}}, tmp_path / "m.pt")
    assert load_model(checkpoint=tmp_path / "m.pt").preprocessing == trained.preprocessing
    torch.save(payload, tmp_path / "old.pt")
    assert load_model(checkpoint=tmp_path / "old.pt").preprocessing == net.preprocessing
    torch.save({**payload, "name": "efficientnet-b9"}, tmp_path / "b9.pt")
    with pytest.raises(CheckpointError, match="unknown network"):
        load_model(checkpoint=tmp_path / "b9.pt")


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_model("efficientnet-lite0", tmp_path / "junk.pt")
    # The raw ImageNet state dict is a torch file but not an export.
    with pytest.raises(CheckpointError):
        load_model("efficientnet-lite0", pretrained_weights_path("efficientnet-lite0"))


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        load_model("efficientnet-b9")


@pytest.mark.parametrize(
    ("name", "blocks", "last_channels", "params_m", "size"),
    [
        # Block counts and parameter totals as published for the TF Lite models.
        ("efficientnet-lite1", 21, 320, 5.42, 240),
        ("efficientnet-lite2", 21, 352, 6.09, 260),
    ],
)
def test_variant_table_builds_larger_lites(
    name: str, blocks: int, last_channels: int, params_m: float, size: int
) -> None:
    model = EfficientNetLite(VARIANTS[name]).eval()
    assert len(model._blocks) == blocks
    assert model._conv_stem.out_channels == 32
    assert model._conv_head.in_channels == last_channels
    assert model._conv_head.out_channels == 1280
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == params_m
    assert VARIANTS[name].preprocessing().size == size
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, size, size)).shape == (1, 1000)


def test_preprocessing_resizes_shorter_side_and_centre_crops() -> None:
    pre = Preprocessing(size=224, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
    # Three vertical bands: scaled to height 224 (x1.12), the centre crop is x in 224..448, which
    # lies inside the middle band (180..420 -> 202..470) with room for resampling blur.
    bands = np.zeros((200, 600, 3), dtype=np.uint8)
    bands[:, :180] = (255, 0, 0)
    bands[:, 180:420] = (0, 255, 0)
    bands[:, 420:] = (0, 0, 255)
    tall = Image.new("L", (50, 90), color=255)
    x = pre.to_tensor([Image.fromarray(bands), tall])
    assert x.shape == (2, 3, 224, 224)
    assert x.dtype == torch.float32
    green = torch.tensor([-127 / 128, 128 / 128, -127 / 128]).view(3, 1, 1)
    assert torch.allclose(x[0], green.expand(3, 224, 224), atol=1e-6)
    # A greyscale image becomes three equal channels.
    assert torch.allclose(x[1], torch.full((3, 224, 224), 128 / 128), atol=1e-6)
    assert pre.to_tensor([]).shape == (0, 3, 224, 224)
