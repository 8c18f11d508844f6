"""The artefact checks of `hitok eval` (bench/artefacts.py): the periodic one flags a cross-hatch or checkerboard laid
over a picture, at any frequency, and passes blur, sharpening, noise and the photo's own stripes; the blockiness
one flags pixelation on the LR grid."""
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from hitok.bench.artefacts import FLAG, periodic_score


def _photo(seed: int = 0, size: int = 256) -> np.ndarray:
    """1/f-like texture (noise summed over scales) with a few hard edges: what upscalers are judged on."""
    rng = np.random.default_rng(seed)
    y = sum(gaussian_filter(rng.normal(0, 1, (size, size)), s) * s for s in (1, 2, 4, 8, 16))
    y[:, size // 3:size // 3 + 20] += 3
    y[size // 2:, :] -= 2
    y = 128 + 40 * (y - y.mean()) / y.std()
    rgb = np.stack([y, 0.9 * y + 10, 1.1 * y - 10], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _texture(photo: np.ndarray) -> np.ndarray:
    y = photo.astype(float).mean(-1)
    t = gaussian_filter(np.abs(y - gaussian_filter(y, 2)), 4)
    return np.clip(t / t.mean(), 0, 2)


def _add(photo: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    return np.clip(photo.astype(float) + pattern[..., None], 0, 255).astype(np.uint8)


def _softened(photo: np.ndarray) -> np.ndarray:
    """What a faithful x4 upscaler gives: the photo down and up again (bicubic)."""
    img = Image.fromarray(photo)
    return np.asarray(img.resize((64, 64), Image.BICUBIC).resize((256, 256), Image.BICUBIC))


@pytest.mark.parametrize("seed", [0, 1])
def test_honest_outputs_pass(seed):
    photo = _photo(seed)
    soft = _softened(photo)
    sharpened = np.clip(2.0 * soft.astype(float) - gaussian_filter(soft.astype(float), (1.5, 1.5, 0)), 0, 255)
    noisy = photo.astype(float) + np.random.default_rng(9).normal(0, 4, photo.shape)
    for out in (photo, soft, sharpened.astype(np.uint8), np.clip(noisy, 0, 255).astype(np.uint8)):
        assert periodic_score(out, photo) < FLAG


@pytest.mark.parametrize("seed", [0, 1])
def test_a_tilted_cross_hatch_and_a_checkerboard_are_flagged(seed):
    photo = _photo(seed)
    soft = _softened(photo)
    yy, xx = np.mgrid[0:256, 0:256]
    hatch = 4 * _texture(photo) * (np.sin(2 * np.pi * (0.23 * xx + 0.11 * yy)) +
                                   np.sin(2 * np.pi * (-0.11 * xx + 0.23 * yy)))
    checker = 3 * _texture(photo) * ((xx + yy) % 2 * 2 - 1)
    assert periodic_score(_add(soft, hatch), photo) > FLAG
    assert periodic_score(_add(soft, checker), photo) > FLAG


@pytest.mark.parametrize("freq", [0.03, 0.06])
def test_the_photos_own_stripes_and_bicubics_imaging_divide_out(freq):
    """Stripes in the photo (blinds, a fence) come out of a faithful upscaler, with the image frequency bicubic
    interpolation mirrors them into: neither is a pattern the upscaler drew, given the bicubic baseline."""
    yy, xx = np.mgrid[0:256, 0:256]
    photo = _add(_photo(0), 20 * np.sin(2 * np.pi * freq * (xx + 0.3 * yy)))
    soft = _softened(photo)
    assert periodic_score(soft, photo, baseline=soft) < FLAG
    hatch = 4 * _texture(photo) * np.sin(2 * np.pi * (0.23 * xx + 0.11 * yy))
    assert periodic_score(_add(soft, hatch), photo, baseline=soft) > FLAG  # still seen beside the stripes
    with pytest.raises(ValueError, match="smaller than"):
        periodic_score(photo[:32, :32], photo[:32, :32])


@pytest.mark.parametrize("seed", [0, 1])
def test_blockiness_flags_pixelation_on_the_lr_grid_and_passes_honest_upscales(seed):
    from hitok.bench.artefacts import BLOCK_FLAG, blockiness_score

    photo = _photo(seed)
    small = Image.fromarray(photo).resize((64, 64), Image.BICUBIC)
    assert blockiness_score(photo, photo) == pytest.approx(1.0)
    assert blockiness_score(_softened(photo), photo) < BLOCK_FLAG
    blocks = np.asarray(small.resize((256, 256), Image.NEAREST))  # every LR pixel a flat 4 x 4 block
    assert blockiness_score(blocks, photo) > BLOCK_FLAG
    half = ((blocks.astype(float) + _softened(photo)) / 2).round().astype(np.uint8)  # a GAN half-way there
    assert blockiness_score(half, photo) > BLOCK_FLAG
    shifted = np.roll(blocks, 2, axis=(0, 1))  # blocks off the LR grid are not the upsampler's
    assert blockiness_score(shifted, photo) < blockiness_score(blocks, photo)


def test_blockiness_of_a_flat_photo_is_defined():
    from hitok.bench.artefacts import BLOCK_FLAG, blockiness_score

    flat = np.full((64, 64, 3), 128, np.uint8)
    assert blockiness_score(flat, flat) == 1.0
    blocks = flat.copy()
    blocks[:, 3::4] = 140  # steps only at the cell borders
    assert blockiness_score(blocks, flat) > BLOCK_FLAG


def _with_sky(seed: int) -> np.ndarray:
    """The textured photo with a flat, softly shaded band (a sky) across its top third."""
    photo = _photo(seed).astype(float)
    ramp = np.linspace(150, 170, 256)[None, :, None]
    photo[:85] = ramp + np.array([0.0, 5.0, 20.0])
    return np.clip(photo, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1])
def test_flat_noise_flags_mottle_on_the_sky_and_passes_detail_on_texture(seed):
    from hitok.bench.artefacts import FLAT_FLAG, flat_noise_score

    photo = _with_sky(seed)
    rng = np.random.default_rng(seed + 5)
    sky = np.zeros((256, 256))
    sky[:85] = 1.0
    mottle = gaussian_filter(rng.normal(0, 1, (256, 256)), 1.5)
    mottle *= 2.5 / mottle.std()  # +-2.5 grey levels of blotches: plain to the eye on a sky
    busy = 1.0 - sky
    assert flat_noise_score(photo, photo) < 0.3 * FLAT_FLAG
    assert flat_noise_score(_softened(photo), photo) < FLAT_FLAG
    assert flat_noise_score(_add(photo, 6 * mottle * busy), photo) < 0.3 * FLAT_FLAG  # invented texture: not here
    assert flat_noise_score(_add(photo, mottle * sky), photo) > FLAT_FLAG
    assert flat_noise_score(photo[85:], photo[85:]) is None  # no flat area, no score
