"""Tests of the tokenizer ablation (bench/ablate_tokenizer.py): the whole script on 3 generated images with
the tiny preset's sizes and 2 steps per run, its outputs, re-use of finished runs, and the HF-share measure."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from hitok.bench.ablate_tokenizer import hf_share, main
from hitok.train.losses.dwt import dwt_target

torch.set_num_threads(1)


def _photos(folder, n: int = 3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 144, 160
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([128 + 100 * np.sin(xx * (0.1 + 0.05 * i)), 128 + 100 * np.cos(yy * 0.2 + i),
                        rng.integers(60, 200, (h, w))], -1)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"photo{i}.png")
    return folder


def _args(data, out, *extra):
    return ["--data", str(data), "--val", str(data), "--out", str(out), "--steps", "2", "--preset", "tiny",
            "--crop", "128", "--batch-size", "1", "--warmup", "1", "--ae-warmup", "1", "--val-crop", "128",
            "--log-every", "100", *extra]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    data = _photos(root / "photos")
    assert main(_args(data, root / "out")) == 0
    return data, root / "out"


def test_every_row_is_trained_and_scored(ablation):
    _, out = ablation
    res = json.loads((out / "results.json").read_text())
    assert {"command", "settings", "rows", "fig1a", "val_images", "val_crop"} <= set(res)
    assert list(res["rows"]) == ["g1", "g2", "g4", "g8", "g4-plain", "g4-mask"]
    assert res["val_crop"] == [128, 128] and len(res["val_images"]) == 3
    for rid, row in res["rows"].items():
        # tiny capacity: C=8 and 32 codes in total, split over the groups (Table 7's structure)
        assert row["groups"] * row["codebook_size"] == 32 and row["groups"] * row["code_dim"] == 8
        assert row["n_seeds"] == 1 and row["steps"] == [2]
        run = row["runs"][0]
        assert math.isfinite(run["r_psnr"]) and 0 < run["r_ssim"] <= 1 and run["train_seconds"] >= 0
        assert len(run["usage"]) == row["groups"] and all(0 < u <= 1 for u in run["usage"])
        assert ("hierarchy" in run) == (row["groups"] > 1)
    assert res["rows"]["g1"]["tables"] == ["table7", "table3"] and res["rows"]["g4"]["tables"] == ["table7", "table3"]
    assert res["rows"]["g4-mask"]["masking"] and not res["rows"]["g4-mask"]["freq_targets"]
    assert not res["rows"]["g4-plain"]["masking"]


def test_fig1a_hierarchy_and_grid(ablation):
    _, out = ablation
    f = json.loads((out / "results.json").read_text())["fig1a"]
    assert f["row"] == "g4" and f["M"] == [1, 2, 3, 4]
    for k in ("psnr_vs_target", "psnr_vs_full", "hf_share", "hf_share_target"):
        assert len(f[k]) == 4 and all(math.isfinite(v) for v in f[k])
    # T(N-M) keeps more detail as M grows, and T(0) is the image itself
    assert f["hf_share_target"][0] == 0 and f["hf_share_target"] == sorted(f["hf_share_target"])
    assert f["hf_share_target"][-1] == pytest.approx(f["hf_share_gt"], abs=1e-4)
    assert f["psnr_vs_target"][-1] == pytest.approx(f["psnr_vs_full"][-1], abs=1e-3)
    mat = f["psnr_vs_dwt_levels"]  # [M-1][l]: the M-group decode against T(l)
    assert len(mat) == 4 and all(len(r) == 4 for r in mat) and len(f["best_level"]) == 4
    assert [mat[M - 1][4 - M] for M in f["M"]] == f["psnr_vs_target"]
    with Image.open(out / f["grid"]) as im:  # 3 images x (input | M=1..4), 128 px panels, 18 px labels, 4 px gaps
        assert im.size == (5 * 128 + 4 * 4, 3 * (128 + 18) + 2 * 4)
    assert (out / "hierarchy_g8.png").is_file() and not (out / "hierarchy_g1.png").exists()


def _md_row(md: str, first_cell: str) -> list[str]:
    """The cells of the markdown table row whose first cell starts with `first_cell`."""
    rows = [line for line in md.splitlines() if line.startswith(f"| {first_cell}")]
    assert len(rows) == 1, (first_cell, rows)
    return [c.strip() for c in rows[0].strip("|").split("|")]


def test_markdown_tables_show_the_measured_runs(ablation):
    _, out = ablation
    md = (out / "ablation.md").read_text()
    res = json.loads((out / "results.json").read_text())
    assert "python -m hitok.bench.ablate_tokenizer --data" in md and "--steps 2" in md
    assert "## Table 7" in md and "## Table 3" in md and "fig1a_grid.png" in md
    rows = res["rows"]
    # Table 7, second row (2 groups): our r-PSNR, and our step from the row above paired by seed
    g2 = _md_row(md, "2x16 / 4")
    assert g2[2] == f"{rows['g2']['r_psnr']:.2f}"
    step = rows["g2"]["runs"][0]["r_psnr"] - rows["g1"]["runs"][0]["r_psnr"]
    assert g2[3].endswith(f"/ {step:+.2f}")
    assert g2[4] == f"{rows['g2']['r_ssim']:.4f}" and g2[7] == "2"
    # Table 3 labels its rows by design; the masking row shows that run's numbers and codebook usage
    mask = _md_row(md, "+ Group-Masking (4x8 / 2)")
    assert mask[2] == f"{rows['g4-mask']['r_psnr']:.2f}"
    assert mask[6] == " ".join(f"{u:.0%}" for u in rows["g4-mask"]["usage"])
    # Fig. 1a: one line per M with the measured PSNR against the frequency-matched target
    f = res["fig1a"]
    for i, M in enumerate(f["M"]):
        assert _md_row(md, f"{M} | T({4 - M})")[2] == f"{f['psnr_vs_target'][i]:.2f}"


def test_finished_runs_are_reused(ablation, caplog):
    data, out = ablation
    before = (out / "runs" / "g4-s0" / "model.safetensors").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="hitok"):
        assert main(_args(data, out, "--only", "g4", "--rows", "table7")) == 0
    assert "reusing the finished run" in caplog.text
    assert (out / "runs" / "g4-s0" / "model.safetensors").stat().st_mtime_ns == before
    assert list(json.loads((out / "results.json").read_text())["rows"]) == ["g4"]


def test_crop_too_small_for_an_8_level_dwt_is_one_line(tmp_path, capsys):
    data = _photos(tmp_path / "photos", n=1)
    assert main(_args(data, tmp_path / "out", "--crop", "64")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --crop 64: must be a positive multiple of 128")


def test_hf_share_counts_the_bands_the_dwt_target_removes():
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert hf_share(x, 6) == pytest.approx(1.0)  # 64 px: six levels hold all non-DC energy
    assert hf_share(dwt_target(x, 3), 3) == pytest.approx(0.0, abs=1e-12)
    assert 0.5 < hf_share(x, 3) < 1.0  # white noise: most energy is in the fine bands


def test_a_time_budget_fixes_one_step_count_for_every_run(tmp_path):
    data = _photos(tmp_path / "photos", n=1)
    args = _args(data, tmp_path / "out", "--rows", "table7", "--only", "g1,g2")
    args[args.index("--steps"):args.index("--steps") + 2] = ["--minutes-per-row", "0.02"]
    assert main(args) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    first = res["steps_from_budget"]
    assert first["row"] == "g1" and first["steps"] >= 1
    assert res["rows"]["g1"]["steps"] == res["rows"]["g2"]["steps"] == [first["steps"]]
