"""Choosing the device and the number format for inference.

``--device auto`` takes CUDA, then Apple's MPS, then the CPU. ``--precision auto`` takes bf16 on
GPUs that support it (its fp32-sized exponent does not overflow to inf the way fp16 can), fp16
on other GPUs and MPS, and fp32 on the CPU, where half precision is rarely faster. Reduced
precision runs under ``torch.autocast`` (weights stay fp32, matmuls run in half), and the
upscaler re-runs a tile in fp32 when its output holds NaN/inf — the "black image" that fp16
produces in other upscalers.
"""

from __future__ import annotations

import os

import torch

from .errors import UserError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def device_type(spec: str = "auto") -> str:
    """The kind of device ``spec`` names, ``auto`` resolved (CUDA, then MPS, then the CPU), without touching a GPU:
    what a caller needs before it may pick one (training chooses its process group's backend by it)."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return spec.split(":", 1)[0]


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` -> a usable torch.device (or a UserError)."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        kind = device_type(spec)
        return torch.device("cuda", torch.cuda.current_device()) if kind == "cuda" else torch.device(kind)
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UserError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device("cuda", index)
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {spec}: MPS is not available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unsupported device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    return dev


def resolve_devices(spec: str) -> list[torch.device]:
    """``cuda:0,cuda:1`` -> one worker device each. A device named twice gets two workers
    (e.g. ``cuda:0,cuda:0`` overlaps one file's decoding with another's inference)."""
    devices = [resolve_device(part) for part in spec.split(",") if part.strip()]
    if not devices:
        raise UserError("--devices is empty: give e.g. cuda:0,cuda:1")
    return devices


def cpu_has_fast_bf16() -> bool:
    """AMX tiles (Intel Sapphire Rapids and later): oneDNN runs bf16 matmuls/convs in hardware there.

    Measured on such a CPU: the default model 1.2x-1.8x faster per 128x128 input under bf16 autocast
    (docs/benchmarks.md: 0.922 -> 0.521 s), val PSNR-Y -0.01 dB against fp32.
    Elsewhere bf16 is emulated and slower. HITOK_CPU_FP32=1 keeps fp32."""
    if os.environ.get("HITOK_CPU_FP32"):
        return False
    return _cpu_supports("_is_amx_tile_supported")


def _cpu_supports(probe_name: str) -> bool:
    probe = getattr(torch.cpu, probe_name, None)  # private in torch 2.x: absent means "no"
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # noqa: BLE001
        return False


def resolve_precision(spec: str, device: torch.device) -> torch.dtype:
    spec = (spec or "auto").lower()
    if spec == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if spec not in PRECISIONS:
        raise UserError(f"unknown precision {spec!r}: use auto, fp32, fp16 or bf16")
    return PRECISIONS[spec]


def precision_warning(dtype: torch.dtype, device: torch.device) -> str | None:
    """A warning when the chosen half precision runs emulated on this CPU (measured ~4x slower than fp32): bf16
    needs AMX, fp16 AMX-FP16 (a CPU may have the first and not the second)."""
    if device.type != "cpu" or dtype == torch.float32:
        return None
    unit = "AMX" if dtype == torch.bfloat16 else "AMX-FP16"
    if _cpu_supports("_is_amx_tile_supported" if dtype == torch.bfloat16 else "_is_amx_fp16_supported"):
        return None
    auto = precision_name(resolve_precision("auto", device))
    return (f"{precision_name(dtype)} has no hardware support on this CPU (no {unit}) and is emulated, usually "
            f"several times slower; --precision auto picks {auto} here")


def precision_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in PRECISIONS.items()}[dtype]
