"""Model-core building blocks: LoRA, VFM wrapper, U-Net discriminator, GAN / LPIPS / REPA losses."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from safetensors.torch import save_file
import torch.nn.functional as F
from torch import nn

from hitok.models.lora import (
    LoRAParametrization, inject_lora, lora_disabled, lora_modules, lora_parameters, merge_lora,
)
from hitok.models.vfm import VFM, VFMConfig, VFMWeightsError
from hitok.train.losses.discriminator import Discriminator, DiscriminatorConfig
from hitok.train.losses.gan_loss import discriminator_loss, generator_adv_loss
from hitok.train.losses.lpips import LPIPS, LPIPSUnavailable, _vgg16_features, try_lpips
from hitok.train.losses.repa import REPALoss

# init_values=1: with DINOv3's untrained layer-scale (1e-5) the blocks would barely change the tokens,
# and tests could not tell one layer (or a LoRA update) from another.
TINY = dict(depth=2, embed_dim=64, num_heads=2, init_values=1.0)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


def tiny_vfm(**kw) -> VFM:
    cfg = dict(model_kwargs=dict(TINY), cls_layers=(0, 1))
    cfg.update(kw)
    return VFM(VFMConfig(**cfg))


def randomize_lora(module: nn.Module) -> None:
    with torch.no_grad():
        for p in lora_parameters(module):
            p.normal_(0, 0.5)


# ---------------------------------------------------------------- LoRA


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.proj = nn.Linear(24, 8)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(self.proj(self.qkv(x)))


def test_lora_fresh_is_exact_noop_and_only_lora_trains():
    toy = Toy()
    x = torch.randn(5, 8)
    before = toy(x)
    names = inject_lora(toy, ("qkv", "proj"), rank=4, alpha=8.0)
    assert names == ["qkv", "proj"]
    assert torch.equal(toy(x), before)  # B = 0: bit-exact no-op
    trainable = {n for n, p in toy.named_parameters() if p.requires_grad}
    assert trainable == {
        "qkv.parametrizations.weight.0.lora_A", "qkv.parametrizations.weight.0.lora_B",
        "proj.parametrizations.weight.0.lora_A", "proj.parametrizations.weight.0.lora_B",
    }
    lora = toy.qkv.parametrizations.weight[0]
    assert lora.lora_A.shape == (4, 8) and lora.lora_B.shape == (24, 4) and lora.scaling == 2.0
    with pytest.raises(ValueError, match="already has a LoRA"):
        inject_lora(toy, ("qkv",))
    with pytest.raises(ValueError, match="no nn.Linear"):
        inject_lora(Toy(), ("nothing",))


def test_lora_update_disable_context_and_merge():
    toy = Toy()
    x = torch.randn(5, 8)
    base = toy(x).detach()
    inject_lora(toy, ("qkv", "proj"), rank=2, alpha=2.0)
    randomize_lora(toy)
    lora = toy.qkv.parametrizations.weight[0]
    expected_w = toy.qkv.parametrizations.weight.original + lora.lora_B @ lora.lora_A
    assert torch.allclose(toy.qkv.weight, expected_w)
    adapted = toy(x).detach()
    assert not torch.allclose(adapted, base)
    with lora_disabled(toy):
        assert torch.equal(toy(x), base)
    assert torch.equal(toy(x), adapted)  # restored on exit
    with pytest.raises(RuntimeError):
        with lora_disabled(toy):
            raise RuntimeError("boom")
    assert torch.equal(toy(x), adapted)  # restored on an exception too
    assert merge_lora(toy) == 2
    assert type(toy.qkv.weight) is nn.Parameter and not any(isinstance(m, LoRAParametrization) for m in toy.modules())
    assert torch.allclose(toy(x), adapted, atol=1e-6)


def test_lora_reaches_qkv_bias_variant():
    # The *_qkvb DINOv3 models call F.linear(x, self.qkv.weight, bias) directly; a parametrization
    # must still change the result.
    m = timm.create_model("vit_small_patch16_dinov3_qkvb", pretrained=False, num_classes=0, **TINY)
    assert m.blocks[0].attn.q_bias is not None  # the F.linear(..., weight=qkv.weight) path
    x = torch.rand(1, 3, 32, 32)
    base = m(x).detach()
    inject_lora(m, ("qkv",), rank=2)
    with torch.no_grad():
        for blk in m.blocks:
            blk.attn.qkv.parametrizations.weight[0].lora_B.normal_(0, 0.5)
    assert not torch.allclose(m(x), base, atol=1e-4)
    with lora_disabled(m):
        assert torch.allclose(m(x), base, atol=1e-6)


# ---------------------------------------------------------------- VFM


def test_vfm_shapes_layout_and_finiteness_for_odd_size():
    vfm = tiny_vfm()
    assert vfm.embed_dim == 64 and vfm.n_cls == 2 and vfm.cls_layers == (0, 1)
    assert vfm.weights_source.startswith("none")
    img = torch.rand(2, 3, 40, 57)
    feats = vfm(img)
    assert feats.patch.shape == (2, 64, 3, 4)  # ceil(40/16), ceil(57/16)
    assert feats.cls.shape == (2, 2, 64)
    assert torch.isfinite(feats.patch).all() and torch.isfinite(feats.cls).all()
    # Token layout: [CLS, 4 registers, patches]. Rebuild the last layer by hand from timm's forward.
    padded = torch.nn.functional.pad(img, (0, 64 - 57, 0, 48 - 40), mode="reflect")
    tokens = vfm.backbone.forward_features((padded - vfm.mean) / vfm.std)  # (B, 5 + 12, D), final norm
    assert vfm.num_prefix_tokens == 5 and tokens.shape[1] == 5 + 12
    assert torch.allclose(feats.cls[:, 1], tokens[:, 0], atol=1e-5)
    assert not torch.allclose(feats.cls[:, 0], tokens[:, 0], atol=1e-2)  # block 0's CLS is another token
    assert torch.allclose(feats.patch.flatten(2).transpose(1, 2), tokens[:, 5:], atol=1e-5)
    assert vfm(torch.rand(1, 3, 5, 7)).patch.shape == (1, 64, 1, 1)  # too small to reflect: replicate


def test_vfm_lora_grads_and_frozen_features():
    vfm = tiny_vfm(lora_rank=4)
    trainable = [n for n, p in vfm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert len(trainable) == 2 * 2 * 2  # (A, B) x (qkv, proj) x 2 blocks
    assert all(m.scaling == 1.0 and m.rank == 4 for m in lora_modules(vfm))  # default alpha = rank
    img = torch.rand(1, 3, 32, 32)
    frozen = vfm.forward_frozen(img)
    assert torch.equal(vfm(img).patch, frozen.patch)  # fresh LoRA: identical
    randomize_lora(vfm)
    adapted = vfm(img)
    assert not torch.allclose(adapted.patch, frozen.patch, atol=1e-4)
    assert torch.allclose(vfm.forward_frozen(img).patch, frozen.patch, atol=1e-6)
    assert not frozen.patch.requires_grad
    adapted.patch.square().mean().backward()
    assert all(p.grad is not None for p in lora_parameters(vfm))
    with pytest.raises(ValueError, match="cls_layers"):
        tiny_vfm(cls_layers=(1, 0))


def test_vfm_pretrained_offline_raises_one_line(monkeypatch):
    import timm.models._builder as builder

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known\nsecond line of a long hub error")

    monkeypatch.setattr(builder, "load_pretrained", offline)
    with pytest.raises(VFMWeightsError) as err:
        tiny_vfm(weights="pretrained")
    msg = str(err.value)
    assert "\n" not in msg
    assert "vit_base_patch16_dinov3" in msg and "Name or service not known" in msg and "second line" not in msg


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_vfm_local_weights_round_trip(tmp_path, suffix):
    torch.manual_seed(123)
    src = timm.create_model("vit_base_patch16_dinov3", pretrained=False, num_classes=0, **TINY)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    path = tmp_path / f"tiny{suffix}"
    save_file(sd, str(path)) if suffix == ".safetensors" else torch.save(sd, path)
    vfm = tiny_vfm(weights=str(path))
    assert vfm.weights_source == f"file:{path}"
    qkv = vfm.backbone.blocks[1].attn.qkv.parametrizations.weight.original
    assert torch.equal(qkv, sd["blocks.1.attn.qkv.weight"])
    assert torch.equal(vfm.backbone.cls_token, sd["cls_token"])
    img = torch.rand(1, 3, 32, 32)
    padded = (img - vfm.mean) / vfm.std
    assert torch.allclose(vfm(img).cls[:, -1], src.forward_features(padded)[:, 0], atol=1e-5)


def test_vfm_bad_weights_files(tmp_path):
    wide = timm.create_model("vit_base_patch16_dinov3", pretrained=False, num_classes=0, **{**TINY, "embed_dim": 32})
    path = tmp_path / "wide.safetensors"
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, str(path))
    with pytest.raises(VFMWeightsError, match="do not match") as err:
        tiny_vfm(weights=str(path))
    assert "\n" not in str(err.value) and "wrong shape" in str(err.value)
    with pytest.raises(VFMWeightsError, match="existing .safetensors"):
        tiny_vfm(weights=str(tmp_path / "missing.safetensors"))


# ---------------------------------------------------------------- discriminator


def test_discriminator_shape_finite_and_grad():
    d = Discriminator(DiscriminatorConfig(base_channels=8))
    img = torch.rand(2, 3, 40, 52, requires_grad=True)  # not multiples of 8
    logits = d(img)
    assert logits.shape == (2, 1, 40, 52)
    assert torch.isfinite(logits).all()
    logits.mean().backward()
    assert img.grad is not None and torch.isfinite(img.grad).all()
    assert hasattr(d.down[0], "parametrizations")  # spectral norm in place
    with pytest.raises(ValueError, match=">= 8"):
        d(torch.rand(1, 3, 4, 16))


# ---------------------------------------------------------------- GAN losses


def test_gan_losses_known_values():
    pos, neg, zero = torch.full((2, 1, 4, 4), 2.0), torch.full((2, 1, 4, 4), -2.0), torch.zeros(3, 1, 2, 2)
    hinge = discriminator_loss(pos, neg, "hinge")
    assert hinge.loss.item() == 0.0 and hinge.real.item() == 0.0 and hinge.fake.item() == 0.0
    assert discriminator_loss(zero, zero, "hinge").loss.item() == 2.0
    assert discriminator_loss(neg, pos, "hinge").loss.item() == 6.0
    assert generator_adv_loss(neg, "hinge").item() == 2.0
    van = discriminator_loss(zero, zero, "vanilla")
    assert math.isclose(van.loss.item(), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(van.real.item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(discriminator_loss(pos, neg, "vanilla").loss.item(), 2 * math.log1p(math.exp(-2)), rel_tol=1e-6)
    assert math.isclose(generator_adv_loss(zero, "vanilla").item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(generator_adv_loss(neg, "vanilla").item(), math.log1p(math.exp(2)), rel_tol=1e-6)
    with pytest.raises(ValueError, match="hinge"):
        generator_adv_loss(zero, "wgan")


# ---------------------------------------------------------------- LPIPS


def test_lpips_unavailable_gives_reason(monkeypatch, tmp_path):
    monkeypatch.delenv("HITOK_LPIPS_BACKBONE", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty cache
    module, reason = try_lpips()
    assert module is None
    assert "\n" not in reason and "VGG16 ImageNet weights not found" in reason and "HITOK_LPIPS_BACKBONE" in reason
    monkeypatch.setenv("HITOK_LPIPS_BACKBONE", str(tmp_path / "nope.pth"))
    with pytest.raises(LPIPSUnavailable, match="not found: .*nope.pth"):
        LPIPS()


def _fake_lpips_files(tmp_path):
    # Files laid out like torchvision's vgg16 state dict and LPIPS's lin weights (values random). He-initialised,
    # so the signal reaches relu5_3 (with nn.Conv2d's default init the deep taps carry only the biases).
    feats = _vgg16_features()
    for m in feats.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.normal_(m.bias, std=0.01)
    vgg = {f"features.{k}": v for k, v in feats.state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(4, 4)
    torch.save(vgg, tmp_path / "vgg16.pth")
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(lin, tmp_path / "lin.pth")
    return tmp_path / "vgg16.pth", tmp_path / "lin.pth", lin


def test_lpips_loads_files_and_measures(tmp_path, monkeypatch):
    vgg_path, lin_path, lin = _fake_lpips_files(tmp_path)
    monkeypatch.setenv("HITOK_LPIPS_BACKBONE", str(vgg_path))
    module, desc = try_lpips(lin_path=lin_path)
    assert module is not None and str(vgg_path) in desc and str(lin_path) in desc
    assert torch.equal(module.lins[2].weight, lin["lin2.model.1.weight"])
    assert not any(p.requires_grad for p in module.parameters())
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    y = torch.rand(2, 3, 32, 32)
    d = module(x, y)
    assert torch.equal(module(y, y), torch.zeros(2))
    d.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    bad = dict(lin)
    bad["lin4.model.1.weight"] = torch.rand(1, 256, 1, 1)
    torch.save(bad, tmp_path / "bad_lin.pth")
    with pytest.raises(LPIPSUnavailable, match="lin weights .* do not match"):
        LPIPS(lin_path=tmp_path / "bad_lin.pth")


def test_lpips_equals_eq1_on_torchvision_vgg16(tmp_path):
    """The hand-written network and distance against a reference computed another way: torchvision's VGG16
    (same weight file) and Eq. 1 of Zhang et al. 2018 written out with F.normalize."""
    torchvision = pytest.importorskip("torchvision")
    vgg_path, lin_path, lin = _fake_lpips_files(tmp_path)
    module = LPIPS(backbone_path=vgg_path, lin_path=lin_path)
    ref_net = torchvision.models.vgg16(weights=None).features[:30].eval()
    sd = torch.load(vgg_path, weights_only=True)
    ref_net.load_state_dict({k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")})
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)  # LPIPS's ScalingLayer
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def eq1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = ((t * 2 - 1 - shift) / scale for t in (a, b))
        terms = []
        for i, op in enumerate(ref_net):
            fa, fb = op(fa), op(fb)
            if i in (3, 8, 15, 22, 29):  # relu1_2 .. relu5_3
                diff = F.normalize(fa, dim=1, eps=0) - F.normalize(fb, dim=1, eps=0)  # unit length over channels
                w = lin[f"lin{len(terms)}.model.1.weight"].view(1, -1, 1, 1)
                terms.append((w * diff.pow(2)).sum(1).mean((1, 2)))  # || w_l * (...) ||^2 averaged over h, w
        total = sum(terms)
        assert all((t > 0.02 * total).all() for t in terms)  # every tap matters, so a wrong one shows
        return total

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 32, 48, generator=g), torch.rand(2, 3, 32, 48, generator=g)
    with torch.no_grad():
        d = module(x, y)
        torch.testing.assert_close(d, eq1(x, y), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(module(y, x), d, rtol=1e-5, atol=0)  # symmetric
        near = module(x, (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1))
    assert (near > 0).all() and (near < d).all()  # a slightly noisy copy is nearer than another image


# ---------------------------------------------------------------- REPA


def test_repa_aligned_is_minus_one_and_grid_alignment():
    repa = REPALoss(in_dim=16, target_dim=24, hidden_dim=32)
    src = torch.randn(2, 16, 3, 5, requires_grad=True)
    with torch.no_grad():
        target = repa.proj(src)  # (2, 24, 3, 5): what a perfectly aligned projection would give
    loss = repa(src, target)
    assert abs(loss.item() + 1.0) < 1e-6
    assert abs(repa(src, -target).item() - 1.0) < 1e-6
    # A GT map on a 4x finer grid (each cell repeated) area-averages back to the source grid exactly.
    fine = target.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # (2, 24, 12, 20)
    assert abs(repa(src, fine).item() + 1.0) < 1e-6
    loss = repa(src, torch.randn(2, 24, 12, 20))
    loss.backward()
    assert src.grad is not None and all(p.grad is not None for p in repa.parameters())
