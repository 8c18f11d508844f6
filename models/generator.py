"""The token generator of HiTokSR, Sec. 3.2: a convolutional patchifier on the x4 low-resolution image, a stack of
RMSNorm / SwiGLU / 2D-RoPE Transformer blocks, and N heads of K logits (one head per token group).

With a vision foundation model (VFM) attached, its final patch tokens, resized to the token grid, drive an SFT
modulation after every RMSNorm (Eq. 9), and CLS tokens from several VFM layers are prepended to the sequence and
dropped after the last block (multi-scale CLS). Without a VFM the generator is Table 4's row (a)."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .block import Block
from .convblocks import ConvDown, ConvUp
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
    head_rank: int = 0         # 0: one linear map to N*K logits (paper); r > 0: per-group rank-r factorisation
    head: str = "linear"       # "linear" (above) or "codebook": predict a latent, score codes by distance
    latent_dim: int = 32       # C of the tokenizer (used by the "codebook" head)


@dataclass
class GeneratorOutput:
    logits: torch.Tensor | None       # (B, N, K, h, w); None when the caller asked for the latent only
    vfm_patch: torch.Tensor | None    # (B, D_vfm, h', w') LoRA-adapted VFM patch features of the LQ input (for REPA)
    latent: torch.Tensor | None = None  # (B, C, h, w) the "codebook" head's predicted latent


class Generator(nn.Module):
    def __init__(self, cfg: GeneratorConfig, vfm: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.patchify = ConvDown(3, cfg.dim, cfg.lr_patch * cfg.token_stride, cfg.conv_widths, cfg.conv_blocks)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.window, shifted=i % 2 == 1)
                                    for i in range(cfg.depth))
        head_in = cfg.dim
        self.upsample = None
        if cfg.token_stride > 1:
            head_in = cfg.up_widths[0]
            self.upsample = ConvUp(cfg.dim, head_in, cfg.token_stride, cfg.up_widths, cfg.up_blocks)
        self.norm = RMSNorm(head_in)
        n_logits = cfg.groups * cfg.codebook_size
        if cfg.head == "codebook":
            self.head = CodebookHeads(head_in, cfg.latent_dim, cfg.groups)
        elif cfg.head == "linear":
            self.head = nn.Linear(head_in, n_logits) if cfg.head_rank == 0 else \
                LowRankHeads(head_in, cfg.groups, cfg.codebook_size, cfg.head_rank)
        else:
            raise ValueError(f"unknown generator head {cfg.head!r} (linear or codebook)")
        self.vfm = vfm
        if vfm is not None:
            d_vfm = vfm.embed_dim
            self.sft = nn.ModuleList(SFT(d_vfm, cfg.dim) for _ in range(cfg.depth))
            self.cls_proj = nn.Linear(d_vfm, cfg.dim)
            self.cls_level = nn.Parameter(torch.zeros(vfm.n_cls, cfg.dim))  # which VFM layer a CLS token came from

    def forward(self, lr: torch.Tensor, codebook: torch.Tensor | None = None, logits: bool = True) -> GeneratorOutput:
        """lr (B, 3, h*r, w*r) in [0, 1], r = lr_patch -> logits (B, N, K, h, w).

        codebook (N, K, C/N): the tokenizer's codebooks, needed by the "codebook" head (HiTok.generate passes them).
        logits=False (codebook head only): return the predicted latent without the N x K logits, whose top-1 is its
        nearest code (HiTok.predict_indices); at 128x128 LR the logits alone are 67M values."""
        x = self.patchify(lr * 2 - 1)  # (B, dim, h, w)
        B, D, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, h*w, dim)
        ws = self.cfg.window
        ah, aw = (ws, ws) if ws else (h, w)
        angles = rope_2d_angles(ah, aw, D // self.cfg.heads, self.cfg.rope_base, device=lr.device)
        mods, n_prefix, vfm_patch = None, 0, None
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
            if self.vfm is not None:
                mods = self.sft[i](cond)
            tokens = blk(tokens, angles, mods, n_prefix, hw=(h, w))
        tokens = tokens[:, n_prefix:]  # CLS tokens are dropped after the last block
        if self.upsample is not None:
            grid = self.upsample(tokens.transpose(1, 2).reshape(B, D, h, w))  # (B, head_in, h*s, w*s)
            h, w = grid.shape[-2:]
            tokens = grid.flatten(2).transpose(1, 2)  # (B, h*w, head_in)
        latent = None
        if isinstance(self.head, CodebookHeads):
            if not logits:
                latent = self.head.latent(self.norm(tokens)).transpose(1, 2).reshape(B, -1, h, w)  # (B, C, h, w)
                return GeneratorOutput(None, vfm_patch, latent)
            if codebook is None:
                raise ValueError("the codebook head needs the tokenizer's codebook (use HiTok.generate)")
            scores, latent = self.head(self.norm(tokens), codebook)
            latent = latent.transpose(1, 2).reshape(B, -1, h, w)  # (B, C, h, w)
        else:
            scores = self.head(self.norm(tokens))  # (B, h*w, N*K)
        scores = scores.transpose(1, 2).reshape(B, self.cfg.groups, self.cfg.codebook_size, h, w)
        return GeneratorOutput(scores, vfm_patch, latent)


class CodebookHeads(nn.Module):
    """N heads of K logits tied to the tokenizer's codebooks: each token predicts a latent z' (C channels, split in
    N groups as in Eq. 1) and code k of group g scores -s_g ||z'_g - C_g[k]||^2. Top-1 is then the nearest code,
    the same rule as Eq. 2, and similar codes get similar logits, so the head starts out knowing the geometry a
    linear N*K classifier must learn from scratch — what a briefly trained CPU model needs. s_g is learned."""

    def __init__(self, dim: int, latent_dim: int, groups: int):
        super().__init__()
        self.groups = groups
        self.proj = nn.Linear(dim, latent_dim)
        self.log_scale = nn.Parameter(torch.zeros(groups))

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, dim) -> the predicted latent z' (B, L, C); its nearest codes are the top-1 tokens."""
        return self.proj(x)

    def forward(self, x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, dim), codebook (N, K, d) -> logits (B, L, N*K), latent (B, L, C)."""
        B, L, _ = x.shape
        z = self.latent(x)  # (B, L, C)
        zg = z.view(B, L, self.groups, -1).transpose(0, 2).reshape(self.groups, B * L, -1)  # (N, B*L, d)
        cb = codebook.to(z.dtype)
        d2 = (zg.pow(2).sum(-1, keepdim=True) - 2 * zg @ cb.transpose(1, 2)
              + cb.pow(2).sum(-1)[:, None, :])  # (N, B*L, K)
        logits = -d2 * self.log_scale.exp()[:, None, None]
        logits = logits.view(self.groups, L, B, -1).permute(2, 1, 0, 3).reshape(B, L, -1)  # (B, L, N*K)
        return logits, z


class LowRankHeads(nn.Module):
    """N heads of K logits through a rank-r bottleneck: Linear(dim, N*r), then each group its own r x K map. The same
    N x K logits as the paper's single Linear(dim, N*K) for a fraction of the cost when K is large and dim small."""

    def __init__(self, dim: int, groups: int, codebook_size: int, rank: int):
        super().__init__()
        self.groups, self.rank = groups, rank
        self.proj = nn.Linear(dim, groups * rank)
        self.out_weight = nn.Parameter(torch.randn(groups, rank, codebook_size) / rank ** 0.5)
        self.out_bias = nn.Parameter(torch.zeros(groups, codebook_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, dim) -> logits (B, L, N*K)."""
        B, L, _ = x.shape
        y = self.proj(x).view(B, L, self.groups, self.rank)  # (B, L, N, r)
        return (torch.einsum("blnr,nrk->blnk", y, self.out_weight) + self.out_bias).flatten(2)
