"""Model core: shapes, the paper's equations (2-5, 7), the round trips and the file format."""
import json
from pathlib import Path

import pytest
import torch

from hitok.models import HiTok, ModelFileError, load_model_file, presets, save_model
from hitok.models.masking import mask_groups, sample_detail
from hitok.models.quantizer import GroupedQuantizer
from hitok.train.losses.dwt import (cdf53_analysis, cdf53_synthesis, dwt_target, haar_analysis, haar_synthesis,
                                    target_for_detail)
from hitok.train.stages import sample_topk


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return HiTok(presets.tiny()).eval()


def test_tokenizer_shapes_and_finite(tiny):
    x = torch.rand(2, 3, 32, 48)
    out = tiny.tokenizer(x)
    assert out.recon.shape == x.shape and torch.isfinite(out.recon).all()
    assert out.quant.indices.shape == (2, 2, 4, 6)
    assert out.quant.usage.shape == (2,) and out.quant.perplexity.shape == (2,)
    assert torch.isfinite(out.quant.commit_loss) and torch.isfinite(out.quant.codebook_loss)


def test_generator_shapes_without_and_with_vfm():
    torch.manual_seed(0)
    for vfm in (False, True):
        m = HiTok(presets.tiny(vfm=vfm)).eval()
        lr = torch.rand(2, 3, 12, 20)
        out = m.generator(lr)
        assert out.logits.shape == (2, 2, 16, 6, 10)
        assert torch.isfinite(out.logits).all()
        assert (out.vfm_patch is not None) == vfm
        hr = m.upscale(lr)
        assert hr.shape == (2, 3, 48, 80) and hr.min() >= 0 and hr.max() <= 1


def test_generator_with_token_stride():
    import dataclasses
    torch.manual_seed(0)
    cfg = presets.tiny()
    cfg = dataclasses.replace(cfg, generator=dataclasses.replace(
        cfg.generator, token_stride=2, conv_widths=(8, 8, 16), conv_blocks=(0, 1, 1), up_widths=(8, 16),
        up_blocks=(1, 0)))
    m = HiTok(cfg).eval()
    lr = torch.rand(2, 3, 16, 24)
    tokens, hw, _ = m.generator.features(lr)
    assert hw == (8, 12) and tokens.shape == (2, 8 * 12, 8)  # back on the token grid, up_widths[0] channels
    out = m.generator(lr)
    assert out.logits.shape == (2, 2, 16, 8, 12) and out.latent is None  # one logit vector per token of the grid
    assert torch.isfinite(out.logits).all()
    # the linear heads are the paper's single Linear(dim, N*K): logits are that map of the normed tokens
    ref = (tokens @ m.generator.head.weight.T + m.generator.head.bias).transpose(1, 2).reshape(2, 2, 16, 8, 12)
    torch.testing.assert_close(out.logits, ref)
    with pytest.raises(ValueError, match="only the codebook head"):
        m.generator.predict_latent(lr)


def test_codebook_head_scores_codes_by_distance():
    import dataclasses
    torch.manual_seed(0)
    cfg = presets.tiny()
    cfg = dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, head="codebook", latent_dim=8))
    m = HiTok(cfg).eval()
    lr = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        out = m.generate(lr)
        assert out.logits.shape == (1, 2, 16, 4, 6) and out.latent.shape == (1, 8, 4, 6)
        # top-1 of the distance logits is Eq. 2's nearest code of the predicted latent
        assert torch.equal(out.logits.argmax(2), m.tokenizer.quantizer.nearest(out.latent))
        # the fast path (latent only, no N x K logits) gives the same tokens, also under bf16 autocast
        torch.testing.assert_close(m.generator.predict_latent(lr), out.latent)
        assert torch.equal(m.predict_indices(lr), out.logits.argmax(2))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = m.predict_indices(lr)
            half = m.generator.predict_latent(lr)
        assert torch.equal(fast, m.tokenizer.quantizer.nearest(half.float()))  # distances stay fp32
    with pytest.raises(ValueError, match="needs the tokenizer's codebook"):
        m.generator(lr)


def test_upscale_rejects_misaligned_input(tiny):
    with pytest.raises(ValueError, match="multiples of 2"):
        tiny.upscale(torch.rand(1, 3, 13, 16))


def test_decode_indices_equals_decoding_the_quantized_latent(tiny):
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        idx = tiny.encode(x)
        quant = tiny.tokenizer.quantizer(tiny.tokenizer.encode_latent(x))
        assert torch.equal(idx, quant.indices)
        # the straight-through latent has the codebook vectors' values
        torch.testing.assert_close(quant.z_q, tiny.tokenizer.quantizer.embed(idx))
        a = tiny.decode_indices(idx)
        b = tiny.tokenizer.decode_latent(quant.z_q).clamp(0, 1)
    torch.testing.assert_close(a, b)


