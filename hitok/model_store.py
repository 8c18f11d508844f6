"""Where models come from: the shipped default, the user's model folder, or a path.

* The default model is package data, ``hitok/weights/default.safetensors``, so
  ``hitok upscale photo.jpg`` and ``hitok.load_model()`` work offline. ``HITOK_MODEL`` (a name or path) replaces it.
* User models live in ``platformdirs.user_data_dir("hitok")/models`` (``HITOK_MODELS_DIR``
  overrides the folder), added with ``hitok models add FILE`` and used with ``--model NAME``.
* ``--model PATH`` loads any hitok ``.safetensors`` file. Pickle checkpoints (.pt/.pth/.ckpt/.bin)
  are refused outright: unpickling a file can run arbitrary code.
* Every file is loaded as untrusted (hitok.models.io): its config is held to size limits before
  anything is built, nothing it names is fetched from the network or read from outside its folder,
  and weights with NaN/inf are refused, by ``upscale`` as by ``models add``.

Every model is identified by the first 12 hex digits of its file's SHA-256 (the "model id"
written into token dumps so that ``detokenize`` can tell that it has the right decoder).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import torch

from .errors import UserError, one_line
from .fsutil import atomic_path

MODEL_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar"}
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_id_cache: dict[tuple[str, int, int], str] = {}


def default_model_path() -> Path:
    return Path(__file__).resolve().parent / "weights" / f"default{MODEL_SUFFIX}"


def user_models_dir() -> Path:
    override = os.environ.get("HITOK_MODELS_DIR")
    return Path(override).expanduser() if override else Path(platformdirs.user_data_dir("hitok")) / "models"


def model_id(path: Path) -> str:
    """First 12 hex digits of the file's SHA-256, cached per (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _id_cache:
        h = hashlib.sha256()
        with path.open("rb") as fp:
            for block in iter(lambda: fp.read(1 << 20), b""):
                h.update(block)
        _id_cache[key] = h.hexdigest()[:12]
    return _id_cache[key]


