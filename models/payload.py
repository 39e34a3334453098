"""The payload stored with each point, a live listing's or a tombstone's, and its indexed fields."""

from __future__ import annotations

import functools
import time
import typing
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from models.events import ListingUpserted
from models.store.types import category_prefixes

IndexKind = Literal["keyword", "integer", "float", "bool"]
INDEX_KEY: Final = "index"
GRAPH_KEY: Final = "graph"


def indexed(kind: IndexKind, description: str | None = None, *, graph: bool = False) -> FieldInfo:
    """A field filters touch: the store keeps a payload index of this kind on it.

    graph: searches filter on the field with values that narrow the catalog to a part of it (a
    category, a price band, a shop), so the engine also links the points of each large value in
    the HNSW graph, keeping a filtered search connected. Those links cost index build time per
    field, so fields only looked up (ids, versions, tombstones) or matched by nearly every point
    (state, currency) go without."""
    extra: dict[str, Any] = {INDEX_KEY: kind}
    if graph:
        extra[GRAPH_KEY] = True
    info: FieldInfo = Field(description=description, json_schema_extra=extra)
    return info


def _iso_z(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class StoredPayload(BaseModel):
    """What every stored payload model shares: its dict form and a tolerant reading of one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_store(self) -> dict[str, Any]:
        """The payload as written to the store."""
        return self.model_dump()

    @classmethod
    def index_kinds(cls) -> dict[str, IndexKind]:
        """The payload indexes this model's fields declare, field -> kind."""
        kinds: dict[str, IndexKind] = {}
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and INDEX_KEY in extra:
                kinds[name] = typing.cast(IndexKind, extra[INDEX_KEY])
        return kinds

    @classmethod
    def graph_fields(cls) -> frozenset[str]:
        """The indexed fields whose values get links of their own in the HNSW graph."""
        return frozenset(
            name
            for name, info in cls.model_fields.items()
            if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(GRAPH_KEY)
        )

    @classmethod
    def readable(
        cls, payload: Mapping[str, Any], names: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """The fields of a stored payload that hold a valid value for this model, each checked on
        its own (strictly, so True is no version): payloads written before a field existed, or by
        benches that leave fields out, still render. A list keeps its valid elements.

        names: only these fields (default: every field of the model)."""
        checks = _field_checks(cls)
        found: dict[str, Any] = {}
        for name in checks if names is None else names:
            if name not in payload or name not in checks:
                continue
            whole, element = checks[name]
            value = payload[name]
            try:
                found[name] = whole.validate_python(value, strict=True)
                continue
            except ValidationError:
                pass
            if element is not None and isinstance(value, list):
                found[name] = [v for v in value if _valid(element, v)]
        return found


def _valid(adapter: TypeAdapter[Any], value: Any) -> bool:
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError:
        return False
    return True


@functools.cache
def _field_checks(
    model: type[StoredPayload],
) -> dict[str, tuple[TypeAdapter[Any], TypeAdapter[Any] | None]]:
    """Per field: a validator of its whole value and, for a list, one of its elements."""
    checks: dict[str, tuple[TypeAdapter[Any], TypeAdapter[Any] | None]] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if annotation is None:
            continue
        element = None
        if get_origin(annotation) is list:
            (item,) = get_args(annotation)
            element = TypeAdapter(item)
        checks[name] = (TypeAdapter(annotation), element)
    return checks


class ListingPayload(StoredPayload):
    """A live listing's payload: what search results render and what filters match."""

    listing_id: Annotated[str, indexed("keyword")]
    title: str
    category: Annotated[str, Field(description="Slash-separated, e.g. home/kitchen/mugs.")]
    # Every prefix of the category, so a prefix filter is one keyword match.
    category_path: Annotated[list[str], indexed("keyword", graph=True)]
    # The amount as a float for range filters; price_amount keeps the exact decimal string.
    price: Annotated[float, indexed("float", graph=True)]
    price_amount: str
    currency: Annotated[str, indexed("keyword")]
    shop_id: Annotated[str, indexed("keyword", graph=True)]
    state: Annotated[str, indexed("keyword")]
    # The event's photos; image_urls are the ones that could be fetched and embedded, in the
    # order of the point's vectors, image_hashes their content hashes.
    source_image_urls: list[str]
    image_urls: list[str] = Field(default_factory=list)
    image_hashes: list[str] = Field(default_factory=list)
    # Writes apply only over a lower stored version (see VectorStore.upsert_listing).
    version: Annotated[int, indexed("integer")]
    model_id: str
    # Listings whose photos are near-identical share it (models.duplicates); set on each write
    # of the vectors, kept by updates that keep them.
    duplicate_group: Annotated[str | None, indexed("keyword")] = None
    occurred_at: Annotated[str, Field(description="When the change happened (ISO 8601, UTC).")]
    indexed_at: Annotated[str, Field(description="When it was indexed (ISO 8601, UTC).")]

    @classmethod
    def from_event(
        cls,
        event: ListingUpserted,
        model_id: str,
        image_urls: Sequence[str] = (),
        image_hashes: Sequence[str] = (),
        duplicate_group: str | None = None,
    ) -> ListingPayload:
        """The payload of an upsert event, indexed now by model_id, with the photos it used."""
        return cls(
            listing_id=event.listing_id,
            title=event.title,
            category=event.category,
            category_path=category_prefixes(event.category),
            price=float(event.price.amount),
            price_amount=str(event.price.amount),
            currency=event.price.currency,
            shop_id=event.shop_id,
            state=event.state,
            source_image_urls=event.image_urls,
            image_urls=list(image_urls),
            image_hashes=list(image_hashes),
            version=event.version,
            model_id=model_id,
            duplicate_group=duplicate_group,
            occurred_at=_iso_z(event.occurred_at),
            indexed_at=_iso_z(datetime.now(UTC)),
        )

    def event_fields(self) -> dict[str, Any]:
        """The fields that come from the event alone, for an update that keeps the vectors."""
        return self.model_dump(exclude={"image_urls", "image_hashes", "duplicate_group"})


class TombstonePayload(StoredPayload):
    """What is left of a deleted or no longer active listing: its version, so that older events
    arriving later cannot bring it back, until purged."""

    listing_id: Annotated[str, indexed("keyword")]
    version: Annotated[int, indexed("integer")]
    # "deleted", or the state that took the listing out of search ("sold_out", ...).
    state: Annotated[str, indexed("keyword")]
    tombstone: Annotated[Literal[True], indexed("bool")] = True
    # Unix seconds; tombstones older than the retention are purged.
    tombstoned_at: Annotated[float, indexed("float")] = Field(default_factory=time.time)


STORED_MODELS: Final[tuple[type[StoredPayload], ...]] = (ListingPayload, TombstonePayload)


def payload_indexes(models: Iterable[type[StoredPayload]] = STORED_MODELS) -> dict[str, IndexKind]:
    """Every payload index the stored models declare; a field two models index differently is a
    mistake the store could not honour (one index per field)."""
    kinds: dict[str, IndexKind] = {}
    for model in models:
        for name, kind in model.index_kinds().items():
            if kinds.setdefault(name, kind) != kind:
                raise TypeError(f"payload field {name!r} is indexed as {kinds[name]} and {kind}")
    return kinds


def payload_graph_fields(models: Iterable[type[StoredPayload]] = STORED_MODELS) -> frozenset[str]:
    """The indexed fields that get HNSW links of their own (see indexed); a field one model links
    and another does not is a mistake the store could not honour."""
    graph = frozenset().union(*(m.graph_fields() for m in models))
    for model in models:
        kinds = model.index_kinds()
        for name in graph & set(kinds) - model.graph_fields():
            raise TypeError(f"payload field {name!r} is linked in the graph by one model only")
    return graph
