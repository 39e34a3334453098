"""How a collection is laid out: quantization, what lives on disk, shards and replicas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.settings import StoreSettings

Quantization = Literal["none", "int8", "binary"]


@dataclass(frozen=True)
class StoreLayout:
    """The layout settings both backends translate into their own engine's configuration.

    With quantization, searches traverse compressed vectors (int8: a quarter of float32; binary:
    a thirty-second) and rescore the best `oversampling` x k candidates with the originals, which
    stay on disk with `on_disk`. Shards and replicas exist only on a Qdrant server."""

    quantization: Quantization = "none"
    oversampling: float = 2.0
    on_disk: bool = False
    # Search-time: HNSW candidates per search (None: the engine's), ACORN for filtered searches.
    hnsw_ef: int | None = None
    acorn: bool = False
    shard_number: int = 1
    replication_factor: int = 1
    write_consistency_factor: int = 1

    @classmethod
    def from_settings(cls, s: StoreSettings) -> StoreLayout:
        return cls(
            quantization=s.quantization,
            oversampling=s.quantization_oversampling,
            on_disk=s.store_on_disk,
            hnsw_ef=s.hnsw_ef,
            acorn=s.acorn,
            shard_number=s.shard_number,
            replication_factor=s.replication_factor,
            write_consistency_factor=s.write_consistency_factor,
        )

    @property
    def quantized(self) -> bool:
        return self.quantization != "none"

    @property
    def default_search(self) -> bool:
        """Searches need no parameters: the engine's defaults are these settings."""
        return not self.quantized and self.hnsw_ef is None and not self.acorn
