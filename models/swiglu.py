"""SwiGLU feed-forward (Shazeer 2020, "GLU Variants Improve Transformer"), used in every block (Sec. 3.2)."""
import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        # 2/3 of the usual 4*dim keeps the parameter count of a plain GELU MLP of the same ratio
        hidden = int(dim * mlp_ratio * 2 / 3)
        hidden = (hidden + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)
