"""`lookalike train`: multitask fine-tuning with a retrieval validation after every epoch.

The ImageNet backbone gets a projection and cosine heads for category, colour, shape, material
and the item's identity, and learns from sellers' product shots and buyers' photos of the training
items together, so a cluttered buyer photo and a clean product shot of one item land close. The
embedding search uses is the projection's output, before the heads. Blocks before
`train_from_block` stay frozen and their output is computed once (TrunkCache): on a 2-core CPU
that is what makes an epoch take a minute; on a GPU `train_from_block=0` trains everything.
BatchNorm statistics stay frozen (small batches would only add noise to ImageNet's).
"""

from __future__ import annotations

import copy
import json
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as nnf
from tqdm import tqdm

from models.dataset.dataset import ITEM_TASK
from models.embedder import resolve_device
from models.evalset.catalog import EvalCatalog
from models.network import EmbeddingNet, export_checkpoint, load_model
from models.training.data import MISSING, TrunkCache
from models.training.heads import MultitaskHeads
from models.training.source import CatalogSource, TrainingSource


def _log() -> Any:
    # Looked up at each use, not cached at import: a logger bound once keeps the stderr of that
    # moment, and the command line reconfigures logging at every start.
    return structlog.get_logger("lookalike.train")


STATE_FILE = "state.pt"
LOG_FILE = "train.jsonl"
MODEL_FILE = "model.pt"


class TrainConfig(BaseModel):
    """One training run; `data` (a manifest) or the catalog fields say what it learns from."""

    model_config = ConfigDict(frozen=True)

    out_dir: Path = Path("data/train")
    model_name: str = "efficientnet-lite0"
    device: str = "auto"
    epochs: int = Field(default=8, ge=1)
    batch_size: int = Field(default=64, ge=2)
    # Heads and projection learn from scratch; the backbone only adjusts.
    lr: float = Field(default=3e-3, gt=0)
    backbone_lr: float = Field(default=3e-4, ge=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    projection_dim: int = Field(default=256, ge=8)
    # 16 blocks in Lite0: 11 trains the last two stages (7x7 maps) plus the head convolution.
    # Lite1 and Lite2 have 21 blocks: 15 trains their last two stages.
    train_from_block: int = Field(default=11, ge=0, le=21)
    # Loss weight of the item-identity task; the attribute tasks weigh 1 each.
    item_weight: float = Field(default=1.0, ge=0)
    scale: float = Field(default=16.0, gt=0)
    catalog_items: int = Field(default=360, ge=10)
    catalog_seed: int = 11
    # A dataset manifest (train --data); None: the built-in catalog above.
    data: str | None = None
    seed: int = 0
    workers: int | None = Field(default=None, ge=1)


@dataclass
class TrainResult:
    model_id: str
    checkpoint: Path
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)


def _trainable(net: EmbeddingNet, start: int) -> list[nn.Parameter]:
    backbone = net.backbone
    modules: list[nn.Module] = [*backbone._blocks[start:], backbone._conv_head, backbone._bn1]
    if start == 0:
        modules += [backbone._conv_stem, backbone._bn0]
    return [p for m in modules for p in m.parameters()]


def _train_mode(net: EmbeddingNet) -> None:
    net.train()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def _embed(net: EmbeddingNet, x: torch.Tensor, start: int) -> torch.Tensor:
    backbone = net.backbone
    features = backbone.features(x) if start == 0 else backbone.features_from(x, start)
    return net.embed_features(features)


@contextmanager
def _autocast(device: torch.device) -> Iterator[None]:
    # bfloat16 on a GPU roughly doubles the rate; the CPU stays in float32 (bf16 is slower there).
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _selection_score(val: dict[str, Any]) -> float:
    """What picks the best epoch: buyer photo -> listing recall@10 + mAP, or listing -> listing
    where the validation split has no buyer photo."""
    scores = val["buyer_to_listing"]
    if scores.get("queries", 1) == 0:
        scores = val["listing_to_listing"]
    return float(scores["recall@10"] + scores["map"])


