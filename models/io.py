"""Self-describing model files: weights in .safetensors, the HiTokConfig (JSON) and provenance in its metadata,
so a file alone rebuilds its model (nanoGPT's `model_args`). Loading is strict: a missing, unexpected or
mis-shaped tensor is refused with one clear line.

A model file is data from whoever made it, and its 1.5 KB config decides what gets built. So before anything is
built the config is held to limits (:func:`check_config`): every field of the type its dataclass gives, sizes
within generous bounds; and the build itself may allocate at most MAX_PARAMS tensor elements (2 GiB of fp32; the
paper preset is 0.39 G parameters), checked before each allocation (models/alloc_limit.py). A VFM must be a timm architecture name (never a hub or local-dir name,
which timm resolves by downloading or reading a folder) with plain-number keyword arguments. Weights holding
NaN or inf are refused. With ``untrusted=True`` (the CLI: files users bring) a config also may not reach out:
a pretrained VFM is built with the network off (the local Hugging Face cache still serves it) and a VFM
weights file must be a .safetensors file inside the model's own folder."""
import contextlib
import json
import math
import os
import re
import socket
from dataclasses import MISSING, asdict, fields, replace
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from .alloc_limit import AllocationLimit, AllocationLimitExceeded
from .errors import ModelFileError, one_line
from .generator import GeneratorConfig
from .sr_model import HiTok, HiTokConfig
from .restorer import RestorerConfig
from .tokenizer import TokenizerConfig

FORMAT = "hitok-1"
T = TypeVar("T")
MAX_PARAMS = 2**29  # 2 GiB of fp32 parameters
MAX_WIDTH = 8192  # any channel or embedding width, and any other size not named below
MAX_DEPTH = 64  # blocks in one stack
MAX_SMALL = 64  # patch sizes, groups, heads, windows, strides, layer indices
MAX_CODEBOOK = 2**16  # token dumps store indices as uint16
MAX_ITEMS = 16  # entries of a per-scale tuple
MAX_FLOAT = 1e6
_SMALL = {"patch", "lr_patch", "groups", "heads", "num_heads", "window", "token_stride", "cls_layers", "patch_size",
          "lora_rank", "mlp_ratio", "vfm_input_scale"}
_TIMM_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?$")
# Config fields older files carry and this version no longer has, at the value that meant "off": a file holding
# that value builds the same model without it (the field is dropped); any other value needs the removed code.
REMOVED_FIELDS = {
    ("generator", "head_rank"): (0, "low-rank generator heads (head_rank > 0) were removed"),
}


def _state_for_saving(model: HiTok) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    vfm = model.config.vfm  # the config's, not the module's: a lazily loaded model may not have built it
    if vfm is not None and vfm.weights != "none":
        # a pretrained VFM backbone is reloaded from its own source; the file keeps only what we trained
        state = {k: v for k, v in state.items() if not k.startswith("generator.vfm.") or "lora" in k}
    return {k: v.detach().contiguous() for k, v in state.items()}


def save_model(model: HiTok, path: str | os.PathLike, metadata: dict[str, str] | None = None,
               half: bool = False) -> None:
    """Write the model to `path` atomically (temp file + rename). half=True stores floats as fp16."""
    model.ensure_token_path()
    state = _state_for_saving(model)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    meta = {**model.metadata, **(metadata or {})}
    meta = {k: str(v) for k, v in meta.items()}
    meta.update(format=FORMAT, config=json.dumps(asdict(model.config)),
                has_encoder=str(model.has_encoder).lower())
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.cpu() for k, v in state.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def _vfm_config_class():
    """models/vfm.py imports timm (and torchvision), 1.6 s of a 3.5 s `hitok upscale`: only when a file has a VFM."""
    from .vfm import VFMConfig
    return VFMConfig


