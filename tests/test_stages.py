"""Stage-level tests of train/stages.py and its helpers: each stage learns (overfits one batch), the generator's
straight-through gradient, the M <-> T(N-M) pairing of group masking, fixed training bugs (AdamW moments of restarted codes, LPIPS on the
unclamped output), the EMA, and where DDP must look for unused parameters."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from torch import nn
from torch.optim.swa_utils import AveragedModel

from hitok.models import HiTok, presets
from hitok.models.sr_model import add_guide
from hitok.models.masking import sample_detail
from hitok.train import distributed as ddp
from hitok.train.codebook import CODEBOOK, CodebookKeeper
from hitok.train.ema import EMA, warmup_ema_fn
from hitok.train.losses.dwt import dwt_target
from hitok.train.stages import DecoderStage, GeneratorStage, LossWeights, TokenizerStage, default_weights

torch.set_num_threads(1)
PLAIN = dict(lpips=0.0, adv=0.0)  # the pixel, VQ and CE terms; LPIPS weights and the GAN are not under test here


def _photos(n: int = 2, side: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images (B, 3, side, side): structure a small tokenizer can fit."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, side // 8, side // 8, generator=g), size=(side, side), mode="bicubic",
                         align_corners=False).clamp(0, 1)


def _batch(n: int = 1, side: int = 32) -> dict:
    hr = _photos(n, side)
    return {"hr": hr, "low_res": F.avg_pool2d(hr, 4)}


def _model(groups: int = 2, seed: int = 0) -> HiTok:
    torch.manual_seed(seed)
    cfg = presets.tiny()
    if groups != cfg.tokenizer.groups:
        cfg = replace(cfg, tokenizer=replace(cfg.tokenizer, groups=groups),
                      generator=replace(cfg.generator, groups=groups))
    return HiTok(cfg).train()


def _overfit(stage, batch: dict, steps: int, learning_rate: float) -> list[float]:
    opt = torch.optim.AdamW([p for g in stage.param_groups(learning_rate) for p in g["params"]], lr=learning_rate)
    losses = []
    for step in range(steps):
        out = stage(batch, torch.Generator().manual_seed(step), step)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()
        stage.after_step(step, torch.Generator().manual_seed(step))
        losses.append(out.total.item())
    return losses


def _first_last(losses: list[float], k: int = 5) -> tuple[float, float]:
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


# ---- each stage learns -------------------------------------------------------------------------------------------
# Overfitting one small batch is the cheapest check that a stage's loss is wired to the parameters it trains (mean
# of the last 5 steps' loss against the first 5). The factors leave room over what was measured (tokenizer and
# decoder fall to about 0.3 of the start in 80 steps, the generator's to about 0.35 in 40), and each test fails
# when its stage's `total` is made a constant (checked by patching `StageLosses.total` to a fixed tensor).

def _tokenized(batch: dict) -> HiTok:
    """A tiny model whose codebook is k-means-initialised on `batch` (what a tokenizer run hands on)."""
    model = _model()
    TokenizerStage(model, LossWeights(**PLAIN), masking=False, restart_every=0)(batch, torch.Generator(), 0)
    return model


def test_tokenizer_stage_learns_one_batch():
    stage = TokenizerStage(_model(), LossWeights(**PLAIN), masking=False, restart_every=0)
    first, last = _first_last(_overfit(stage, _batch(), 80, 3e-3))
    assert last < 0.5 * first, (first, last)


def test_generator_stage_learns_one_batch():
    batch = _batch(n=2)
    stage = GeneratorStage(_tokenized(batch), LossWeights(**PLAIN))  # the tokenizer is frozen
    first, last = _first_last(_overfit(stage, batch, 40, 3e-3))
    assert last < 0.6 * first, (first, last)


def test_decoder_stage_learns_one_batch():
    batch = _batch()
    stage = DecoderStage(_tokenized(batch), LossWeights(**PLAIN), topk=1, masking=False)
    first, last = _first_last(_overfit(stage, batch, 80, 3e-3))
    assert last < 0.5 * first, (first, last)


def test_decoder_only_learns_one_batch_and_leaves_the_tokens_as_they_were():
    """Issue 21's lever 1: the decoder learns alone; encoder and codebooks (so every photo's tokens, and what a
    trained generator predicts them to be) stay as they were, and every decoder weight gets a gradient."""
    batch = _batch()
    model = _tokenized(batch)
    fixed = {k: v.clone() for k, v in model.tokenizer.state_dict().items() if not k.startswith("decoder.")}
    stage = TokenizerStage(model, LossWeights(**PLAIN), masking=False, decoder_only=True)
    assert {id(p) for g in stage.param_groups(1e-3) for p in g["params"]} == \
        {id(p) for p in model.tokenizer.decoder.parameters()}
    stage(batch, torch.Generator(), 0).total.backward()
    assert all(p.grad is not None for p in model.tokenizer.decoder.parameters()) and not stage.find_unused_parameters
    trainable = {id(p) for p in stage.parameters() if p.requires_grad}  # what DDP would expect gradients for
    assert trainable == {id(p) for p in model.tokenizer.decoder.parameters()}
    first, last = _first_last(_overfit(stage, batch, 80, 3e-3))
    assert last < 0.5 * first, (first, last)
    assert all(torch.equal(v, model.tokenizer.state_dict()[k]) for k, v in fixed.items())
    with pytest.raises(ValueError, match="init"):
        TokenizerStage(_model(), LossWeights(**PLAIN), decoder_only=True)


# ---- the generator's straight-through gradient (Eq. 10) ----------------------------------------------------------
def test_generator_stage_pixel_losses_reach_the_generator_through_the_tokens():
    """With CE (and every other direct term) off, the generator still gets a gradient: L1 on the frozen decoder's
    image of the predicted tokens flows back through the straight-through estimator; the forward pass decodes
    the hard argmax tokens, exactly what inference decodes."""
    batch = _batch(n=2)
    model = _tokenized(batch)
    stage = GeneratorStage(model, LossWeights(l1=1.0, lpips=0.0, ce=0.0, latent=0.0, repa=0.0, adv=0.0))
    out = stage(batch, torch.Generator(), 0)
    out.total.backward()
    head = [p for p in model.generator.parameters() if p.requires_grad]
    assert sum(float(p.grad.abs().sum()) for p in head if p.grad is not None) > 0
    assert all(p.grad is None for p in model.tokenizer.parameters())  # the tokenizer stays frozen
    with torch.no_grad():
        hard = model.tokenizer.decode_latent(model.tokenizer.quantizer.embed(model.predict_indices(batch["low_res"])))
    torch.testing.assert_close(out.fake, hard, rtol=0, atol=1e-5)


# ---- group masking: M active groups <-> target T(N - M) (Sec. 3.1, Eqs. 3-5) --------------------------------------
def _seeds_by_M(stage, batch: dict, n: int) -> dict[int, int]:
    """A step seed for each M in 1..n (M < N is drawn with probability 0.1 per step, Eq. 3)."""
    found = {}
    for seed in range(400):
        M = sample_detail(n, torch.Generator().manual_seed(seed))
        found.setdefault(M, seed)
        if len(found) == n:
            return found
    raise AssertionError(f"only drew M in {sorted(found)}")


@pytest.mark.parametrize("which", ["tokenizer", "decoder"])
def test_masked_steps_pair_M_groups_with_the_dwt_target_of_level_N_minus_M(which):
    n = 4  # with N = 4, T(N - M) and T(M) differ for M = 1, 3: a swapped pairing would be seen
    batch = _batch(n=1)
    model = _model(groups=n)
    weights = LossWeights(**PLAIN)
    if which == "tokenizer":
        stage = TokenizerStage(model, weights, masking=True, restart_every=0)
    else:
        TokenizerStage(model, weights, masking=False, restart_every=0)(batch, torch.Generator(), 0)
        stage = DecoderStage(model, weights, topk=1, masking=True)
    hr = batch["hr"]
    for M, seed in sorted(_seeds_by_M(stage, batch, n).items()):
        out = stage(batch, torch.Generator().manual_seed(seed), 1)
        assert out.terms["detail"] == M
        torch.testing.assert_close(out.target, dwt_target(hr, n - M), rtol=0, atol=0)
        assert out.terms["l1"] == pytest.approx((out.fake - out.target).abs().mean().item(), rel=1e-5)
        assert torch.equal(out.photo, hr)  # the discriminator always judges the photo
        if M not in (n, n - M):
            assert not torch.allclose(out.target, dwt_target(hr, M))


# ---- codebook restarts start from fresh AdamW moments ----------------------------------------------------------------
def test_restarted_codes_lose_their_adam_moments_and_enter_the_ema_as_they_are():
    batch = _batch(n=2)
    model = _model()
    stage = TokenizerStage(model, LossWeights(**PLAIN), masking=False, restart_every=1, restart_threshold=0.03)
    opt = torch.optim.AdamW([{"params": g["params"], "lr": g["lr"]} for g in stage.param_groups(1e-3)])
    ema = EMA({"tokenizer": model.tokenizer}, {"tokenizer": "tokenizer."}, decay=0.9)
    keeper = CodebookKeeper(stage, opt, ema, ddp.DistEnv())
    q = model.tokenizer.quantizer
    for step in range(3):
        keeper.before_step()
        out = stage(batch, torch.Generator().manual_seed(step), step)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        if step < 2:  # restart nothing yet: build up moments and an average
            q.usage_ema.fill_(1.0)
            keeper.after_step(step, torch.Generator().manual_seed(step))
            ema.update()
    state = opt.state[q.codebook]
    state["exp_avg"].fill_(0.5)  # stale moments on every code (dead codes keep theirs from when they were used)
    state["exp_avg_sq"].fill_(0.25)
    q.usage_ema.fill_(1.0)
    q.usage_ema[0, :3] = 0.0  # three dead codes in group 0
    before = q.codebook.detach().clone()
    restarted = keeper.after_step(2, torch.Generator().manual_seed(2))
    assert restarted["restarted0"] == 3
    rows = (q.codebook.detach() != before).any(-1)
    assert int(rows.sum()) == 3
    assert float(state["exp_avg"][rows].abs().max()) == 0 and float(state["exp_avg_sq"][rows].abs().max()) == 0
    assert bool((state["exp_avg_sq"][~rows] == 0.25).all())  # the live codes keep theirs
    _, avg = ema.pairs[CODEBOOK]
    assert torch.equal(avg[rows], q.codebook.detach()[rows])  # copied, not averaged with the dead code


def test_the_ema_shadows_only_trained_parameters_and_averages_as_averaged_model_did():
    model = _model()
    model.tokenizer.encoder.requires_grad_(False)  # a frozen part inside a trained module
    trained = {"tokenizer": model.tokenizer}
    ema = EMA(trained, {"tokenizer": "tokenizer."}, decay=0.9)
    reference = AveragedModel(nn.ModuleDict(trained), multi_avg_fn=warmup_ema_fn(0.9), use_buffers=False)
    expected = {"tokenizer." + n for n, p in model.tokenizer.named_parameters() if p.requires_grad}
    assert set(ema.pairs) == expected and not any(n.startswith("tokenizer.encoder.") for n in ema.pairs)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        with torch.no_grad():
            for p in model.tokenizer.parameters():
                if p.requires_grad:
                    p.add_(torch.randn(p.shape, generator=gen))
        ema.update()
        reference.update_parameters(nn.ModuleDict(trained))
    averaged = dict(reference.module.named_parameters())
    assert ema.updates == 4 and all(torch.equal(avg, averaged[n]) for n, (_, avg) in ema.pairs.items())


# ---- DDP looks for unused parameters only where a step can leave some out -----------------------------------------
STAGES_WITHOUT_UNUSED = {
    "tokenizer": lambda m: TokenizerStage(m, default_weights("tokenizer")),
    "generator": lambda m: GeneratorStage(m, default_weights("generator")),
    "decoder": lambda m: DecoderStage(m, default_weights("decoder")),
    "decoder+guide": lambda m: DecoderStage(add_guide(m, 8, 1), default_weights("decoder")),
    "guide only": lambda m: DecoderStage(add_guide(m, 8, 1), default_weights("decoder"), guide_only=True),
}


@pytest.mark.parametrize("name", sorted(STAGES_WITHOUT_UNUSED))
def test_every_trained_parameter_gets_a_gradient_where_ddp_does_not_look_for_unused(name):
    stage = STAGES_WITHOUT_UNUSED[name](_model())
    assert not stage.find_unused_parameters
    for step in range(3):  # different masks (M) per step
        stage.zero_grad(set_to_none=True)
        stage(_batch(n=2), torch.Generator().manual_seed(step), step).total.backward()
        assert [n for n, p in stage.named_parameters() if p.requires_grad and p.grad is None] == []


def test_the_autoencoder_warm_up_leaves_the_codebook_out_so_ddp_looks_for_it():
    stage = TokenizerStage(_model(), default_weights("tokenizer"), ae_warmup=2)
    stage(_batch(n=2), torch.Generator().manual_seed(0), 0).total.backward()
    assert stage.find_unused_parameters and stage.tok.quantizer.codebook.grad is None


# ---- LPIPS sees what L1 and the discriminator see ------------------------------------------------------------------
def test_lpips_gets_the_unclamped_output():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, a, b):
            seen.append(a)
            return (a - b).pow(2).mean(dim=(1, 2, 3))

    batch = _batch()
    stage = TokenizerStage(_model(), LossWeights(lpips=1.0, adv=0.0), lpips=Recorder(), masking=False,
                           restart_every=0)
    out = stage(batch, torch.Generator(), 0)
    assert seen[-1] is out.fake  # the same tensor L1 and the discriminator get, not a clamped copy
    with torch.no_grad():
        out.fake.data[..., :2, :2] = 1.5  # an out-of-range pixel still gets an LPIPS gradient
    x = out.fake.detach().clone().requires_grad_(True)
    from hitok.train.stages import _pixel_terms
    loss, _ = _pixel_terms(x, batch["hr"], LossWeights(l1=0.0, lpips=1.0), Recorder())
    loss.backward()
    assert float(x.grad[..., :2, :2].abs().min()) > 0
