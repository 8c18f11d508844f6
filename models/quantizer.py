"""Grouped vector quantizer, HiTokSR Sec. 3.1, Eqs. 1, 2 and 7.

The latent z (B, C, h, w) is split along channels into N groups of C/N channels (Eq. 1); group i is snapped to
its nearest entry (L2) of its own codebook C_i in R^{K x C/N} (Eq. 2). Gradients pass straight through
(van den Oord et al. 2017). Eq. 7's two terms — codebook ||sg[z_i] - z^_i||^2 and commitment
beta ||z_i - sg[z^_i]||^2 — are computed for every group on every step, whatever the mask.

Against codebook collapse (the measured failure of a plain ViT grouped-VQ on this CPU), two standard remedies the
paper does not forbid: data-driven initialisation (k-means on the first batch of encoder outputs, as in
Zeghidour et al. 2021 / VQGAN-LC's init from features) and restarting dead codes from current encoder outputs
(Dhariwal et al. 2020, Jukebox). Both are training-time utilities here; the forward pass is the paper's.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_CHUNK = 16384  # rows per distance block: bounds the (N, rows, K) distance matrix on big tiles
# Eager CPU: blocks small enough that the distances and their argmin stay in the caches (the shipped model's
# 128x128 LR tile, 1 thread: 1.6 s -> 0.4 s for the same indices); graph compilers/exporters keep one block.
_CHUNK_CPU = 256


@dataclass
class QuantizerOutput:
    z_q: torch.Tensor            # (B, C, h, w) quantized latent, straight-through to z
    indices: torch.Tensor        # (B, N, h, w) int64
    codebook_loss: torch.Tensor  # sum over groups of mean ||sg[z_i] - z^_i||^2
    commit_loss: torch.Tensor    # sum over groups of mean ||z_i - sg[z^_i]||^2 (multiply by beta in Eq. 7)
    usage: torch.Tensor          # (N,) fraction of each codebook used in this batch
    perplexity: torch.Tensor     # (N,) exp(entropy) of each group's code histogram in this batch


def _chunk(z: torch.Tensor) -> int:
    if z.device.type != "cpu" or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return _CHUNK
    return _CHUNK_CPU


class GroupedQuantizer(nn.Module):
    def __init__(self, latent_dim: int, groups: int, codebook_size: int, usage_decay: float = 0.95):
        super().__init__()
        assert latent_dim % groups == 0, "latent_dim must be divisible by the number of groups"
        self.groups, self.codebook_size, self.group_dim = groups, codebook_size, latent_dim // groups
        self.codebook = nn.Parameter(torch.randn(groups, codebook_size, self.group_dim) / self.group_dim ** 0.5)
        self.usage_decay = usage_decay
        # Training bookkeeping, saved with the weights so resumed runs and exported files agree.
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("usage_ema", torch.ones(groups, codebook_size) / codebook_size)

    def split(self, z: torch.Tensor) -> torch.Tensor:
        B, C, h, w = z.shape
        return z.view(B, self.groups, self.group_dim, h, w)  # (B, N, C/N, h, w)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C, h, w) -> indices (B, N, h, w) by Eq. 2."""
        B, C, h, w = z.shape
        flat = self.split(z).permute(1, 0, 3, 4, 2).reshape(self.groups, -1, self.group_dim)  # (N, B*h*w, d)
        cb = self.codebook.float()
        cb_sq = cb.pow(2).sum(-1)[:, None, :]  # (N, 1, K)
        out = []
        with torch.autocast(z.device.type, enabled=False):  # fp32 distances even under a bf16/fp16 autocast
            for rows in flat.float().split(_chunk(z), dim=1):
                dist = torch.baddbmm(cb_sq, rows, cb.transpose(1, 2), alpha=-2.0)  # |c|^2 - 2 z.c, (N, rows, K)
                out.append(dist.argmin(-1))
        idx = torch.cat(out, dim=1)  # (N, B*h*w)
        return idx.view(self.groups, B, h, w).transpose(0, 1).contiguous()  # (B, N, h, w)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, N, h, w) -> latent (B, C, h, w)."""
        B, N, h, w = indices.shape
        offsets = torch.arange(N, device=indices.device).view(1, N, 1, 1) * self.codebook_size  # group g's codes
        flat_cb = self.codebook.reshape(N * self.codebook_size, self.group_dim)  # (N*K, d): one table, rows g*K+k
        vecs = F.embedding(indices + offsets, flat_cb)  # (B, N, h, w, d)
        return vecs.permute(0, 1, 4, 2, 3).reshape(B, N * self.group_dim, h, w)  # (B, N, d, h, w) -> (B, C, h, w)

    def embed_soft(self, probs: torch.Tensor) -> torch.Tensor:
        """Expected code under per-group distributions: probs (B, N, K, h, w) -> (B, C, h, w)."""
        B, N, K, h, w = probs.shape
        vecs = torch.einsum("bnkhw,nkd->bndhw", probs, self.codebook.to(probs.dtype))  # (B, N, d, h, w)
        return vecs.reshape(B, N * self.group_dim, h, w)  # (B, C, h, w), group g on channels [g*d, (g+1)*d)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        indices = self.nearest(z.detach())
        z_hat = self.embed(indices)
        # per-channel means (C,) -> (N, C/N): mean within each group, summed over groups
        codebook_loss = (z.detach() - z_hat).pow(2).mean(dim=(0, 2, 3)).view(self.groups, -1).mean(1).sum()
        commit_loss = (z - z_hat.detach()).pow(2).mean(dim=(0, 2, 3)).view(self.groups, -1).mean(1).sum()
        z_q = z + (z_hat - z).detach()  # straight-through estimator
        counts = self.code_counts(indices)
        if self.training:
            with torch.no_grad():
                self.usage_ema.mul_(self.usage_decay).add_(counts / counts.sum(1, keepdim=True),
                                                           alpha=1 - self.usage_decay)
        p = counts / counts.sum(1, keepdim=True).clamp_min(1)
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum(1))
        usage = (counts > 0).float().mean(1)
        return QuantizerOutput(z_q, indices, codebook_loss, commit_loss, usage, perplexity)

    def code_counts(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, N, h, w) -> (N, K) histogram of codes per group."""
        N, K = self.groups, self.codebook_size
        # (B, N, h, w) -> (N, B*h*w), code k of group g as g*K + k
        flat = indices.transpose(0, 1).reshape(N, -1) + torch.arange(N, device=indices.device)[:, None] * K
        return torch.bincount(flat.reshape(-1), minlength=N * K).view(N, K).float()  # one bincount

    # ---- training-time utilities -------------------------------------------------------------------------------

    @torch.no_grad()
    def init_from_latents(self, z: torch.Tensor, iters: int = 10, generator: torch.Generator | None = None) -> None:
        """k-means each group's codebook on a batch of encoder outputs z (B, C, h, w)."""
        flat = self.split(z).permute(1, 0, 3, 4, 2).reshape(self.groups, -1, self.group_dim).float()  # (N, M, d)
        M = flat.shape[1]
        for g in range(self.groups):
            x = flat[g]
            pick = torch.randint(0, M, (self.codebook_size,), generator=generator, device=x.device)
            c = x[pick] + 1e-3 * x.std() * torch.randn(self.codebook_size, self.group_dim, generator=generator,
                                                     device=x.device)
            for _ in range(iters):
                assign = torch.cdist(x, c).argmin(1)
                sums = torch.zeros_like(c).index_add_(0, assign, x)
                cnt = torch.bincount(assign, minlength=self.codebook_size).float()[:, None]
                empty = cnt[:, 0] == 0
                c = torch.where(empty[:, None], c, sums / cnt.clamp_min(1))
                # empty clusters restart at random points, so no code starts dead
                n_empty = int(empty.sum())
                if n_empty:
                    c[empty] = x[torch.randint(0, M, (n_empty,), generator=generator, device=x.device)]
            self.codebook.data[g] = c.to(self.codebook.dtype)
        self.initialized.fill_(True)
        self.usage_ema.fill_(1.0 / self.codebook_size)

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor, threshold: float,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """Replace codes whose usage EMA fell below threshold/K by random current encoder outputs.

        Returns the number of restarted codes per group (N,)."""
        flat = self.split(z).permute(1, 0, 3, 4, 2).reshape(self.groups, -1, self.group_dim).float()  # (N, M, d)
        M = flat.shape[1]
        dead = self.usage_ema < threshold / self.codebook_size  # (N, K)
        for g in range(self.groups):
            n = int(dead[g].sum())
            if n:
                pick = torch.randint(0, M, (n,), generator=generator, device=z.device)
                noise = 1e-2 * flat[g].std() * torch.randn(n, self.group_dim, generator=generator, device=z.device)
                self.codebook.data[g, dead[g]] = (flat[g, pick] + noise).to(self.codebook.dtype)
                self.usage_ema[g, dead[g]] = 1.0 / self.codebook_size
        return dead.sum(1)
