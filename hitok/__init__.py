"""hitok — x4 photo upscaling with HiTokSR (grouped-VQ tokens predicted from a low-resolution photo).

The inference library; the ``hitok`` command (hitok.cli), the benchmarks (hitok.bench) and a Python user all go
through it::

    import hitok
    model = hitok.load_model()                       # the shipped default; or a name / .safetensors path
    big = hitok.Upscaler(model).upscale(small)       # Pillow image in, Pillow image (x4) out

upscaler.py     Upscaler: a Pillow image or an image file, x4 (tiled, reduced precision with an fp32 fallback)
batch.py        BatchRunner: a folder -> a mirrored folder of x4 photos, resumable, one worker per device, events
batch_plan.py   what a batch decides before a model loads: inputs, output names, resume, probes
results.py      OUT_DIR's .hitok-output: which files are results, and with which settings each was made
tiling.py       aligned tiles, raised-cosine blending, tile size from free memory, OOM halving
imageio.py      read/write photos keeping orientation, ICC, EXIF, alpha, 16-bit depth; list/load photo folders
highbit.py      16-bit PNG/TIFF and float TIFF codecs Pillow lacks
outsize.py      output sizes other than x4: antialiased resize of the x4 result
tokens.py       image <-> token indices, index dumps, code usage, coarse-to-fine preview
model_store.py  load_model: the shipped default, the user's model folder, or a path; model ids
device.py       device and precision choice ("auto" and explicit)
fsutil.py       atomic writes (temp file + rename), write probes, stale-temp sweep, per-output claims
psnr.py         PSNR, the one implementation (training and benchmarks)
errors.py       UserError: what a user can cause, one line

The model itself is hitok.models; training is hitok.train.
"""

from __future__ import annotations

import importlib

# Loaded on first use (PEP 562), not here: `import hitok.models` or `hitok.train` runs this file first, and
# must not pull the inference engine (Pillow, tiling, file I/O) in with it.
_PUBLIC = {
    "Upscaler": "upscaler", "upscale": "upscaler", "load_model": "model_store",
    "default_model_path": "model_store", "Picture": "imageio", "read_image": "imageio", "write_image": "imageio",
    "UserError": "errors", "BatchRunner": "batch",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'hitok' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