def config_from_dict(d: dict) -> HiTokConfig:
    """Rebuild a HiTokConfig from asdict() output (JSON). Unknown keys are an error (a file from another version);
    a removed field (REMOVED_FIELDS) is dropped at its old default and refused at any other value."""

    def build(cls, section: str, values: dict):
        values = dict(values)
        for (where, name), (default, why) in REMOVED_FIELDS.items():
            if where == section and name in values:
                value = values.pop(name)
                if value != default:
                    raise ValueError(f"{section}.{name} = {repr(value)[:40]}: {why}; this version can only load files "
                                     f"with {name} = {default!r}")
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        # JSON turns tuples into lists
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    d = dict(d)
    vfm = d.pop("vfm", None)
    restorer = d.pop("restorer", None)
    return HiTokConfig(tokenizer=build(TokenizerConfig, "tokenizer", d.pop("tokenizer")),
                       generator=build(GeneratorConfig, "generator", d.pop("generator")),
                       vfm=None if vfm is None else build(_vfm_config_class(), "vfm", vfm),
                       restorer=None if restorer is None else build(RestorerConfig, "restorer", restorer), **d)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: not a readable .safetensors model file ({one_line(e)})") from None


def _cap(name: str) -> int:
    if "codebook" in name:
        return MAX_CODEBOOK
    if "depth" in name or "blocks" in name:
        return MAX_DEPTH
    return MAX_SMALL if name in _SMALL else MAX_WIDTH


def _check_value(where: str, value, default, name: str) -> None:
    """``value`` has the type of the field's ``default`` and stays within the limit its ``name`` implies."""
    if isinstance(default, bool) or isinstance(value, bool):
        if not isinstance(value, bool) or not isinstance(default, bool):
            raise ValueError(f"{where} must be {type(default).__name__}, not {value!r}")
    elif isinstance(default, int):
        if not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, not {value!r}")
        lo = -MAX_SMALL if name == "cls_layers" else 0
        if not lo <= value <= _cap(name):
            raise ValueError(f"{where} = {value} is outside {lo}..{_cap(name)}")
    elif isinstance(default, float) or (default is None and name == "lora_alpha"):
        if value is None and default is None:
            return
        if not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) > MAX_FLOAT:
            raise ValueError(f"{where} must be a finite number of at most {MAX_FLOAT:g}, not {value!r}")
        if name in _SMALL and value > MAX_SMALL:
            raise ValueError(f"{where} = {value} is above {MAX_SMALL}")
    elif isinstance(default, str):
        if not isinstance(value, str) or len(value) > 256:
            raise ValueError(f"{where} must be a short string")
    elif isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) > MAX_ITEMS:
            raise ValueError(f"{where} must be a list of at most {MAX_ITEMS} entries")
        like = default[0] if default else 0  # the empty defaults are per-scale int tuples (conv_widths, ...)
        for i, item in enumerate(value):
            _check_value(f"{where}[{i}]", item, like, name)
    elif isinstance(default, dict):  # VFMConfig.model_kwargs, handed to timm.create_model
        if not isinstance(value, dict) or len(value) > MAX_ITEMS:
            raise ValueError(f"{where} must be a mapping of at most {MAX_ITEMS} entries")
        for key, item in value.items():
            if not isinstance(key, str) or not key.isidentifier() or isinstance(item, str) \
                    or not isinstance(item, (int, float)):
                raise ValueError(f"{where}: only plain-number keyword arguments are allowed, not {key}={item!r}")
            _check_value(f"{where}.{key}", item, 0.0 if isinstance(item, float) else 0, key)


def _check_fields(where: str, values, cls) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping")
    for f in fields(cls):
        if f.name in values and f.name not in ("tokenizer", "generator", "vfm", "restorer"):
            default = f.default if f.default is not MISSING else f.default_factory()
            _check_value(f"{where}.{f.name}", values[f.name], default, f.name)


