"""A texture loss that asks for the photo's local statistics, not its exact pixels: the sliced Wasserstein
distance between the distributions of feature responses in each patch of the output and of the photo (Heitz,
Vanhoey, Chambon, Belcour, "A Sliced Wasserstein Loss for Neural Texture Synthesis", CVPR 2021), taken patch
by patch (EnhanceNet's local texture loss, Sajjadi et al. 2017) so it stays tied to the picture's content.

    d = mean over patches, projections of  | sort(<f(out)|patch, v>) - sort(<f(photo)|patch, v>) |

f = LeakyReLU(conv(highpass(x) + 0.5)): Real-ESRGAN x4plus's first convolution (64 filters of 3 x 3, trained
with its GAN and VGG losses; models/rrdbnet.py) on the detail of the image (x minus a 5 x 5 binomial blur, so
colour is left to the pixel loss); v: 16 random unit directions, drawn anew at every call; the
patch grid starts at a random offset at every call, so no fixed grid is ever learned.

A pixel loss, unable to predict where each blade of grass goes, asks for none; this loss asks for blades of the
photo's strength and orientation wherever the patch has them. Ranked on training-photo crops (192 px, clean LR,
64 fixed directions; distance to the photo over the faithful restorer's, lower is closer; MODEL_CARD.md):
Real-ESRGAN 0.67, bicubic 1.18, the faithful restorer 1.00, the faithful output + a +-4-level cross-hatch 1.42,
+ Gaussian noise of 4 levels 1.95 — the order a person gives, where the L1 distance puts Real-ESRGAN last
(1.79). But the GAN runs' patterned outputs rank 0.81-0.83: it rewards detail of the right strength whatever
draws it, so training with it wants a guard against grid patterns (losses/subpixel.py); measured in training,
at the photo's statistics it draws stripes and then streaks (MODEL_CARD.md)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def highpass(x: torch.Tensor) -> torch.Tensor:
    """x minus its 5 x 5 binomial blur (reflect padding), per channel."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device, dtype=x.dtype) / 16
    k = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 5, 5)
    return x - F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])


class DetailFeatures(nn.Module):
    """LeakyReLU(conv(highpass(x) + 0.5)) with a frozen 3 -> C convolution (Real-ESRGAN's first)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(highpass(x) + 0.5), 0.2)


def _projected_patches(f: torch.Tensor, proj: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) features -> (B * patches, directions, patch * patch): each non-overlapping patch's values
    along each direction (columns of proj), sorted; the remainder of H and W is dropped."""
    f = torch.einsum("bchw,cd->bdhw", f, proj)
    f = f.unfold(2, patch, patch).unfold(3, patch, patch)  # (B, D, h, w, p, p)
    f = f.permute(0, 2, 3, 1, 4, 5).reshape(-1, proj.shape[1], patch * patch)
    return f.sort(dim=-1).values


def sliced_texture_loss(pred: torch.Tensor, target: torch.Tensor, features: nn.Module, patch: int = 16,
                        directions: int = 16, generator: torch.Generator | None = None) -> torch.Tensor:
    """The patch-wise sliced Wasserstein distance between features(pred) and features(target) (module
    docstring); pred and target (B, 3, H, W) in [0, 1], H and W at least 2 * patch. Sorting is the cost (16
    directions: ~0.1 s per 8 x 192 px crops on 2 CPU threads, a quarter of 64)."""
    dy, dx = torch.randint(0, patch, (2,), generator=generator).tolist()
    pred, target = pred[..., dy:, dx:], target[..., dy:, dx:]
    fp = features(pred.float())
    with torch.no_grad():
        ft = features(target.float())
    proj = torch.randn(fp.shape[1], directions, generator=generator).to(fp.device)
    proj = proj / proj.norm(dim=0, keepdim=True)
    return (_projected_patches(fp, proj, patch) - _projected_patches(ft, proj, patch)).abs().mean()
