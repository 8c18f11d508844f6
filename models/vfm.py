"""Vision-foundation-model (VFM) feature extractor for the semantic priors of HiTokSR Sec. 3.2.

The paper takes two things from a DINOv3 ViT-B/16 (Simeoni et al. 2025; Appendix B.2 / Table 8
picks DINOv3-B as the default):
  * the final-layer patch tokens, a dense map that drives the SFT modulation of Eq. (9);
  * "multi-scale CLS tokens extracted from different layers", appended to the generator sequence.
The backbone is frozen and adapted with LoRA on the attention projections (``lora.py``); with the
LoRA switched off (``forward_frozen``) the same module gives the frozen features that the REPA loss
aligns to (train/losses/repa.py).

timm's ``vit_base_patch16_dinov3`` is an Eva ViT with 2-D RoPE (no absolute position embedding)
and ``dynamic_img_size=True``. Its token sequence is laid out as
``[CLS, 4 registers, h*w patches (row-major)]`` (``Eva._pos_embed`` concatenates cls_token, then
reg_token, then patches; ``num_prefix_tokens = 5``), so the CLS is token 0 and patches start at 5.

Choices (each documented where it is made):
  * ``cls_layers = (2, 5, 8, 11)``: the last block of each quarter of a 12-block ViT -- the same
    four taps DPT (Ranftl et al. 2021) reads from ViT-B. The paper does not list its layers; four
    evenly spaced depths cover low/mid/high receptive fields and keep the generator's extra tokens
    at 4.
  * Every collected CLS goes through the backbone's final LayerNorm, as DINOv2/v3's
    ``get_intermediate_layers(norm=True)`` does: the residual-stream scale grows with depth, and one
    shared norm puts all L tokens on the scale the pretrained final layer was trained to emit.
  * Sides that are not multiples of 16 are padded at the bottom/right (reflect, replicate when the
    image is too small to reflect) to the next multiple. Padding keeps pixel scale (no resampling
    blur that would shift the features) and keeps patch (i, j) on pixels [16i, 16i+16) of the input,
    so the map stays aligned with the image; the grid is ceil(H/16) x ceil(W/16).
  * ``lora_rank = 8``, ``lora_alpha = rank`` (scaling 1): a common LoRA setting for ViT-B; on qkv and
    proj of 12 blocks that is 12 * 8 * (768 + 2304 + 768 + 768) = 442k trainable parameters against
    86M frozen ones. The paper does not give its rank.

Weights (``VFMConfig.weights``): "none" = random init, for tests and timing only, reported in
``weights_source``; "pretrained" = timm's hub download (DINOv3 License applies to Meta's weights),
and when it cannot be had a ``VFMWeightsError`` with one line -- never a silent random init; a path
to a ``.safetensors`` / ``.pth`` file = a timm-format state dict of the backbone, loaded strictly.
Offline, the hub download retries for about a minute before failing; ``HF_HUB_OFFLINE=1`` makes it
fail at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .alloc_limit import AllocationLimitExceeded
from .errors import one_line
from .lora import inject_lora, lora_disabled

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VFMWeightsError(RuntimeError):
    """The VFM's weights could not be obtained or do not fit the model; str() is one line."""


@dataclass
class VFMConfig:
    name: str = "vit_base_patch16_dinov3"
    weights: str = "none"  # "none" | "pretrained" | path to .safetensors / .pth
    lora_rank: int = 8  # 0 = no LoRA (fully frozen VFM)
    lora_alpha: float | None = None  # None = lora_rank, i.e. scaling alpha/r = 1 whatever the rank
    lora_targets: tuple[str, ...] = ("qkv", "proj")
    cls_layers: tuple[int, ...] = (2, 5, 8, 11)  # block indices (negative = from the end)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to timm.create_model

    def __post_init__(self) -> None:
        # Configs come back from JSON checkpoint metadata with lists where tuples were.
        self.cls_layers = tuple(int(i) for i in self.cls_layers)
        self.lora_targets = tuple(self.lora_targets)
        self.model_kwargs = dict(self.model_kwargs)


class VFMFeatures(NamedTuple):
    patch: torch.Tensor  # (B, D, ceil(H/16), ceil(W/16)) final-layer normed patch tokens
    cls: torch.Tensor  # (B, L, D) normed CLS token of each block in cls_layers


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path), device="cpu")
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
        # Training checkpoints often nest the weights one level down.
        for key in ("state_dict", "model"):
            if isinstance(sd, dict) and isinstance(sd.get(key), dict):
                sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise VFMWeightsError(f"VFM weights file {path} does not hold a flat state dict of tensors")
    return sd


def _load_file_strict(model: nn.Module, path: Path, name: str) -> None:
    try:
        sd = _read_state_dict(path)
    except VFMWeightsError:
        raise
    except Exception as exc:  # corrupt / unreadable file
        raise VFMWeightsError(f"cannot read VFM weights {path} ({one_line(exc, with_type=True)})") from None
    # timm's own filter maps Meta's original DINOv3 key names onto timm's and leaves timm keys alone.
    from timm.models.eva import checkpoint_filter_fn

    try:
        sd = checkpoint_filter_fn(sd, model)
    except Exception as exc:
        raise VFMWeightsError(f"VFM weights {path} do not fit {name} ({one_line(exc, with_type=True)})") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} wrong shape (e.g. {k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)})")
        raise VFMWeightsError(f"VFM weights {path} do not match {name}: " + ", ".join(parts))
    model.load_state_dict(sd, strict=True)