def _check_vfm(vfm: dict, folder: Path, untrusted: bool) -> dict:
    """The VFM part of a config; returns it with a weights file made absolute (untrusted: inside ``folder``)."""
    import timm

    from .vfm import VFMConfig

    _check_fields("vfm", vfm, VFMConfig)
    name = vfm.get("name", VFMConfig.name)
    if not _TIMM_NAME.match(name) or not timm.is_model(name):
        raise ValueError(f"VFM {name!r} is not a timm architecture name (hub and local-dir names would make timm "
                         "download or read files)")
    weights = vfm.get("weights", "none")
    if weights in ("none", "pretrained") or not untrusted:
        return vfm
    file = (folder / weights).resolve()
    if Path(weights).is_absolute() or not file.is_relative_to(folder.resolve()) or file.suffix != ".safetensors":
        raise ValueError(f"VFM weights {weights!r}: a model file may only name a .safetensors file in its own folder")
    return {**vfm, "weights": str(file)}


def check_config(d: dict, folder: Path, untrusted: bool = False) -> HiTokConfig:
    """A config dict from a model file -> HiTokConfig, after holding it to the limits (module docstring)."""
    if not isinstance(d, dict):
        raise ValueError("the config is not a mapping")
    _check_fields("config", d, HiTokConfig)
    _check_fields("tokenizer", d.get("tokenizer"), TokenizerConfig)
    _check_fields("generator", d.get("generator"), GeneratorConfig)
    if d.get("restorer") is not None:
        _check_fields("restorer", d["restorer"], RestorerConfig)
    if d.get("vfm") is not None:
        d = {**d, "vfm": _check_vfm(d["vfm"], folder, untrusted)}
    return config_from_dict(d)


def parameter_count(cfg: HiTokConfig, with_encoder: bool = True) -> int:
    """Parameters of the model ``cfg`` describes, counted on the meta device (no memory, no weights fetched)."""
    if cfg.vfm is not None:
        cfg = replace(cfg, vfm=replace(cfg.vfm, weights="none"))
    with torch.device("meta"):
        model = HiTok(cfg, with_encoder)
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _network_off():
    """No connection while a model is built: the Hugging Face hub in offline mode (its local cache still works),
    and name lookups and connects refused for anything else (timm's URL downloads)."""
    def refuse(*args, **kwargs):
        raise OSError("network access is off while hitok loads a model file")

    saved = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex
    hub = None
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants as hub
    offline = hub.HF_HUB_OFFLINE if hub else None
    socket.getaddrinfo = socket.socket.connect = socket.socket.connect_ex = refuse
    if hub:
        hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex = saved
        if hub:
            hub.HF_HUB_OFFLINE = offline


def _all_finite(t: torch.Tensor) -> bool:
    # numpy: torch.isfinite on fp16 slows to seconds when the CPU's cores are busy (OpenMP waits); bf16 has no numpy
    return bool(np.isfinite((t.float() if t.dtype == torch.bfloat16 else t).numpy()).all())


def _build(path: Path, build: Callable[[], T], limit: AllocationLimit, untrusted: bool) -> T:
    """``build()`` under ``limit``, with the network off for an untrusted file; failures as ModelFileError."""
    try:
        with limit, _network_off() if untrusted else contextlib.nullcontext():
            return build()
    except AllocationLimitExceeded as e:
        raise ModelFileError(f"{path}: its config describes over {e.requested / 1e6:,.0f} M parameters (over "
                             f"{4 * e.requested / 2**30:,.1f} GiB in fp32), above the limit of {MAX_PARAMS / 1e6:,.0f} M "
                             f"({4 * MAX_PARAMS / 2**30:.0f} GiB); refused") from None
    except ModelFileError:
        raise
    except Exception as e:  # noqa: BLE001 - a config the model code cannot build, a VFM whose weights are unreachable
        raise ModelFileError(f"{path}: cannot build the model it describes: {one_line(e)}") from None


