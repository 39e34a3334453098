"""The OpenVINO backend: the only module that imports openvino. Exports a model to IR once,
compiles it for the CPU at the asked precision and serves it through a pool of infer requests."""

from __future__ import annotations

import queue
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import structlog
import torch

from models.network import EmbeddingNet
from models.runtime.base import Plan, Precision, Runtime
from models.runtime.cache import export_dir, publish, staging_dir
from models.runtime.torch_backend import freeze

log = structlog.get_logger("models.runtime")

# OpenVINO's names for the precisions it runs on the CPU.
INFERENCE_PRECISION: dict[Precision, str] = {"fp32": "f32", "bf16": "bf16"}
IR_NAME = "model.xml"


def version() -> str:
    """OpenVINO's release, e.g. 2026.4.1: part of the export key, so an upgrade re-exports."""
    return str(ov.get_version()).split("-", 1)[0]


def export(model: EmbeddingNet, xml: Path) -> None:
    """Convert the network (CPU, float32) to IR at `xml`, any batch size, fp32 weights."""
    size = model.preprocessing.size
    example = torch.zeros((1, 3, size, size), dtype=torch.float32)
    # From the frozen trace rather than the module: 1.3 s against 6.5 s for convert_model's own
    # tracing of the eager network (2 cores, one run), BatchNorm already folded.
    frozen = freeze(model.eval(), example)
    with torch.inference_mode():
        converted = ov.convert_model(frozen, example_input=example, input=[(-1, 3, size, size)])
    # Weights stay fp32: the precision is chosen when compiling, so one export serves them all.
    ov.save_model(converted, xml, compress_to_fp16=False)


def cached_ir(model: EmbeddingNet, cache_dir: Path) -> tuple[Path, float]:
    """The model's IR under `cache_dir`, exported first when missing; (path, seconds exporting)."""
    final = export_dir(cache_dir, model.model_id, f"openvino-{version()}")
    if (final / IR_NAME).exists():
        return final / IR_NAME, 0.0
    start = time.perf_counter()
    staging = staging_dir(final)
    try:
        export(model, staging / IR_NAME)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, final)
    return final / IR_NAME, time.perf_counter() - start


def compile_config(plan: Plan, blobs: Path) -> dict[str, Any]:
    """CPU plugin properties: the precision, and the embedder's streams as OpenVINO streams."""
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[plan.precision],
        # Explicit streams and threads take precedence over what the hint would pick.
        "PERFORMANCE_HINT": "LATENCY" if plan.streams == 1 else "THROUGHPUT",
        "NUM_STREAMS": plan.streams,
        # Compiled blobs, so a warm start imports instead of compiling again.
        "CACHE_DIR": str(blobs),
    }
    if plan.threads is not None:
        config["INFERENCE_NUM_THREADS"] = plan.streams * plan.threads
    return config


class OpenVinoBackend:
    """A compiled model and one infer request per stream; `infer` may be called from as many
    threads at once as there are streams (one more waits for a free request)."""

    runtime: Runtime = "openvino"

    def __init__(self, compiled: Any, precision: Precision, requests: int) -> None:
        self._compiled = compiled
        self._precision: Precision = precision
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(requests):
            self._requests.put(compiled.create_infer_request())

    @property
    def precision(self) -> Precision:
        return self._precision

    @classmethod
    def open(cls, model: EmbeddingNet, plan: Plan, cache_dir: Path) -> OpenVinoBackend:
        """Export (once per cache) and compile `model` for the CPU according to `plan`."""
        if plan.precision not in INFERENCE_PRECISION:
            raise ValueError(f"OpenVINO on the CPU runs fp32 or bf16, not {plan.precision}")
        start = time.perf_counter()
        xml, exported_s = cached_ir(model, cache_dir)
        blobs = xml.parent / f"blobs-{plan.precision}"
        compiled = ov.Core().compile_model(str(xml), "CPU", compile_config(plan, blobs))
        if exported_s:
            # Only a cold cache says so: a warm start logs nothing (CLIs print their own stdout).
            log.info(
                "openvino_exported",
                model_id=model.model_id,
                precision=plan.precision,
                exported_s=round(exported_s, 2),
                ready_s=round(time.perf_counter() - start, 2),
                ir=str(xml),
            )
        backend = cls(compiled, plan.precision, plan.streams)
        # The first inference initialises C++ statics in OpenVINO's Python binding (the dtype
        # table behind Type.to_dtype). Two embedder threads making that first call at once
        # deadlocked a worker at start: one held the static's init guard while waiting for the
        # GIL, the other held the GIL while waiting on the guard (py-spy dump --native of the
        # hung worker, OpenVINO 2026.4.1). So it is made here, on the one thread that opens it.
        size = model.preprocessing.size
        backend.infer(torch.zeros((1, 3, size, size), dtype=torch.float32))
        return backend

    def infer(self, batch: torch.Tensor) -> np.ndarray:
        x = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        request = self._requests.get()
        try:
            # Shared input: the request reads the array in place; the output is copied out.
            z = np.asarray(request.infer({0: x}, share_inputs=True)[0], dtype=np.float32)
        finally:
            self._requests.put(request)
        # bf16 rounds the network's own normalisation; unit length is part of the contract.
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        result: np.ndarray = z / np.maximum(norms, 1e-12)
        return result