def build_backbone(config: VFMConfig) -> tuple[nn.Module, str]:
    """The timm model with its weights, and a one-line description of where the weights came from."""
    kwargs = dict(num_classes=0, **config.model_kwargs)
    weights = config.weights
    if weights == "pretrained":
        try:
            model = timm.create_model(config.name, pretrained=True, **kwargs)
        except AllocationLimitExceeded:  # a config asking for too much says so, as for the rest of the model
            raise
        except Exception as exc:  # hub unreachable, missing cache, or kwargs that change shapes
            raise VFMWeightsError(
                f"cannot get pretrained weights for {config.name} ({one_line(exc, with_type=True)}); "
                "without network, download them elsewhere and pass the .safetensors file as weights"
            ) from None
        tag = model.pretrained_cfg.get("hf_hub_id") or model.pretrained_cfg.get("url") or config.name
        return model, f"pretrained:{tag}"
    try:
        model = timm.create_model(config.name, pretrained=False, **kwargs)
    except AllocationLimitExceeded:
        raise
    except Exception as exc:
        raise VFMWeightsError(f"cannot build VFM {config.name} ({one_line(exc, with_type=True)})") from None
    if weights == "none":
        return model, "none (random init: tests/timing only)"
    path = Path(weights).expanduser()
    if path.suffix not in (".safetensors", ".pth", ".pt", ".bin") or not path.is_file():
        raise VFMWeightsError(
            f"VFM weights must be 'none', 'pretrained' or an existing .safetensors/.pth file, got '{weights}'"
        )
    _load_file_strict(model, path, config.name)
    return model, f"file:{path}"


class VFM(nn.Module):
    """Frozen timm ViT (DINOv3 by default) + LoRA, returning a patch map and multi-layer CLS tokens."""

    def __init__(self, config: VFMConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone, self.weights_source = build_backbone(config)
        bb = self.backbone
        if getattr(bb, "cls_token", None) is None or not hasattr(bb, "forward_intermediates"):
            raise ValueError(f"VFM {config.name}: needs a timm ViT with a class token and forward_intermediates")
        depth = len(bb.blocks)
        layers = [i + depth if i < 0 else i for i in config.cls_layers]
        if not layers or any(not 0 <= i < depth for i in layers) or layers != sorted(set(layers)):
            raise ValueError(
                f"VFM cls_layers {config.cls_layers} must be increasing block indices of a depth-{depth} model"
            )
        self.cls_layers = tuple(layers)
        self.patch_size = int(bb.patch_embed.patch_size[0])
        self.num_prefix_tokens = int(bb.num_prefix_tokens)  # CLS + registers, CLS first

        for p in bb.parameters():
            p.requires_grad_(False)
        if config.lora_rank > 0:
            alpha = float(config.lora_rank if config.lora_alpha is None else config.lora_alpha)
            inject_lora(bb, config.lora_targets, config.lora_rank, alpha)

        # Non-persistent: constants of the model definition, not weights to save.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def embed_dim(self) -> int:
        return int(self.backbone.embed_dim)

    @property
    def n_cls(self) -> int:
        return len(self.cls_layers)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch-map size for an input of this size (padding to a multiple of the patch)."""
        return math.ceil(height / self.patch_size), math.ceil(width / self.patch_size)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        gh, gw = self.grid_size(h, w)
        ph, pw = gh * self.patch_size - h, gw * self.patch_size - w
        if ph == 0 and pw == 0:
            return x
        mode = "reflect" if ph < h and pw < w else "replicate"  # reflect needs pad < side
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def forward(self, img: torch.Tensor) -> VFMFeatures:
        """img (B, 3, H, W) in [0, 1], any H, W >= 1 -> VFMFeatures(patch, cls)."""
        B = img.shape[0]
        x = (self._pad(img) - self.mean) / self.std
        gh, gw = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        final, inter = self.backbone.forward_intermediates(
            x,
            indices=list(self.cls_layers),
            return_prefix_tokens=True,
            norm=True,  # final LayerNorm on every tapped layer (see module docstring)
            output_fmt="NLC",
        )
        cls = torch.stack([prefix[:, 0] for _, prefix in inter], dim=1)  # (B, L, D), token 0 = CLS
        patches = final[:, self.num_prefix_tokens :]  # (B, gh*gw, D), registers dropped
        patch = patches.reshape(B, gh, gw, -1).permute(0, 3, 1, 2).contiguous()  # (B, D, gh, gw)
        return VFMFeatures(patch=patch, cls=cls)

    @torch.no_grad()
    def forward_frozen(self, img: torch.Tensor) -> VFMFeatures:
        """Features of the pretrained backbone with LoRA off, without grad (the REPA target)."""
        with lora_disabled(self):
            return self(img)
