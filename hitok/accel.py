"""Optional tile engines for fp32 CPU inference: ONNX Runtime, or int8 dynamic Linear layers; eager torch stays
the default and the fallback.

Both are opt-in (``HITOK_ENGINE=onnx`` / ``HITOK_ENGINE=int8``): on an AVX2 CPU two thirds of the time is oneDNN
convolutions and MKL GEMMs, which neither engine makes faster, and int8 does not keep the pinned fp32 output
(tests/test_output_unchanged.py). The measurements are in docs/benchmarks.md ("CPU fp32 engines";
``python -m hitok.bench.engines`` repeats them).

How the Upscaler uses one (:func:`make_engine`): it asks the engine for each tile; the engine answers with the
output, or ``None`` (then the Upscaler runs eager torch). ONNX export costs 20-30 s, so it must not hit a
one-photo upscale:

* an exported graph is cached on disk, under ``platformdirs.user_cache_dir("hitok")/engines`` (or
  ``HITOK_ENGINE_CACHE``), keyed by the model id, torch and onnxruntime versions, and the tile's shape and
  settings (detail, fidelity, colour fix); a later process loads it in under a second;
* a graph not in the cache is exported only once a shape has been asked for ``export_after`` times in this
  process (a photo with many tiles, or a batch; tiles of one photo all share a shape), the tiles before it
  run eager;
* the cache holds at most ``HITOK_ENGINE_CACHE_MB`` (default 1024) MiB: after an export the least recently used
  graphs (a load touches its file) are deleted until it fits (:func:`prune_cache`).

tests/test_accel.py checks both engines against eager torch (skipped without onnxruntime/onnxscript).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import threading
from pathlib import Path

import torch

from .device import precision_name
from .errors import one_line

# torch.onnx.export and warnings.catch_warnings are not thread-safe; each batch worker has its own engine
_EXPORT_LOCK = threading.Lock()
DEFAULT_EXPORT_AFTER = 3  # tiles of one shape seen in a process before a missing graph is exported
DEFAULT_CACHE_MB = 1024  # one graph of the shipped model is ~35 MiB (fp32 weights inside)


def available() -> bool:
    """onnxruntime (the runtime) and onnxscript (torch's exporter) are both installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnxscript", "onnx"))


def cache_root() -> Path:
    override = os.environ.get("HITOK_ENGINE_CACHE")
    if override:
        return Path(override).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir("hitok")) / "engines"


def cache_limit_bytes() -> int:
    """``HITOK_ENGINE_CACHE_MB`` (MiB; unset or unreadable: :data:`DEFAULT_CACHE_MB`) in bytes."""
    try:
        mib = float(os.environ.get("HITOK_ENGINE_CACHE_MB", DEFAULT_CACHE_MB))
    except ValueError:
        mib = DEFAULT_CACHE_MB
    return int(max(mib, 0) * 2**20)


