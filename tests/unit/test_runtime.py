"""Runtime choice, the OpenVINO export cache and the torch fallback, on the real model."""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from models.embedder import AsyncEmbedder, Embedder, plan
from models.network import EmbeddingNet, export_checkpoint, load_model
from models.runtime import Plan, choose, cpu_has_bf16, factory, open_backend
from models.runtime import openvino_backend as ovb
from models.runtime.cache import publish, staging_dir
from models.runtime.torch_backend import TorchBackend
from models.settings import ModelSettings
from tests.photos import photo

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
SPR_FLAGS = "fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile"


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return path


def test_auto_is_openvino_on_a_cpu_bf16_only_with_amx(tmp_path: Path) -> None:
    spr = _cpuinfo(tmp_path, SPR_FLAGS)
    # AVX-512 BF16 without AMX: measured slower in bf16 than in fp32, so auto stays fp32.
    old = _cpuinfo(tmp_path / "..", "fpu sse2 avx2 avx512f avx512_bf16")
    assert choose("auto", "auto", CPU, spr) == ("openvino", "bf16")
    assert choose("auto", "auto", CPU, old) == ("openvino", "fp32")
    assert choose("auto", "fp32", CPU, spr) == ("openvino", "fp32")
    assert choose("openvino", "bf16", CPU, old) == ("openvino", "bf16")
    # torch on the CPU stays exact unless asked; CUDA stays torch fp16.
    assert choose("torch", "auto", CPU, spr) == ("torch", "fp32")
    assert choose("auto", "auto", CUDA, spr) == ("torch", "fp16")
    assert choose("auto", "fp32", CUDA, spr) == ("torch", "fp32")
    assert cpu_has_bf16(spr) and not cpu_has_bf16(old)
    assert not cpu_has_bf16(tmp_path / "missing")


