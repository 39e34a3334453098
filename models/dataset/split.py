"""Deterministic train/val/test split by group, stratified by top-level category."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from models.dataset.manifest import SPLITS, BadLine, ManifestLine


@dataclass(frozen=True)
class SplitShares:
    """Shares of the groups that go to train, val and test (they sum to 1)."""

    train: float = 0.7
    val: float = 0.1
    test: float = 0.2

    @classmethod
    def parse(cls, text: str) -> SplitShares:
        """`0.7,0.1,0.2` (train,val,test); the shares are normalised to sum to 1."""
        try:
            parts = [float(x) for x in text.split(",")]
        except ValueError:
            raise ValueError(f"--split {text!r}: three numbers, train,val,test") from None
        if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
            raise ValueError(f"--split {text!r}: three shares >= 0, train,val,test")
        total = sum(parts)
        return cls(parts[0] / total, parts[1] / total, parts[2] / total)


def group_of(line: ManifestLine) -> str:
    """The unit of splitting and of identity: the group, else the listing itself."""
    return f"g:{line.group}" if line.group is not None else f"l:{line.listing_id}"


def _rank(seed: int, group: str) -> str:
    # A hash, not a shuffle: a group's place does not depend on the manifest's order or size.
    return hashlib.sha256(f"{seed}\x00{group}".encode()).hexdigest()


def assign_splits(
    lines: Sequence[tuple[int, ManifestLine]], shares: SplitShares, seed: int
) -> tuple[dict[str, str], list[BadLine]]:
    """listing_id -> split, and the lines whose pins contradict their group's.

    A pinned line pins its whole group. The other groups are ordered by a hash of (seed, group)
    within their top-level category, placed by relative position there, and cut in that order
    into test, val and train with the overall shares, so every category is spread over the
    splits in proportion and no group is in two splits.
    """
    pins: dict[str, tuple[str, int]] = {}
    bad: list[BadLine] = []
    stratum: dict[str, str] = {}
    for lineno, line in lines:
        group = group_of(line)
        stratum.setdefault(group, line.top_level or "")
        if line.split is None:
            continue
        pinned = pins.setdefault(group, (line.split, lineno))
        if pinned[0] != line.split:
            bad.append(
                BadLine(
                    lineno,
                    f"split {line.split!r} contradicts {pinned[0]!r} pinned at line {pinned[1]} "
                    f"for the same group {line.group!r}",
                )
            )
    by_stratum: dict[str, list[str]] = {}
    for group, top in stratum.items():
        if group not in pins:
            by_stratum.setdefault(top, []).append(group)
    ranked: list[tuple[float, str, str]] = []
    for _top, members in sorted(by_stratum.items()):
        members.sort(key=lambda g: _rank(seed, g))
        ranked += [((r + 0.5) / len(members), _rank(seed, g), g) for r, g in enumerate(members)]
    ranked.sort()
    n_test = round(len(ranked) * shares.test)
    n_val = round(len(ranked) * shares.val)
    of_group = {group: split for group, (split, _) in pins.items()}
    for position, (_, _, group) in enumerate(ranked):
        of_group[group] = (
            "test" if position < n_test else "val" if position < n_test + n_val else "train"
        )
    assert set(of_group.values()) <= set(SPLITS)
    bad_lines = {b.lineno for b in bad}
    splits = {
        line.listing_id: of_group[group_of(line)]
        for lineno, line in lines
        if lineno not in bad_lines
    }
    return splits, bad
