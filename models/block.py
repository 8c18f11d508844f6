"""Pre-norm Transformer block with RMSNorm, 2D-RoPE self-attention and SwiGLU (Sec. 3.2), optionally modulated
by SFT after each RMSNorm (Eq. 9). The same block serves the tokenizer's encoder/decoder and the generator."""
import torch
import torch.nn.functional as F
from torch import nn

from .norm import RMSNorm
from .rope import apply_rope
from .swiglu import SwiGLU

Modulation = list[tuple[torch.Tensor, torch.Tensor]]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        assert dim % heads == 0
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, angles: torch.Tensor, n_prefix: int = 0) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, heads, L, hd)
        q, k, v = qkv.unbind(0)
        q, k = apply_rope(q, angles, n_prefix), apply_rope(k, angles, n_prefix)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, hd)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


def _modulate(x: torch.Tensor, mod: tuple[torch.Tensor, torch.Tensor] | None, n_prefix: int) -> torch.Tensor:
    if mod is None:
        return x
    scale, shift = mod  # each (B, h*w, D): spatial, so prefix (CLS) tokens pass through unmodulated
    if n_prefix:
        return torch.cat([x[:, :n_prefix], x[:, n_prefix:] * scale + shift], dim=1)
    return x * scale + shift


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, angles: torch.Tensor, mods: Modulation | None = None,
                n_prefix: int = 0) -> torch.Tensor:
        m1, m2 = mods if mods is not None else (None, None)
        x = x + self.attn(_modulate(self.norm1(x), m1, n_prefix), angles, n_prefix)
        x = x + self.mlp(_modulate(self.norm2(x), m2, n_prefix))
        return x
