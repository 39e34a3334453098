"""`lookalike alias show|set`: the alias's collections, and moving it (roll back or forward)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.settings import StoreSettings
from models.store.factory import collection_name_for, open_collections
from models.store.types import CollectionInfo, StoreError


class AliasError(RuntimeError):
    """The alias cannot be moved there (no such collection, or the store refused)."""


@dataclass(frozen=True)
class AliasState:
    alias: str
    target: str | None
    collections: list[CollectionInfo]
    # Where it pointed before `set`, and whether it moved (False: it already pointed there).
    previous: str | None = None
    moved: bool = False


async def show(settings: StoreSettings) -> AliasState:
    """Where the alias points and every collection of it, with point counts and model ids."""
    collections = open_collections(settings)
    try:
        return AliasState(
            settings.collection_alias, await collections.alias_target(), await collections.list()
        )
    except StoreError as exc:
        raise AliasError(str(exc)) from exc
    finally:
        await collections.close()


def _resolve(alias: str, wanted: str, names: Sequence[str]) -> str | None:
    """A collection name, or a model id whose collection exists."""
    if wanted in names:
        return wanted
    try:
        by_model = collection_name_for(alias, wanted)
    except ValueError:
        return None
    return by_model if by_model in names else None


async def set_alias(settings: StoreSettings, wanted: str) -> AliasState:
    """Point the alias at an existing collection (named, or by its model id)."""
    alias = settings.collection_alias
    collections = open_collections(settings)
    try:
        infos = await collections.list()
        previous = await collections.alias_target()
        target = _resolve(alias, wanted, [c.name for c in infos])
        if target is None:
            exist = ", ".join(c.name for c in infos) or "none"
            raise AliasError(f"no collection {wanted!r} of alias {alias}; collections: {exist}")
        if target != previous:
            await collections.point_alias(target)
        return AliasState(alias, target, infos, previous=previous, moved=target != previous)
    except StoreError as exc:
        raise AliasError(str(exc)) from exc
    finally:
        await collections.close()


def format_state(state: AliasState) -> str:
    """The alias line and a table of its collections, the live one marked with *."""
    lines = [f"alias {state.alias} -> {state.target or '(unset)'}"]
    if not state.collections:
        lines.append("no collections")
        return "\n".join(lines)
    rows = [(" ", "COLLECTION", "MODEL ID", "POINTS", "DIM")]
    for c in state.collections:
        rows.append(
            (
                "*" if c.name == state.target else " ",
                c.name,
                c.model_id or "-",
                str(c.points) if c.points is not None else f"? ({c.error})",
                str(c.vector_size) if c.vector_size is not None else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)
