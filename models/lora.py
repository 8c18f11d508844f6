"""LoRA: low-rank adaptation of frozen nn.Linear layers (Hu et al. 2021, arXiv:2106.09685, Sec. 4.1).

HiTokSR Sec. 3.2 fine-tunes the vision foundation model with LoRA "to adapt to the training
degradation distribution while preserving pretrained knowledge". For a frozen weight W (out, in)
the adapted weight is

    W' = W + (alpha / r) * B @ A,      A: (r, in) Kaiming-uniform,  B: (out, r) zeros,

so a freshly injected LoRA is an exact no-op (B @ A == 0 bit for bit) and only A, B train.

Why a weight parametrization instead of a wrapper module around nn.Linear: timm's Eva attention
(DINOv3's backbone) calls ``F.linear(x, weight=self.qkv.weight, ...)`` directly when the model has
q/v biases (the ``*_qkvb`` variants), bypassing the Linear's forward. A parametrization changes what
``.weight`` returns, so it works whichever way the host model uses the layer.

``lora_disabled(model)`` switches every LoRA off for the duration of a ``with`` block; the same
backbone then gives the frozen, pretrained features that REPA aligns to (Sec. 3.2).

State-dict layout after injection (torch.nn.utils.parametrize): ``<layer>.parametrizations.weight.original``
(the frozen W) and ``<layer>.parametrizations.weight.0.lora_A`` / ``.lora_B``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize


class LoRAParametrization(nn.Module):
    """Maps a frozen weight W (out, in) to W + scaling * B @ A."""

    def __init__(
        self,
        out_features: int,
        in_features: int,
        rank: int,
        alpha: float,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.rank = rank
        self.scaling = alpha / rank
        self.enabled = True
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))
        # Same init as nn.Linear's weight (Kaiming-uniform, a=sqrt(5)); B = 0 keeps the start exact.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        return weight + (self.lora_B @ self.lora_A) * self.scaling  # (out, r) @ (r, in) -> (out, in)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}, enabled={self.enabled}"


def _lora_of(linear: nn.Module) -> LoRAParametrization | None:
    if not parametrize.is_parametrized(linear, "weight"):
        return None
    for p in linear.parametrizations.weight:
        if isinstance(p, LoRAParametrization):
            return p
    return None


def inject_lora(
    module: nn.Module,
    target_names: Sequence[str] = ("qkv", "proj"),
    rank: int = 8,
    alpha: float = 8.0,
    freeze_base: bool = True,
) -> list[str]:
    """Add a LoRA update to every nn.Linear in `module` whose attribute name is in `target_names`.

    Names match the last component of the module path, so ("qkv", "proj") hits ``blocks.3.attn.qkv``
    and ``blocks.3.attn.proj`` but not ``patch_embed.proj`` (a Conv2d) or the MLP's ``fc1``/``fc2``.
    With `freeze_base`, every parameter that existed in `module` before injection stops requiring
    grad, so only the new lora_A / lora_B train. Returns the dotted names of the adapted layers.
    Raises ValueError if nothing matched or a layer already carries a LoRA.
    """
    if freeze_base:
        for p in module.parameters():
            p.requires_grad_(False)
    targets = set(target_names)
    adapted: list[str] = []
    # Materialise the list first: registering a parametrization adds submodules while we iterate.
    for name, child in list(module.named_modules()):
        if not isinstance(child, nn.Linear) or name.rsplit(".", 1)[-1] not in targets:
            continue
        if _lora_of(child) is not None:
            raise ValueError(f"layer '{name}' already has a LoRA")
        w = child.weight
        lora = LoRAParametrization(w.shape[0], w.shape[1], rank, alpha, device=w.device, dtype=w.dtype)
        parametrize.register_parametrization(child, "weight", lora)
        adapted.append(name)
    if not adapted:
        raise ValueError(f"inject_lora: no nn.Linear named any of {sorted(targets)} in {type(module).__name__}")
    return adapted


def lora_modules(module: nn.Module) -> list[LoRAParametrization]:
    """All LoRA parametrizations inside `module`, in module order."""
    return [m for m in module.modules() if isinstance(m, LoRAParametrization)]


def lora_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    """The trainable LoRA tensors (A and B of every adapted layer), e.g. for an optimizer group."""
    for m in lora_modules(module):
        yield m.lora_A
        yield m.lora_B


@contextmanager
def lora_disabled(module: nn.Module) -> Iterator[nn.Module]:
    """Run `module` as if no LoRA were injected (the frozen base weights), restoring state on exit.

    Typical use (REPA target): ``with torch.no_grad(), lora_disabled(vfm): target = vfm(gt).patch``.
    """
    loras = lora_modules(module)
    previous = [m.enabled for m in loras]
    for m in loras:
        m.enabled = False
    try:
        yield module
    finally:
        for m, was in zip(loras, previous):
            m.enabled = was


def merge_lora(module: nn.Module) -> int:
    """Fold each LoRA into its base weight (W <- W + s*B@A, plain nn.Linear again); returns the count.

    For export/inference: the merged layer costs nothing extra per call. Irreversible. A LoRA that is
    currently disabled is dropped instead of merged, so the merged model computes what it computed.
    """
    count = 0
    for child in list(module.modules()):
        lora = _lora_of(child)
        if lora is None:
            continue
        parametrize.remove_parametrizations(child, "weight", leave_parametrized=lora.enabled)
        count += 1
    return count
