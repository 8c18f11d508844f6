"""The public library ``hitok``: the README's Python example runs, Pillow images in and out, the shared helpers
(one lister/loader, one PSNR, one error line), and imports that point inward (no package imports hitok.cli, the
model core imports no training code)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hitok
from cli_corpus import smooth_rgb
from hitok import model_store
from hitok.errors import UserError, one_line
from hitok.imageio import list_images, load_rgb8, picture_from_pil, picture_to_pil
from hitok.psnr import psnr

ROOT = Path(__file__).resolve().parents[1]


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.skipif(not hitok.default_model_path().is_file(), reason="no shipped default in this checkout")
def test_readme_python_example_runs(tmp_path, monkeypatch):
    code = readme_python_blocks()[0]
    assert len(code.strip().splitlines()) == 5, code
    (tmp_path / "docs").mkdir()
    Image.fromarray(smooth_rgb(20, 24, seed=3)).save(tmp_path / "docs" / "sample.png")  # tiny: fast on the CPU
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    got = Image.open(tmp_path / "sample_x4.png")
    assert got.size == (96, 80)
    bicubic = Image.open(tmp_path / "docs" / "sample.png").resize(got.size, Image.BICUBIC)
    assert psnr(np.asarray(got), np.asarray(bicubic), peak=255.0) > 25  # a photo, x4, not noise


@pytest.mark.skipif(not hitok.default_model_path().is_file(), reason="no shipped default in this checkout")
def test_readme_batch_example_runs(tmp_path, monkeypatch, capsys):
    code = readme_python_blocks()[1]
    assert len(code.strip().splitlines()) == 3, code
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    for i, rel in enumerate(["a.png", "b.jpg", "sub/c.png"]):
        Image.fromarray(smooth_rgb(12, 16, seed=i)).save(tmp_path / "photos" / rel)
    (tmp_path / "photos" / "broken.png").write_bytes(b"not a png")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "{'done': 3, 'skipped': 0, 'failed': 1}"
    assert Image.open(tmp_path / "photos_x4" / "sub" / "c.png").size == (64, 48)
    assert Image.open(tmp_path / "photos_x4" / "b.jpg").size == (64, 48)
    records = [json.loads(line) for line in (tmp_path / "photos_x4" / ".hitok-output").read_text().splitlines()[1:]]
    assert {r["settings"]["model"] for r in records} == {model_store.model_id(hitok.default_model_path())}
    # a resume keeps what it made with the same settings
    run = hitok.BatchRunner(hitok.Upscaler(hitok.load_model())).process("photos", "photos_x4", recursive=True,
                                                                        skip_existing=True)
    assert run.counts == {"done": 0, "skipped": 3, "failed": 1}


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "I;16"])
def test_upscaler_takes_and_gives_pillow_images(tiny_model, mode):
    rgb = smooth_rgb(12, 16, seed=1)
    if mode == "I;16":
        im = Image.fromarray((rgb[..., 0].astype(np.uint16) * 257))
    else:
        im = Image.fromarray(rgb).convert(mode)
    out = hitok.Upscaler(tiny_model, "cpu", "fp32").upscale(im)
    assert out.size == (64, 48)
    assert out.mode == {"P": "RGB"}.get(mode, mode)  # a palette comes back as the colours it stood for


def test_one_call_upscale_and_load_model_by_path(tiny_model_path):
    im = Image.fromarray(smooth_rgb(8, 12, seed=2))
    model = hitok.load_model(tiny_model_path)
    a = hitok.upscale(im, model=str(tiny_model_path), device="cpu", precision="fp32")
    b = hitok.Upscaler(model, "cpu", "fp32").upscale(im)
    assert a.size == (48, 32)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(UserError, match="no such model file"):
        hitok.load_model(tiny_model_path.with_name("missing.safetensors"))


def test_upscaler_takes_the_old_fix_colors_keyword_with_a_deprecation_warning(tiny_model):
    with pytest.warns(DeprecationWarning, match=r"Upscaler\(color_fix=\.\.\.\)"):
        old = hitok.Upscaler(tiny_model, "cpu", "fp32", fix_colors=False)
    assert old.color_fix is False and hitok.Upscaler(tiny_model, "cpu", "fp32", color_fix=False).color_fix is False


def test_picture_pil_round_trip_keeps_pixels_and_alpha():
    rgba = np.dstack([smooth_rgb(6, 7, seed=4), np.arange(42, dtype=np.uint8).reshape(6, 7)])
    pic = picture_from_pil(Image.fromarray(rgba))
    assert pic.pixels.shape == (6, 7, 3) and pic.alpha is not None
    np.testing.assert_array_equal(np.asarray(picture_to_pil(pic)), rgba)


def test_list_images_and_load_rgb8(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.fromarray(smooth_rgb(8, 8)).save(tmp_path / "b.png")
    Image.fromarray(smooth_rgb(8, 8)[..., 0]).save(tmp_path / "sub" / "a.png")  # grey, one folder down
    (tmp_path / "notes.txt").write_text("not a photo")
    assert list_images(tmp_path) == [tmp_path / "b.png"]
    assert list_images(tmp_path, recursive=True) == [tmp_path / "b.png", tmp_path / "sub" / "a.png"]
    assert list_images(tmp_path, recursive=True, max_images=1) == [tmp_path / "b.png"]
    grey = load_rgb8(tmp_path / "sub" / "a.png")
    assert grey.shape == (8, 8, 3) and grey.dtype == np.uint8 and (grey[..., 0] == grey[..., 2]).all()
    with pytest.raises(UserError, match="no such folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        list_images(tmp_path / "empty")


def test_psnr_values():
    a = np.zeros((4, 4))
    assert psnr(a, a) == float("inf")
    assert psnr(a, np.full((4, 4), 0.1)) == pytest.approx(20.0)
    assert psnr(np.full((2, 2), 25.5), np.zeros((2, 2)), peak=255.0) == pytest.approx(20.0)
    # tensors too; the first image is clipped to the displayable range first (1.5 counts as 1.0)
    assert psnr(torch.full((1, 3, 2, 2), 1.5), torch.full((1, 3, 2, 2), 0.9)) == pytest.approx(20.0)


def test_one_line():
    assert one_line(ValueError("\n first  line \nsecond")) == "first line"
    assert one_line(KeyError(), with_type=True) == "KeyError"
    assert one_line(FileNotFoundError(2, "No such file or directory", "x.png")) == "x.png: No such file or directory"
    assert one_line(RuntimeError("x" * 1000), with_type=True).startswith("RuntimeError: xxx")
    assert len(one_line(RuntimeError("x" * 1000))) == 300


LIBRARY = {p.stem for p in (ROOT / "hitok").glob("*.py")} - {"__init__"}
# folder -> the hitok packages its code may import (besides itself): imports point inward, nothing imports the CLI
ALLOWED = {"models": {"models"}, "hitok": {"models", "library"}, "train": {"models", "library", "train"},
           "bench": {"models", "library", "train", "bench"}, "hitok_cli": {"library", "train", "bench", "cli"}}


def hitok_imports(folder: str) -> set[str]:
    """The packages (models, train, bench, cli, or "library" for hitok's own modules) a folder's code imports."""
    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        for name in re.findall(r"^\s*(?:from|import) hitok(?:\.(\w+))?", path.read_text(), re.M):
            found.add("library" if not name or name in LIBRARY else name)
    return found


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_point_inward(folder):
    assert hitok_imports(folder) <= ALLOWED[folder], folder


# training-only parts (targets, discriminator, losses): hitok.train.losses, never the model core
TRAINING_ONLY = ("dwt", "discriminator", "gan_loss", "repa", "lpips")


@pytest.mark.slow
def test_the_model_core_holds_and_imports_no_training_code():
    """models/ is what inference and model files need: its training-only parts live in train/losses/, and importing
    every module of hitok.models (relative imports included, which the text scan above cannot see) loads no
    hitok.train module."""
    assert [n for n in TRAINING_ONLY if (ROOT / "models" / f"{n}.py").exists()] == []
    assert all((ROOT / "train" / "losses" / f"{n}.py").is_file() for n in TRAINING_ONLY)
    code = ("import importlib, pkgutil, sys, hitok.models as m\n"
            "for info in pkgutil.iter_modules(m.__path__): importlib.import_module('hitok.models.' + info.name)\n"
            "print(' '.join(sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "hitok.models.io" in loaded and [m for m in loaded if m.startswith("hitok.train")] == []


def test_importing_the_model_core_loads_no_engine():
    """`hitok/__init__.py` runs before any hitok.x import; it must not pull the inference engine in with it."""
    code = "import sys, hitok.models; print(' '.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in loaded if m.startswith("hitok") and not m.startswith("hitok.models")] == ["hitok"]


def test_image_io_loads_no_torch():
    """Reading and writing photos (and the error classes) must not pay torch's import (seconds): hitok.errors takes
    its classes from models/errors.py, which imports nothing, through the lazy hitok.models package."""
    code = "import sys, hitok.imageio, hitok.errors; print(' '.join(m for m in sys.modules if m.startswith('torch')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


# What `hitok upscale` must not load: each is a second or more of a 2 s command on 2 CPU cores. sympy and
# torch._dynamo come with the first Python meta kernel (a model built on the meta device), timm and torchvision
# with a VFM, the rest are other commands' code.
NOT_ON_THE_UPSCALE_PATH = ("sympy", "torch._dynamo", "timm", "torchvision", "scipy", "hitok.train", "hitok.bench")


@pytest.mark.slow
@pytest.mark.skipif(not model_store.default_model_path().is_file(), reason="no shipped default in this checkout")
def test_upscale_with_the_shipped_model_loads_no_compiler_vfm_or_training_code(tmp_path):
    src = tmp_path / "p.png"
    Image.fromarray(smooth_rgb(24, 16)).save(src)
    code = ("import sys\nfrom hitok.cli.app import app\n"
            f"try: app(['upscale', {str(src)!r}, '-o', {str(tmp_path / 'o.png')!r}, '--precision', 'fp32'])\n"
            "except SystemExit as e: assert not e.code, e.code\n"
            "print('MODULES', ' '.join(sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = run.stdout.split("MODULES", 1)[1].split()
    assert (tmp_path / "o.png").is_file()
    assert [m for m in loaded if any(m == n or m.startswith(n + ".") for n in NOT_ON_THE_UPSCALE_PATH)] == []
