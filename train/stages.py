"""The three HiTokSR training stages (Sec. 3.1-3.3, Table 6) as modules: `forward(batch, rng, step) -> StageLosses`.

A stage owns the method's math: which modules learn, how a batch becomes losses, and which image pair the
discriminator judges. The loop (train/loop.py) owns optimisation (AdamW, warm-up, EMA, clipping, accumulation,
checkpoints) and train/gan.py the adversarial step. `forward` returns the generator-side loss *without* the
adversarial term; train/gan.py adds `adv_weight * generator_adv_loss(D(fake))` when the GAN is on. A stage is an
nn.Module holding the model, so DistributedDataParallel can wrap it (train/distributed.py).

Every random draw of a step (the group mask: detail, top-K sampling, k-means init, codebook restarts) comes from `rng`,
the step's torch.Generator (train/loop.py `step_rng`)."""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hitok.models import HiTok
from hitok.models.masking import mask_groups, sample_detail

from .losses.dwt import target_for_detail
from .losses.repa import REPALoss


@dataclass
class StageLosses:
    total: torch.Tensor                      # generator-side total, adversarial term excluded
    terms: dict[str, float] = field(default_factory=dict)  # unweighted terms, for the log
    fake: torch.Tensor | None = None         # the stage's output image (B, 3, H, W): what the discriminator judges
    photo: torch.Tensor | None = None        # the HR photo: the discriminator's real sample (never a DWT target)
    target: torch.Tensor | None = None       # what the pixel losses compared `fake` with: T(N-M) of the photo
                                             # (Eq. 5) when M < N groups were active, else the photo


@dataclass
class LossWeights:
    """Table 6 strengths; `adv_kind` hinge for the tokenizer, vanilla for the generator and decoder stages."""
    l1: float = 1.0
    lpips: float = 1.0
    vq: float = 1.0       # lambda of Eq. 8: weight of the whole VQ term of Eq. 7 (its inner commitment weight beta
                          # is TokenizerConfig.beta, part of the model)
    ce: float = 1.0
    repa: float = 1.0
    latent: float = 0.0   # generator stage, "codebook" head only: MSE of the predicted latent to the encoder's
                          # (not in the paper; a dense signal for short CPU runs — 0 keeps Eq. 10 as published)
    adv: float = 0.8
    adv_kind: str = "hinge"


def default_weights(stage: str) -> LossWeights:
    if stage == "tokenizer":
        return LossWeights(adv=0.8, adv_kind="hinge")
    return LossWeights(adv=0.5, adv_kind="vanilla")


