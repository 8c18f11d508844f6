"""Spatial feature transform (Wang et al. 2018, SFTGAN), Eq. 9 of HiTokSR:
f' = gamma(f_VFM) * RMSNorm(f) + beta(f_VFM). The heads predict (gamma - 1) and beta and start at zero, so a
freshly added modulation is the identity and the generator starts as row (a) of Table 4."""
import torch
from torch import nn


class SFT(nn.Module):
    def __init__(self, cond_dim: int, dim: int, n_norms: int = 2):
        super().__init__()
        self.n_norms = n_norms
        self.proj = nn.Sequential(nn.Linear(cond_dim, dim), nn.SiLU(), nn.Linear(dim, 2 * n_norms * dim))
        nn.init.zeros_(self.proj[-1].weight)
        nn.init.zeros_(self.proj[-1].bias)

    def forward(self, cond: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """cond (B, L, cond_dim) -> n_norms pairs (scale, shift), each (B, L, dim)."""
        params = self.proj(cond).chunk(2 * self.n_norms, dim=-1)
        return [(1 + params[2 * i], params[2 * i + 1]) for i in range(self.n_norms)]
