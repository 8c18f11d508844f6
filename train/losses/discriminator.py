"""U-Net discriminator with spectral normalization (Real-ESRGAN, Wang et al. 2021, Sec. 3.3).

Real-ESRGAN replaces the VGG-style image-level discriminator of ESRGAN by a U-Net that gives one
real/fake logit per pixel, so the generator gets detailed local feedback, and stabilises the harder
training with spectral normalization (Miyato et al. 2018) on the convolutions. HiTokSR trains its
tokenizer, generator and decoder with L1 + LPIPS + GAN losses (Eq. 6, Eq. 10, Sec. 3.3; Table 6);
this is the D of those GAN terms.

Layout (nf = ``base_channels``), LeakyReLU(0.2) after every conv but the last:
    in:   conv3x3 3 -> nf                      (plain: the first layer sees raw pixels)
    down: conv4x4/2 nf -> 2nf -> 4nf -> 8nf    (spectral norm)
    up:   bilinear x2, conv3x3 8nf -> 4nf -> 2nf -> nf, each + the encoder feature of that size
    head: conv3x3 nf -> nf, conv3x3 nf -> nf   (spectral norm), conv3x3 nf -> 1  (logits)
Upsampling goes to the exact size of the skip feature, so any H, W >= 8 works (not only multiples
of 8) and the logits have the input's size. Real-ESRGAN uses nf = 64; 32 keeps CPU training cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


@dataclass
class DiscriminatorConfig:
    in_channels: int = 3
    base_channels: int = 64  # Real-ESRGAN's width; 32 for CPU training, 8 in tests
    negative_slope: float = 0.2


def _sn_conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Module:
    # No bias: spectral norm bounds the weight's Lipschitz constant; a bias adds nothing to that.
    return spectral_norm(nn.Conv2d(cin, cout, kernel, stride, padding=1, bias=False))


class Discriminator(nn.Module):
    """Per-pixel real/fake logits: img (B, C, H, W) -> (B, 1, H, W)."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        nf = config.base_channels
        self.conv_in = nn.Conv2d(config.in_channels, nf, 3, 1, 1)
        self.down = nn.ModuleList([_sn_conv(nf, nf * 2, 4, 2), _sn_conv(nf * 2, nf * 4, 4, 2), _sn_conv(nf * 4, nf * 8, 4, 2)])
        self.up = nn.ModuleList([_sn_conv(nf * 8, nf * 4, 3, 1), _sn_conv(nf * 4, nf * 2, 3, 1), _sn_conv(nf * 2, nf, 3, 1)])
        self.head = nn.ModuleList([_sn_conv(nf, nf, 3, 1), _sn_conv(nf, nf, 3, 1)])
        self.conv_out = nn.Conv2d(nf, 1, 3, 1, 1)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.config.negative_slope)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if min(img.shape[-2:]) < 8:
            raise ValueError(f"Discriminator needs H, W >= 8, got {tuple(img.shape[-2:])}")
        x = self._act(self.conv_in(img))
        skips = [x]  # features at full, 1/2, 1/4 resolution, consumed in reverse by the decoder
        for conv in self.down:
            x = self._act(conv(x))
            skips.append(x)
        skips.pop()  # the 1/8 bottleneck has no skip partner
        for conv in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self._act(conv(x)) + skip
        for conv in self.head:
            x = self._act(conv(x))
        return self.conv_out(x)  # (B, 1, H, W)
