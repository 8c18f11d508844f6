"""From a run folder to an inference bundle: `export` (one .safetensors, optionally fp16, optionally without the
tokenizer encoder) and bf16 `parts` of at most 16 MiB each that `join` puts back together (files small enough
to leave a GPU machine whose outputs are size-limited). Every path goes through save_model/load_model_file, so a
joined file is an ordinary model file."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hitok.models import HiTok, ModelFileError, load_model_file, save_model
from hitok.models.io import FORMAT as MODEL_FORMAT
from hitok.models.lora import merge_lora

from .config import TrainError, init_model_path

PART_FORMAT = "hitok-1-part"
MiB = 1 << 20
HEADER_ROOM = 256 * 1024  # safetensors JSON header (tensor index + our metadata) inside the size limit


def export_bundle(src: str | os.PathLike, out: str | os.PathLike, half: bool = False,
                  no_encoder: bool = False, fidelity: float | None = None) -> HiTok:
    """src: a run folder (its EMA model.safetensors) or a model file. fidelity: the bundle's default LR-guide
    weight (models/guide.py), None = the source's."""
    model = load_model_file(init_model_path(src))
    merge_vfm_lora(model)
    if fidelity is not None:
        _, fidelity = model.settings(fidelity=fidelity)  # a SettingError (one line) if this model cannot take it
        model.config = replace(model.config, fidelity=fidelity)
    if no_encoder and model.has_encoder:
        lean = HiTok(model.config, with_encoder=False)
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("tokenizer.encoder.")}
        lean.load_state_dict(state, strict=True)
        lean.metadata = dict(model.metadata)
        model = lean
    save_model(model, out, metadata={"exported_half": str(half).lower()}, half=half)
    return model


def merge_vfm_lora(model: HiTok) -> bool:
    """Fold the VFM's LoRA into its backbone (W <- W + s*B@A, models/lora.py) and record lora_rank 0 in the config,
    so the bundle runs plain linear layers. Only where the file stores the backbone (VFM weights "none"): a
    pretrained backbone is not stored but reloaded from its source at load time, so its LoRA stays a LoRA (the
    merged backbone would have to go into the file: ~86 M parameters for ViT-B, past the campaign's 16 MiB parts).
    Returns whether it merged."""
    vfm = model.generator.vfm
    if vfm is None or vfm.config.lora_rank == 0 or vfm.config.weights != "none":
        return False
    merge_lora(vfm)
    model.config = replace(model.config, vfm=replace(vfm.config, lora_rank=0))
    vfm.config = model.config.vfm
    return True


def bundle_bytes(model: HiTok, bytes_per_value: int = 2) -> int:
    return sum(t.numel() for t in model.state_dict().values() if t.is_floating_point()) * bytes_per_value


def _chunks(name: str, t: torch.Tensor, limit: int) -> list[tuple[str, torch.Tensor]]:
    """A tensor larger than one part is cut along dim 0 into pieces named name@@i/n."""
    size = t.numel() * t.element_size()
    if size <= limit or t.dim() == 0:
        return [(name, t)]
    rows_per = max(1, limit // (t[0].numel() * t.element_size()))
    pieces = t.split(rows_per, dim=0)
    return [(f"{name}@@{i}/{len(pieces)}", p.contiguous()) for i, p in enumerate(pieces)]


def write_parts(model_file: str | os.PathLike, out_dir: str | os.PathLike, max_bytes: int = 16 * MiB,
                max_files: int = 6, dtype: torch.dtype = torch.bfloat16, header_room: int = HEADER_ROOM
                ) -> list[Path]:
    """Split a model file into <= max_files files of <= max_bytes each, floats stored as `dtype`."""
    meta = _metadata(Path(model_file))
    state = load_file(str(model_file))
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    limit = max_bytes - header_room
    parts: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for name, t in state.items():
        for key, piece in _chunks(name, t, limit):
            n = piece.numel() * piece.element_size()
            if used + n > limit and parts[-1]:
                parts.append({})
                used = 0
            parts[-1][key] = piece
            used += n
    if len(parts) > max_files:
        raise TrainError(f"the model needs {len(parts)} parts of {max_bytes // MiB} MiB, more than the "
                         f"{max_files} allowed (export it --no-encoder, or choose a smaller preset)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("model-*-of-*.safetensors"):  # parts of an earlier model would not join
        stale.unlink()
    paths = []
    for i, tensors in enumerate(parts):
        p = out_dir / f"model-{i + 1:02d}-of-{len(parts):02d}.safetensors"
        pm = {**meta, "format": PART_FORMAT, "part": str(i + 1), "parts": str(len(parts)),
              "dtype": str(dtype).removeprefix("torch.")}
        tmp = p.with_name(p.name + ".tmp")
        save_file(tensors, str(tmp), metadata=pm)
        os.replace(tmp, p)
        if p.stat().st_size > max_bytes:
            raise TrainError(f"{p.name} came out at {p.stat().st_size} bytes, over the {max_bytes} limit")
        paths.append(p)
    return paths


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def join_parts(parts_dir: str | os.PathLike, out: str | os.PathLike) -> HiTok:
    """Reassemble model-XX-of-YY.safetensors from a folder into one model file; checks it loads."""
    parts_dir = Path(parts_dir)
    files = sorted(parts_dir.glob("model-*-of-*.safetensors"))
    if not files:
        raise TrainError(f"{parts_dir}: no model-XX-of-YY.safetensors parts found")
    metas = [_metadata(f) for f in files]
    n = int(metas[0].get("parts", "0"))
    if any(m.get("format") != PART_FORMAT for m in metas) or len(files) != n:
        raise TrainError(f"{parts_dir}: expected {n} parts of one model, found {len(files)} files")
    if len({m.get("config") for m in metas}) != 1:
        raise TrainError(f"{parts_dir}: the parts come from different models")
    state: dict[str, torch.Tensor] = {}
    pieces: dict[str, dict[int, torch.Tensor]] = {}
    for f in files:
        for k, v in load_file(str(f)).items():
            if "@@" in k:
                name, idx = k.split("@@")
                pieces.setdefault(name, {})[int(idx.split("/")[0])] = v
            else:
                state[k] = v
    for name, d in pieces.items():
        state[name] = torch.cat([d[i] for i in sorted(d)], dim=0)
    meta = {k: v for k, v in metas[0].items() if k not in ("part", "parts", "dtype")}
    meta["format"] = MODEL_FORMAT
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, out)
    try:
        return load_model_file(out)
    except ModelFileError as e:
        raise TrainError(f"the joined file does not load: {e}") from None
