"""RMSNorm (Zhang & Sennrich 2019), the normalisation of every HiTokSR Transformer block (Sec. 3.2): torch's
nn.RMSNorm with two settings fixed.

- eps = 1e-6, what the shipped weights were trained with (torch's default, None, is the dtype's machine eps).
- The input is brought to the weight's dtype first: under a bf16/fp16 autocast activations arrive in half
  precision while the weight stays fp32, and torch.rms_norm then warns on every model load and leaves its fused
  kernel. In fp32 the statistics also cannot underflow on flat regions."""
import torch
from torch import nn


class RMSNorm(nn.RMSNorm):
    def __init__(self, dim: int):
        super().__init__(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(self.weight.dtype)).to(x.dtype)
