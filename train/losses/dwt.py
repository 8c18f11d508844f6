"""Frequency-matched targets, HiTokSR Sec. 3.1, Eq. 5: T(l) is the low-frequency approximation after l levels of a
2D discrete wavelet transform, returned at full image size — the l-level analysis keeps LL_l, every detail band
(LH, HL, HH of levels 1..l) is set to zero, and the synthesis inverts back to H x W.

The paper does not name its wavelet. Two are offered:
- "haar" (orthonormal Haar): T(l) is each 2^l x 2^l block replaced by its mean — piecewise constant;
- "cdf53" (the biorthogonal LeGall/CDF 5/3 of JPEG 2000, lifting form, symmetric borders): its synthesis
  low-pass is the hat function, so T(l) is a smooth (piecewise-linear) low-pass image. Decoding with M < N groups
  then gives a soft image instead of visible blocks, which is what a user asking for `--detail M` wants to see.
Both are genuine DWTs, so T(l) carries no energy in the detail bands it dropped (tests/test_models.py)."""
import torch

WAVELETS = ("haar", "cdf53")


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


def _next(s: torch.Tensor) -> torch.Tensor:
    """s[n+1] along the last dim, mirrored at the end (symmetric extension)."""
    return torch.cat([s[..., 1:], s[..., -1:]], dim=-1)


def _prev(d: torch.Tensor) -> torch.Tensor:
    """d[n-1] along the last dim, mirrored at the start."""
    return torch.cat([d[..., :1], d[..., :-1]], dim=-1)


def _cdf53_1d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lifting analysis along the last dim (even length): predict the odd samples, update the even ones."""
    s, d = x[..., 0::2], x[..., 1::2]
    d = d - 0.5 * (s + _next(s))
    s = s + 0.25 * (_prev(d) + d)
    return s, d


def _icdf53_1d(s: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Exact inverse of _cdf53_1d: undo the update, undo the prediction, interleave."""
    s = s - 0.25 * (_prev(d) + d)
    d = d + 0.5 * (s + _next(s))
    return torch.stack([s, d], dim=-1).flatten(-2)  # (..., n, 2) -> (..., 2n): s0 d0 s1 d1 ...


def cdf53_analysis(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One 2D CDF 5/3 level (rows, then columns): (B, C, H, W) -> (LL, LH, HL, HH), each (B, C, H/2, W/2)."""
    lo, hi = _cdf53_1d(x)  # along W
    ll, hl = _cdf53_1d(lo.transpose(-1, -2))  # along H
    lh, hh = _cdf53_1d(hi.transpose(-1, -2))
    return ll.transpose(-1, -2), lh.transpose(-1, -2), hl.transpose(-1, -2), hh.transpose(-1, -2)


def cdf53_synthesis(ll: torch.Tensor, lh: torch.Tensor, hl: torch.Tensor, hh: torch.Tensor) -> torch.Tensor:
    lo = _icdf53_1d(ll.transpose(-1, -2), hl.transpose(-1, -2)).transpose(-1, -2)
    hi = _icdf53_1d(lh.transpose(-1, -2), hh.transpose(-1, -2)).transpose(-1, -2)
    return _icdf53_1d(lo, hi)


_BANKS = {"haar": (haar_analysis, haar_synthesis), "cdf53": (cdf53_analysis, cdf53_synthesis)}


def dwt_target(x: torch.Tensor, level: int, wavelet: str = "haar") -> torch.Tensor:
    """T(level): x (B, C, H, W) with H, W divisible by 2**level -> same shape, detail bands of levels 1..level zeroed."""
    if level == 0:
        return x
    if wavelet not in _BANKS:
        raise ValueError(f"unknown wavelet {wavelet!r}; choose from {WAVELETS}")
    assert x.shape[-1] % (2 ** level) == 0 and x.shape[-2] % (2 ** level) == 0, \
        f"image sides must be divisible by 2**{level} for a {level}-level DWT"
    analysis, synthesis = _BANKS[wavelet]
    ll = x
    for _ in range(level):
        ll = analysis(ll)[0]
    for _ in range(level):
        zero = torch.zeros_like(ll)
        ll = synthesis(ll, zero, zero, zero)
    return ll


def target_for_detail(x: torch.Tensor, n_groups: int, active: int, wavelet: str = "haar") -> torch.Tensor:
    """Eq. 5: T_target = T(N - M)."""
    return dwt_target(x, n_groups - active, wavelet)
