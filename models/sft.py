"""Spatial feature transform (Wang et al. 2018, SFTGAN), Eq. 9 of HiTokSR:
f' = gamma(f_VFM) * RMSNorm(f) + beta(f_VFM), after both RMSNorms of a generator block (models/block.py). The
heads predict (gamma - 1) and beta and start at zero, so a freshly added modulation is the identity and the
generator starts as row (a) of Table 4."""
import torch
from torch import nn


class SFT(nn.Module):
    def __init__(self, cond_dim: int, dim: int):
        super().__init__()
        # one (gamma, beta) pair for each of the block's two norms
        self.proj = nn.Sequential(nn.Linear(cond_dim, dim), nn.SiLU(), nn.Linear(dim, 4 * dim))
        nn.init.zeros_(self.proj[-1].weight)
        nn.init.zeros_(self.proj[-1].bias)

    def forward(self, cond: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """cond (B, L, cond_dim) -> [(scale, shift) for the attention, (scale, shift) for the MLP], each (B, L, dim)."""
        g1, b1, g2, b2 = self.proj(cond).chunk(4, dim=-1)
        return [(1 + g1, b1), (1 + g2, b2)]
