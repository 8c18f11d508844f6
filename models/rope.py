"""2D rotary position embedding (Su et al. 2021, RoFormer; axial 2D form as in Heo et al. 2024, "Rotary
Position Embedding for Vision Transformer"). Half of each head's channels rotate with the row index, half with
the column index, so attention depends on relative 2D offsets only — which is also what lets a model trained
on small crops run on larger tiles."""
import torch


def rope_2d_angles(h: int, w: int, head_dim: int, base: float = 100.0, device=None) -> torch.Tensor:
    """Angles (h*w, head_dim/2) for a row-major h x w grid; head_dim must be divisible by 4."""
    assert head_dim % 4 == 0, "2D RoPE needs head_dim divisible by 4"
    quarter = head_dim // 4
    freqs = base ** (-torch.arange(quarter, device=device, dtype=torch.float32) / quarter)  # (head_dim/4,)
    ys = torch.arange(h, device=device, dtype=torch.float32)
    xs = torch.arange(w, device=device, dtype=torch.float32)
    ang_y = ys[:, None] * freqs[None]  # (h, head_dim/4)
    ang_x = xs[:, None] * freqs[None]  # (w, head_dim/4)
    ang = torch.cat([ang_y[:, None, :].expand(h, w, quarter), ang_x[None, :, :].expand(h, w, quarter)], dim=-1)
    return ang.reshape(h * w, head_dim // 2)  # (h*w, head_dim/2)


def apply_rope(x: torch.Tensor, angles: torch.Tensor, n_prefix: int = 0) -> torch.Tensor:
    """Rotate (B, heads, n_prefix + h*w, head_dim) by `angles`; the first n_prefix tokens (CLS) stay unrotated."""
    if n_prefix:
        return torch.cat([x[:, :, :n_prefix], apply_rope(x[:, :, n_prefix:], angles)], dim=2)
    if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return _apply_rope_real(x, angles)  # graph compilers/exporters have no complex dtype; same arithmetic
    # adjacent channel pairs as complex numbers, rotated by one complex multiply (several times faster on the CPU
    # than the explicit cos/sin form in eager mode, same result)
    rot = torch.polar(torch.ones_like(angles), angles)  # (L, head_dim/2) complex
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (B, heads, L, head_dim/2)
    return torch.view_as_real(xc * rot).flatten(-2).to(x.dtype)  # (..., hd/2, 2) -> (..., hd)


def _apply_rope_real(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """apply_rope's complex multiply written out in real arithmetic (what torch.compile / ONNX can fuse)."""
    cos, sin = angles.cos(), angles.sin()  # (L, head_dim/2)
    pairs = x.float().unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).to(x.dtype)
