"""bench/tokenizer_ceiling.py: the token path's ceiling (reconstruction of the photo's own tokens, fine-detail
energy, NIQE) and the generator's token accuracy per group."""
import numpy as np
import torch

from hitok.bench.tokenizer_ceiling import ceiling
from hitok.models import HiTok, presets


def _val(n: int = 2, side: int = 256):
    rng = np.random.default_rng(0)
    return [(f"p{i}.png", rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for i in range(n)]


def test_a_perfect_token_path_scores_the_photo_itself():
    model = HiTok(presets.tiny())
    val = _val()
    photos = iter(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255 for _, img in val)
    codes = {}
    model.encode = lambda x: codes.setdefault("idx", torch.randint(0, 4, (1, model.config.tokenizer.groups, 4, 4)))
    model.decode_indices = lambda idx: next(photos)  # reconstructs the photo exactly
    model.predict_indices = lambda lr: codes["idx"]  # finds every token
    r = ceiling(model, val)
    assert r["r_psnr_y"] == float("inf") and abs(r["hf_energy_ratio"] - 1) < 1e-9
    assert r["token_accuracy_per_group"] == [1.0] * model.config.tokenizer.groups
    assert abs(r["niqe"] - r["niqe_photo"]) < 1e-9


def test_an_untrained_model_is_far_from_it():
    r = ceiling(HiTok(presets.tiny()), _val(1))
    assert r["r_psnr_y"] < 20 and all(0 <= a < 0.5 for a in r["token_accuracy_per_group"])
