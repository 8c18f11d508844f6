"""LPIPS perceptual distance, VGG16 variant v0.1 (Zhang et al. 2018, "The Unreasonable Effectiveness
of Deep Features as a Perceptual Metric", Eq. 1), for the LPIPS terms of HiTokSR Eq. 6 and Eq. 10.

    d(x, y) = sum_l  mean_{h,w}  || w_l * (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|) ||^2

f_l are the VGG16 activations relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (torchvision
``features[:30]``, taps after layers 3, 8, 15, 22, 29), normalised to unit length over channels;
w_l are the learned non-negative per-channel weights ("lin" layers, 1x1 convs without bias). Inputs
are first mapped to [-1, 1] and then through LPIPS's fixed scaling layer (shift/scale below).

Two weight files are needed, and neither is ever replaced by random numbers:
  * the ImageNet VGG16 backbone, torchvision's ``vgg16-397923af.pth`` state dict, from (in order)
    the ``backbone_path`` argument, the ``HITOK_LPIPS_BACKBONE`` environment variable, torch hub's
    cache (``<torch.hub.get_dir()>/checkpoints/``), or -- only with ``download=True`` -- its URL;
  * the LPIPS v0.1 lin weights (``vgg.pth``), from the ``lin_path`` argument, ``HITOK_LPIPS_LIN``,
    or the data file shipped inside the ``lpips`` PyPI package (0.1.4; located, never imported).
When one cannot be loaded, ``LPIPS(...)`` raises ``LPIPSUnavailable`` with a one-line reason and
``try_lpips(...)`` returns ``(None, reason)`` so training can log and record it.

The network is written here (13 convs) rather than taken from the ``lpips`` package, whose
constructor always builds its backbone through torchvision's downloader.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from hitok.models.errors import one_line

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"  # torchvision IMAGENET1K_V1
VGG16_FILE = "vgg16-397923af.pth"
BACKBONE_ENV = "HITOK_LPIPS_BACKBONE"
LIN_ENV = "HITOK_LPIPS_LIN"

# torchvision's VGG16 "D" configuration up to relu5_3: ints are 3x3 conv widths, "M" a 2x2 max pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS = (3, 8, 15, 22, 29)  # indices in features[] of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS's ScalingLayer constants: inputs in [-1, 1] become (x - shift) / scale.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPSUnavailable(RuntimeError):
    """LPIPS weights could not be loaded; str() is a one-line reason."""


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            # Not in-place: the tapped activations must survive the next layer for autograd.
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            cin = int(v)
    return nn.Sequential(*layers)  # indices match torchvision's vgg16().features[:30]


def _read(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LPIPSUnavailable(f"{what} file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LPIPSUnavailable(f"cannot read {what} file {path} ({type(exc).__name__})") from None
    if not isinstance(sd, dict):
        raise LPIPSUnavailable(f"{what} file {path} is not a state dict")
    return sd


def _backbone_state(backbone_path: str | os.PathLike | None, download: bool) -> tuple[dict[str, torch.Tensor], str]:
    candidates = [backbone_path, os.environ.get(BACKBONE_ENV)]
    for given in candidates:
        if given:
            path = Path(given).expanduser()
            return _read(path, "LPIPS VGG16 backbone"), str(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    if cached.is_file():
        return _read(cached, "LPIPS VGG16 backbone"), str(cached)
    if not download:
        raise LPIPSUnavailable(
            f"VGG16 ImageNet weights not found (set {BACKBONE_ENV}=<{VGG16_FILE}> or put it in {cached.parent})"
        )
    try:
        sd = torch.hub.load_state_dict_from_url(VGG16_URL, map_location="cpu", progress=False, check_hash=True)
    except Exception as exc:
        raise LPIPSUnavailable(f"VGG16 download failed ({one_line(exc, with_type=True)})") from None
    return sd, VGG16_URL


def _lin_path(lin_path: str | os.PathLike | None) -> Path:
    for given in (lin_path, os.environ.get(LIN_ENV)):
        if given:
            return Path(given).expanduser()
    spec = importlib.util.find_spec("lpips")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise LPIPSUnavailable(f"LPIPS lin weights not found (pip install lpips==0.1.4, or set {LIN_ENV}=<vgg.pth>)")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "vgg.pth"


class LPIPS(nn.Module):
    """Frozen LPIPS-VGG distance. forward(x, y), both (B, 3, H, W) in [0, 1] -> (B,) distances."""

    def __init__(
        self,
        backbone_path: str | os.PathLike | None = None,
        lin_path: str | os.PathLike | None = None,
        download: bool = False,
    ) -> None:
        super().__init__()
        self.features = _vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

        sd, self.backbone_source = _backbone_state(backbone_path, download)
        feats = {k[len("features.") :]: v for k, v in sd.items() if k.startswith("features.")}
        # torchvision's file also holds the classifier; anything else means a different network.
        stray = [k for k in sd if not k.startswith(("features.", "classifier."))]
        self._load(self.features, feats, stray, "VGG16 backbone", self.backbone_source)

        path = _lin_path(lin_path)
        lin_sd = _read(path, "LPIPS lin weights")
        # The official file names them lin{l}.model.1.weight (model = Dropout, Conv2d).
        mapped = {k.replace("lin", "", 1).replace(".model.1.", "."): v for k, v in lin_sd.items()}
        self._load(self.lins, mapped, [], "LPIPS lin weights", str(path))
        self.lin_source = str(path)

        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    @staticmethod
    def _load(module: nn.Module, sd: dict[str, torch.Tensor], stray: list[str], what: str, src: str) -> None:
        own = module.state_dict()
        bad = sorted(set(own) ^ set(sd)) + stray
        bad += [k for k in set(own) & set(sd) if own[k].shape != sd[k].shape]
        if bad:
            raise LPIPSUnavailable(f"{what} in {src} do not match VGG16-LPIPS (e.g. key '{bad[0]}')")
        if not all(torch.isfinite(v).all() for v in sd.values()):
            raise LPIPSUnavailable(f"{what} in {src} contain non-finite values")
        module.load_state_dict(sd, strict=True)

    def train(self, mode: bool = True) -> "LPIPS":
        # A fixed metric: no dropout/BN to switch, and keeping eval avoids surprises for callers.
        return super().train(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self._taps(((x * 2 - 1) - self.shift) / self.scale)
        fy = self._taps(((y * 2 - 1) - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for a, b, lin in zip(fx, fy, self.lins):
            # Unit-normalise over channels; eps as in LPIPS keeps all-zero (dead ReLU) pixels finite.
            a = a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b).pow(2)).mean(dim=(1, 2, 3))  # (B, 1, h, w) -> (B,)
        return total


def try_lpips(
    backbone_path: str | os.PathLike | None = None,
    lin_path: str | os.PathLike | None = None,
    download: bool = False,
) -> tuple[LPIPS | None, str]:
    """(LPIPS module, description of its weights) or (None, one-line reason it is unavailable)."""
    try:
        module = LPIPS(backbone_path, lin_path, download)
    except LPIPSUnavailable as exc:
        return None, str(exc)
    return module, f"VGG16 LPIPS v0.1 (backbone {module.backbone_source}, lin {module.lin_source})"