def _load_weights(model: HiTok, path: Path, part: tuple[str, ...] = ("",), unbuilt: tuple[str, ...] = ()) -> None:
    """Read the tensors of ``model`` whose names start with one of ``part`` from ``path`` and load them strictly: a tensor
    missing from the file, one of another shape, NaN/inf, or a file tensor the model has no place for (except those
    of its ``unbuilt`` parts) is a ModelFileError."""
    expected = {k: v for k, v in _state_for_saving(model).items() if k.startswith(part)}
    try:
        with safe_open(str(path), framework="pt") as f:
            names = set(f.keys())
            missing = sorted(set(expected) - names)
            unexpected = sorted(n for n in names - set(_state_for_saving(model)) if not n.startswith(unbuilt))
            if missing or unexpected:
                what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
                more = " ..." if len(missing or unexpected) > 3 else ""
                raise ModelFileError(f"{path}: weights do not match the config ({what}{more})")
            state = {k: f.get_tensor(k) for k in expected}
    except (SafetensorError, OSError) as e:
        raise ModelFileError(f"{path}: corrupt weights ({one_line(e)})") from None
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise ModelFileError(f"{path}: tensor {k} has shape {tuple(state[k].shape)}, config needs {tuple(v.shape)}")
        if state[k].is_floating_point() and not _all_finite(state[k]):
            raise ModelFileError(f"{path}: tensor {k} holds NaN or inf; the file is damaged or from a diverged run")
    model.load_state_dict({k: state[k].to(v.dtype) for k, v in expected.items()}, strict=False)


TOKEN_PATH = ("tokenizer.", "generator.")  # state-dict prefixes of what HiTok(defer_token_path=...) defers


def _token_path_loader(path: Path, limit: AllocationLimit, untrusted: bool) -> Callable[[HiTok], None]:
    """What a lazily loaded model runs on first use of its token path: build it (under the allocation limit the
    rest of the model left), load its weights from the same file, unchanged since, and put it where the restorer
    is now (device, dtype, memory format: an Upscaler may have moved it)."""
    stamp = _stamp(path)

    def build_and_load(model: HiTok) -> None:
        if _stamp(path) != stamp:
            raise ModelFileError(f"{path}: the file changed since its model was loaded; load it again")
        _build(path, model.build_token_path, AllocationLimit(MAX_PARAMS, limit.allocated), untrusted)
        _load_weights(model, path, part=TOKEN_PATH)
        like = next(p for p in model.restorer.parameters() if p.dim() == 4)
        channels_last = not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last)
        for part in (model.tokenizer, model.generator):
            part.to(like.device, like.dtype, memory_format=torch.channels_last if channels_last
                    else torch.preserve_format).train(model.training)

    return build_and_load


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def load_model_file(path: str | os.PathLike, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32, untrusted: bool = False, lazy: bool = False) -> HiTok:
    """Rebuild the HiTok described by one file and load its weights strictly; eval mode. (hitok.load_model, the
    library's, looks a model up by name or path first: the shipped default, the user's folder.)

    ``untrusted``: the file came from a user (the CLI): nothing it names is fetched from the network or read
    from outside its folder (module docstring).

    ``lazy``: a model with a restorer builds and reads only the restorer now, and its token path (tokenizer,
    generator) on first use of ``model.tokenizer`` / ``model.generator``, from the same file and as strictly.
    Fidelity 1 runs the restorer alone: the shipped model is then ready in a tenth of the time. Until then its
    ``state_dict()`` and ``parameters()`` hold the restorer only: not for saving or training."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    meta = read_metadata(path)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ModelFileError(f"{path}: not a hitok model file (no '{FORMAT}' config in its metadata)")
    with_encoder = meta.get("has_encoder", "true") == "true"
    try:
        values = json.loads(meta["config"])
    except ValueError as e:
        raise ModelFileError(f"{path}: unreadable model config ({e})") from None
    try:
        cfg = check_config(values, path.parent, untrusted)
    except (ValueError, TypeError, KeyError) as e:
        raise ModelFileError(f"{path}: model config refused: {e}") from None
    limit = AllocationLimit(MAX_PARAMS)
    defer = _token_path_loader(path, limit, untrusted) if lazy else None
    model = _build(path, lambda: HiTok(cfg, with_encoder=with_encoder, defer_token_path=defer), limit, untrusted)
    _load_weights(model, path, unbuilt=() if model.token_path_built else TOKEN_PATH)
    model.metadata = {k: v for k, v in meta.items() if k not in ("format", "config", "has_encoder")}
    return model.to(device=device, dtype=dtype).eval()
