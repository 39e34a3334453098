"""Query-vector checks and the client-side pick of which stored photo matched best."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from models.store.types import DimensionMismatch, QueryVectors

Matrix = npt.NDArray[np.float32]


def as_matrix(vectors: QueryVectors, dim: int, what: str) -> Matrix:
    """Vectors as an (n, dim) float32 matrix with n >= 1; a single flat vector is one row."""
    m = np.asarray(vectors, dtype=np.float32)
    if m.ndim == 1 and m.size > 0:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] == 0:
        raise ValueError(f"{what}: expected at least one vector, got shape {m.shape}")
    if m.shape[1] != dim:
        raise DimensionMismatch(
            f"{what}: vectors have {m.shape[1]} dimensions, the collection stores {dim}"
        )
    if not np.isfinite(m).all():
        raise ValueError(f"{what}: vectors contain NaN or infinity")
    if (np.linalg.norm(m, axis=1) == 0).any():
        raise ValueError(f"{what}: a zero vector has no direction (cosine distance)")
    return m


def normalized(m: Matrix) -> Matrix:
    """Rows scaled to unit length (cosine similarity becomes a dot product)."""
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Matrix = (m / norms).astype(np.float32, copy=False)
    return out


def maxsim_score(unit_query: Matrix, unit_stored: Matrix) -> float:
    """The store's score of a listing for a query, from unit rows: the MaxSim sum over the
    query's photos divided by their number (see Hit.score)."""
    return float((unit_query @ unit_stored.T).max(axis=1).mean())


def stored_matrix(vector: Any) -> Matrix | None:
    """A stored multivector as returned by either engine (list of rows, or {"": rows})."""
    if isinstance(vector, dict):
        vector = vector.get("")
    if vector is None:
        return None
    m = np.asarray(vector, dtype=np.float32)
    if m.ndim == 1:
        m = m[None, :]
    return m if m.ndim == 2 and m.shape[0] > 0 else None


def matched_image_index(unit_query: Matrix, point: Any) -> int:
    """Index of the stored photo of a scored point (of either engine) closest (cosine) to any
    query row: the one MaxSim credited.

    unit_query is normalized(query), computed once per search rather than once per hit.
    """
    m = stored_matrix(point.vector)
    if m is None or m.shape[0] == 1:
        return 0
    sims = normalized(m) @ unit_query.T
    return int(np.argmax(sims.max(axis=1)))