def prune_cache(root: Path, limit: int, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used graphs under ``root`` (oldest modification time first) until they hold at
    most ``limit`` bytes; ``keep`` (the graph just exported) stays. Returns the deleted files. Other processes may
    prune or write at the same time: a file that is gone or busy is skipped."""
    found = []
    for path in root.glob("*/*.onnx"):
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in found)
    deleted = []
    for _, size, path in sorted(found, key=lambda f: f[0]):
        if total <= limit:
            break
        if path == keep:
            continue
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        deleted.append(path)
    return deleted


ENGINES = ("torch", "onnx", "int8")


def engine_mode() -> str:
    """``HITOK_ENGINE`` as set (lower case): torch (default: eager), onnx (ONNX Runtime: cached graphs, export after
    a few tiles), int8 (Linear layers dynamically quantized); anything else runs eager torch with a note
    (:func:`choose_engine`)."""
    return os.environ.get("HITOK_ENGINE", "torch").strip().lower() or "torch"


class _Upscale(torch.nn.Module):
    """``model.upscale`` with the tile's settings fixed: the function that is exported."""

    def __init__(self, model: torch.nn.Module, detail: int, color_fix: bool, fidelity: float):
        super().__init__()
        self.model, self.detail, self.color_fix, self.fidelity = model, detail, color_fix, fidelity

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.model.upscale(lr, detail=self.detail, color_fix=self.color_fix, fidelity=self.fidelity)


class OrtEngine:
    """ONNX Runtime sessions for one model, one per (tile shape, settings); see the module docstring."""

    def __init__(self, model: torch.nn.Module, model_id: str, threads: int | None = None,
                 export_after: int | None = None, root: Path | None = None):
        import onnxruntime
        self.model, self.model_id = model, model_id or "unknown"
        self.threads = threads or torch.get_num_threads()
        self.export_after = export_after if export_after is not None else DEFAULT_EXPORT_AFTER
        versions = f"torch{torch.__version__.split('+')[0]}-ort{onnxruntime.__version__}"
        self.root = root or cache_root()
        self.folder = self.root / f"{self.model_id}-{versions}"
        self._sessions: dict[tuple, object] = {}
        self._seen: dict[tuple, int] = {}
        self._failed: set[tuple] = set()
        self._lock = threading.Lock()  # one engine per Upscaler; its tiles may come from several threads
        self.exported: list[str] = []  # file names exported in this process (for tests and reports)

    def path(self, key: tuple) -> Path:
        h, w, detail, color_fix, fidelity = key
        return self.folder / f"upscale_{h}x{w}_d{detail}_c{int(color_fix)}_f{fidelity:g}.onnx"

    def __call__(self, lr: torch.Tensor, detail: int, color_fix: bool, fidelity: float) -> torch.Tensor | None:
        """lr (1, 3, h, w) fp32 on the CPU -> the upscaled tile, or None (run eager torch instead)."""
        if lr.device.type != "cpu" or lr.dtype != torch.float32 or lr.shape[0] != 1:
            return None
        key = (int(lr.shape[-2]), int(lr.shape[-1]), int(detail), bool(color_fix), float(fidelity))
        sess = self._session(key)
        if sess is None:
            return None
        x = lr.detach().contiguous().numpy()
        try:
            out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        except Exception:  # noqa: BLE001 - a runtime failure must not cost the photo: this shape runs eager
            with self._lock:
                self._failed.add(key)
                self._sessions.pop(key, None)
            return None
        return torch.from_numpy(out)

    def _session(self, key: tuple):
        with self._lock, _EXPORT_LOCK:  # one export at a time per process: engines of batch workers share the cache
            if key in self._sessions:
                return self._sessions[key]
            if key in self._failed:
                return None
            path = self.path(key)
            if not path.is_file():
                self._seen[key] = self._seen.get(key, 0) + 1
                if self._seen[key] < self.export_after:
                    return None
                try:
                    self._export(key, path)
                except Exception:  # noqa: BLE001 - an exporter gap must never cost the user the photo
                    self._failed.add(key)
                    return None
                prune_cache(self.root, cache_limit_bytes(), keep=path)
            with contextlib.suppress(OSError):  # recently used: the last to be pruned (a read-only cache is fine)
                os.utime(path)
            try:
                self._sessions[key] = self._load(path)
            except Exception:  # noqa: BLE001 - a damaged cache file: drop it, run eager
                path.unlink(missing_ok=True)
                self._failed.add(key)
                return None
            return self._sessions[key]

    def _load(self, path: Path):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def _export(self, key: tuple, path: Path) -> None:
        import warnings
        h, w, detail, color_fix, fidelity = key
        fn = _Upscale(self.model, detail, color_fix, fidelity).eval()
        example = torch.rand(1, 3, h, w)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # unique per engine
        try:
            # the Upscaler calls under inference_mode, which torch.export refuses
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(fn, (example,), dynamo=True, optimize=True, verbose=False,
                                            external_data=False)
                program.save(str(tmp))
            os.replace(tmp, path)  # atomic: a second process never loads half a file
        finally:
            tmp.unlink(missing_ok=True)
        self.exported.append(path.name)


class Int8LinearEngine:
    """The model with its Linear layers dynamically quantized to int8 (torch.ao quantize_dynamic: int8 weights,
    activations quantized per call; convolutions stay fp32). No export, no cache: built in well under a second."""

    def __init__(self, model: torch.nn.Module):
        import copy
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notice (torchao is the successor)
            self.model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                                dtype=torch.qint8)
        self.exported: list[str] = []

    def __call__(self, lr: torch.Tensor, detail: int, color_fix: bool, fidelity: float) -> torch.Tensor | None:
        if lr.device.type != "cpu" or lr.dtype != torch.float32:
            return None
        return self.model.upscale(lr, detail=detail, color_fix=color_fix, fidelity=fidelity)


def choose_engine(model: torch.nn.Module, device: torch.device, dtype: torch.dtype, model_id: str,
                  mode: str | None = None) -> tuple[OrtEngine | Int8LinearEngine | None, str | None]:
    """(the tile engine for an Upscaler, or None for eager torch; a note for the user when ``HITOK_ENGINE`` asked
    for an engine that does not run here). Engines run only fp32 on the CPU; onnx needs onnxruntime installed and
    a windowed model (few tile shapes) with an id."""
    mode = mode or engine_mode()
    if mode == "torch":
        return None, None
    asked = f"HITOK_ENGINE={mode}"
    if mode not in ENGINES:
        return None, f"{asked} is not an engine (use {', '.join(ENGINES)}); running eager torch"
    if device.type != "cpu" or dtype != torch.float32:
        return None, (f"{asked} runs only at fp32 on the CPU; this run is {precision_name(dtype)} on "
                      f"{device.type}: eager torch (--precision fp32 --device cpu to use it)")
    if mode == "onnx" and not available():
        return None, f"{asked} needs onnxruntime (pip install -e '.[onnx]'); running eager torch"
    if mode == "onnx" and (not getattr(model, "attention_window", 0) or not model_id):
        return None, f"{asked} runs only models with windowed attention; running eager torch"
    try:
        return (Int8LinearEngine(model) if mode == "int8" else OrtEngine(model, model_id)), None
    except Exception as exc:  # noqa: BLE001 - a missing or broken optional engine: eager torch
        return None, f"{asked} could not start ({one_line(exc, with_type=True)}); running eager torch"


def make_engine(model: torch.nn.Module, device: torch.device, dtype: torch.dtype, model_id: str,
                mode: str | None = None) -> OrtEngine | Int8LinearEngine | None:
    """The engine of :func:`choose_engine`, without its note."""
    return choose_engine(model, device, dtype, model_id, mode)[0]
