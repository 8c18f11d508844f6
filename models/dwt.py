"""Frequency-matched targets, HiTokSR Sec. 3.1, Eq. 5, with an orthonormal 2D Haar DWT.

T(l) is the low-frequency approximation after l decomposition levels, returned at full image size: the l-level
Haar analysis keeps LL_l, every detail band (LH, HL, HH of levels 1..l) is set to zero, and the synthesis
inverts back to H x W. For Haar this equals replacing each 2^l x 2^l block by its mean; we run the actual
transform so the definition stays the paper's and the tests can check band energies."""
import torch


def haar_analysis(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One orthonormal Haar level: x (B, C, H, W), H and W even -> (LL, LH, HL, HH), each (B, C, H/2, W/2)."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (a + b + c + d) / 2, (a - b + c - d) / 2, (a + b - c - d) / 2, (a - b - c + d) / 2


def haar_synthesis(ll: torch.Tensor, lh: torch.Tensor, hl: torch.Tensor, hh: torch.Tensor) -> torch.Tensor:
    """Inverse of haar_analysis."""
    B, C, h, w = ll.shape
    out = ll.new_empty(B, C, 2 * h, 2 * w)
    out[..., 0::2, 0::2] = (ll + lh + hl + hh) / 2
    out[..., 0::2, 1::2] = (ll - lh + hl - hh) / 2
    out[..., 1::2, 0::2] = (ll + lh - hl - hh) / 2
    out[..., 1::2, 1::2] = (ll - lh - hl + hh) / 2
    return out


def dwt_target(x: torch.Tensor, level: int) -> torch.Tensor:
    """T(level): x (B, C, H, W) with H, W divisible by 2**level -> same shape, detail bands of levels 1..level zeroed."""
    if level == 0:
        return x
    assert x.shape[-1] % (2 ** level) == 0 and x.shape[-2] % (2 ** level) == 0, \
        f"image sides must be divisible by 2**{level} for a {level}-level DWT"
    ll = x
    for _ in range(level):
        ll = haar_analysis(ll)[0]
    for _ in range(level):
        zero = torch.zeros_like(ll)
        ll = haar_synthesis(ll, zero, zero, zero)
    return ll


def target_for_active_groups(x: torch.Tensor, n_groups: int, active: int) -> torch.Tensor:
    """Eq. 5: T_target = T(N - M)."""
    return dwt_target(x, n_groups - active)
