"""Value types and the interface shared by every vector-store backend."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

# Fixed namespace so a listing id maps to the same point id in every process, forever.
POINT_NAMESPACE = uuid.UUID("9b0c3f4e-6a51-4d7e-9a0e-2c1f5b7d8e10")

Vector = list[float]
# What a search takes: rows of floats, or an (n, dim) float32 array passed on without a copy.
QueryVectors = Sequence[Vector] | npt.NDArray[np.float32]


def point_id(listing_id: str) -> str:
    """The point id of a listing: UUID5 of its id, so redelivered writes land on one point."""
    return str(uuid.uuid5(POINT_NAMESPACE, listing_id))


def payload_version(payload: dict[str, Any]) -> int | None:
    """The payload's "version" when it is an int (True is no version)."""
    version = payload.get("version")
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def category_prefixes(category: str) -> list[str]:
    """Every prefix of a slash-separated category, so a prefix filter is one keyword match."""
    parts = [p for p in category.split("/") if p]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class StoreError(Exception):
    """The store refused or failed an operation."""


class DimensionMismatch(StoreError):  # noqa: N818
    """The collection's vector size differs from the model's embedding size."""


class ListingNotFound(StoreError):  # noqa: N818
    """The listing is not in the collection (similar() of an unknown id or a tombstone)."""


@dataclass(frozen=True)
class ListingPoint:
    """One listing's write: its image embeddings and the payload to render and filter."""

    listing_id: str
    # Rows of float lists or a float32 matrix: every store checks them with as_matrix.
    vectors: QueryVectors
    # Rendering/filtering fields: models.payload.ListingPayload.to_store(). With an int "version"
    # the write applies only over a lower stored one.
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchFilters:
    """Narrowing applied inside the vector search, never after it."""

    category_prefix: str | None = None
    price_min: float | None = None
    price_max: float | None = None
    # Prices compare only within one currency: a range is meant in this one (no conversion).
    currency: str | None = None
    shop_id: str | None = None
    exclude_listing_ids: Sequence[str] = ()
    # Only listings in one of these duplicate groups (models.duplicates); empty: any.
    duplicate_groups: Sequence[str] = ()
    # Only listings for sale right now are results.
    only_active: bool = True


@dataclass(frozen=True)
class Hit:
    """One search result: a listing, its score and which of its photos matched best.

    The score is cosine similarity in [-1, 1]: for a query of several photos, the MaxSim sum
    divided by their number, so one-photo searches and listing-to-listing searches share a scale.
    """

    listing_id: str
    score: float
    payload: dict[str, Any]
    # Which photo matched, or how to tell on first read: the engines build a hit's vectors as
    # Python floats only when they are read (~40 us per 1280-d photo), and a collapsed page
    # looks at four candidates for every hit it shows, so only the hits shown pay for it.
    match: int | Callable[[], int] = field(default=0, repr=False, compare=False)

    @cached_property
    def matched_image_index(self) -> int:
        """The index of the listing's photo the query matched best."""
        return self.match if isinstance(self.match, int) else self.match()


@dataclass(frozen=True)
class StoredListing:
    """A listing as stored: payload, and its vectors when asked for."""

    listing_id: str
    payload: dict[str, Any]
    vectors: list[Vector] = field(default_factory=list)

    @property
    def version(self) -> int | None:
        """The stored version, None for a point written without one (benches, legacy)."""
        return payload_version(self.payload)

    @property
    def tombstone(self) -> bool:
        """A deleted or no longer active listing, kept only for its version."""
        return self.payload.get("tombstone") is True


def alias_model_id(alias: str, collection_name: str) -> str | None:
    """The model id a collection name "<alias>__<model_id>" carries, or None if it is not one of
    the alias's collections."""
    prefix = f"{alias}__"
    if not collection_name.startswith(prefix) or len(collection_name) == len(prefix):
        return None
    return collection_name[len(prefix) :]


@dataclass(frozen=True)
class CollectionInfo:
    """One of an alias's collections, as `lookalike alias show` lists it."""

    name: str
    model_id: str | None
    # Live listings (tombstones left out); None when it could not be counted (`error` says why).
    points: int | None
    vector_size: int | None
    error: str | None = None


