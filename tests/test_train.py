"""Tests of the training pipeline (train/loop.py and friends, `hitok train`): a tiny three-stage run on generated
photos, exact resumption, Ctrl-C, 2-process gloo data parallelism, the time-budget campaign and its parts."""
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from hitok.cli.train_cmd import train_app
from hitok.models import load_model_file, read_metadata
from hitok.train.campaign import run_campaign
from hitok.train.config import TrainConfig
from hitok.train.export import join_parts, write_parts
from hitok.train.loop import lr_factor, train
from hitok.train.monitor import MetricsCSV

torch.set_num_threads(1)
runner = CliRunner()


def _photos(folder, n: int = 6, corrupt: bool = True):
    """Smooth gradients plus stripes at a few sizes (all >= the tiny 32 px crop), and one broken file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 48 + 8 * i, 64
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([128 + 100 * np.sin(xx * (0.2 + 0.05 * i)), 128 + 100 * np.cos(yy * 0.3 + i),
                        rng.integers(60, 200, (h, w))], -1)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"photo{i}.png")
    if corrupt:
        (folder / "broken.png").write_bytes(b"\x89PNG this is not an image")
    return folder


def _cfg(stage, data, out, **kw):
    base = dict(stage=stage, data=str(data), out=str(out), device="cpu", quiet=True, workers=0, log_every=2,
                sample_every=100, ckpt_every=100)
    base.update(kw)
    if stage == "tokenizer" and "init" not in kw:
        base.setdefault("preset", "tiny")
    return TrainConfig(**base)


def _cli(*args):
    r = runner.invoke(train_app, [str(a) for a in args])
    return r


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """tokenizer -> generator -> decoder through the CLI, 6 steps each, on 6 photos + 1 corrupt file."""
    root = tmp_path_factory.mktemp("train")
    data = _photos(root / "photos")
    runs = {}
    common = ["--data", data, "--steps", 6, "--device", "cpu", "--workers", 0, "--quiet", "--sample-every", 3,
              "--ckpt-every", 3, "--adv-start", 2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for stage, init in (("tokenizer", None), ("generator", "tokenizer"), ("decoder", "generator")):
            runs[stage] = root / stage
            extra = ["--preset", "tiny"] if init is None else ["--init", runs[init]]
            r = _cli(stage, "--out", runs[stage], *common, *extra)
            assert r.exit_code == 0, r.output
            assert f"{stage}: step 6/6" in r.output
    runs["warnings"] = [str(w.message) for w in caught]
    runs["data"] = data
    return runs


def test_three_stages_export_a_bundle_that_upscales(pipeline, tmp_path):
    assert any("skipping unreadable image" in w and "broken.png" in w for w in pipeline["warnings"])
    dec = pipeline["decoder"]
    for f in ("config.json", "metrics.csv", "model.safetensors", "checkpoint/state.pt", "checkpoint/disc.pt",
              "checkpoint/ema.safetensors", "samples/decoder_0000006.png"):
        assert (dec / f).is_file(), f
    with Image.open(dec / "samples/decoder_0000006.png") as im:  # LR | output | GT, two rows of 32 px
        assert im.size == (3 * 32, 2 * 32)
    out = tmp_path / "bundle.safetensors"
    r = _cli("export", dec, "-o", out, "--half", "--no-encoder")
    assert r.exit_code == 0, r.output
    assert "steps: tokenizer 6, generator 6, decoder 6" in r.output
    r = _cli("export", dec, "-o", out)
    assert r.exit_code == 1 and "already exists" in r.output
    model = load_model_file(out)
    assert not model.has_encoder
    meta = model.metadata
    assert meta["preset"] == "tiny" and meta["data"] == "photos" and meta["vfm"] == "none"
    assert meta["steps_tokenizer"] == meta["steps_generator"] == meta["steps_decoder"] == "6"
    lp = meta["lpips_tokenizer"]
    assert lp.startswith("unavailable (") or lp.startswith("VGG16")
    sr = model.upscale(torch.rand(1, 3, 8, 12))
    assert sr.shape == (1, 3, 32, 48) and torch.isfinite(sr).all() and 0 <= sr.min() and sr.max() <= 1
    # the exported weights are the EMA, not the last step's
    ema, live = load_file(dec / "checkpoint/ema.safetensors"), load_file(dec / "checkpoint/model.safetensors")
    exported = load_file(dec / "model.safetensors")
    k = next(iter(ema))
    assert torch.equal(exported[k], ema[k]) and not torch.equal(ema[k], live[k])


def test_metrics_log_code_usage_per_group(pipeline):
    header = (pipeline["tokenizer"] / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"live0", "live1", "usage0", "usage1", "l1", "psnr", "d_loss", "adv"} <= set(header)
    header = (pipeline["generator"] / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"pred_usage0", "pred_usage1", "ce", "acc"} <= set(header)


def test_cli_errors_are_one_line(pipeline, tmp_path):
    r = _cli("generator", "--data", pipeline["data"], "--out", tmp_path / "g", "--device", "cpu")
    assert r.exit_code == 1 and "give --init" in r.output and "Traceback" not in r.output
    r = _cli("tokenizer", "--data", pipeline["data"], "--out", tmp_path / "none", "--resume")
    assert r.exit_code == 1 and "no run to resume" in r.output
    r = _cli("tokenizer", "--data", pipeline["data"], "--out", pipeline["tokenizer"], "--preset", "tiny")
    assert r.exit_code == 1 and "already holds a run" in r.output
    r = _cli("tokenizer", "--data", pipeline["data"], "--out", tmp_path / "c", "--preset", "tiny", "--crop", 36)
    assert r.exit_code == 1 and "--crop 36" in r.output
    r = _cli("join", tmp_path, "-o", tmp_path / "x.safetensors")
    assert r.exit_code == 1 and "no model-XX-of-YY" in r.output


def _weights_equal(a, b, files=("checkpoint/model.safetensors", "checkpoint/ema.safetensors", "model.safetensors")):
    for f in files:
        A, B = load_file(a / f), load_file(b / f)
        assert A.keys() == B.keys()
        for k in A:
            torch.testing.assert_close(A[k], B[k], rtol=0, atol=1e-6, msg=f"{f}:{k}")
    da, db = torch.load(a / "checkpoint/disc.pt"), torch.load(b / "checkpoint/disc.pt")
    for k in da["model"]:
        torch.testing.assert_close(da["model"][k], db["model"][k], rtol=0, atol=1e-6)


@pytest.mark.parametrize("stage", ["tokenizer", "decoder"])
def test_resume_gives_the_same_weights_as_a_straight_run(pipeline, tmp_path, stage):
    # tokenizer: 6 + 6 steps cross the dead-code restart at step 10; decoder: top-K sampling and masking
    n = 6 if stage == "tokenizer" else 3
    kw = dict(adv_start=1) if stage == "tokenizer" else dict(init=str(pipeline["generator"]), adv_start=1)
    straight = train(_cfg(stage, pipeline["data"], tmp_path / "a", steps=2 * n, **kw))
    first = train(_cfg(stage, pipeline["data"], tmp_path / "b", steps=n, **kw))
    resumed = train(_cfg(stage, pipeline["data"], tmp_path / "b", steps=2 * n, resume=True))
    assert (straight.step, first.step, resumed.step) == (2 * n, n, 2 * n)
    _weights_equal(tmp_path / "a", tmp_path / "b")
    steps = [int(row.split(",")[0]) for row in (tmp_path / "b" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 2 * n  # no row duplicated by the resume


def test_sigint_saves_a_checkpoint_and_resume_finishes(pipeline, tmp_path):
    def ctrl_c(step, terms):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup / `cmd &`
    r = train(_cfg("tokenizer", pipeline["data"], tmp_path / "run", steps=8), on_step=ctrl_c)
    assert r.interrupted and r.step == 3
    state = torch.load(tmp_path / "run/checkpoint/state.pt")
    assert state["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored
    r = train(_cfg("tokenizer", pipeline["data"], tmp_path / "run", steps=8, resume=True))
    assert not r.interrupted and r.step == 8
    r = _cli("tokenizer", "--data", pipeline["data"], "--out", tmp_path / "run", "--resume", "--crop", 64)
    assert r.exit_code == 1 and "cannot change crop" in r.output


@pytest.mark.slow
def test_two_process_gloo_run_keeps_replicas_equal(pipeline, tmp_path):
    r = train(_cfg("tokenizer", pipeline["data"], tmp_path / "ddp", steps=4, nproc=2, threads=1, adv_start=1))
    assert r.step == 4 and r.replica_spread == 0.0
    summary = json.loads((tmp_path / "ddp/summary.json").read_text())
    assert summary["step"] == 4
    model = load_model_file(tmp_path / "ddp/model.safetensors")
    assert model.metadata["batch_tokenizer"] == "4"  # 2 processes x batch 2


@pytest.mark.slow
def test_campaign_writes_small_parts_that_join(pipeline, tmp_path):
    s = run_campaign(str(pipeline["data"]), str(tmp_path / "out"), preset="tiny", budget_min=0.3,
                     work=str(tmp_path / "work"), device="cpu", workers=0, quiet=True)
    assert s["seconds"] < 0.3 * 60 + 10
    assert all(s["stages"][st]["steps"] >= 1 for st in ("tokenizer", "generator", "decoder"))
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "campaign.json" in files and len(files) <= 8
    parts = sorted((tmp_path / "out").glob("model-*.safetensors"))
    assert parts and all(p.stat().st_size <= 16 << 20 for p in parts)
    r = _cli("join", tmp_path / "out", "-o", tmp_path / "joined.safetensors")
    assert r.exit_code == 0, r.output
    model = load_model_file(tmp_path / "joined.safetensors")
    assert model.upscale(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_campaign_runs_from_a_checkout_that_is_not_installed(tmp_path):
    """docs/TRAINING.md's symbolic-link layout: `python -m hitok.train.campaign` with no pip install of hitok
    (-S: without site's .pth files, so the editable install of this checkout cannot serve it)."""
    root = Path(__file__).resolve().parents[1]
    links = re.search(r"^P=/tmp/hitok-pkg; (.+)$", (root / "docs" / "TRAINING.md").read_text(), re.M).group(1)
    subprocess.run(["bash", "-c", f"P={tmp_path}; {links}"], cwd=root, check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), sysconfig.get_paths()["purelib"]])}
    code = "import hitok.train.campaign as c; print(c.__file__)"
    where = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert where == str(tmp_path / "hitok" / "train" / "campaign.py")
    usage = subprocess.run([sys.executable, "-S", "-m", "hitok.train.campaign", "--help"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert usage.returncode == 0 and "{campaign,join}" in usage.stdout


def test_parts_split_big_tensors_and_join_back_exactly(pipeline, tmp_path):
    src = pipeline["decoder"] / "model.safetensors"
    state = load_file(src)
    biggest = max(t.numel() * 2 for t in state.values())
    parts = write_parts(src, tmp_path / "parts", max_bytes=biggest // 2 + 4096, max_files=1000, header_room=4096)
    assert len(parts) > 2
    assert any("@@" in k for p in parts for k in load_file(p))  # the biggest tensor was cut
    joined = join_parts(tmp_path / "parts", tmp_path / "j.safetensors")
    for k, v in joined.state_dict().items():
        want = state[k].to(torch.bfloat16).float() if state[k].is_floating_point() else state[k]
        torch.testing.assert_close(v, want, rtol=0, atol=0)
    assert read_metadata(tmp_path / "j.safetensors")["format"] == "hitok-1"


def test_lr_schedule_and_metrics_csv(tmp_path):
    assert lr_factor(0, 4, 100, "constant", 0.1) == 0.25
    assert lr_factor(50, 4, 100, "constant", 0.1) == 1.0
    assert lr_factor(99, 4, 100, "cosine", 0.1) == pytest.approx(0.1, abs=1e-3)
    csv = MetricsCSV(tmp_path / "m.csv")
    csv.append({"step": 1, "l1": 0.5})
    csv.append({"step": 2, "l1": 0.4, "d_loss": 1.0})  # a new column mid-run widens the header
    csv.append({"step": 3, "l1": 0.3, "d_loss": 0.9})
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == "step,l1,d_loss"
    MetricsCSV(tmp_path / "m.csv", resume_step=2)  # a resume from step 2 drops the rows after it
    assert len((tmp_path / "m.csv").read_text().splitlines()) == 3


def test_export_merges_the_vfm_lora(tmp_path):
    """`hitok train export` folds the VFM's LoRA into the stored backbone: no LoRA tensors or rank left in the
    bundle, and the bundle upscales as the unmerged model did."""
    from hitok.models import HiTok, presets, save_model
    from hitok.models.lora import lora_disabled, lora_parameters

    torch.manual_seed(0)
    model = HiTok(presets.tiny(vfm=True)).eval()
    with torch.no_grad():
        for p in lora_parameters(model):  # a trained LoRA: B is no longer zero
            p.normal_(0, 0.2)
        for name, p in model.generator.vfm.backbone.named_parameters():
            if "gamma" in name:  # DINOv3's layer scales start at 1e-5, which would hide any LoRA
                p.fill_(1.0)
    src, out = tmp_path / "src.safetensors", tmp_path / "out.safetensors"
    save_model(model, src)
    low_res = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # 4x4 VFM patches
    with torch.no_grad():
        want = model.generate(low_res).vfm_patch  # the LoRA-adapted VFM features the generator reads
        with lora_disabled(model):  # the LoRA matters for them, so dropping it would be seen
            assert (model.generate(low_res).vfm_patch - want).abs().max() > 1e-2
    r = _cli("export", src, "-o", out)
    assert r.exit_code == 0, r.output
    assert not any("lora" in k for k in load_file(out))
    merged = load_model_file(out).eval()
    assert merged.config.vfm.lora_rank == 0 and not list(lora_parameters(merged))
    with torch.no_grad():
        torch.testing.assert_close(merged.generate(low_res).vfm_patch, want, rtol=0, atol=1e-4)


def test_resume_tells_an_option_set_to_its_default_from_one_left_out():
    from dataclasses import replace

    from hitok.train.config import TrainError, merge_for_resume, resolve
    saved = resolve(TrainConfig(stage="tokenizer", data="d", out="o", preset="tiny", log_every=5, seed=3))
    given = TrainConfig(stage="tokenizer", data="d", out="o", resume=True)  # nothing given: the saved run as it was
    assert merge_for_resume(saved, given) == replace(saved, resume=True)
    assert merge_for_resume(saved, replace(given, out="moved")).out == "moved"  # a run folder moved since
    # --log-every 10 is the default, and still a request on a run saved with 5
    assert merge_for_resume(saved, replace(given, log_every=10)).log_every == 10
    with pytest.raises(TrainError, match="cannot change seed"):  # --seed 0 (the default) on a seed-3 run
        merge_for_resume(saved, replace(given, seed=0))
    # an old run's config.json: `lr` is read as learning_rate, fields it predates take their defaults
    old = json.loads(saved.to_json())
    old["lr"] = old.pop("learning_rate")
    del old["guide_only"]
    loaded = TrainConfig.from_json(json.dumps(old))
    assert loaded.learning_rate == saved.learning_rate
    assert merge_for_resume(loaded, given).guide_only is False


def test_decoder_only_is_a_tokenizer_option_without_the_autoencoder_warm_up():
    from hitok.train.config import TrainError, resolve
    cfg = resolve(TrainConfig(stage="tokenizer", data="d", out="o", preset="small", decoder_only=True))
    assert cfg.decoder_only and cfg.ae_warmup == 0  # what the run does is what config.json records
    assert resolve(TrainConfig(stage="tokenizer", data="d", out="o", preset="small")).ae_warmup > 0
    with pytest.raises(TrainError, match="tokenizer-stage option"):
        resolve(TrainConfig(stage="decoder", data="d", out="o", preset="small", decoder_only=True))


def test_cli_leaves_omitted_options_unset(monkeypatch, tmp_path):
    seen = {}
    import hitok.train.loop as loop

    def fake_train(cfg):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(loop, "train", fake_train)
    _cli("tokenizer", "--data", tmp_path, "--out", tmp_path / "r", "--resume", "--log-every", 10, "--lr", 1e-3)
    cfg = seen["cfg"]
    assert cfg.log_every == 10 and cfg.learning_rate == 1e-3
    assert cfg.seed is None and cfg.device is None and cfg.quiet is None and cfg.masking is None


def test_training_picks_its_device_as_the_library_does(monkeypatch):
    """One resolve_device (hitok/device.py): auto is CUDA, then MPS, then the CPU, for training too; a bare cuda
    is this process's local rank; what the library refuses, training refuses with the same line."""
    from hitok.device import device_type
    from hitok.train.assemble import training_device
    from hitok.train.config import TrainError
    from hitok.train.distributed import DistEnv

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert training_device("auto", DistEnv()) == torch.device("mps") and device_type("auto") == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert training_device("auto", DistEnv()) == torch.device("cpu") and device_type("auto") == "cpu"
    with pytest.raises(TrainError, match=r"^--device cuda: CUDA is not available on this machine; use --device cpu$"):
        training_device("cuda", DistEnv())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert training_device("auto", DistEnv(1, 2, 1)) == torch.device("cuda", 1)
    assert device_type("cuda:1") == "cuda"
