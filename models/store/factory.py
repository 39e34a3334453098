"""Opens the configured vector store: Qdrant Edge on disk by default, a server when a URL is set."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from qdrant_client import AsyncQdrantClient

from models.settings import StoreSettings
from models.store.aliases import AliasFile
from models.store.edge import EdgeCollections, EdgeStore
from models.store.layout import StoreLayout
from models.store.server import ServerCollections, ServerStore
from models.store.types import Collections, VectorStore, alias_model_id

MEMORY = ":memory:"
_NAME_PART = re.compile(r"^[A-Za-z0-9_-]+$")


def collection_name_for(alias: str, model_id: str) -> str:
    """A model's physical collection, "<alias>__<model_id>" (a directory name too, for Edge)."""
    for what, value in (("alias", alias), ("model id", model_id)):
        if not _NAME_PART.match(value):
            raise ValueError(f"{what} {value!r} may only contain letters, digits, '-' and '_'")
    return f"{alias}__{model_id}"


def model_id_of(alias: str, collection_name: str) -> str | None:
    """The model id a collection name carries, or None if it is not one of the alias's."""
    return alias_model_id(alias, collection_name)


@dataclass
class _Shared:
    client: AsyncQdrantClient
    users: int = 0


# qdrant-client's local mode keeps data in the client object; sharing one per process makes
# ":memory:" behave like a server every store of the process talks to. Dropped with its last user.
_memory: list[_Shared] = []


def _memory_client() -> tuple[AsyncQdrantClient, Callable[[], Awaitable[None]]]:
    if not _memory:
        _memory.append(_Shared(AsyncQdrantClient(location=MEMORY)))
    shared = _memory[0]
    shared.users += 1

    async def release() -> None:
        shared.users -= 1
        if shared.users == 0:
            if _memory and _memory[0] is shared:
                _memory.clear()
            await shared.client.close()

    return shared.client, release


def _server_client(
    settings: StoreSettings,
) -> tuple[AsyncQdrantClient, bool, Callable[[], Awaitable[None]]]:
    if settings.qdrant_url == MEMORY:
        client, release = _memory_client()
        return client, True, release
    client = AsyncQdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
    return client, False, client.close


def open_store(settings: StoreSettings, model_id: str, dim: int) -> VectorStore:
    """The store of this model's collection; await ensure_collection() before use, close() after."""
    name = collection_name_for(settings.collection_alias, model_id)
    layout = StoreLayout.from_settings(settings)
    if settings.qdrant_url is None:
        return EdgeStore(settings.index_path, settings.collection_alias, name, dim, layout=layout)
    client, local, release = _server_client(settings)
    return ServerStore(
        client,
        settings.collection_alias,
        name,
        dim,
        release=release,
        local_mode=local,
        layout=layout,
    )


def open_collections(settings: StoreSettings) -> Collections:
    """The alias and its collections on the configured backend; close() after use."""
    if settings.qdrant_url is None:
        return EdgeCollections(settings.index_path, settings.collection_alias)
    client, _, release = _server_client(settings)
    return ServerCollections(client, settings.collection_alias, release=release)


async def resolve_alias(settings: StoreSettings) -> str | None:
    """The collection the alias points at now (None if unset), without opening any collection."""
    alias = settings.collection_alias
    if settings.qdrant_url is None:
        return await asyncio.to_thread(AliasFile(settings.index_path).get, alias)
    client, _, release = _server_client(settings)
    try:
        response = await client.get_aliases()
    finally:
        await release()
    return next((a.collection_name for a in response.aliases if a.alias_name == alias), None)


async def aliased_model_id(settings: StoreSettings) -> str | None:
    """The model id whose collection the alias points at (None if unset): reopen via the alias."""
    target = await resolve_alias(settings)
    return None if target is None else model_id_of(settings.collection_alias, target)
