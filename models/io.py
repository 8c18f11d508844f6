"""Self-describing model files: weights in .safetensors, the HiTokConfig (JSON) and provenance in its metadata,
so a file alone rebuilds its model (nanoGPT's `model_args`). Loading is strict: a missing, unexpected or
mis-shaped tensor is refused with one clear line."""
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .hitok import HiTok, config_from_dict, config_to_dict

FORMAT = "hitok-1"


class ModelFileError(Exception):
    """A model file that cannot be used; str() is one line meant for the user."""


def _state_for_saving(model: HiTok) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    vfm = model.generator.vfm
    if vfm is not None and vfm.config.weights != "none":
        # a pretrained VFM backbone is reloaded from its own source; the file keeps only what we trained
        state = {k: v for k, v in state.items() if not k.startswith("generator.vfm.") or "lora" in k}
    return {k: v.detach().contiguous() for k, v in state.items()}


def save_model(model: HiTok, path: str | os.PathLike, metadata: dict[str, str] | None = None,
               half: bool = False) -> None:
    """Write the model to `path` atomically (temp file + rename). half=True stores floats as fp16."""
    state = _state_for_saving(model)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    meta = {**model.metadata, **(metadata or {})}
    meta = {k: str(v) for k, v in meta.items()}
    meta.update(format=FORMAT, config=json.dumps(config_to_dict(model.config)),
                has_encoder=str(model.has_encoder).lower())
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.cpu() for k, v in state.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: not a readable .safetensors model file ({str(e).splitlines()[0]})") from None


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
               ) -> HiTok:
    """Rebuild the HiTok described by the file and load its weights strictly; eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    meta = read_metadata(path)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ModelFileError(f"{path}: not a hitok model file (no '{FORMAT}' config in its metadata)")
    try:
        cfg = config_from_dict(json.loads(meta["config"]))
    except (ValueError, TypeError, KeyError) as e:
        raise ModelFileError(f"{path}: unreadable model config ({e})") from None
    try:
        model = HiTok(cfg, with_encoder=meta.get("has_encoder", "true") == "true")
    except Exception as e:  # e.g. a VFM whose pretrained weights cannot be reached
        raise ModelFileError(f"{path}: cannot build the model it describes: {str(e).splitlines()[0]}") from None
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ModelFileError(f"{path}: corrupt weights ({str(e).splitlines()[0]})") from None
    expected = _state_for_saving(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelFileError(f"{path}: weights do not match the config ({what}{' ...' if len(missing or unexpected) > 3 else ''})")
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise ModelFileError(f"{path}: tensor {k} has shape {tuple(state[k].shape)}, config needs {tuple(v.shape)}")
    model.load_state_dict({k: state[k].to(v.dtype) for k, v in expected.items()}, strict=False)
    model.metadata = {k: v for k, v in meta.items() if k not in ("format", "config", "has_encoder")}
    return model.to(device=device, dtype=dtype).eval()
