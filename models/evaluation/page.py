"""The eval report as one self-contained HTML page: metrics tables, sample queries per category
with their top 10 (relevant results marked, both models side by side with --compare), and the
validation curves training stored; thumbnails are small JPEGs in a folder beside it."""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from models.dataset.dataset import DataListing
from models.evaluation.listings import KINDS, TOP, DataReport, QueryResult
from models.evaluation.metrics import KS
from models.images import ImageError, ImageLimits, decode_image

THUMBS = "thumbs"
THUMB_PX = 120
# Sample queries shown per top-level category and query kind: enough to see a pattern.
SAMPLES = 4
KIND_LABELS = {"buyer": "buyer photo → listing", "listing": "listing → listing"}

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px}h2{font-size:18px;margin-top:32px}h3{font-size:15px;margin:20px 0 6px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #ddd;
text-align:right}th:first-child,td:first-child{text-align:left}
.pos{color:#0a7d32}.neg{color:#b3261e}.query{display:flex;gap:16px;margin:10px 0;
padding:10px;background:#fff;border:1px solid #e3e3e3;border-radius:6px}
.q img{border:3px solid #555}.row{display:flex;gap:4px;flex-wrap:wrap;align-items:flex-start}
figure{margin:0;width:88px;font-size:11px;text-align:center;overflow:hidden}
figure img{width:84px;height:84px;object-fit:cover;border:3px solid transparent;border-radius:3px}
figure.hit img{border-color:#0a7d32}figure.hit figcaption{color:#0a7d32;font-weight:600}
.model{font-size:12px;color:#555;margin:4px 0}.meta{color:#666}
"""


def _thumb(src: str, out: Path, limits: ImageLimits) -> str:
    """A small JPEG of `src` in out/THUMBS, named by its path; returns its relative URL."""
    name = hashlib.sha256(src.encode()).hexdigest()[:24] + ".jpg"
    target = out / THUMBS / name
    if not target.exists():
        try:
            image = decode_image(Path(src).read_bytes(), limits, THUMB_PX)
        except (OSError, ImageError):
            image = Image.new("RGB", (THUMB_PX, THUMB_PX), (200, 200, 200))
        image.thumbnail((THUMB_PX, THUMB_PX))
        image.save(target, "JPEG", quality=80)
    return f"{THUMBS}/{name}"


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def _delta(a: float, b: float | None) -> str:
    if b is None:
        return ""
    d = a - b
    cls = "pos" if d > 0 else "neg" if d < 0 else ""
    return f'<td class="{cls}">{d:+.3f}</td>'


def _table(rows: Sequence[tuple[str, float, float | None]], compared: bool, first: str = "") -> str:
    head = f"<tr><th>{html.escape(first)}</th><th>model</th>"
    head += "<th>compare</th><th>delta</th></tr>" if compared else "</tr>"
    body = []
    for label, mine, theirs in rows:
        cells = f"<td>{html.escape(label)}</td><td>{_fmt(mine)}</td>"
        if compared:
            cells += f"<td>{_fmt(theirs)}</td>{_delta(mine, theirs)}"
        body.append(f"<tr>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _metrics(r: DataReport, c: DataReport | None) -> str:
    parts = []
    for kind in KINDS:
        s = r.scores(kind)
        o = None if c is None else c.scores(kind)
        rows = [(f"recall@{k}", s.recall[k], None if o is None else o.recall[k]) for k in KS]
        rows.append(
            ("mAP", s.mean_average_precision, None if o is None else o.mean_average_precision)
        )
        parts.append(f"<h3>{KIND_LABELS[kind]} ({s.queries} queries)</h3>")
        parts.append(_table(rows, c is not None))
    for kind in KINDS:
        agreement = r.agreement(kind)
        if agreement:
            other_agreement = {} if c is None else c.agreement(kind)
            rows = [(t, v, other_agreement.get(t)) for t, v in agreement.items()]
            parts.append(f"<h3>top-10 agreement per task, {KIND_LABELS[kind]}</h3>")
            parts.append(_table(rows, c is not None, "task"))
    for kind in KINDS:
        table = r.per_category(kind)
        if not table:
            continue
        other = {} if c is None else c.per_category(kind)
        parts.append(f"<h3>recall@10 per top-level category, {KIND_LABELS[kind]}</h3>")
        head = "<tr><th>category</th><th>queries</th><th>model</th>"
        head += "<th>compare</th><th>delta</th></tr>" if c is not None else "</tr>"
        body = []
        for category, (n, v) in table.items():
            known = other[category][1] if category in other else None
            cells = f"<td>{html.escape(category)}</td><td>{n}</td><td>{_fmt(v)}</td>"
            if c is not None:
                cells += f"<td>{_fmt(known)}</td>{_delta(v, known)}"
            body.append(f'<tr class="category">{cells}</tr>')
        parts.append(f"<table>{head}{''.join(body)}</table>")
    return "".join(parts)


def _curve(history: Sequence[Mapping[str, Any]]) -> str:
    """Validation recall@10 per epoch as an inline SVG line chart."""
    if len(history) < 2:
        return ""
    w, h, pad = 420, 180, 30
    epochs = [int(e["epoch"]) for e in history]
    span = max(max(epochs) - min(epochs), 1)
    lines = []
    for key, colour in (("buyer_recall@10", "#1565c0"), ("listing_recall@10", "#ef6c00")):
        points = " ".join(
            f"{pad + (e - min(epochs)) / span * (w - 2 * pad):.1f},"
            f"{h - pad - float(row[key]) * (h - 2 * pad):.1f}"
            for e, row in zip(epochs, history, strict=True)
        )
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
        lines.append(
            f'<text x="{w - pad}" y="{14 if "buyer" in key else 28}" fill="{colour}" '
            f'font-size="11" text-anchor="end">{key.replace("_", " ")}</text>'
        )
    axis = (
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#999"/>'
        f'<text x="{pad}" y="{h - 8}" font-size="11">epoch {min(epochs)}</text>'
        f'<text x="{w - pad}" y="{h - 8}" font-size="11" text-anchor="end">{max(epochs)}</text>'
        f'<text x="4" y="{pad + 4}" font-size="11">1.0</text>'
        f'<text x="4" y="{h - pad}" font-size="11">0</text>'
    )
    return (
        f'<h2>Training: validation recall@10 per epoch</h2><svg class="curve" width="{w}" '
        f'height="{h}" viewBox="0 0 {w} {h}">{axis}{"".join(lines)}</svg>'
    )


def _sample(results: Sequence[QueryResult]) -> list[QueryResult]:
    """Up to SAMPLES queries of each top-level category, the same ones on every run."""
    by: dict[str, list[QueryResult]] = {}
    for r in results:
        by.setdefault(r.query.top_level, []).append(r)
    out = []
    for _, rows in sorted(by.items(), key=lambda kv: -len(kv[1])):
        rows = sorted(rows, key=lambda r: hashlib.sha256(r.query.query.encode()).hexdigest())
        out += rows[:SAMPLES]
    return out


class _Pictures:
    def __init__(self, out: Path, listings: Mapping[str, DataListing], limits: ImageLimits):
        self.out = out
        self.listings = listings
        self.limits = limits

    def listing(self, listing_id: str, hit: bool, rank: int) -> str:
        x = self.listings.get(listing_id)
        src = _thumb(x.photos[0], self.out, self.limits) if x is not None else ""
        cls = ' class="hit"' if hit else ""
        label = html.escape(listing_id)
        mark = "✓ " if hit else ""
        return (
            f'<figure{cls}><img src="{src}" alt="{label}">'
            f"<figcaption>{mark}{rank}. {label}</figcaption></figure>"
        )

    def query(self, r: QueryResult) -> str:
        q = r.query
        photo = q.query if q.kind == "buyer" else self.listings[q.query].photos[0]
        return f'<img src="{_thumb(photo, self.out, self.limits)}" alt="query" width="120">'


def _queries(r: DataReport, c: DataReport | None, pictures: _Pictures) -> str:
    other = {} if c is None else {(x.query.kind, x.query.query): x for x in c.results}
    parts = ["<h2>Sample queries per category</h2>"]
    for kind in KINDS:
        sample = _sample(r.of(kind))
        if not sample:
            continue
        parts.append(f"<h3>{KIND_LABELS[kind]}</h3>")
        for res in sample:
            q = res.query
            rows = [(r.model_id, res)]
            theirs = other.get((q.kind, q.query))
            if theirs is not None and c is not None:
                rows.append((c.model_id, theirs))
            tops = []
            for model_id, result in rows:
                figures = "".join(
                    pictures.listing(lid, lid in q.relevant, i + 1)
                    for i, lid in enumerate(result.top[:TOP])
                )
                hit = (
                    "no relevant listing in the top 10"
                    if not result.hit_at(TOP)
                    else (f"first relevant at {result.first_hit}")
                )
                tops.append(
                    f'<div class="model">{html.escape(model_id)} · {hit}</div>'
                    f'<div class="row">{figures}</div>'
                )
            parts.append(
                f'<div class="query" data-kind="{kind}"><div class="q">{pictures.query(res)}'
                f'<div class="meta">{html.escape(q.top_level)}<br>listing '
                f"{html.escape(q.listing_id)}</div></div><div>{''.join(tops)}</div></div>"
            )
    return "".join(parts)


def write_report(
    out: Path,
    report: DataReport,
    compare: DataReport | None,
    listings: Sequence[DataListing],
    limits: ImageLimits,
    title: str = "lookalike eval",
) -> Path:
    """Write out/index.html and its thumbnails; returns the page's path."""
    (out / THUMBS).mkdir(parents=True, exist_ok=True)
    pictures = _Pictures(out, {x.listing_id: x for x in listings}, limits)
    header = (
        f"<h1>{html.escape(title)}</h1><p class=meta>model <b>{html.escape(report.model_id)}</b>"
        + ("" if compare is None else f" compared with <b>{html.escape(compare.model_id)}</b>")
        + f" · split {html.escape(report.split)} · {report.listings} listings · "
        f"{report.groups} groups</p>"
    )
    body = header + "<h2>Metrics</h2>" + _metrics(report, compare) + _curve(report.history)
    body += _queries(report, compare, pictures)
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
