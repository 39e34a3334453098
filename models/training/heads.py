"""Cosine classifiers on the embedding: one per visual attribute, plus the item's identity."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as nnf


class CosineHead(nn.Module):
    """Logits are scaled cosines between the unit embedding and each class's unit weight, so what
    the head learns is an angle, the very quantity search ranks by."""

    def __init__(self, dim: int, classes: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.scale = scale

    def forward(self, unit: torch.Tensor) -> torch.Tensor:
        return self.scale * unit @ nnf.normalize(self.weight, dim=1).T


class MultitaskHeads(nn.Module):
    """One head per task (task name -> number of classes), all reading the same embedding."""

    def __init__(self, dim: int, tasks: Mapping[str, int], scale: float = 16.0) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({name: CosineHead(dim, n, scale) for name, n in tasks.items()})

    def forward(self, unit: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(unit) for name, head in self.heads.items()}
