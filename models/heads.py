"""The generator's output heads, HiTokSR Sec. 3.2: N heads of K logits, one per token group, trained with the
cross-entropy of Eq. 10 against the tokenizer's indices of the HR image.

Both heads map tokens (B, L, dim) to logits (B, L, N*K) and return the predicted latent when they have one:
- `LinearHeads`: the paper's single linear map dim -> N*K;
- `CodebookHeads` (not in the paper): each token predicts a latent and codes are scored by distance to it."""
from typing import NamedTuple

import torch
from torch import nn


class HeadOutput(NamedTuple):
    logits: torch.Tensor         # (B, L, N*K), group-major: code k of group g at g*K + k
    latent: torch.Tensor | None  # (B, L, C) the predicted latent (CodebookHeads), else None


class LinearHeads(nn.Linear):
    """The paper's heads: one Linear(dim, N*K). A subclass of nn.Linear so its tensors keep the names
    `head.weight` / `head.bias` that existing model files use."""

    def __init__(self, dim: int, groups: int, codebook_size: int):
        super().__init__(dim, groups * codebook_size)

    def forward(self, x: torch.Tensor, codebook: torch.Tensor | None = None) -> HeadOutput:
        """x (B, L, dim) -> logits (B, L, N*K); the codebook is not needed."""
        return HeadOutput(super().forward(x), None)


class CodebookHeads(nn.Module):
    """N heads of K logits tied to the tokenizer's codebooks: each token predicts a latent z' (C channels, split in
    N groups as in Eq. 1) and code k of group g scores -s_g ||z'_g - C_g[k]||^2, s_g = exp(log_scale_g) learned.
    Top-1 is then the nearest code, the same rule as Eq. 2, and similar codes get similar logits, so the head
    starts out knowing the geometry a linear N*K classifier must learn from scratch (measured in MODEL_CARD.md)."""

    def __init__(self, dim: int, latent_dim: int, groups: int):
        super().__init__()
        self.groups = groups
        self.proj = nn.Linear(dim, latent_dim)
        self.log_scale = nn.Parameter(torch.zeros(groups))

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, dim) -> the predicted latent z' (B, L, C); its nearest codes are the top-1 tokens."""
        return self.proj(x)

    def forward(self, x: torch.Tensor, codebook: torch.Tensor | None = None) -> HeadOutput:
        """x (B, L, dim), codebook (N, K, C/N) -> logits (B, L, N*K) and the latent (B, L, C)."""
        if codebook is None:
            raise ValueError("the codebook head needs the tokenizer's codebook (use HiTok.generate)")
        B, L, _ = x.shape
        z = self.latent(x)  # (B, L, C)
        zg = z.view(B, L, self.groups, -1).transpose(0, 2).reshape(self.groups, B * L, -1)  # (N, B*L, C/N)
        cb = codebook.to(z.dtype)
        d2 = (zg.pow(2).sum(-1, keepdim=True) - 2 * zg @ cb.transpose(1, 2)
              + cb.pow(2).sum(-1)[:, None, :])  # ||z'_g||^2 - 2 z'_g.c + ||c||^2: (N, B*L, K)
        logits = -d2 * self.log_scale.exp()[:, None, None]
        logits = logits.view(self.groups, L, B, -1).permute(2, 1, 0, 3).reshape(B, L, -1)  # (B, L, N*K)
        return HeadOutput(logits, z)
