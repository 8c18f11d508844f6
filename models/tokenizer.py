"""The coarse-to-fine image tokenizer of HiTokSR, Sec. 3.1: ViT encoder -> grouped VQ (Eqs. 1-2) -> group mask
(Eq. 4) -> ViT decoder. Images enter and leave in [0, 1]; inside, pixels live in [-1, 1]."""
from dataclasses import dataclass

import torch
from torch import nn

from .block import Block
from .convblocks import ConvDown, ConvUp
from .guide import LRGuide
from .masking import mask_groups
from .norm import RMSNorm
from .quantizer import GroupedQuantizer, QuantizerOutput
from .rope import rope_2d_angles


@dataclass
class TokenizerConfig:
    patch: int = 16            # p: HR pixels per token side
    latent_dim: int = 32       # C
    groups: int = 4            # N
    codebook_size: int = 1024  # K per group
    enc_dim: int = 768
    enc_depth: int = 12
    dec_dim: int = 768
    dec_depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    conv_widths: tuple[int, ...] = ()  # (): the paper's linear patchify; else conv widths per scale, full res first
    enc_conv_blocks: tuple[int, ...] = ()  # encoder residual blocks per scale, same indexing as conv_widths
    dec_conv_blocks: tuple[int, ...] = ()  # decoder residual blocks per scale
    beta: float = 0.25         # commitment weight of Eq. 7
    rope_base: float = 100.0
    window: int = 0            # 0: global attention (paper); >0: shifted ws x ws token windows (models/window.py)
    wavelet: str = "haar"      # DWT of the frequency-matched targets (Eq. 5): "haar" or "cdf53" (train/losses/dwt.py)
    guide_width: int = 0       # 0: the paper's token-only decoder; >0: LR-guided decoder (models/guide.py)
    guide_blocks: int = 4      # residual blocks of the LR guide's encoder


@dataclass
class TokenizerOutput:
    recon: torch.Tensor        # (B, 3, H, W), [0, 1] scale, unclamped (losses see the raw output)
    quant: QuantizerOutput
    detail: int


def _to_signed(x: torch.Tensor) -> torch.Tensor:
    return x * 2 - 1


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return (x + 1) / 2


class _Trunk(nn.Module):
    """A stack of RoPE Transformer blocks over an h x w token grid."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, rope_base: float, window: int = 0):
        super().__init__()
        self.heads, self.rope_base, self.window = heads, rope_base, window
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, window, shifted=i % 2 == 1) for i in range(depth))
        self.norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, D, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, h*w, D)
        ah, aw = (self.window, self.window) if self.window else (h, w)
        angles = rope_2d_angles(ah, aw, D // self.heads, self.rope_base, device=x.device)
        for blk in self.blocks:
            tokens = blk(tokens, angles, hw=(h, w))
        return self.norm(tokens).transpose(1, 2).reshape(B, D, h, w)  # back to the grid: (B, D, h, w)


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.patchify = ConvDown(3, cfg.enc_dim, cfg.patch, cfg.conv_widths, cfg.enc_conv_blocks)
        self.trunk = _Trunk(cfg.enc_dim, cfg.enc_depth, cfg.heads, cfg.mlp_ratio, cfg.rope_base, cfg.window)
        self.to_latent = nn.Conv2d(cfg.enc_dim, cfg.latent_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) in [0, 1] -> z (B, C, H/p, W/p)."""
        return self.to_latent(self.trunk(self.patchify(_to_signed(x))))


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.from_latent = nn.Conv2d(cfg.latent_dim, cfg.dec_dim, 1)
        self.trunk = _Trunk(cfg.dec_dim, cfg.dec_depth, cfg.heads, cfg.mlp_ratio, cfg.rope_base, cfg.window)
        self.unpatchify = ConvUp(cfg.dec_dim, 3, cfg.patch, cfg.conv_widths, cfg.dec_conv_blocks)
        self.guide = LRGuide(cfg.dec_dim, cfg.guide_width, cfg.guide_blocks, cfg.patch // 4) \
            if cfg.guide_width > 0 else None

    def forward(self, z: torch.Tensor, lr: torch.Tensor | None = None,
                fidelity: torch.Tensor | float = 0.0) -> torch.Tensor:
        """z (B, C, h, w) -> image (B, 3, h*p, w*p), [0, 1] scale, unclamped.

        lr (B, 3, h*p/4, w*p/4) and fidelity (float or (B,)): the LR guide (models/guide.py); skipped at 0."""
        feats = self.trunk(self.from_latent(z))
        if self.guide is None or lr is None or (not torch.is_tensor(fidelity) and fidelity == 0):
            return _to_unit(self.unpatchify(feats))
        return self.guide(_to_unit(self.unpatchify(feats)), feats, lr, fidelity)


class Tokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig, with_encoder: bool = True):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg) if with_encoder else None
        self.quantizer = GroupedQuantizer(cfg.latent_dim, cfg.groups, cfg.codebook_size)
        self.decoder = Decoder(cfg)

    def _need_encoder(self) -> Encoder:
        if self.encoder is None:
            raise RuntimeError("this model was exported without the tokenizer encoder; it cannot encode HR images")
        return self.encoder

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        return self._need_encoder()(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) in [0, 1], H and W multiples of p -> indices (B, N, H/p, W/p)."""
        return self.quantizer.nearest(self.encode_latent(x))

    def decode_latent(self, z_q: torch.Tensor, detail: int | None = None, lr: torch.Tensor | None = None,
                      fidelity: torch.Tensor | float = 0.0) -> torch.Tensor:
        detail = self.cfg.groups if detail is None else detail
        return self.decoder(mask_groups(z_q, self.cfg.groups, detail), lr, fidelity)

    def decode_indices(self, indices: torch.Tensor, detail: int | None = None, lr: torch.Tensor | None = None,
                       fidelity: float = 0.0) -> torch.Tensor:
        """indices (B, N, h, w) -> image (B, 3, h*p, w*p) in [0, 1]; groups after the first ``detail`` (M in Eq. 4)
        are zeroed.
        lr / fidelity: the LR-guided decoder's input and weight (models/guide.py; 0 = token-only)."""
        return self.decode_latent(self.quantizer.embed(indices), detail, lr, fidelity).clamp(0, 1)

    def forward(self, x: torch.Tensor, detail: int | None = None) -> TokenizerOutput:
        """Training pass: quantize every group (so Eq. 7 covers all of them), then mask (Eq. 4) and decode."""
        detail = self.cfg.groups if detail is None else detail
        quant = self.quantizer(self.encode_latent(x))
        return TokenizerOutput(self.decode_latent(quant.z_q, detail), quant, detail)
