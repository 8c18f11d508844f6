"""bench/curve.py: learning curves of restorer runs, one row per snapshot and track, resumable, NIQE and the
periodic-pattern check included."""
import csv

import numpy as np
from PIL import Image

from hitok.bench.curve import FIELDS, score_runs
from hitok.models import Restorer, RestorerConfig
from hitok.train.restorer import save_weights


def test_curve_rows_resume_and_an_old_csv_gains_the_new_columns(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "val").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "val" / f"v{i}.png")
    run = tmp_path / "runA"
    (run / "snapshots").mkdir(parents=True)
    save_weights(run / "snapshots" / "min00010.0.safetensors", Restorer(RestorerConfig(8, 1, up_width=4)), None,
                 {"steps": "7", "minutes": "10.0"})
    out = tmp_path / "curves.csv"
    with open(out, "w", newline="") as f:  # a CSV from before NIQE was scored
        f.write("run,snapshot,steps,minutes,track,psnr_y,haarpsi\nold,min1,1,1.0,bicubic,30.0,0.7\n")
    rows = score_runs([run], tmp_path / "val", out)
    assert [r["track"] for r in rows] == ["bicubic", "realistic"] and rows[0]["steps"] == "7"
    assert all(float(r["niqe"]) > 0 and 5 < float(r["psnr_y"]) < 40 and float(r["periodic"]) >= 1
               and float(r["blocky"]) > 0 for r in rows)
    assert score_runs([run], tmp_path / "val", out) == []  # scored snapshots are skipped
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == FIELDS and len(table) == 3
    assert table[0]["niqe"] == table[0]["periodic"] == table[0]["blocky"] == table[0]["flat"] == ""


def test_live_rows_score_the_weights_being_trained_not_the_average(tmp_path):
    """--live: the run's live snapshots and its continuation file's `model.*` (or the file named directly), one
    row per step count; its EMA (another network here) must not be what is scored."""
    import torch
    from torch.optim.swa_utils import AveragedModel

    rng = np.random.default_rng(1)
    (tmp_path / "val").mkdir()
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "val" / "v.png")
    cfg = RestorerConfig(8, 1, up_width=4)
    torch.manual_seed(0)
    live, avg = Restorer(cfg), Restorer(cfg)
    with torch.no_grad():
        live.up2.weight.mul_(3)  # a live network further from bicubic than its average
    run = tmp_path / "runL"
    run.mkdir()
    save_weights(run / "continuation.safetensors", live, AveragedModel(avg), {"steps": "40", "minutes": "3.0"})
    out = tmp_path / "curves.csv"
    rows = score_runs([run], tmp_path / "val", out, live=True)
    assert [(r["run"], r["snapshot"]) for r in rows] == [("runL", "live-40")] * 2
    file_rows = score_runs([run / "continuation.safetensors"], tmp_path / "val", tmp_path / "other.csv", live=True)
    assert [r["run"] for r in file_rows] == ["continuation"] * 2 and file_rows[0]["psnr_y"] == rows[0]["psnr_y"]
    (run / "snapshots").mkdir()
    save_weights(run / "snapshots" / "min00003.0.safetensors", avg, None, {"steps": "40", "minutes": "3.0"})
    snap_rows = score_runs([run], tmp_path / "val", out)
    assert float(snap_rows[0]["psnr_y"]) != float(rows[0]["psnr_y"])  # the live weights, not the EMA
    assert score_runs([run], tmp_path / "val", out, live=True) == []  # scored once per step count
    (run / "snapshots" / "live").mkdir()  # what a run saves beside each EMA snapshot
    save_weights(run / "snapshots" / "live" / "min00001.0.safetensors", avg, None, {"steps": "15", "minutes": "1.0"})
    save_weights(run / "snapshots" / "live" / "min00003.0.safetensors", live, None, {"steps": "40", "minutes": "3.0"})
    rows = score_runs([run], tmp_path / "val", tmp_path / "fresh.csv", live=True)
    assert [r["snapshot"] for r in rows] == ["live-15"] * 2 + ["live-40"] * 2  # the last one once, not twice
