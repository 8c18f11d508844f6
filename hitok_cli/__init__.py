"""hitok.cli — the command line face of hitok (installed from the repo's ``hitok_cli/`` folder).

app.py          Typer commands (thin: parse, call a library function, report with Rich)
upscale.py      image file -> x4 image file (used by ``upscale`` and ``batch``); checks before the model
outsize.py      --outscale / --width / --height: target size, antialiased resize of the x4 result
batch.py        folders: plan (mirror, skip, glob), run over one worker per device, outcomes
tokens.py       ``tokenize`` / ``detokenize``: index dumps, code usage, coarse-to-fine preview
tiling.py       aligned tiles, raised-cosine blending, --tile auto, OOM halving
imageio.py      read/write photos keeping orientation, ICC, EXIF, alpha, 16-bit depth
highbit.py      16-bit PNG/TIFF and float TIFF codecs Pillow lacks
model_store.py  default / user / path model lookup, model ids, ``models list|add``
device.py       --device / --precision resolution
fsutil.py       atomic writes (temp file + rename), write probes, stale-temp sweep, per-output claims
errors.py       UserError -> one line on stderr, exit code; --debug for tracebacks; SIGTERM as Ctrl-C
"""
