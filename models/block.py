"""Pre-norm Transformer block with RMSNorm, 2D-RoPE self-attention and SwiGLU (Sec. 3.2), optionally modulated
by SFT after each RMSNorm (Eq. 9). The same block serves the tokenizer's encoder/decoder and the generator."""
import torch
import torch.nn.functional as F
from torch import nn

from .norm import RMSNorm
from .rope import apply_rope
from .swiglu import SwiGLU
from .window import merge, partition

Modulation = list[tuple[torch.Tensor, torch.Tensor]]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        assert dim % heads == 0
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, angles: torch.Tensor, n_prefix: int = 0,
                key_valid: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, n_prefix + L, D); angles (L, hd/2) for the grid tokens; key_valid (B, n_prefix + L) bool or None."""
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, heads, L, hd)
        q, k, v = qkv.unbind(0)
        q, k = apply_rope(q, angles, n_prefix), apply_rope(k, angles, n_prefix)
        mask = None if key_valid is None else key_valid[:, None, None, :]  # (B, 1, 1, L): padded keys ignored
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, L, hd)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))  # heads side by side again: (B, L, D)


def _modulate(x: torch.Tensor, mod: tuple[torch.Tensor, torch.Tensor] | None, n_prefix: int) -> torch.Tensor:
    if mod is None:
        return x
    scale, shift = mod  # each (B, h*w, D): spatial, so prefix (CLS) tokens pass through unmodulated
    if n_prefix:
        return torch.cat([x[:, :n_prefix], x[:, n_prefix:] * scale + shift], dim=1)
    return x * scale + shift


class Block(nn.Module):
    """window > 0: attention inside ws x ws token windows, shifted by ws/2 when `shifted` (models/window.py);
    prefix (CLS) tokens then join every window and their outputs are averaged over windows."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, window: int = 0, shifted: bool = False):
        super().__init__()
        self.window, self.shift = window, (window // 2 if shifted else 0)
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, angles: torch.Tensor, mods: Modulation | None = None,
                n_prefix: int = 0, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """x (B, n_prefix + h*w, D). With windows, `hw` is the grid and `angles` are for one ws x ws window."""
        m1, m2 = mods if mods is not None else (None, None)
        y = _modulate(self.norm1(x), m1, n_prefix)
        ws = self.window
        if ws and hw is not None and (hw[0] > ws or hw[1] > ws):
            y = self._windowed(y, angles, n_prefix, hw)
        else:
            y = self.attn(y, angles if ws == 0 or hw is None else _grid_angles(angles, hw, ws), n_prefix)
        x = x + y
        x = x + self.mlp(_modulate(self.norm2(x), m2, n_prefix))
        return x

    def _windowed(self, y: torch.Tensor, angles: torch.Tensor, n_prefix: int, hw: tuple[int, int]) -> torch.Tensor:
        B, _, D = y.shape
        h, w = hw
        prefix, grid = y[:, :n_prefix], y[:, n_prefix:]
        win, valid, layout = partition(grid, h, w, self.window, self.shift)  # (B*nW, ws*ws, D)
        nW = win.shape[0] // B
        if n_prefix:
            win = torch.cat([prefix.repeat_interleave(nW, 0), win], dim=1)
            valid = torch.cat([valid.new_ones(valid.shape[0], n_prefix), valid], dim=1)
        out = self.attn(win, angles, n_prefix, valid)
        grid_out = merge(out[:, n_prefix:], B, h, w, self.window, self.shift, layout)
        if not n_prefix:
            return grid_out
        prefix_out = out[:, :n_prefix].view(B, nW, n_prefix, D).mean(1)  # (B, n_prefix, D), mean over windows
        return torch.cat([prefix_out, grid_out], dim=1)


def _grid_angles(window_angles: torch.Tensor, hw: tuple[int, int], ws: int) -> torch.Tensor:
    """Angles of an h x w grid (h, w <= ws) taken from the ws x ws window's row-major table."""
    h, w = hw
    return window_angles.view(ws, ws, -1)[:h, :w].reshape(h * w, -1)  # (ws, ws, hd/2) -> (h*w, hd/2)