def test_nearest_is_the_l2_argmin():
    torch.manual_seed(0)
    q = GroupedQuantizer(latent_dim=6, groups=3, codebook_size=5)
    z = torch.randn(2, 6, 3, 4)
    idx = q.nearest(z)
    zg = z.view(2, 3, 2, 3, 4)  # (B, N, d, h, w)
    for g in range(3):
        d = ((zg[:, g].permute(0, 2, 3, 1)[..., None, :] - q.codebook[g]) ** 2).sum(-1)  # (B, h, w, K)
        assert torch.equal(idx[:, g], d.argmin(-1))


def test_masked_groups_contribute_exactly_zero(tiny):
    idx = torch.randint(0, 16, (1, 2, 4, 4))
    other = idx.clone()
    other[:, 1] = (other[:, 1] + 7) % 16  # change only group 2's codes
    with torch.no_grad():
        a, b = tiny.decode_indices(idx, detail=1), tiny.decode_indices(other, detail=1)
        c, d = tiny.decode_indices(idx, detail=2), tiny.decode_indices(other, detail=2)
    assert torch.equal(a, b)
    assert not torch.equal(c, d)
    z = torch.randn(1, 8, 2, 2)
    masked = mask_groups(z, 2, 1)
    assert torch.equal(masked[:, 4:], torch.zeros_like(masked[:, 4:])) and torch.equal(masked[:, :4], z[:, :4])


def test_commitment_covers_every_group_whatever_the_mask(tiny):
    tok = tiny.tokenizer.train()
    x = torch.rand(2, 3, 16, 16)
    out = tok(x, detail=1)
    out.quant.commit_loss.backward()
    enc_grad = tok.encoder.to_latent.weight.grad  # (C, D, 1, 1): rows of group 2 must receive gradient too
    assert enc_grad[4:].abs().sum() > 0
    tok.zero_grad(set_to_none=True)
    tok.eval()


def test_group_sampler_matches_eq3():
    g = torch.Generator().manual_seed(0)
    n, draws = 4, 10000
    counts = torch.zeros(n + 1)
    for _ in range(draws):
        counts[sample_detail(n, g)] += 1
    freq = counts[1:] / draws
    expected = torch.tensor([0.1 / 3, 0.1 / 3, 0.1 / 3, 0.9])
    # binomial standard error at 10k draws is <= 0.003; allow 4 sigma
    assert (freq - expected).abs().max() < 0.012, freq


@pytest.mark.parametrize("wavelet,analysis,synthesis", [("haar", haar_analysis, haar_synthesis),
                                                      ("cdf53", cdf53_analysis, cdf53_synthesis)])
def test_dwt_targets(wavelet, analysis, synthesis):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    assert torch.equal(dwt_target(x, 0, wavelet), x)
    assert torch.equal(target_for_detail(x, 4, 4, wavelet), x)
    torch.testing.assert_close(synthesis(*analysis(x)), x)  # perfect reconstruction
    for level in (1, 2, 3):
        t = dwt_target(x, level, wavelet)
        assert t.shape == x.shape
        cur = t
        for _ in range(level):
            cur, lh, hl, hh = analysis(cur)
            for band in (lh, hl, hh):
                assert band.abs().max() < 1e-9  # no energy in the dropped detail bands
        ref = x  # and the approximation it kept is the input's
        for _ in range(level):
            ref = analysis(ref)[0]
        torch.testing.assert_close(cur, ref)
    flat = torch.full((1, 1, 16, 16), 0.3, dtype=torch.float64)
    torch.testing.assert_close(dwt_target(flat, 3, wavelet), flat)  # a constant is pure low frequency


def test_haar_target_is_block_means_and_cdf53_is_smooth():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 24)
    # Eq. 5 with Haar: one active group of four -> the coarsest target T(3), constant on 8x8 blocks
    t3 = target_for_detail(x, 4, 1)
    blocks = t3.unfold(2, 8, 8).unfold(3, 8, 8)
    assert (blocks - blocks[..., :1, :1]).abs().max() < 1e-5
    # CDF 5/3 keeps no block edges: neighbouring pixels differ far less than across Haar block borders
    s3 = target_for_detail(x, 4, 1, "cdf53")
    haar_jump = (t3[..., :, 8] - t3[..., :, 7]).abs().mean()
    cdf_jump = (s3[..., :, 8] - s3[..., :, 7]).abs().mean()
    assert cdf_jump < 0.5 * haar_jump


def test_kmeans_init_and_dead_code_restart():
    torch.manual_seed(0)
    q = GroupedQuantizer(latent_dim=4, groups=2, codebook_size=8)
    z = torch.randn(4, 4, 8, 8) * 5 + 3
    q.init_from_latents(z, generator=torch.Generator().manual_seed(0))
    assert bool(q.initialized)
    assert q(z).usage.min() > 0.7  # k-means codes sit where the data is
    q.usage_ema[0, :4] = 0  # pretend half of group 0 died
    n = q.restart_dead_codes(z, threshold=0.5, generator=torch.Generator().manual_seed(1))
    assert n.tolist() == [4, 0]
    assert torch.allclose(q.usage_ema[0, :4], torch.full((4,), 1 / 8))


