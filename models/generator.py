"""The token generator of HiTokSR, Sec. 3.2: a convolutional patchifier on the x4 low-resolution image, a stack of
RMSNorm / SwiGLU / 2D-RoPE Transformer blocks, and N heads of K logits (one head per token group, models/heads.py).

With a vision foundation model (VFM) attached, its final patch tokens, resized to the token grid, drive an SFT
modulation after every RMSNorm (Eq. 9), and CLS tokens from several VFM layers are prepended to the sequence and
dropped after the last block (multi-scale CLS). Without a VFM the generator is Table 4's row (a).

Not in the paper: `token_stride` s > 1 runs the Transformer on s x s cells of the token grid and a conv upsampler
(models/convblocks.py TokenUpsampler) brings the tokens back to the grid before the heads."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .block import Block
from .convblocks import ConvDown, TokenUpsampler
from .heads import CodebookHeads, LinearHeads
from .norm import RMSNorm
from .rope import rope_2d_angles
from .sft import SFT


@dataclass
class GeneratorConfig:
    lr_patch: int = 4          # LR pixels per token side (= tokenizer patch / 4)
    groups: int = 4            # N, must match the tokenizer
    codebook_size: int = 1024  # K, must match the tokenizer
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    conv_widths: tuple[int, ...] = (64, 128, 192)  # convolutional patchifier widths per scale, full LR res first
    conv_blocks: tuple[int, ...] = (1, 1, 2)
    vfm_input_scale: float = 4.0  # the VFM sees the LR image resized by this factor (4: the HR grid, p=16 aligned)
    rope_base: float = 100.0
    window: int = 0            # 0: global attention (paper); >0: shifted ws x ws token windows (models/window.py)
    token_stride: int = 1      # >1: Transformer tokens cover s x s cells of the token grid; a conv upsampler
                               # (up_widths/up_blocks, ConvUp layout) brings them back to the grid before the heads
    up_widths: tuple[int, ...] = ()
    up_blocks: tuple[int, ...] = ()
    head: str = "linear"       # "linear" (the paper's N*K classifier) or "codebook": score codes by distance
    latent_dim: int = 32       # C of the tokenizer (used by the "codebook" head)


@dataclass
class GeneratorOutput:
    logits: torch.Tensor            # (B, N, K, h, w)
    vfm_patch: torch.Tensor | None  # (B, D_vfm, h', w') LoRA-adapted VFM patch features of the LQ input (for REPA)
    latent: torch.Tensor | None     # (B, C, h, w) the "codebook" head's predicted latent, else None


class Generator(nn.Module):
    """LR image -> N x K logits on the token grid (Sec. 3.2, Fig. 2's "generator"); `forward` for training and
    sampling, `predict_latent` for the codebook head's top-1 at inference."""

    def __init__(self, cfg: GeneratorConfig, vfm: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.patchify = ConvDown(3, cfg.dim, cfg.lr_patch * cfg.token_stride, cfg.conv_widths, cfg.conv_blocks)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.window, shifted=i % 2 == 1)
                                    for i in range(cfg.depth))
        self.upsample = None
        head_in = cfg.dim
        if cfg.token_stride > 1:
            head_in = cfg.up_widths[0]
            self.upsample = TokenUpsampler(cfg.dim, head_in, cfg.token_stride, cfg.up_widths, cfg.up_blocks)
        self.norm = RMSNorm(head_in)
        if cfg.head == "codebook":
            self.head = CodebookHeads(head_in, cfg.latent_dim, cfg.groups)
        elif cfg.head == "linear":
            self.head = LinearHeads(head_in, cfg.groups, cfg.codebook_size)
        else:
            raise ValueError(f"unknown generator head {cfg.head!r} (linear or codebook)")
        self.vfm = vfm
        if vfm is not None:
            d_vfm = vfm.embed_dim
            self.sft = nn.ModuleList(SFT(d_vfm, cfg.dim) for _ in range(cfg.depth))
            self.cls_proj = nn.Linear(d_vfm, cfg.dim)
            self.cls_level = nn.Parameter(torch.zeros(vfm.n_cls, cfg.dim))  # which VFM layer a CLS token came from

    def forward(self, lr: torch.Tensor, codebook: torch.Tensor | None = None) -> GeneratorOutput:
        """lr (B, 3, h*r, w*r) in [0, 1], r = lr_patch -> logits (B, N, K, h, w) (and the latent, codebook head).

        codebook (N, K, C/N): the tokenizer's codebooks, needed by the "codebook" head (HiTok.generate passes them)."""
        tokens, (h, w), vfm_patch = self.features(lr)
        logits, latent = self.head(tokens, codebook)  # (B, h*w, N*K), (B, h*w, C) or None
        B = lr.shape[0]
        logits = logits.transpose(1, 2).reshape(B, self.cfg.groups, self.cfg.codebook_size, h, w)  # (B, N, K, h, w)
        if latent is not None:
            latent = latent.transpose(1, 2).reshape(B, -1, h, w)  # (B, C, h, w)
        return GeneratorOutput(logits, vfm_patch, latent)

    def predict_latent(self, lr: torch.Tensor) -> torch.Tensor:
        """Codebook head only: lr -> the predicted latent (B, C, h, w), whose nearest codes are the top-1 tokens,
        without the N x K logits (at 128x128 LR those alone are 67M values; HiTok.predict_indices)."""
        if not isinstance(self.head, CodebookHeads):
            raise ValueError("only the codebook head predicts a latent; use forward() for the logits")
        tokens, (h, w), _ = self.features(lr)
        return self.head.latent(tokens).transpose(1, 2).reshape(lr.shape[0], -1, h, w)  # (B, C, h, w)

    def features(self, lr: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """lr -> normed tokens (B, h*w, head_in) on the token grid, that grid (h, w), the VFM patch map or None."""
        x = self.patchify(lr * 2 - 1)  # (B, dim, h, w), h and w in Transformer tokens (cells when strided)
        B, D, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, h*w, dim)
        ws = self.cfg.window
        ah, aw = (ws, ws) if ws else (h, w)
        angles = rope_2d_angles(ah, aw, D // self.cfg.heads, self.cfg.rope_base, device=lr.device)
        n_prefix, vfm_patch, cond = 0, None, None
        if self.vfm is not None:
            scale = self.cfg.vfm_input_scale
            vfm_in = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1) \
                if scale != 1 else lr
            feats = self.vfm(vfm_in)
            vfm_patch = feats.patch
            cond = F.interpolate(feats.patch, size=(h, w), mode="bilinear", align_corners=False)
            cond = cond.flatten(2).transpose(1, 2)  # (B, h*w, D_vfm)
            cls = self.cls_proj(feats.cls) + self.cls_level  # (B, L, dim)
            tokens = torch.cat([cls, tokens], dim=1)
            n_prefix = cls.shape[1]
        for i, blk in enumerate(self.blocks):
            mods = self.sft[i](cond) if cond is not None else None
            tokens = blk(tokens, angles, mods, n_prefix, hw=(h, w))
        tokens = tokens[:, n_prefix:]  # CLS tokens are dropped after the last block
        if self.upsample is not None:
            tokens, (h, w) = self.upsample(tokens, (h, w))  # (B, h*s*w*s, up_widths[0]) on the token grid
        return self.norm(tokens), (h, w), vfm_patch
