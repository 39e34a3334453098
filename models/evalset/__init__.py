"""A deterministic evaluation set: marketplace items, sellers' product shots and buyer photos."""

from models.evalset.catalog import (
    ATTRIBUTES,
    SPLITS,
    VOCABULARY,
    EvalCatalog,
    EvalItem,
    EvalListing,
    build_eval_catalog,
    render_photos,
)

__all__ = [
    "ATTRIBUTES",
    "SPLITS",
    "VOCABULARY",
    "EvalCatalog",
    "EvalItem",
    "EvalListing",
    "build_eval_catalog",
    "render_photos",
]