def test_the_plan_maps_streams_and_threads_for_either_runtime() -> None:
    p = plan(ModelSettings(runtime="openvino", precision="fp32", embed_streams=2), CPU)
    assert p == Plan("openvino", "fp32", 2, max(1, (os.cpu_count() or 1) // 2))
    assert plan(ModelSettings(embed_streams=3, torch_threads=1), CPU).streams == 3
    assert plan(ModelSettings(embed_streams=4), CUDA) == Plan("torch", "fp16", 1, None)
    config = ovb.compile_config(Plan("openvino", "bf16", 2, 1), Path("/x"))
    assert config["NUM_STREAMS"] == 2 and config["INFERENCE_NUM_THREADS"] == 2
    assert config["INFERENCE_PRECISION_HINT"] == "bf16"


@pytest.mark.slow
def test_from_settings_serves_openvino_from_an_export_made_once(tmp_path: Path) -> None:
    settings = ModelSettings(device="cpu", precision="fp32", model_cache_dir=tmp_path)
    with capture_logs() as first:
        built = Embedder.from_settings(settings)
    assert built.runtime == "openvino" and built.inference_precision == "fp32"
    assert not built.torchscript
    [exported] = [e for e in first if e["event"] == "openvino_exported"]
    assert exported["exported_s"] > 0
    xml = Path(exported["ir"])
    assert xml.is_relative_to(tmp_path / built.model_id)
    with capture_logs() as second:
        again = Embedder.from_settings(settings.model_copy(update={"precision": "bf16"}))
    # The IR is shared by the precisions (no second export); each compiles its own blobs.
    assert second == []
    assert again.inference_precision == "bf16"
    assert sorted(p.name for p in xml.parent.glob("blobs-*")) == ["blobs-bf16", "blobs-fp32"]
    out = again.embed([photo("rocket"), photo("coffee")])
    assert out.shape == (2, 1280) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert not list(tmp_path.rglob(".staging-*"))


@pytest.mark.slow
def test_a_fine_tuned_checkpoint_with_a_projection_head_serves_on_openvino(
    tmp_path: Path,
) -> None:
    base = load_model()
    torch.manual_seed(0)
    tuned = EmbeddingNet(base.name, base.backbone, base.model_id, projection_dim=64).eval()
    model_id = export_checkpoint(tuned, tmp_path / "tuned.pt")
    # The served cache directory: the same seed gives the same weights and model_id, so after the
    # first run (here or in test_embedder) this compiles a cached export instead of exporting.
    settings = ModelSettings(model_checkpoint=tmp_path / "tuned.pt", device="cpu", precision="fp32")
    built = Embedder.from_settings(settings)
    assert built.runtime == "openvino" and built.model_id == model_id and built.dim == 64
    # Keyed by the checkpoint's own model_id, never the ImageNet export.
    assert model_id != base.model_id
    assert list((settings.model_cache_dir / model_id).glob("openvino-*/model.xml"))
    images = [photo("rocket"), photo("chelsea")]
    with torch.inference_mode():
        expected = tuned(base.preprocessing.to_tensor(images)).numpy()
    got = built.embed(images)
    assert got.shape == (2, 64)
    assert np.all(np.sum(got * expected, axis=1) >= 0.9999)


def test_a_concurrent_export_keeps_the_first_published(tmp_path: Path) -> None:
    final = tmp_path / "m" / "openvino-x"
    first, second = staging_dir(final), staging_dir(final)
    (first / "model.xml").write_text("first")
    (second / "model.xml").write_text("second")
    publish(first, final)
    publish(second, final)
    assert (final / "model.xml").read_text() == "first"
    assert sorted(p.name for p in final.parent.iterdir()) == ["openvino-x"]


@pytest.fixture(scope="module")
def model() -> EmbeddingNet:
    return load_model()


def _fallback(
    model: EmbeddingNet, cache_dir: Path
) -> tuple[object, list[MutableMapping[str, Any]]]:
    with capture_logs() as logs:
        backend = open_backend(model, CPU, Plan("openvino", "bf16", 1, 1), cache_dir, False)
    return backend, [e for e in logs if e["event"] == "runtime_fallback"]


@pytest.mark.slow
def test_without_openvino_torch_serves_and_one_line_says_why(
    model: EmbeddingNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import openvino` fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.delitem(sys.modules, "models.runtime.openvino_backend", raising=False)
    backend, lines = _fallback(model, tmp_path)
    assert isinstance(backend, TorchBackend) and backend.precision == "fp32"
    [line] = lines
    assert line["log_level"] == "warning" and line["serving"] == "torch"
    assert str(line["error"]).startswith("ModuleNotFoundError") and "openvino" in str(line["error"])
    assert backend.infer(model.preprocessing.to_tensor([photo("coffee")])).shape == (1, 1280)


@pytest.mark.slow
def test_a_compile_failure_falls_back_to_torch(
    model: EmbeddingNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ovb.compile_config
    monkeypatch.setattr(
        ovb, "compile_config", lambda p, b: {**real(p, b), "NUM_STREAMS": "not-a-number"}
    )
    # The served cache directory: its IR exists already, so only the compile runs (and fails).
    backend, [line] = _fallback(model, ModelSettings().model_cache_dir)
    assert isinstance(backend, TorchBackend)
    assert line["model_id"] == model.model_id and line["wanted"] == "openvino"


def test_openvino_on_cuda_falls_back_to_torch_on_that_device(
    model: EmbeddingNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[torch.device] = []
    monkeypatch.setattr(factory, "TorchBackend", lambda _m, device, **_kw: built.append(device))
    with capture_logs() as logs:
        open_backend(model, CUDA, Plan("openvino", "fp32", 1, 1), tmp_path, False)
    assert [e["event"] for e in logs] == ["runtime_fallback"]
    # Refused before any export: the GPU serves torch, nothing was written.
    assert built == [CUDA]
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
async def test_two_openvino_streams_embed_concurrent_chunks_in_input_order(
    model: EmbeddingNet,
) -> None:
    runner = await AsyncEmbedder.load(
        ModelSettings(device="cpu", precision="fp32", embed_streams=2, embed_batch_size=2)
    )
    try:
        assert runner.embedder.runtime == "openvino" and runner.streams == 2
        images = [photo(n) for n in ("chelsea", "coffee", "rocket")] * 2
        # 6 photos in chunks of 2: three passes over both infer requests at once.
        got = await runner.embed(images)
        with torch.inference_mode():
            expected = model(model.preprocessing.to_tensor(images)).numpy()
        assert np.all(np.sum(got * expected, axis=1) >= 0.9999)
    finally:
        runner.close()
