"""The LR-guided decoder (models/guide.py): fidelity 0 is the paper's decoder, a fresh guide changes nothing,
a trained one follows the input, tiles still agree with the whole image, and the decoder stage learns it."""
import dataclasses

import torch

from hitok.models import HiTok, presets
from hitok.models.sr_model import add_guide
from hitok.train.stages import DecoderStage, LossWeights, sample_fidelity

torch.set_num_threads(1)


def _guided(window: int = 0) -> tuple[HiTok, HiTok]:
    """(plain tiny model, the same with a guide whose zero-initialised last layer is given random weights)."""
    cfg = presets.tiny()
    if window:
        cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, window=window),
                                  generator=dataclasses.replace(cfg.generator, window=window, depth=2))
    torch.manual_seed(0)
    plain = HiTok(cfg).eval()
    guided = add_guide(plain, width=8, blocks=2).eval()
    return plain, guided


def _wake(model: HiTok) -> None:
    """Random weights in the guide's zero-initialised layers, as training would give them."""
    guide = model.tokenizer.decoder.guide
    with torch.no_grad():
        for i, layer in enumerate((guide.head[-2], guide.correct[0])):
            layer.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(2 * i + 1))
            layer.bias.normal_(0, 0.1, generator=torch.Generator().manual_seed(2 * i + 2))


def _lr_band_error(sr: torch.Tensor, lr: torch.Tensor) -> float:
    down = torch.nn.functional.interpolate(sr, size=lr.shape[-2:], mode="bicubic", antialias=True)
    return (down - lr).abs().mean().item()


def test_fidelity_zero_is_the_paper_decoder_and_a_fresh_guide_back_projects():
    plain, guided = _guided()
    lr = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)),
                                         size=(16, 16), mode="bilinear")  # a smooth photo stand-in
    with torch.no_grad():
        ref = plain.upscale(lr)
        assert torch.equal(guided.upscale(lr, fidelity=0.0), ref)
        # zero-initialised head/correction layers: only the back-projection acts, and it pulls the output's
        # LR band onto the input in proportion to w
        errors = [_lr_band_error(guided.upscale(lr, fidelity=w), lr) for w in (0.0, 0.5, 1.0)]
        assert errors[2] < errors[1] < errors[0] and errors[2] < 0.2 * errors[0], errors
        _wake(guided)
        assert torch.equal(guided.upscale(lr, fidelity=0.0), ref)  # w = 0 skips the guide entirely
        half, full = guided.upscale(lr, fidelity=0.5), guided.upscale(lr, fidelity=1.0)
    assert (half - ref).abs().mean() > 1e-3 and (full - half).abs().mean() > 1e-3


def test_guided_tiles_agree_with_the_whole_image_beyond_the_receptive_field():
    _, model = _guided(window=2)
    _wake(model)
    rf = model.receptive_field()
    plain_rf = _guided(window=2)[0].receptive_field()
    assert rf >= plain_rf
    lr = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    off, side = 16, 96
    inner = slice(4 * rf, 4 * (side - rf))
    with torch.inference_mode():
        whole = model.upscale(lr, fidelity=1.0)
        tile = model.upscale(lr[..., off:off + side, off:off + side], fidelity=1.0)[..., inner, inner]
    ref = whole[..., 4 * off:4 * (off + side), 4 * off:4 * (off + side)][..., inner, inner]
    assert torch.allclose(tile, ref, atol=1e-5)


def test_sampled_fidelities_cover_both_ends_and_the_middle():
    w = sample_fidelity(4000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert 0.2 < (w == 0).float().mean() < 0.3 and 0.2 < (w == 1).float().mean() < 0.3
    mid = w[(w > 0) & (w < 1)]
    assert 0.45 < mid.mean() < 0.55 and mid.min() < 0.05 and mid.max() > 0.95


def test_decoder_stage_learns_the_guide_on_one_batch():
    """Overfitting one batch: the L1 at fidelity 1 falls well below where it started."""
    _, model = _guided()
    model.train()
    stage = DecoderStage(model, LossWeights(lpips=0, adv=0), topk=1, masking=False)
    opt = torch.optim.Adam([p for g in stage.param_groups(3e-3) for p in g["params"]], lr=3e-3)
    torch.manual_seed(0)
    hr = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8), size=(32, 32), mode="bicubic").clamp(0, 1)
    batch = {"hr": hr, "low_res": torch.nn.functional.avg_pool2d(hr, 4)}

    def l1_at_full_fidelity() -> float:
        with torch.no_grad():
            return (model.upscale(batch["low_res"], fidelity=1.0) - hr).abs().mean().item()

    before = l1_at_full_fidelity()
    for step in range(100):
        out = stage(batch, torch.Generator().manual_seed(step), step)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        assert torch.equal(out.photo, hr)  # the discriminator always judges the photo as real
    after = l1_at_full_fidelity()
    assert after < 0.6 * before, (before, after)
