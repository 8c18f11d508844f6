"""Tests for the Real-ESRGAN degradation (train/degrade.py) and its blur kernels (train/kernels.py)."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hitok.train.degrade import DegradationConfig, degrade, degrade_eval, filter2d
from hitok.train.kernels import (
    KERNEL_SIZES,
    KERNEL_TYPES,
    gaussian_kernel,
    generalized_gaussian_kernel,
    plateau_kernel,
    random_blur_kernel,
    random_final_sinc,
    sinc_kernel,
)

torch.set_num_threads(1)


def _textured(h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth colour blobs plus fine stripes: content with both low and high frequencies."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(h, w), mode="bicubic", align_corners=False)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    stripes = 0.25 * torch.sin(xx * 2.2 + yy * 0.7)
    return (0.5 * base[0] + 0.25 + stripes).clamp(0, 1)


def _high_freq_energy(img: torch.Tensor) -> float:
    """Mean squared response of a discrete Laplacian."""
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    return float(filter2d(img[None], lap).pow(2).mean())


# Everything random switched off except what a test turns on: keep size, no sinc, no noise, JPEG 100.
QUIET = DegradationConfig(
    kernel_prob=(1, 0, 0, 0, 0, 0), sinc_prob=0.0, blur_sigma=(0.2, 0.21),
    resize_prob=(0, 0, 1), gaussian_noise_prob=1.0, noise_range=(0.0, 0.0), jpeg_range=(100, 100),
    second_blur_prob=1.0, kernel_prob2=(1, 0, 0, 0, 0, 0), sinc_prob2=0.0, blur_sigma2=(0.2, 0.21),
    resize_prob2=(0, 0, 1), gaussian_noise_prob2=1.0, noise_range2=(0.0, 0.0), jpeg_range2=(100, 100),
    final_sinc_prob=0.0,
)


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("size", [7, 13, 21])
def test_every_kernel_type_sums_to_one_and_has_its_size(size):
    rng = np.random.default_rng(size)
    for i, kind in enumerate(KERNEL_TYPES):
        probs = [0.0] * len(KERNEL_TYPES)
        probs[i] = 1.0
        k = random_blur_kernel(rng, probs, (0.2, 3.0), (0.5, 4.0), (1.0, 2.0), sinc_prob=0.0,
                               kernel_sizes=(size,))
        assert k.shape == (size, size), kind
        assert k.dtype == torch.float32
        assert abs(float(k.sum()) - 1.0) < 1e-5, kind
        assert float(k.min()) >= 0.0, kind
        # every kernel peaks at the centre
        assert float(k[size // 2, size // 2]) == pytest.approx(float(k.max())), kind
    s = random_blur_kernel(rng, [1, 0, 0, 0, 0, 0], (0.2, 3.0), (0.5, 4.0), (1.0, 2.0), sinc_prob=1.0,
                           kernel_sizes=(size,))
    assert s.shape == (size, size)
    assert abs(float(s.sum()) - 1.0) < 1e-5


def test_random_kernel_sizes_come_from_the_published_set():
    rng = np.random.default_rng(0)
    seen = {random_blur_kernel(rng, DegradationConfig.kernel_prob, (0.2, 3.0), (0.5, 4.0), (1.0, 2.0), 0.1).shape[0]
            for _ in range(200)}
    assert seen == set(KERNEL_SIZES) == {7, 9, 11, 13, 15, 17, 19, 21}


def test_kernel_formulas():
    g = gaussian_kernel(13, 2.0)
    assert torch.allclose(generalized_gaussian_kernel(13, 2.0, beta=1.0), g, atol=1e-7)
    assert torch.allclose(g, g.T) and torch.allclose(g, g.flip(0))
    # Rotating an anisotropic kernel by 90 degrees swaps its axes.
    a = gaussian_kernel(15, 3.0, 1.0, 0.0)
    assert torch.allclose(gaussian_kernel(15, 1.0, 3.0, math.pi / 2), a, atol=1e-7)
    assert float(a[7, :].sum()) > float(a[:, 7].sum())  # wide along x (columns)
    # A plateau with large beta is flat inside sigma: neighbours of the centre equal the centre.
    p = plateau_kernel(11, 3.0, beta=8.0)
    assert float(p[5, 6] / p[5, 5]) > 0.99
    # The sinc kernel rings (negative lobes); a lower cutoff spreads it wider.
    s_low, s_high = sinc_kernel(21, math.pi / 5), sinc_kernel(21, math.pi)
    assert float(s_low.min()) < 0.0
    assert float(s_low[10, 10]) < float(s_high[10, 10])


def test_final_sinc_probability_zero_and_one():
    rng = np.random.default_rng(0)
    assert random_final_sinc(rng, 0.0) is None
    k = random_final_sinc(rng, 1.0)
    assert k is not None and k.shape[0] in KERNEL_SIZES
    assert abs(float(k.sum()) - 1.0) < 1e-5


def test_fft_and_direct_filtering_agree():
    x = _textured(40, 52)[None]
    k = gaussian_kernel(15, 2.5, 1.0, 0.3)
    small = gaussian_kernel(5, 1.0)
    ref = F.conv2d(F.pad(x.reshape(3, 1, 40, 52), (7,) * 4, mode="reflect"), k.view(1, 1, 15, 15)).view(1, 3, 40, 52)
    assert torch.allclose(filter2d(x, k), ref, atol=1e-5)  # FFT path
    ref5 = F.conv2d(F.pad(x.reshape(3, 1, 40, 52), (2,) * 4, mode="reflect"), small.view(1, 1, 5, 5)).view(1, 3, 40, 52)
    assert torch.allclose(filter2d(x, small), ref5, atol=1e-6)  # direct path


# ----------------------------------------------------------------------------- degrade


def test_default_pipeline_degrades_by_a_stable_amount_and_keeps_the_colours():
    """Statistics of the x4plus defaults over 24 seeds, against the clean bicubic LR of the same crop: the image
    loses detail and gains noise (mean PSNR to the clean LR measured at 21.9 dB, spread 16.4-26.7), while blur,
    resizing, zero-mean noise and JPEG keep each sample's mean colour (measured within 0.017). Milder or harsher
    ranges, a lost second order, or a biased noise/kernel move these out of their bands."""
    hr = _textured(96, 96)
    clean = degrade(hr, 0, DegradationConfig(clean_prob=1.0))
    psnrs, shifts = [], []
    for seed in range(24):
        lr = degrade(hr, seed)
        psnrs.append(10 * math.log10(1.0 / float((lr - clean).pow(2).mean())))
        shifts.append(float((lr.mean((1, 2)) - clean.mean((1, 2))).abs().max()))
    assert 19.0 < sum(psnrs) / len(psnrs) < 25.0, psnrs
    assert max(psnrs) < 32.0  # every sample is degraded, none passes through nearly clean
    assert max(shifts) < 0.04, shifts


@pytest.mark.parametrize("h,w", [(64, 64), (64, 96), (70, 66)])
def test_shape_range_dtype_and_8bit(h, w):
    hr = _textured(h, w)
    before = hr.clone()
    for seed in range(6):
        lr = degrade(hr, seed)
        assert lr.shape == (3, h // 4, w // 4)
        assert lr.dtype == torch.float32
        assert float(lr.min()) >= 0.0 and float(lr.max()) <= 1.0
        assert torch.equal((lr * 255).round() / 255, lr)  # 8-bit valued, as Real-ESRGAN rounds at the end
    assert torch.equal(hr, before)  # input untouched


def test_batch_and_other_scale():
    hr = torch.stack([_textured(32, 48, 1), _textured(32, 48, 2)])
    lr = degrade(hr, 3)
    assert lr.shape == (2, 3, 8, 12)
    assert not torch.equal(lr[0], lr[1])
    assert degrade(hr[0], 3, scale=2).shape == (3, 16, 24)
    with pytest.raises(ValueError):
        degrade(torch.rand(1, 32, 32), 0)


def test_same_seed_same_output_different_seed_different():
    hr = _textured(64, 64)
    a = degrade(hr, 123)
    assert torch.equal(a, degrade(hr, 123))
    assert torch.equal(a, degrade(hr, np.random.default_rng(123)))
    outs = [degrade(hr, s) for s in range(4)]
    assert all(not torch.equal(outs[i], outs[j]) for i in range(4) for j in range(i + 1, 4))


def test_blur_removes_high_frequencies():
    hr = _textured(64, 64)
    strong = dataclasses.replace(QUIET, blur_sigma=(2.8, 3.0), blur_sigma2=(1.4, 1.5))

    def hf(cfg):
        lr = degrade(hr, 0, cfg)
        return _high_freq_energy(F.interpolate(lr[None], scale_factor=4, mode="bicubic", align_corners=False)[0])

    e_in, e_light, e_strong = _high_freq_energy(hr), hf(QUIET), hf(strong)
    assert e_strong < 0.5 * e_light
    assert e_light < e_in


def test_noise_raises_variance_on_a_flat_image():
    flat = torch.full((3, 64, 64), 128 / 255)  # on the 8-bit grid, like a decoded photo
    clean = degrade(flat, 0, QUIET)
    assert float(clean.var()) == 0.0
    gauss = dataclasses.replace(QUIET, noise_range=(20.0, 20.0), noise_range2=(20.0, 20.0))
    assert float(degrade(flat, 0, gauss).std()) > 2.0 / 255
    poisson = dataclasses.replace(QUIET, gaussian_noise_prob=0.0, gaussian_noise_prob2=0.0,
                                  poisson_scale_range=(3.0, 3.0), poisson_scale_range2=(2.5, 2.5))
    assert float(degrade(flat, 0, poisson).std()) > 2.0 / 255


def test_resize_up_and_down_still_land_on_lr_size():
    hr = _textured(64, 64)
    for probs in [(1, 0, 0), (0, 1, 0)]:
        cfg = dataclasses.replace(DegradationConfig(), resize_prob=probs, resize_prob2=probs)
        assert degrade(hr, 5, cfg).shape == (3, 16, 16)


def test_degrade_eval_is_deterministic_and_mild():
    hr = _textured(64, 64)
    a = degrade_eval(hr, 7)
    assert a.shape == (3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, degrade_eval(hr, 7))
    assert not torch.equal(a, degrade_eval(hr, 8))
    # close to a clean antialiased bicubic downscale: a mild degradation, not a different image
    ref = F.interpolate(hr[None], size=(16, 16), mode="bicubic", antialias=True)[0].clamp(0, 1)
    assert float((a - ref).abs().mean()) < 0.1


def test_clean_prob_one_gives_plain_bicubic_downscale():
    import torch.nn.functional as F
    hr = torch.rand(3, 32, 48, generator=torch.Generator().manual_seed(0))
    lr = degrade(hr, 0, DegradationConfig(clean_prob=1.0))
    ref = (F.interpolate(hr[None], size=(8, 12), mode="bicubic", antialias=True, align_corners=False)
           .clamp(0, 1) * 255).round() / 255
    assert torch.equal(lr, ref[0])
    # the default (0) keeps Real-ESRGAN's pipeline, which differs from a plain downscale
    assert not torch.equal(degrade(hr, 0), ref[0])