class Collections(ABC):
    """The collections behind one alias and where the alias points: rolling a model out or back
    is moving the alias, the same way on every backend."""

    @abstractmethod
    async def alias_target(self) -> str | None:
        """The collection the alias points at now, or None."""

    @abstractmethod
    async def list(self) -> list[CollectionInfo]:
        """Every "<alias>__<model_id>" collection that exists, by name."""

    @abstractmethod
    async def point_alias(self, collection: str) -> None:
        """Move the alias to an existing collection in one step (readers see the old target or
        the new one); StoreError when it does not exist."""

    @abstractmethod
    async def close(self) -> None:
        """Release the client or the scratch space."""


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
        """Write a listing's vectors and payload; returns once the engine acknowledged it.

        With an int "version" in the payload the write takes effect only where the stored point
        is absent, has a lower version (a tombstone too) or none at all; otherwise it is a no-op.
        Without one it always applies."""

    @abstractmethod
    async def upsert_listings(self, points: Sequence[ListingPoint]) -> None:
        """Many listings in one write (bulk loads), each under upsert_listing's version guard:
        one no newer than the stored listing changes nothing. A listing may appear once."""

    @abstractmethod
    async def set_payload(self, listing_id: str, payload: dict[str, Any]) -> None:
        """Merge payload fields into a stored live listing without touching its vectors; an
        absent listing or a tombstone is left as it is. With an int "version" in the payload,
        only a lower stored version is updated."""

    @abstractmethod
    async def tombstone(self, listing_id: str, version: int, state: str) -> None:
        """Replace a listing by a tombstone that keeps its version (same rule as upsert_listing):
        gone from search, count and similar, still stopping older writes. state: "deleted", or
        the state that took it out of search."""

    @abstractmethod
    async def purge_tombstones(self, older_than: float) -> int:
        """Delete the tombstones written before `older_than` (unix seconds); how many."""

    @abstractmethod
    async def delete(self, listing_id: str) -> None:
        """Remove a listing or its tombstone, whatever its version; an absent one is no error."""

    @abstractmethod
    async def get(self, listing_id: str, with_vectors: bool = False) -> StoredListing | None:
        """A stored listing or tombstone (a tombstone has no vectors), or None."""

    @abstractmethod
    async def search(
        self,
        vectors: QueryVectors,
        k: int,
        filters: SearchFilters | None = None,
        *,
        offset: int = 0,
        min_score: float | None = None,
    ) -> list[Hit]:
        """The k listings whose photos best match the query vectors (MaxSim), best first, after
        skipping the `offset` best; only scores of at least `min_score` (see Hit.score)."""

    @abstractmethod
    async def search_batch(
        self,
        queries: Sequence[tuple[QueryVectors, SearchFilters | None]],
        k: int,
        *,
        min_score: float | None = None,
    ) -> list[list[Hit]]:
        """`search` for each (vectors, filters) of `queries` in one request (the engines plan a
        batch as one pass over the segments): one list of hits per query, in their order."""

    @abstractmethod
    async def similar(
        self,
        listing_id: str,
        k: int,
        filters: SearchFilters | None = None,
        *,
        offset: int = 0,
        min_score: float | None = None,
    ) -> list[Hit]:
        """More like this: search by a stored listing's own vectors, excluding itself."""

    @abstractmethod
    async def facet(
        self, key: str, filters: SearchFilters | None = None, limit: int = 1000
    ) -> dict[str, int]:
        """How many listings matching the filters hold each value of the keyword field `key`
        (a list field counts each of its values once), from the engine's payload index; at most
        `limit` values, commonest first. Never tombstones."""

    @abstractmethod
    async def count(self, filters: SearchFilters | None = None) -> int:
        """How many listings match the filters; with None, every live listing. Never tombstones."""

    @abstractmethod
    def scroll(
        self, with_vectors: bool = False, page_size: int = 256, include_tombstones: bool = False
    ) -> AsyncIterator[StoredListing]:
        """Every stored listing, page by page (reindexing, consistency checks); tombstones too
        when asked."""

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