def _pixel_terms(out: torch.Tensor, target: torch.Tensor, weights: LossWeights, lpips: nn.Module | None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 + LPIPS of the unclamped output. Every term (and the discriminator, train/gan.py) sees the same image:
    a clamp before LPIPS alone gave out-of-range pixels zero LPIPS gradient while L1 pulled them back, so the
    two terms trained different images; inference clamps, and L1 already penalises what the clamp would cut."""
    l1 = (out - target).abs().mean()
    loss, terms = weights.l1 * l1, {"l1": l1.item()}
    if lpips is not None and weights.lpips > 0:
        lp = lpips(out, target).mean()
        loss = loss + weights.lpips * lp
        terms["lpips"] = lp.item()
    return loss, terms


class Stage(nn.Module):
    """What the loop needs of a stage besides forward."""
    name = ""

    def __init__(self, model: HiTok, weights: LossWeights, lpips: nn.Module | None):
        super().__init__()
        # Not submodules: only what the stage trains is registered (below, per stage), so DDP's gradient buckets
        # and start-up broadcast cover just that. The rest of the model comes from the same file or seed on
        # every process; LPIPS is frozen and never saved.
        self._fixed = (model, lpips)
        self.loss_weights = weights

    @property
    def model(self) -> HiTok:
        return self._fixed[0]

    @property
    def lpips(self) -> nn.Module | None:
        return self._fixed[1]

    def trained(self) -> dict[str, nn.Module]:
        """The modules this stage trains, by name (the EMA averages them; those outside the model are
        checkpointed as `extra`)."""
        raise NotImplementedError

    @property
    def find_unused_parameters(self) -> bool:
        """Some trained parameter can get no gradient in a step, so DistributedDataParallel must look for such
        parameters after every backward (an extra graph walk); no by default (tests/test_stages.py checks it)."""
        return False

    def param_groups(self, learning_rate: float) -> list[dict]:
        raise NotImplementedError

    def after_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        """Updates outside the optimizer (codebook restarts); returns terms for the log."""
        return {}


class TokenizerStage(Stage):
    """Stage 1 (Sec. 3.1): L1 + LPIPS + hinge GAN + commitment, with group masking (Eq. 3) and DWT targets (Eq. 5).

    `masking` / `freq_targets` switch the two ingredients off for the Table 3 ablation. Training utilities the
    paper leaves open: k-means codebook init on the first batch, dead-code restarts, and `ae_warmup` steps
    that train encoder+decoder without quantization before that init (the latent then has a shape worth
    clustering). `decoder_only` (a trained tokenizer): encoder and codebooks fixed, the decoder alone learns
    from the tokens they give — a photo's tokens, and so a trained generator's, keep their meaning (issue 21's
    lever 1: teach the decoder to render texture)."""

    name = "tokenizer"

    def __init__(self, model: HiTok, weights: LossWeights, lpips: nn.Module | None = None,
                 masking: bool = True, freq_targets: bool = True, ae_warmup: int = 0,
                 restart_every: int = 10, restart_threshold: float = 0.03, decoder_only: bool = False):
        super().__init__(model, weights, lpips)
        self.tok = model.tokenizer
        self.decoder_only = decoder_only
        if decoder_only:
            if not model.has_encoder or not bool(self.tok.quantizer.initialized):
                raise ValueError("the decoder alone learns on a trained tokenizer's tokens: give --init with a "
                                 "model file that has its encoder")
            if self.tok.decoder.guide is not None:
                raise ValueError("this decoder has an LR guide, which the tokenizer stage never feeds")
            ae_warmup = 0
            self.tok.requires_grad_(False)
            self.tok.decoder.requires_grad_(True)
        self.masking, self.freq_targets, self.ae_warmup = masking, freq_targets, ae_warmup
        self.restart_every, self.restart_threshold = restart_every, restart_threshold
        self.n = self.tok.cfg.groups

    def trained(self) -> dict[str, nn.Module]:
        return {"tokenizer": self.tok}  # with decoder_only the EMA skips the frozen parts (train/ema.py)

    @property
    def find_unused_parameters(self) -> bool:
        # the codebook sits out the autoencoder warm-up; an LR guide is never fed here (no LR input)
        return self.ae_warmup > 0 or self.tok.decoder.guide is not None

    def param_groups(self, learning_rate: float) -> list[dict]:
        if self.decoder_only:
            return [{"params": list(self.tok.decoder.parameters()), "lr": learning_rate}]
        # the codebook trails a fast-moving encoder unless it learns faster (measured: 10x lifts code usage
        # from ~8% to ~40% after 180 CPU steps)
        others = [p for n, p in self.tok.named_parameters() if not n.startswith("quantizer.")]
        return [{"params": others, "lr": learning_rate},
                {"params": [self.tok.quantizer.codebook], "lr": 10 * learning_rate}]

    def forward(self, batch: dict, rng: torch.Generator, step: int) -> StageLosses:
        hr = batch["hr"]
        detail = sample_detail(self.n, rng) if self.masking else self.n
        target = target_for_detail(hr, self.n, detail, self.tok.cfg.wavelet) if self.freq_targets else hr
        q = self.tok.quantizer
        if step < self.ae_warmup:  # no quantization yet: a continuous autoencoder with the same masking
            recon = self.tok.decoder(mask_groups(self.tok.encode_latent(hr), self.n, detail))
            loss, terms = _pixel_terms(recon, target, self.loss_weights, self.lpips)
            return StageLosses(loss, {**terms, "detail": detail}, recon, hr, target)
        if self.decoder_only:
            with torch.no_grad():
                z_q = q.embed(q.nearest(self.tok.encode_latent(hr)))
            recon = self.tok.decode_latent(z_q, detail)
            loss, terms = _pixel_terms(recon, target, self.loss_weights, self.lpips)
            return StageLosses(loss, {**terms, "detail": detail}, recon, hr, target)
        if not bool(q.initialized):
            with torch.no_grad():
                q.init_from_latents(self.tok.encode_latent(hr), generator=rng)
        out = self.tok(hr, detail)
        loss, terms = _pixel_terms(out.recon, target, self.loss_weights, self.lpips)
        qo = out.quant
        beta = self.tok.cfg.beta  # Eq. 7's commitment weight, a model constant
        loss = loss + self.loss_weights.vq * (qo.codebook_loss + beta * qo.commit_loss)  # lambda * Eq. 7 (Eq. 8)
        terms.update(detail=detail, codebook=qo.codebook_loss.item(), commit=qo.commit_loss.item())
        terms.update({f"usage{g}": u for g, u in enumerate(qo.usage.tolist())})
        self._last_hr = hr
        return StageLosses(loss, terms, out.recon, hr, target)  # D's real sample: the photo, not the DWT target

    @torch.no_grad()
    def after_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        if self.decoder_only or step < self.ae_warmup or self.restart_every <= 0 or step % self.restart_every:
            return {}
        restarted = self.tok.quantizer.restart_dead_codes(self.tok.encode_latent(self._last_hr),
                                                          self.restart_threshold, generator=rng)
        return {f"restarted{g}": float(n) for g, n in enumerate(restarted.tolist())}


class GeneratorStage(Stage):
    """Stage 2 (Sec. 3.2, Eq. 10): tokenizer frozen; CE to the tokenizer's GT indices + L1/LPIPS/GAN on the frozen
    decoder's output of the predicted tokens (straight-through: forward uses the argmax code, backward the
    softmax expectation) + REPA when a VFM is attached."""

    name = "generator"

    def __init__(self, model: HiTok, weights: LossWeights, lpips: nn.Module | None = None):
        super().__init__(model, weights, lpips)
        if not model.has_encoder:
            raise ValueError("the generator stage needs the tokenizer encoder (for ground-truth indices)")
        model.tokenizer.requires_grad_(False)
        self.generator = model.generator
        vfm = model.generator.vfm
        self.repa = REPALoss(vfm.embed_dim) if vfm is not None and weights.repa > 0 else None

    def trained(self) -> dict[str, nn.Module]:
        mods = {"generator": self.model.generator}
        if self.repa is not None:
            mods["repa"] = self.repa
        return mods

    def param_groups(self, learning_rate: float) -> list[dict]:
        params = [p for p in self.model.generator.parameters() if p.requires_grad]
        if self.repa is not None:
            params += list(self.repa.parameters())
        return [{"params": params, "lr": learning_rate}]

    def forward(self, batch: dict, rng: torch.Generator, step: int) -> StageLosses:
        hr, low_res = batch["hr"], batch["low_res"]
        tok = self.model.tokenizer.eval()
        with torch.no_grad():
            z_gt = tok.encode_latent(hr)  # (B, C, h, w)
            gt_idx = tok.quantizer.nearest(z_gt)  # (B, N, h, w)
        out = self.model.generate(low_res)
        logits = out.logits  # (B, N, K, h, w)
        ce = F.cross_entropy(logits.float().transpose(1, 2), gt_idx)  # class dim must be 1: (B, K, N, h, w)
        probs = logits.float().softmax(dim=2)
        hard = F.one_hot(probs.argmax(2), probs.shape[2]).permute(0, 1, 4, 2, 3).to(probs.dtype)  # (B, N, K, h, w)
        st = hard + probs - probs.detach()  # straight-through estimator
        sr = tok.decode_latent(tok.quantizer.embed_soft(st))
        loss, terms = _pixel_terms(sr, hr, self.loss_weights, self.lpips)
        loss = loss + self.loss_weights.ce * ce
        terms["ce"] = ce.item()
        terms["acc"] = (probs.argmax(2) == gt_idx).float().mean().item()
        if out.latent is not None and self.loss_weights.latent > 0:
            lat = (out.latent.float() - z_gt).pow(2).mean()
            loss = loss + self.loss_weights.latent * lat
            terms["latent"] = lat.item()
        if self.repa is not None:
            target = self.model.generator.vfm.forward_frozen(hr).patch
            repa = self.repa(out.vfm_patch, target)
            loss = loss + self.loss_weights.repa * repa
            terms["repa"] = repa.item()
        return StageLosses(loss, terms, sr, hr, hr)


class DecoderStage(Stage):
    """Stage 3 (Sec. 3.3): generator and codebooks frozen; the decoder learns from tokens sampled among the
    generator's top-K (K=5 by default; Table 5) against the GT with L1 + LPIPS + GAN.

    `masking` (our addition, default on) keeps Eq. 3-5 active here too, so the `--detail` control still
    decodes coarse images after fine-tuning; the paper's stage 3 uses all groups.

    With an LR-guided decoder (models/guide.py) a quarter of the samples keep the paper's token-only task
    (fidelity 0, DWT target when masked) and the rest train the guided image (fidelity 1) on the photo itself;
    a fidelity between is a blend of the two images at inference, so it needs no training of its own (a head
    trained over random fidelities learned worse). The guide, new to a trained decoder, learns at `guide_lr_mult`
    times the rate of the pretrained decoder around it; with `guide_only` it learns alone, which keeps the
    token-only image as it was and spares the decoder's backward (the measurements: MODEL_CARD.md, "Training
    defaults")."""

    name = "decoder"
    guide_lr_mult = 8.0  # measured: at 2x (and 3e-4) the pretrained decoder drifted before the guide learned

    def __init__(self, model: HiTok, weights: LossWeights, lpips: nn.Module | None = None, topk: int = 5,
                 masking: bool = True, guide_only: bool = False):
        super().__init__(model, weights, lpips)
        self.topk, self.masking = topk, masking
        dec = model.tokenizer.decoder
        if guide_only and dec.guide is None:
            raise ValueError("guide_only: this model's decoder has no LR guide (add one with --guide-width)")
        self.guide_only = guide_only
        model.generator.requires_grad_(False)
        model.tokenizer.requires_grad_(False)
        (dec.guide if guide_only else dec).requires_grad_(True)
        self.decoder = dec

    def trained(self) -> dict[str, nn.Module]:
        return {"decoder": self.model.tokenizer.decoder}

    def param_groups(self, learning_rate: float) -> list[dict]:
        dec = self.model.tokenizer.decoder
        if self.guide_only:  # the token-only decoder stays as it is: fidelity 0 decodes exactly as before
            return [{"params": list(dec.guide.parameters()), "lr": learning_rate}]
        guide = [] if dec.guide is None else list(dec.guide.parameters())
        ids = {id(p) for p in guide}
        groups = [{"params": [p for p in dec.parameters() if id(p) not in ids], "lr": learning_rate}]
        if guide:
            groups.append({"params": guide, "lr": self.guide_lr_mult * learning_rate})
        return groups

    def forward(self, batch: dict, rng: torch.Generator, step: int) -> StageLosses:
        hr, low_res = batch["hr"], batch["low_res"]
        with torch.no_grad():
            self.model.generator.eval()
            logits = self.model.generate(low_res).logits.float()  # (B, N, K, h, w)
            idx = sample_topk(logits, self.topk, rng)
            del logits
        tok = self.model.tokenizer
        n = tok.cfg.groups
        detail = sample_detail(n, rng) if self.masking else n
        target = target_for_detail(hr, n, detail, tok.cfg.wavelet) if self.masking else hr
        fidelity = 0.0
        if self.model.guided:
            # guide_only: the guided image itself (fidelity 1; smaller ones blend it with the unchanged token image)
            fidelity = 1.0 if self.guide_only else sample_fidelity(hr.shape[0], rng, hr.device, one_share=0.75)
            target = hr if self.guide_only else torch.where(fidelity.view(-1, 1, 1, 1) > 0, hr, target)
        sr = tok.decode_latent(tok.quantizer.embed(idx).detach(), detail, low_res, fidelity)
        loss, terms = _pixel_terms(sr, target, self.loss_weights, self.lpips)
        terms["detail"] = detail
        # the discriminator's real sample is the photo, never the DWT target (8x8 flat blocks teach blockiness)
        return StageLosses(loss, terms, sr, hr, target)


