"""models/rrdbnet.py: Real-ESRGAN x4plus in torch, read from the ncnn files."""
import numpy as np
import pytest
import torch
from torch import nn

from hitok.models.rrdbnet import FP16_TAG, RRDBNet, load_ncnn


def _write_ncnn(net: RRDBNet, param, bin, fp16_every: int = 2) -> None:
    """The layout x4plus's files have: one Convolution line per conv, tagged weights then an fp32 bias."""
    lines, blobs = ["7767517", "999 999"], []
    for i, conv in enumerate(m for m in net.modules() if isinstance(m, nn.Conv2d)):
        w = conv.weight.detach().numpy().ravel()
        lines.append(f"Convolution Conv_{i} 1 1 a{i} a{i + 1} 0={conv.out_channels} 1=3 4=1 5=1 6={w.size} 9=2 "
                     "-23310=1,2.000000e-01")
        if i % fp16_every == 0:
            raw = np.array([FP16_TAG], "<u4").tobytes() + w.astype("<f2").tobytes()
            raw += b"\0" * ((-len(raw)) % 4)
        else:
            raw = np.array([0], "<u4").tobytes() + w.astype("<f4").tobytes()
        blobs.append(raw + conv.bias.detach().numpy().astype("<f4").tobytes())
    param.write_text("\n".join(lines) + "\n")
    bin.write_bytes(b"".join(blobs))


def test_weights_round_trip_through_the_ncnn_layout(tmp_path):
    torch.manual_seed(0)
    src = RRDBNet()
    _write_ncnn(src, tmp_path / "m.param", tmp_path / "m.bin")
    net = load_ncnn(tmp_path / "m.param", tmp_path / "m.bin")
    for a, b in zip(src.state_dict().values(), net.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-3 * a.abs().max().item())  # fp16 for half of them
    (tmp_path / "short.bin").write_bytes((tmp_path / "m.bin").read_bytes()[:-8])
    with pytest.raises(ValueError):
        load_ncnn(tmp_path / "m.param", tmp_path / "short.bin")


def test_shapes_and_features():
    torch.manual_seed(0)
    net = RRDBNet(blocks=2).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert net(x).shape == (1, 3, 32, 32)
        assert net.features(x).shape == net.features(x, blocks=1).shape == (1, 64, 8, 8)


def test_matches_the_ncnn_runner_on_the_shipped_model():
    from hitok.bench import realesrgan

    try:
        param, bin = realesrgan.find_model_files()
        runner = realesrgan.RealESRGAN(param, bin, threads=1)
    except (realesrgan.ModelFilesNotFound, ImportError) as e:
        pytest.skip(f"Real-ESRGAN ncnn files or runner not available: {e}")
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)  # photo-like: noise summed over scales (a strong pure sinusoid differs more,
    y = sum(gaussian_filter(rng.normal(0, 1, (48, 48)), s) * s for s in (1, 2, 4, 8))  # ncnn's reduced precision)
    lr = np.clip(np.stack([y, 0.9 * y, 1.1 * y], -1) * 40 / y.std() + 120, 0, 255).astype(np.uint8)
    padded = np.pad(lr, ((10, 10), (10, 10), (0, 0)), mode="reflect")  # as the runner pads its one tile
    with torch.inference_mode():
        y = load_ncnn(param, bin)(torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255)[0].clamp(0, 1)
    ours = (y.permute(1, 2, 0) * 255).round().numpy()[40:-40, 40:-40]
    diff = np.abs(ours - runner(lr).astype(float))
    assert diff.mean() < 1.0 and diff.max() <= 8  # ncnn computes in reduced precision
