"""Distillation from a teacher (train/teacher.py): the cache of the teacher's x4 images, their crops lining up
with the photo's in CropStream, and the restorer trainer learning them."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hitok.train.data import CropStream
from hitok.train.degrade import PhotoDegradation
from hitok.train.teacher import build_teacher_cache, clean_low_res, load_teacher, teacher_key


@pytest.fixture()
def photos(tmp_path) -> Path:
    """Odd-sized noisy photos (so the cut to a multiple of 4 and the crop grid matter)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (h, w) in enumerate([(70, 83), (97, 66)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


class _NearestTeacher:
    """Stands in for Real-ESRGAN: x4 by pixel repetition; counts its calls."""
    calls = 0

    def __init__(self, *_args, **_kw):
        pass

    def __call__(self, img: np.ndarray) -> np.ndarray:
        type(self).calls += 1
        return img.repeat(4, axis=0).repeat(4, axis=1)


def test_cache_is_built_once_and_sized_like_the_cut_photo(photos, tmp_path):
    _NearestTeacher.calls = 0
    files = build_teacher_cache(photos, tmp_path / "cache", _NearestTeacher, log=lambda _m: None)
    assert _NearestTeacher.calls == 2 and len(files) == 2
    t = load_teacher(tmp_path / "cache", photos / "p0.png")
    assert t.shape == (68, 80, 3)  # 70 x 83 cut to multiples of 4
    photo = np.asarray(Image.open(photos / "p0.png"))
    assert np.array_equal(t[::4, ::4], clean_low_res(photo))  # the teacher saw the clean LR
    assert build_teacher_cache(photos, tmp_path / "cache", _NearestTeacher, log=lambda _m: None) == files
    assert _NearestTeacher.calls == 2  # resumable: nothing redone
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(photos / "p0.png")  # an edited photo: a new entry
    assert teacher_key(photos / "p0.png") not in {f.name for f in files}


def _identity_cache(photos: Path, cache: Path) -> None:
    """A 'teacher' whose image is the cut photo itself: every teacher crop must equal its photo crop."""
    cache.mkdir()
    for p in photos.iterdir():
        img = np.asarray(Image.open(p).convert("RGB"))
        Image.fromarray(img[:img.shape[0] // 4 * 4, :img.shape[1] // 4 * 4]).save(cache / teacher_key(p))


def test_teacher_crops_line_up_through_flips_and_rotations(photos, tmp_path):
    """The teacher here repeats each pixel of the photo's clean LR 4x4 times, so one pixel per 4x4 block of a
    teacher crop is the LR pixel under it: equal to the crop's own clean LR (away from the crop's border, where
    the crop's reduction pads) only when the crop starts on the LR grid, after any flip and rotation."""
    cache = tmp_path / "cache"
    build_teacher_cache(photos, cache, _NearestTeacher, log=lambda _m: None)
    stream = CropStream(photos, 32, 8, with_low_res=True, degrade_cfg=PhotoDegradation(clean_prob=1.0),
                        teacher_cache=cache)
    for step in range(4):
        b = stream.batch(step)
        assert b["teacher"].shape == b["hr"].shape == (8, 3, 32, 32) and b["low_res"].shape == (8, 3, 8, 8)
        sampled = b["teacher"][..., ::4, ::4]
        assert (sampled - b["low_res"])[..., 2:-2, 2:-2].abs().max() <= 1.5 / 255


def test_a_photo_the_teacher_has_not_seen_is_skipped(photos, tmp_path):
    _identity_cache(photos, tmp_path / "cache")
    (tmp_path / "cache" / teacher_key(photos / "p1.png")).unlink()
    stream = CropStream(photos, 32, 4, teacher_cache=tmp_path / "cache")
    with pytest.warns(UserWarning, match="no teacher image"):
        stream.batch(0)
    assert stream.paths.index(photos / "p1.png") in stream._bad


def test_restorer_loss_mixes_photo_and_teacher():
    from hitok.train.restorer import restorer_loss

    g = torch.Generator().manual_seed(0)
    pred, hr, teacher = (torch.rand(2, 3, 8, 8, generator=g) for _ in range(3))
    batch = {"hr": hr, "teacher": teacher}
    photo_l1, teacher_l1 = (pred - hr).abs().mean(), (pred - teacher).abs().mean()
    assert torch.allclose(restorer_loss(pred, {"hr": hr}), photo_l1)
    assert torch.allclose(restorer_loss(pred, batch, 1.0), teacher_l1)
    assert torch.allclose(restorer_loss(pred, batch, 0.25), 0.75 * photo_l1 + 0.25 * teacher_l1)


def test_cli_trains_on_a_cached_teacher(photos, tmp_path):
    """`hitok train restorer --teacher`: a complete cache is used as it is (no teacher run), training steps."""
    from typer.testing import CliRunner

    from hitok.cli.app import app

    _identity_cache(photos, tmp_path / "cache")
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "restorer", "--data", str(photos), "--out", str(run), "--minutes", "0.1",
                                 "--width", "8", "--blocks", "1", "--up-width", "4", "--batch-size", "2",
                                 "--lr-crop", "8", "--fp32", "--teacher", str(tmp_path / "cache"),
                                 "--texture-weight", "2"])
    assert r.exit_code == 0, r.output
    config = (run / "config.json").read_text()
    assert '"teacher_weight": 1.0' in config and '"texture_weight": 2.0' in config and str(tmp_path / "cache") in config
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] > 0


def test_texture_energy_asks_for_detail_of_the_teachers_strength_not_its_phase():
    from hitok.train.restorer import restorer_loss, texture_energy

    g = torch.Generator().manual_seed(0)
    grass = 0.5 + 0.2 * torch.randn(1, 3, 64, 64, generator=g)
    flat = torch.full_like(grass, 0.5)
    assert texture_energy(flat).abs().max() < 1e-6 and texture_energy(grass).mean() > 0.05
    other_grass = 0.5 + 0.2 * torch.randn(1, 3, 64, 64, generator=g)  # same strength, other blades
    e = texture_energy(grass)
    assert (texture_energy(other_grass) - e).abs().mean() < 0.2 * (other_grass - grass).abs().mean()
    batch = {"hr": grass, "teacher": grass}
    assert restorer_loss(other_grass, batch, 1.0, texture_weight=1.0) < restorer_loss(flat, batch, 1.0, 1.0) \
        < restorer_loss(flat, batch, 1.0, 0.0) + 1.0  # the smooth guess pays for its missing texture
    assert restorer_loss(flat, batch, 1.0, 1.0) - restorer_loss(flat, batch, 1.0, 0.0) > 0.05