def test_sample_topk_stays_in_the_topk():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 50, 4, 4)
    top = logits.topk(5, dim=2).indices
    idx = sample_topk(logits, 5, torch.Generator().manual_seed(0))
    assert idx.shape == (2, 3, 4, 4)
    assert (top == idx.unsqueeze(2)).any(2).all()
    assert torch.equal(sample_topk(logits, 1), logits.argmax(2))


def test_save_load_roundtrip_is_bit_exact(tiny, tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(tiny, path, metadata={"note": "test"})
    back = load_model_file(path)
    assert back.metadata["note"] == "test"
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(tiny.upscale(lr), back.upscale(lr))


def test_save_load_with_vfm(tmp_path):
    torch.manual_seed(0)
    m = HiTok(presets.tiny(vfm=True)).eval()
    save_model(m, tmp_path / "v.safetensors")
    back = load_model_file(tmp_path / "v.safetensors")
    lr = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(m.upscale(lr), back.upscale(lr))


def test_export_without_encoder(tiny, tmp_path):
    lean = HiTok(tiny.config, with_encoder=False)
    lean.load_state_dict({k: v for k, v in tiny.state_dict().items() if ".encoder." not in k})
    save_model(lean, tmp_path / "lean.safetensors")
    back = load_model_file(tmp_path / "lean.safetensors")
    assert not back.has_encoder
    with pytest.raises(RuntimeError, match="without the tokenizer encoder"):
        back.encode(torch.rand(1, 3, 16, 16))


def test_mismatched_files_are_refused(tiny, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    path = tmp_path / "m.safetensors"
    save_model(tiny, path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    state = load_file(str(path))

    state_missing = dict(state)
    state_missing.pop("tokenizer.quantizer.codebook")
    save_file(state_missing, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(ModelFileError, match="missing .*codebook"):
        load_model_file(tmp_path / "missing.safetensors")

    cfg = json.loads(meta["config"])
    cfg["tokenizer"]["codebook_size"] = 32
    cfg["generator"]["codebook_size"] = 32
    save_file(state, str(tmp_path / "shape.safetensors"), metadata={**meta, "config": json.dumps(cfg)})
    with pytest.raises(ModelFileError, match="shape"):
        load_model_file(tmp_path / "shape.safetensors")

    (tmp_path / "junk.safetensors").write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="not a readable"):
        load_model_file(tmp_path / "junk.safetensors")
    with pytest.raises(ModelFileError, match="not found"):
        load_model_file(tmp_path / "absent.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="not a hitok model"):
        load_model_file(tmp_path / "other.safetensors")


def test_removed_config_fields_load_at_their_old_default_only(tiny, tmp_path):
    """A file written before a config field was removed (REMOVED_FIELDS) loads when the field holds the value
    that meant "off", and is refused with a message naming the field otherwise."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    path = tmp_path / "m.safetensors"
    save_model(tiny, path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    cfg = json.loads(meta["config"])
    assert "head_rank" not in cfg["generator"]  # new files no longer write it
    for value, loads in ((0, True), (4, False)):
        cfg["generator"]["head_rank"] = value  # as the shipped file (head_rank 0) and a low-rank model had it
        old = tmp_path / f"old{value}.safetensors"
        save_file(state, str(old), metadata={**meta, "config": json.dumps(cfg)})
        if loads:
            lr = torch.rand(1, 3, 8, 8)
            with torch.no_grad():
                assert torch.equal(load_model_file(old).upscale(lr), tiny.upscale(lr))
        else:
            with pytest.raises(ModelFileError, match=r"generator.head_rank = 4: low-rank generator heads .* removed; "
                                                     r"this version can only load files with head_rank = 0"):
                load_model_file(old)
    cfg["generator"].pop("head_rank")
    cfg["generator"]["no_such_field"] = 1  # a field no version had is still an error
    save_file(state, str(tmp_path / "new.safetensors"), metadata={**meta, "config": json.dumps(cfg)})
    with pytest.raises(ModelFileError, match="unknown GeneratorConfig fields: .'no_such_field'"):
        load_model_file(tmp_path / "new.safetensors")


def test_shipped_file_loads_with_its_removed_field(tmp_path):
    """The shipped default was written with generator.head_rank = 0 in its config; it must keep loading."""
    from hitok.models import read_metadata
    shipped = Path(__file__).parents[1] / "hitok_cli" / "weights" / "default.safetensors"
    if not shipped.is_file():
        pytest.skip("no shipped default in this checkout")
    assert json.loads(read_metadata(shipped)["config"])["generator"].get("head_rank") == 0
    assert load_model_file(shipped).config.generator.head == "codebook"
