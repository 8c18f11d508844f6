"""hitok.accel: the ONNX Runtime engine gives eager torch's output (within kernel rounding), caches its
graph across processes within a size limit, and steps aside when it cannot help."""

from __future__ import annotations

import math

import pytest
import torch

from hitok import accel, model_store

torch.set_num_threads(1)

needs_shipped = pytest.mark.skipif(not model_store.default_model_path().is_file(),
                                   reason="no shipped default in this checkout")
needs_ort = pytest.mark.skipif(not accel.available(), reason="onnxruntime/onnxscript not installed (optional)")


@pytest.fixture(scope="module")
def shipped():
    from hitok.models import load_model_file

    path = model_store.default_model_path()
    return load_model_file(path).eval(), model_store.model_id(path)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-20))


@needs_shipped
@needs_ort
def test_onnx_engine_matches_eager_and_caches(shipped, tmp_path):
    model, mid = shipped
    torch.manual_seed(0)
    lr = torch.rand(1, 3, 32, 48)
    settings = dict(detail=model.config.tokenizer.groups, color_fix=True, fidelity=model.config.fidelity)
    engine = accel.OrtEngine(model, mid, threads=1, export_after=2, root=tmp_path)
    assert engine(lr, **settings) is None  # first tile of a shape: eager, nothing exported yet
    out = engine(lr, **settings)  # second: exported, then run
    assert out is not None and engine.exported
    with torch.inference_mode():
        ref = model.upscale(lr, detail=settings["detail"], color_fix=True, fidelity=settings["fidelity"])
    assert out.shape == ref.shape
    assert _psnr(out, ref) >= 50, f"{_psnr(out, ref):.1f} dB between ONNX Runtime and eager torch"

    again = accel.OrtEngine(model, mid, threads=1, export_after=99, root=tmp_path)  # a later process
    cached = again(lr, **settings)
    assert cached is not None and not again.exported  # loaded from the cache on the first tile
    assert torch.equal(cached, out)


@needs_shipped
@needs_ort
def test_onnx_engine_steps_aside(shipped, tmp_path, monkeypatch):
    model, mid = shipped
    engine = accel.OrtEngine(model, mid, threads=1, export_after=1, root=tmp_path)
    assert engine(torch.rand(1, 3, 16, 16, dtype=torch.float64), 4, True, 1.0) is None  # not fp32
    assert engine(torch.rand(2, 3, 16, 16), 4, True, 1.0) is None  # a batch of tiles
    monkeypatch.setenv("HITOK_ENGINE", "torch")
    assert accel.make_engine(model, torch.device("cpu"), torch.float32, mid) is None
    assert accel.make_engine(model, torch.device("cpu"), torch.float32, mid, mode="onnx") is not None
    assert accel.make_engine(model, torch.device("cpu"), torch.bfloat16, mid, mode="onnx") is None


@needs_shipped
@needs_ort
def test_upscaler_uses_the_engine(shipped, tmp_path, monkeypatch):
    from hitok.upscaler import Upscaler

    model, mid = shipped
    monkeypatch.setenv("HITOK_ENGINE_CACHE", str(tmp_path))
    monkeypatch.setenv("HITOK_ENGINE", "onnx")
    up = Upscaler(model, torch.device("cpu"), torch.float32, model_id=mid)
    assert isinstance(up.engine, accel.OrtEngine)
    up.engine.export_after = 1  # export on the first tile
    lr = torch.rand(1, 3, 32, 32)
    out = up.tile_fn(lr)
    monkeypatch.setenv("HITOK_ENGINE", "torch")
    eager = Upscaler(model, torch.device("cpu"), torch.float32, model_id=mid)
    assert eager.engine is None
    assert _psnr(out, eager.tile_fn(lr)) >= 50
    assert up.engine.exported


def test_missing_runtime_means_no_engine(monkeypatch):
    monkeypatch.setattr(accel, "available", lambda: False)
    assert accel.make_engine(torch.nn.Linear(1, 1), torch.device("cpu"), torch.float32, "x", mode="onnx") is None


def test_default_is_eager_torch(monkeypatch):
    monkeypatch.delenv("HITOK_ENGINE", raising=False)
    assert accel.engine_mode() == "torch"
    assert accel.make_engine(torch.nn.Linear(1, 1), torch.device("cpu"), torch.float32, "x") is None


@needs_shipped
def test_int8_engine_close_to_eager(shipped):
    model, mid = shipped
    engine = accel.make_engine(model, torch.device("cpu"), torch.float32, mid, mode="int8")
    assert isinstance(engine, accel.Int8LinearEngine)
    torch.manual_seed(0)
    lr = torch.rand(1, 3, 32, 48)
    g, w = model.config.tokenizer.groups, model.config.fidelity
    with torch.inference_mode():
        out = engine(lr, g, True, w)
        ref = model.upscale(lr, detail=g, color_fix=True, fidelity=w)
    assert _psnr(out, ref) >= 45, f"{_psnr(out, ref):.1f} dB between int8 Linear and fp32 eager"
    assert any(type(m).__name__ == "Linear" for m in model.modules())  # the caller's model stays fp32


def test_the_graph_cache_keeps_the_most_recent_within_its_limit(tmp_path, monkeypatch):
    """Runs without onnxruntime: pruning is plain file handling."""
    import os

    graphs = []
    for i, model in enumerate("AABB"):  # two models' folders, two graphs each
        path = tmp_path / f"model{model}-torch2-ort1" / f"upscale_{i}.onnx"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1000 + i, 1000 + i))  # upscale_0 is the least recently used
        graphs.append(path)
    os.utime(graphs[0], (2000, 2000))  # ... until it is used again
    deleted = accel.prune_cache(tmp_path, limit=2500, keep=graphs[1])
    assert deleted == [graphs[2], graphs[3]] and all(p.exists() for p in graphs[:2])  # the just-exported stays
    assert accel.prune_cache(tmp_path, limit=2500) == []
    monkeypatch.setenv("HITOK_ENGINE_CACHE_MB", "0.5")
    assert accel.cache_limit_bytes() == 2**19
    monkeypatch.setenv("HITOK_ENGINE_CACHE_MB", "lots")
    assert accel.cache_limit_bytes() == accel.DEFAULT_CACHE_MB * 2**20
