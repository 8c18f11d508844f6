"""(Shifted-)window partitioning for attention over large token grids (Liu et al. 2021, Swin Transformer).

The paper's p=16 model attends globally over a 32x32 token grid per 128x128 LR input. The CPU `small` preset uses
p=4, i.e. 16x more tokens, where global attention is quadratic (~0.8 TMAC per 128x128 input). Windows of w x w
tokens make the cost linear in the image and the output independent of how a photo is cut into window-aligned
tiles; alternate blocks shift the windows by w/2 so information crosses window borders. `window=0` keeps global
attention."""
import math

import torch
import torch.nn.functional as F


def partition(x: torch.Tensor, h: int, w: int, ws: int, shift: int
              ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]]:
    """x (B, h*w, D) -> windows (B*nW, ws*ws, D), key_valid (B*nW, ws*ws) bool, layout for `merge`.

    The grid is padded by `shift` on the top/left and up to a multiple of ws on the bottom/right; padded tokens
    are masked out as keys."""
    B, L, D = x.shape
    Hp, Wp = math.ceil((h + shift) / ws) * ws, math.ceil((w + shift) / ws) * ws
    pads = (shift, Wp - w - shift, shift, Hp - h - shift)
    grid = F.pad(x.view(B, h, w, D).permute(0, 3, 1, 2), pads)  # (B, D, Hp, Wp)
    valid = F.pad(x.new_ones(1, 1, h, w, dtype=torch.bool), pads)  # (1, 1, Hp, Wp)
    nh, nw = Hp // ws, Wp // ws
    # (B, D, nh, ws, nw, ws) -> (B, nh, nw, ws, ws, D) -> (B*nW, ws*ws, D), windows row-major
    win = grid.view(B, D, nh, ws, nw, ws).permute(0, 2, 4, 3, 5, 1).reshape(B * nh * nw, ws * ws, D)
    val = valid.view(1, nh, ws, nw, ws).permute(0, 1, 3, 2, 4).reshape(nh * nw, ws * ws).repeat(B, 1)  # (B*nW, ws*ws)
    return win, val, (Hp, Wp, nh, nw)


def merge(win: torch.Tensor, B: int, h: int, w: int, ws: int, shift: int, layout: tuple[int, int, int, int]
          ) -> torch.Tensor:
    """Inverse of `partition`: (B*nW, ws*ws, D) -> (B, h*w, D)."""
    Hp, Wp, nh, nw = layout
    D = win.shape[-1]
    grid = win.view(B, nh, nw, ws, ws, D).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, D)  # windows back in place
    return grid[:, shift:shift + h, shift:shift + w].reshape(B, h * w, D)  # padding cut: (B, h*w, D)


def window_period(window_sides: tuple[int, ...], unit: int) -> int:
    """The tiling period of stacked windowed trunks, in units of `unit` pixels.

    window_sides: each trunk's window side in input pixels. A tile whose origin is a multiple of the least common
    multiple of these sides sees, in every trunk, the window layout a whole-image pass sees (shifted windows are
    offset by a fixed half window), so away from its borders it computes the same output."""
    return math.lcm(*window_sides) // unit
