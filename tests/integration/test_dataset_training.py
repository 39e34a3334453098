"""The whole path on a dataset a test writes in the manifest format: local photos and photos on
a real image server, pinned splits; `train --data` for two epochs, then `eval --data --compare`
with its JSON, per-category table and delta."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import mlflow
import pytest

from models.dataset.demo import write_demo_dataset
from models.embedder import Embedder
from models.evalset.catalog import build_eval_catalog
from models.network import load_model
from models.settings import ModelSettings
from models.training.checkpoint import checkpoint_metadata
from models.training.trainer import LOG_FILE
from tests.cli_process import run_cli
from tests.imageserver import ImageServer
from tests.page_support import ARTIFACTS, chromium

pytestmark = [
    pytest.mark.slow,
    # MLflow's own SQLAlchemy models, not ours.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

# 12 items (24 listings, 84 photos): 6 train, 3 val, 3 test items, pinned by the manifest.
CATALOG = build_eval_catalog(12, seed=5, val_share=0.25, test_share=0.25)
TRAIN_ARGS = ["--epochs", "2", "--batch-size", "16", "--projection-dim", "32"]
TRAIN_ARGS += ["--train-from-block", "14", "--workers", "2"]


def _dataset(root: Path, images: ImageServer) -> Path:
    def url_of(path: str) -> str | None:
        # The buyer photos of four items live on the image server; the rest are local files.
        if not re.match(r"photos/eval-000[1-4]-buyer-", path):
            return None
        return images.add(path, (root / path).read_bytes())

    return write_demo_dataset(CATALOG, root, workers=2, url_of=url_of)


async def test_train_then_eval_on_a_manifest(
    tmp_path: Path,
    image_server: ImageServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The image server is on loopback: allowed only with the usual setting.
    monkeypatch.setenv("LOOKALIKE_ALLOW_PRIVATE_IMAGE_HOSTS", "true")
    # A real local MLflow store (SQLite, artifacts beside it) in the test's folder.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    manifest = await asyncio.to_thread(_dataset, tmp_path / "data", image_server)
    assert image_server.routes, "some photos are URLs"
    out = tmp_path / "run"
    cache = tmp_path / "cache"
    argv = ["train", "--data", str(manifest), "--cache", str(cache), "--out", str(out)]
    code, stdout, stderr = await run_cli(*argv, *TRAIN_ARGS, cwd=tmp_path)
    assert code == 0, stderr
    checkpoint = out / "model.pt"
    assert f"exported {checkpoint}" in stdout
    events = [json.loads(x) for x in (out / LOG_FILE).read_text().splitlines()]
    assert [e["epoch"] for e in events] == [0, 1, 2]
    # The tasks come from the data: category, its top level, each attribute, and the group.
    assert set(events[1]["loss"]) == {
        "loss",
        "category",
        "top_level",
        "colour",
        "shape",
        "material",
        "item",
    }
    assert events[1]["train_photos"] == 6 * 7 and events[1]["peak_rss_mb"] > 0
    # Epoch 0 reports the frozen trunk's one pass over each split.
    assert events[0]["trunk"]["train"]["photos"] == 6 * 7
    assert events[0]["trunk"]["val"]["photos"] > 0 < events[0]["trunk"]["val"]["photos_per_s"]
    assert events[2]["val"]["buyer_to_listing"]["queries"] == 3 * 3
    # Every URL was fetched once, into the cache.
    assert all(image_server.count(p) == 1 for p in image_server.routes)
    assert len(list(cache.iterdir())) == len(image_server.routes)

    run_id = _check_mlflow_run(checkpoint)

    embedder = Embedder.from_settings(ModelSettings(model_checkpoint=checkpoint, device="cpu"))
    assert embedder.model_id.startswith("efficientnet-lite0-ft-") and embedder.dim == 32

    argv = ["eval", "--data", str(manifest), "--cache", str(cache), "--model", str(checkpoint)]
    argv += ["--compare", "imagenet", "--workers", "2"]
    report_dir = tmp_path / "report"
    argv += ["--json", "--report", str(report_dir)]
    code, stdout, stderr = await run_cli(*argv, cwd=tmp_path)
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["model_id"] == embedder.model_id and report["split"] == "test"
    assert report["compare"]["model_id"] == load_model().model_id
    assert report["listings"] == 6 and report["groups"] == 3
    buyer = report["buyer_to_listing"]
    assert buyer["queries"] == 9
    assert 0 <= buyer["recall@1"] <= buyer["recall@5"] <= buyer["recall@10"] <= 1
    assert report["listing_to_listing"]["queries"] == 6
    for kind in ("buyer", "listing"):
        table = report["per_category"][kind]
        assert sum(row["queries"] for row in table.values()) == (9 if kind == "buyer" else 6)
        assert set(table) <= {"objects", "art"}
    assert set(report["agreement@10"]["buyer"]) == {
        "category",
        "top_level",
        "colour",
        "material",
        "shape",
    }
    delta = report["delta"]["buyer_to_listing"]
    assert delta["map"] == pytest.approx(
        buyer["map"] - report["compare"]["buyer_to_listing"]["map"]
    )

    await _check_report(report_dir / "index.html", embedder.model_id)
    # The eval of a tracked checkpoint joined its training run: metrics and the report.
    assert "recorded in MLflow run " + run_id in stderr
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.data.metrics["eval_test/buyer_to_listing/map"] == pytest.approx(buyer["map"])
    assert "eval_test_report/index.html" in _artifacts(client, run_id)


def _artifacts(client: mlflow.MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def _check_mlflow_run(checkpoint: Path) -> str:
    """The training run is in the store: parameters, metrics of every epoch, the checkpoint."""
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("lookalike")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2" and run.data.params["train_from_block"] == "14"
    assert run.data.params["data"].endswith("manifest.jsonl")
    history = client.get_metric_history(run.info.run_id, "val/buyer_to_listing/recall_at_10")
    assert [m.step for m in history] == [0, 1, 2]
    assert {m.step for m in client.get_metric_history(run.info.run_id, "loss/item")} == {1, 2}
    assert {"model/model.pt", "train.jsonl"} <= _artifacts(client, run.info.run_id)
    assert checkpoint_metadata(checkpoint)["mlflow_run_id"] == run.info.run_id
    return str(run.info.run_id)


async def _check_report(page_path: Path, model_id: str) -> None:
    """The page renders in Chromium: tables, curves, every thumbnail loaded, hits marked."""
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(page_path.as_uri())
        assert model_id in await page.locator("h1 + p").inner_text()
        assert await page.locator("tr.category").count() >= 2
        assert await page.locator("svg.curve polyline").count() == 2
        queries = page.locator(".query")
        assert await queries.count() >= 4
        # With --compare every query shows both models' top 10.
        assert await queries.first.locator(".model").count() == 2
        assert await page.locator("figure.hit").count() > 0
        broken = await page.evaluate(
            "[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length"
        )
        assert broken == 0
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "eval-report.png", full_page=True)


async def test_bad_lines_stop_train_with_their_numbers_unless_skipped(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"listing_id": "A", "photos": ["gone.jpg"]}\n{oops\n')
    code, _, stderr = await run_cli("train", "--data", str(manifest), "--out", str(tmp_path))
    assert code == 2
    assert f"{manifest}:1: photo gone.jpg: no such file" in stderr
    assert f"{manifest}:2: not JSON" in stderr
    argv = ["train", "--data", str(manifest), "--out", str(tmp_path), "--skip-invalid"]
    code, _, stderr = await run_cli(*argv)
    assert code == 1 and "train split has no listing" in stderr
