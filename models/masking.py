"""Group masking, HiTokSR Sec. 3.1, Eqs. 3-4: the number of active groups M is N with probability 0.9 and each
m in 1..N-1 with probability 0.1/(N-1); groups after the first M are zeroed before the decoder."""
import torch


def sample_detail(n_groups: int, generator: torch.Generator | None = None, p_full: float = 0.9) -> int:
    """Draw a training step's ``detail``, the active groups M of Eq. 3 (one per step)."""
    if n_groups == 1:
        return 1
    # drawn on the generator's device: the training loop passes one generator on the model's device (CUDA too)
    u = torch.rand((), generator=generator, device=None if generator is None else generator.device).item()
    if u < p_full:
        return n_groups
    # the remaining mass 1 - p_full split evenly over m = 1..N-1
    return 1 + min(int((u - p_full) / (1 - p_full) * (n_groups - 1)), n_groups - 2)


def mask_groups(z: torch.Tensor, n_groups: int, active: int) -> torch.Tensor:
    """Eq. 4: zero the channels of groups active+1..N of z (B, C, h, w); group g owns channels [g*C/N, (g+1)*C/N)."""
    if active >= n_groups:
        return z
    B, C, h, w = z.shape
    keep = torch.zeros(C, dtype=z.dtype, device=z.device)
    keep[: active * (C // n_groups)] = 1
    return z * keep.view(1, C, 1, 1)