def _check_suffix(path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise UserError(f"{path}: pickle checkpoints are not loaded (they can run code); "
                        f"hitok models are {MODEL_SUFFIX} files")
    if suffix != MODEL_SUFFIX:
        raise UserError(f"{path}: hitok models are {MODEL_SUFFIX} files")


def _user_names() -> list[str]:
    folder = user_models_dir()
    return sorted(p.stem for p in folder.glob(f"*{MODEL_SUFFIX}")) if folder.is_dir() else []


def resolve_model(spec: str | None = None) -> Path:
    """A --model value (name, path or None for the default, or ``HITOK_MODEL``) -> an existing model file."""
    given = f"--model {spec}" if spec else f"HITOK_MODEL={os.environ.get('HITOK_MODEL')}"
    spec = spec or os.environ.get("HITOK_MODEL") or None
    if spec is None or spec == "default":
        path = default_model_path()
        if not path.is_file():
            raise UserError("no default model is installed; pass --model NAME|PATH "
                            "(a .safetensors file, or a name from `hitok models list`)")
        return path
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == MODEL_SUFFIX:
        return path
    candidate = user_models_dir() / f"{spec}{MODEL_SUFFIX}"
    if _NAME_OK.match(spec) and candidate.is_file():  # a name may hold dots: v1.2
        return candidate
    if path.is_file():
        _check_suffix(path)
        return path
    if path.is_dir():
        raise UserError(f"{given}: is a folder; give a {MODEL_SUFFIX} file or a model name")
    if path.suffix or "/" in spec or os.sep in spec:
        raise UserError(f"{given}: no such model file, and no installed model of that name "
                        "(see `hitok models list`)")
    names = _user_names()
    known = f"installed: {', '.join(names)}" if names else "no user models are installed"
    raise UserError(f"{given}: no model of that name ({known}; see `hitok models list`)")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    path: Path
    id: str


def load(spec: str | None, device: torch.device | str = "cpu", lazy: bool = False) -> LoadedModel:
    """Resolve and load a model; every failure is a one-line UserError. ``lazy``: the token path of a model with
    a restorer is built and read on its first use (hitok.models.io.load_model_file): for an Upscaler, whose
    fidelity 1 runs the restorer alone."""
    from hitok.models import ModelFileError, load_model_file

    path = resolve_model(spec)
    try:
        model = load_model_file(path, device=device, untrusted=True, lazy=lazy)
    except ModelFileError as exc:
        raise UserError(str(exc)) from None
    except RecursionError:
        raise UserError(_TOO_DEEP.format(path=path)) from None
    except Exception as exc:  # noqa: BLE001 - e.g. a device that runs out of memory while loading
        raise UserError(f"{path}: cannot load this model ({one_line(exc)})") from None
    model.model_id = model_id(path)  # the Upscaler's default model_id: batch records it, resumes compare it
    return LoadedModel(model=model, path=path, id=model.model_id)


# json.loads raises RecursionError (not ValueError) for a config nested thousands of levels deep
_TOO_DEEP = "{path}: not a hitok model file (its config is nested too deeply to read)"


def peek(spec: str | None) -> tuple[str, torch.nn.Module] | None:
    """(model id, the model built on the meta device: its shape, no weights read, nothing allocated) for checks
    before the real load, such as --tile against the model's tile grid; None when the file cannot be read that way
    (the real load then says why). The VFM is built without its pretrained weights: nothing goes online."""
    from dataclasses import replace

    from hitok.models import HiTok
    from hitok.models.io import check_config, read_metadata

    path = resolve_model(spec)
    try:
        cfg = check_config(json.loads(read_metadata(path)["config"]), path.parent, untrusted=True)
        if cfg.vfm is not None:
            cfg = replace(cfg, vfm=replace(cfg.vfm, weights="none"))
        with torch.device("meta"):
            return model_id(path), HiTok(cfg, with_encoder=False)
    except Exception:  # noqa: BLE001 - a file the real load refuses, with its own message
        return None


def load_model(model: str | Path | None = None, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The public loader: a model name (``hitok models list``), a ``.safetensors`` path, or None for the shipped
    default (or ``HITOK_MODEL``) -> the model on ``device``, in eval mode. Failures are one-line UserErrors."""
    return load(str(model) if model is not None else None, device).model.eval()


@dataclass
class ModelEntry:
    name: str
    source: str  # "default" | "user"
    path: Path
    size: int
    id: str
    summary: str  # preset name, groups N, codebook size K, patch p


def _summary(path: Path) -> str:
    from hitok.models import ModelFileError, read_metadata

    try:
        meta = read_metadata(path)
        cfg = json.loads(meta["config"])
        tok = cfg["tokenizer"]
        enc = "" if meta.get("has_encoder", "true") == "true" else ", no encoder"
        return f"{cfg.get('name', '?')}: N={tok['groups']} K={tok['codebook_size']} p={tok['patch']}{enc}"
    except (ModelFileError, KeyError, ValueError, TypeError) as exc:
        return f"unreadable ({one_line(exc)})"
    except RecursionError:
        return "unreadable (its config is nested too deeply)"


def list_models() -> list[ModelEntry]:
    entries = []
    paths = [("default", "default", default_model_path())]
    paths += [(name, "user", user_models_dir() / f"{name}{MODEL_SUFFIX}") for name in _user_names()]
    for name, source, path in paths:
        if path.is_file():
            entries.append(ModelEntry(name, source, path, path.stat().st_size, model_id(path), _summary(path)))
    return entries


def add_model(file: Path, name: str | None = None, overwrite: bool = False) -> ModelEntry:
    """Validate a model file by loading it, then copy it (atomically) into the user model folder."""
    from hitok.models import ModelFileError, load_model_file

    file = Path(file)
    if not file.is_file():
        raise UserError(f"{file}: is a folder; give a {MODEL_SUFFIX} file" if file.is_dir() else
                        f"{file}: no such file")
    _check_suffix(file)
    name = name or file.stem
    if not _NAME_OK.match(name) or name == "default":
        raise UserError(f"model name {name!r} is not allowed: use up to 64 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit (and not 'default', which is the shipped model)")
    try:
        model = load_model_file(file, device="cpu", untrusted=True)
    except ModelFileError as exc:
        raise UserError(str(exc)) from None
    except RecursionError:
        raise UserError(_TOO_DEEP.format(path=file)) from None
    vfm = model.config.vfm
    if vfm is not None and vfm.weights not in ("none", "pretrained"):
        raise UserError(f"{file}: its VFM weights are a separate file ({Path(vfm.weights).name}) and `models add` "
                        "copies one file; use it with --model PATH instead")
    dest = user_models_dir() / f"{name}{MODEL_SUFFIX}"
    if dest.exists() and not overwrite:
        raise UserError(f"a model named {name!r} already exists ({dest}); pass --overwrite to replace it")
    with atomic_path(dest) as tmp:
        shutil.copyfile(file, tmp)
    return ModelEntry(name, "user", dest, dest.stat().st_size, model_id(dest), _summary(dest))


def preset_summaries(lr_size: int = 128) -> dict[str, dict]:
    """Per preset (hitok.models.presets): parameters per component and MACs per ``lr_size`` LR input."""
    from hitok.models import presets
    from hitok.models.summary import summarize

    # counting needs no pretrained weights, so the paper preset's VFM is built without them
    rows = {name: summarize(make(vfm_weights="none") if name == "paper" else make(), lr_size)
            for name, make in presets.PRESETS.items()}
    rows["shipped default"] = summarize(model_config(default_model_path()), lr_size)
    return rows


def model_config(path: Path):
    """The HiTokConfig a model file describes, read from its metadata (no weights loaded)."""
    import json

    from hitok.models.io import check_config, read_metadata

    return check_config(json.loads(read_metadata(path)["config"]), path.parent)