def sample_fidelity(batch: int, rng: torch.Generator, device: torch.device, zero_share: float = 0.25,
                    one_share: float = 0.25) -> torch.Tensor:
    """(B,) fidelities for the guide: 0 with probability zero_share, 1 with one_share, else uniform in (0, 1)."""
    u = torch.rand(batch, generator=rng, device=device)
    between = torch.rand(batch, generator=rng, device=device)
    return torch.where(u < zero_share, torch.zeros_like(between),
                       torch.where(u < zero_share + one_share, torch.ones_like(between), between))


def sample_topk(logits: torch.Tensor, k: int, rng: torch.Generator | None = None) -> torch.Tensor:
    """Per position and group, draw one index among the k most likely, with their renormalised probabilities.

    logits (B, N, K, h, w) -> indices (B, N, h, w). k=1 is the deterministic top-1 of inference."""
    if k <= 1:
        return logits.argmax(2)
    top_val, top_idx = logits.topk(k, dim=2)  # (B, N, k, h, w)
    probs = top_val.softmax(dim=2).permute(0, 1, 3, 4, 2).reshape(-1, k)  # (B*N*h*w, k)
    pick = torch.multinomial(probs, 1, generator=rng).view(*top_idx.shape[:2], *top_idx.shape[3:])  # (B, N, h, w)
    return top_idx.gather(2, pick.unsqueeze(2)).squeeze(2)
