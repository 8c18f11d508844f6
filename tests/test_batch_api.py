"""hitok.batch.BatchRunner, the library's batch (``hitok batch`` prints its events): a folder planned and run from
Python, one event per file, several upscalers sharing one queue, and the command's refusals as UserErrors."""
from __future__ import annotations

import pytest
from PIL import Image

import hitok
from cli_corpus import smooth_rgb
from hitok.batch import BatchRunner, plan_jobs
from hitok.errors import UserError


def _photos(folder, n: int) -> None:
    folder.mkdir()
    for i in range(n):
        Image.fromarray(smooth_rgb(8, 12, seed=i)).save(folder / f"p{i}.png")


def test_runner_reports_every_file_and_spreads_them_over_its_upscalers(tiny_model, tmp_path):
    _photos(tmp_path / "in", 5)
    (tmp_path / "in" / "bad.png").write_bytes(b"not a png")
    seen, progress = [], []
    upscalers = [hitok.Upscaler(tiny_model, "cpu", "fp32") for _ in range(2)]
    runner = BatchRunner(upscalers, on_outcome=seen.append, on_progress=progress.append)
    run = runner.process(tmp_path / "in", tmp_path / "out", fmt="jpg", quality=80)
    assert run.counts == {"done": 5, "skipped": 0, "failed": 1} and run.stopped is None
    assert sorted(o.rel.name for o in seen) == [f"p{i}.png" for i in range(5)]  # one event per file run
    assert progress[-1] == pytest.approx(5)
    assert [o.reason for o in run.outcomes if o.status == "failed"] == ["not an image, or a format hitok cannot read"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == [f"p{i}.jpg" for i in range(5)]
    with Image.open(tmp_path / "out" / "p0.jpg") as im:
        assert im.size == (48, 32)


def test_runner_refuses_what_the_command_refuses_before_any_work(tiny_model, tmp_path):
    _photos(tmp_path / "in", 1)
    runner = BatchRunner(hitok.Upscaler(tiny_model, "cpu", "fp32"))
    with pytest.raises(UserError, match="OUT_DIR is IN_DIR"):
        runner.process(tmp_path / "in", tmp_path / "in")
    assert runner.process(tmp_path / "in", tmp_path / "out").counts["done"] == 1
    with pytest.raises(UserError, match="already exist"):
        runner.process(tmp_path / "in", tmp_path / "out")
    assert runner.process(tmp_path / "in", tmp_path / "out", skip_existing=True).counts == \
        {"done": 0, "skipped": 1, "failed": 0}
    with pytest.raises(UserError, match="at least one Upscaler"):
        BatchRunner([])


def test_a_plan_made_before_the_model_runs_later(tiny_model, tmp_path):
    """What hitok batch does: plan (no model), then load and run the plan."""
    _photos(tmp_path / "in", 2)
    plan = plan_jobs(tmp_path / "in", tmp_path / "out")
    assert len(plan.jobs) == 2 and not (tmp_path / "out").exists()  # planning writes nothing
    run = BatchRunner(hitok.Upscaler(tiny_model, "cpu", "fp32")).run(plan)
    assert run.counts["done"] == 2 and (tmp_path / "out" / ".hitok-output").is_file()