class _JsonLog:
    """train.jsonl (one event per line), plus TensorBoard scalars when tensorboard is installed."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOG_FILE
        self._tb: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:
            self._tb = None

    def write(self, event: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")
        if self._tb is not None and "epoch" in event:
            for name, value in _flat(event).items():
                self._tb.add_scalar(name, value, event["epoch"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _flat(event: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in event.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


class Trainer:
    """Holds the network, heads, optimiser and caches of one run; `run()` trains and exports."""

    def __init__(
        self,
        config: TrainConfig,
        source: EvalCatalog | TrainingSource,
        progress: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        metadata: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        self.config = config
        # Exported with the checkpoint besides the run's own (the tracking run's id).
        self.extra_metadata = dict(metadata or {})
        self.source: TrainingSource = (
            CatalogSource(source, progress) if isinstance(source, EvalCatalog) else source
        )
        self.progress = progress
        self.on_epoch = on_epoch
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        base = load_model(config.model_name)
        blocks = len(base.backbone._blocks)
        if config.train_from_block > blocks:
            raise ValueError(
                f"--train-from-block {config.train_from_block}: {config.model_name} has {blocks} "
                "blocks"
            )
        self.net = EmbeddingNet(
            config.model_name, base.backbone, f"{config.model_name}-training", config.projection_dim
        ).to(self.device)
        tasks = dict(self.source.tasks)
        if config.item_weight == 0:
            tasks.pop(ITEM_TASK, None)
        self.heads = MultitaskHeads(self.net.dim, tasks, config.scale).to(self.device)
        head_params = list(self.heads.parameters())
        assert self.net.projection is not None
        head_params += list(self.net.projection.parameters())
        groups: list[dict[str, Any]] = [{"params": head_params, "lr": config.lr}]
        if config.backbone_lr > 0:
            groups.append(
                {"params": _trainable(self.net, config.train_from_block), "lr": config.backbone_lr}
            )
        for p in self.net.backbone.parameters():
            p.requires_grad_(False)
        for g in groups[1:]:
            for p in g["params"]:
                p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        self.train_count = len(self.source.train_keys)
        self.steps_per_epoch = math.ceil(self.train_count / config.batch_size)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=[g["lr"] for g in groups],
            total_steps=config.epochs * self.steps_per_epoch,
            pct_start=0.15,
        )
        self.epoch = 0
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        self.history: list[dict[str, Any]] = []
        self._train_cache: TrunkCache | None = None
        # Seconds and photos of each split's trunk pass, reported with epoch 0.
        self._trunk_passes: dict[str, dict[str, float]] = {}
        self._val_cache: TrunkCache | None = None

    # -- state ---------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "epoch": self.epoch,
            "net": self.net.state_dict(),
            "heads": self.heads.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best": self.best,
            "history": self.history,
            "rng": torch.get_rng_state(),
        }

    def save(self) -> None:
        path = self.config.out_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)  # a crash mid-save leaves the previous epoch's state whole

    def resume(self) -> bool:
        """Continue from out_dir's state.pt, if any; a state of another configuration is refused."""
        path = self.config.out_dir / STATE_FILE
        if not path.exists():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = dict(state["config"])
        mine = self.config.model_dump(mode="json")
        # Only more epochs may be asked of a resumed run; anything else is another run.
        differs = {
            k for k in mine if k not in ("epochs", "device", "workers") and saved[k] != mine[k]
        }
        if differs:
            raise ValueError(f"{path} was trained with other settings: {sorted(differs)}")
        self.net.load_state_dict(state["net"])
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        if saved["epochs"] == mine["epochs"]:
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            self.scheduler.last_epoch = state["epoch"] * self.steps_per_epoch
        self.epoch = state["epoch"]
        self.best = state["best"]
        self.history = state["history"]
        torch.set_rng_state(state["rng"])
        return True

    # -- data ----------------------------------------------------------------------------------

    def _caches(self) -> tuple[TrunkCache, TrunkCache]:
        if self._train_cache is None or self._val_cache is None:
            self._train_cache = self._cache(self.source.train_keys, "train", mirrors=True)
            self._val_cache = self._cache(self.source.val_keys, "val", mirrors=False)
        return self._train_cache, self._val_cache

    def _cache(self, keys: Sequence[str], split: str, mirrors: bool) -> TrunkCache:
        pre = self.net.preprocessing
        started = time.perf_counter()
        cache = TrunkCache(
            self.net,
            self.source.images(keys, pre, self.config.workers),
            len(keys),
            self.config.train_from_block,
            self.device,
            mirrors=mirrors,
            progress=self.progress,
            desc=f"trunk ({split})",
            spill=self.config.out_dir,
        )
        seconds = time.perf_counter() - started
        self._trunk_passes[split] = {
            "photos": len(keys),
            "seconds": round(seconds, 2),
            "photos_per_s": round(len(keys) / max(seconds, 1e-9), 1),
        }
        return cache

    def _close_caches(self) -> None:
        for cache in (self._train_cache, self._val_cache):
            if cache is not None:
                cache.close()
        self._train_cache = self._val_cache = None

    # -- loop ----------------------------------------------------------------------------------

    def validate(self) -> dict[str, Any]:
        _, cache = self._caches()
        self.net.eval()
        out: list[np.ndarray] = []
        with torch.inference_mode(), _autocast(self.device):
            for s in range(0, cache.size, 128):
                idx = torch.arange(s, min(s + 128, cache.size))
                z = _embed(self.net, cache.batch(idx), self.config.train_from_block)
                out.append(z.float().cpu().numpy())
        vectors = dict(zip(self.source.val_keys, np.concatenate(out), strict=True))
        return self.source.validate(self.net.model_id, vectors)

    def _train_epoch(self) -> dict[str, float]:
        cache, _ = self._caches()
        _train_mode(self.net)
        self.heads.train()
        labels = {name: t.to(self.device) for name, t in self.source.labels.items()}
        order = torch.randperm(cache.size)
        mirrored = torch.rand(cache.size) < 0.5
        totals: dict[str, float] = {}
        seen = 0
        start = self.config.train_from_block
        bar = tqdm(
            total=cache.size,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            unit="photo",
            file=sys.stderr,
            disable=not self.progress,
        )
        with bar:
            for s in range(0, cache.size, self.config.batch_size):
                idx = order[s : s + self.config.batch_size]
                if len(idx) < 2:
                    continue
                with _autocast(self.device):
                    z = _embed(self.net, cache.batch(idx, mirrored[idx]), start)
                    logits = self.heads(z.float())
                losses = {}
                for name, out in logits.items():
                    target = labels[name][idx.to(self.device)]
                    # A photo without a value for this task is left out of its loss.
                    if bool((target != MISSING).any()):
                        losses[name] = nnf.cross_entropy(out.float(), target, ignore_index=MISSING)
                loss = sum(
                    (self.config.item_weight if name == ITEM_TASK else 1.0) * value
                    for name, value in losses.items()
                )
                assert isinstance(loss, torch.Tensor)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                self.optimizer.step()
                self.scheduler.step()
                n = len(idx)
                seen += n
                for name, value in [("loss", loss), *losses.items()]:
                    totals[name] = totals.get(name, 0.0) + float(value.detach()) * n
                bar.update(n)
                bar.set_postfix(loss=f"{totals['loss'] / seen:.3f}")
        return {name: total / max(seen, 1) for name, total in totals.items()}

    def _record(self, event: dict[str, Any], sink: _JsonLog) -> None:
        self.history.append(event)
        sink.write(event)
        _log().info("train_epoch", **_flat(event))
        if self.on_epoch is not None:
            self.on_epoch(event)

    def run(self, resume: bool = False) -> TrainResult:
        out_dir = self.config.out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.resume() if resume else False
        if not resume:
            (out_dir / LOG_FILE).unlink(missing_ok=True)
        sink = _JsonLog(out_dir)
        try:
            if not resumed:
                # Epoch 0: the untrained projection over ImageNet features, the baseline to beat.
                val = self.validate()
                self._record({"epoch": 0, "val": val, "trunk": dict(self._trunk_passes)}, sink)
            while self.epoch < self.config.epochs:
                started = time.perf_counter()
                losses = self._train_epoch()
                seconds = time.perf_counter() - started
                self.epoch += 1
                val = self.validate()
                event = {
                    "epoch": self.epoch,
                    "loss": losses,
                    "train_photos": self.train_count,
                    "seconds": round(seconds, 2),
                    "images_per_s": round(self.train_count / seconds, 1),
                    "peak_rss_mb": _peak_rss_mb(),
                    "device": self.device.type,
                    "val": val,
                }
                score = _selection_score(val)
                if self.best is None or score > self.best[0]:
                    self.best = (score, self.epoch, copy.deepcopy(self.net.state_dict()))
                self._record(event, sink)
                self.save()
            return self._export()
        finally:
            self._close_caches()
            sink.close()

    def _export(self) -> TrainResult:
        assert self.best is not None
        _, best_epoch, weights = self.best
        net = copy.deepcopy(self.net)
        net.load_state_dict(weights)
        best = self.history[[e["epoch"] for e in self.history].index(best_epoch)]["val"]
        metadata: dict[str, str | int | float | bool] = {
            "epochs": self.config.epochs,
            "best_epoch": best_epoch,
            **self.source.metadata(),
            **self.extra_metadata,
            "train_from_block": self.config.train_from_block,
            "val_buyer_recall@10": best["buyer_to_listing"]["recall@10"],
            "val_listing_recall@10": best["listing_to_listing"]["recall@10"],
            # The validation curve, for the eval report's training plot.
            "val_curve": json.dumps(
                [
                    {
                        "epoch": e["epoch"],
                        "buyer_recall@10": e["val"]["buyer_to_listing"]["recall@10"],
                        "listing_recall@10": e["val"]["listing_to_listing"]["recall@10"],
                    }
                    for e in self.history
                ]
            ),
        }
        path = self.config.out_dir / MODEL_FILE
        model_id = export_checkpoint(net.to("cpu").float(), path, metadata)
        _log().info(
            "train_exported", checkpoint=str(path), model_id=model_id, best_epoch=best_epoch
        )
        return TrainResult(model_id, path, best_epoch, list(self.history))
