"""Value types and the interface shared by every vector-store backend."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# Fixed namespace so a listing id maps to the same point id in every process, forever.
POINT_NAMESPACE = uuid.UUID("9b0c3f4e-6a51-4d7e-9a0e-2c1f5b7d8e10")

Vector = list[float]


def point_id(listing_id: str) -> str:
    """The point id of a listing: UUID5 of its id, so redelivered writes land on one point."""
    return str(uuid.uuid5(POINT_NAMESPACE, listing_id))


def category_prefixes(category: str) -> list[str]:
    """Every prefix of a slash-separated category, so a prefix filter is one keyword match."""
    parts = [p for p in category.split("/") if p]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class StoreError(Exception):
    """The store refused or failed an operation."""


class DimensionMismatch(StoreError):  # noqa: N818
    """The collection's vector size differs from the model's embedding size."""


class ListingNotFound(StoreError):  # noqa: N818
    """The listing is not in the collection (similar() of an unknown id)."""


@dataclass(frozen=True)
class ListingPoint:
    """One listing's write: its image embeddings and the payload to render and filter."""

    listing_id: str
    vectors: Sequence[Vector]
    # Rendering/filtering fields: title, category, price (float), price_amount (str), currency,
    # shop_id, state, image_urls, image_hashes, version, model_id, ...
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchFilters:
    """Narrowing applied inside the vector search, never after it."""

    category_prefix: str | None = None
    price_min: float | None = None
    price_max: float | None = None
    shop_id: str | None = None
    exclude_listing_ids: Sequence[str] = ()
    # Only listings for sale right now are results.
    only_active: bool = True


@dataclass(frozen=True)
class Hit:
    """One search result: a listing, its MaxSim score and which of its photos matched best."""

    listing_id: str
    score: float
    payload: dict[str, Any]
    matched_image_index: int = 0


@dataclass(frozen=True)
class StoredListing:
    """A listing as stored: payload, and its vectors when asked for."""

    listing_id: str
    payload: dict[str, Any]
    vectors: list[Vector] = field(default_factory=list)


class VectorStore(ABC):
    """One collection of listings behind an alias. Every method is safe to call from the event loop:
    blocking engines run their calls on a worker thread."""

    @property
    @abstractmethod
    def collection_name(self) -> str:
        """The physical collection this store reads and writes."""

    @abstractmethod
    async def ensure_collection(self) -> None:
        """Create the collection (with payload indexes) and point the alias at it when absent;
        raise DimensionMismatch if an existing one has another vector size."""

    @abstractmethod
    async def upsert_listing(self, point: ListingPoint) -> None:
        """Write a listing's vectors and payload; returns once the engine acknowledged it."""

    @abstractmethod
    async def set_payload(self, listing_id: str, payload: dict[str, Any]) -> None:
        """Merge payload fields into a stored listing without touching its vectors."""

    @abstractmethod
    async def delete(self, listing_id: str) -> None:
        """Remove a listing; deleting an absent one is not an error."""

    @abstractmethod
    async def get(self, listing_id: str, with_vectors: bool = False) -> StoredListing | None:
        """A stored listing, or None."""

    @abstractmethod
    async def search(
        self, vectors: Sequence[Vector], k: int, filters: SearchFilters | None = None
    ) -> list[Hit]:
        """The k listings whose photos best match the query vectors (MaxSim), best first."""

    @abstractmethod
    async def similar(
        self, listing_id: str, k: int, filters: SearchFilters | None = None
    ) -> list[Hit]:
        """More like this: search by a stored listing's own vectors, excluding itself."""

    @abstractmethod
    async def count(self, filters: SearchFilters | None = None) -> int:
        """How many listings match the filters; with None, every stored listing."""

    @abstractmethod
    def scroll(
        self, with_vectors: bool = False, page_size: int = 256
    ) -> AsyncIterator[StoredListing]:
        """Every stored listing, page by page (reindexing, consistency checks)."""

    @abstractmethod
    async def vector_size(self) -> int:
        """The collection's vector size."""

    @abstractmethod
    async def optimize(self) -> None:
        """Build indexes so searches stop scanning; off the event loop, may take a while."""

    @abstractmethod
    async def point_alias_to_self(self) -> None:
        """Swap the alias to this store's collection (rolling out a new model)."""

    @abstractmethod
    async def close(self) -> None:
        """Flush and release the engine."""
