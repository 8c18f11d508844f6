"""Resumable checkpoints of one training run, written atomically.

RUN_DIR/
  config.json            the resolved TrainConfig
  model.safetensors      the exported model: EMA weights, provenance metadata (what `--init` and `export` read)
  checkpoint/
    model.safetensors    live weights (save_model: config in its metadata)
    ema.safetensors      the EMA shadow tensors
    state.pt             step, optimizer, extra trained modules (e.g. the REPA projector), RNG states
    disc.pt              discriminator and its optimizer (a separate file, as STYLE.md asks)

Every file is written to a temporary name and renamed. The four checkpoint files must also agree with each
other, so they are written into checkpoint.tmp/ and swapped in by two renames (checkpoint -> checkpoint.old,
checkpoint.tmp -> checkpoint); a crash between them leaves checkpoint.old, which `find_checkpoint` accepts."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CKPT, TMP, OLD = "checkpoint", "checkpoint.tmp", "checkpoint.old"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_checkpoint(run_dir: Path, save_model_fn, ema_tensors: dict[str, torch.Tensor], ema_updates: int,
                     state: dict, disc: dict) -> Path:
    """save_model_fn(path) writes the live model; the rest are plain tensors/dicts."""
    run_dir = Path(run_dir)
    tmp = run_dir / TMP
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model_fn(tmp / "model.safetensors")
    save_file(ema_tensors, str(tmp / "ema.safetensors"), metadata={"updates": str(ema_updates)})
    torch.save(state, tmp / "state.pt")
    torch.save(disc, tmp / "disc.pt")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    cur, old = run_dir / CKPT, run_dir / OLD
    if old.exists():
        shutil.rmtree(old)
    if cur.exists():
        os.replace(cur, old)
    os.replace(tmp, cur)
    _fsync_dir(run_dir)
    if old.exists():
        shutil.rmtree(old)
    return cur


def find_checkpoint(run_dir: Path) -> Path | None:
    for name in (CKPT, OLD):
        p = Path(run_dir) / name
        if (p / "state.pt").is_file() and (p / "model.safetensors").is_file():
            return p
    return None


def read_state(ckpt: Path, device: torch.device) -> tuple[dict, dict, dict[str, torch.Tensor], int]:
    """-> (state, disc, ema_tensors, ema_updates)."""
    from safetensors import safe_open
    state = torch.load(ckpt / "state.pt", map_location=device, weights_only=True)
    disc = torch.load(ckpt / "disc.pt", map_location=device, weights_only=True)
    ema = load_file(str(ckpt / "ema.safetensors"), device=str(device))
    with safe_open(str(ckpt / "ema.safetensors"), framework="pt") as f:
        updates = int((f.metadata() or {}).get("updates", "0"))
    return state, disc, ema, updates


def rng_state(device: torch.device) -> dict:
    out = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict, device: torch.device) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
