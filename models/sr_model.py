"""HiTok, the HiTokSR super-resolution model every command uses (the file is named after what it holds): tokenizer
(codebooks, decoder, optional encoder and LR guide), generator, optional restorer and VFM. At inference (Fig. 2):
LR -> generator -> top-1 indices -> decoder(decode_indices) -> HR."""
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn

from . import colorfix, reach
from .errors import SettingError
from .generator import Generator, GeneratorConfig, GeneratorOutput
from .restorer import Restorer, RestorerConfig
from .tokenizer import Tokenizer, TokenizerConfig
from .window import window_period

SCALE = 4  # HiTokSR is a x4 method: the generator's LR token grid equals the tokenizer's HR token grid


def check_fidelity(value: float, guided: bool = True) -> float:
    """The weight of the faithful image: in [0, 1], and above 0 only for a model that has one (``guided``)."""
    if not 0.0 <= value <= 1.0:
        raise SettingError(f"fidelity {value:g}: must be between 0 and 1")
    if value > 0 and not guided:
        raise SettingError(f"fidelity {value:g}: this model has no faithful path (no restorer or LR guide); "
                           "only 0 is possible")
    return float(value)


def check_texture(value: float, available: bool = True) -> float:
    """How far the restorer's weights move towards the texture restorer's: in [0, 1], above 0 only for a model
    that has one."""
    if not 0.0 <= value <= 1.0:
        raise SettingError(f"texture {value:g}: must be between 0 and 1")
    if value > 0 and not available:
        raise SettingError(f"texture {value:g}: this model has no texture restorer; only 0 is possible")
    return float(value)


def check_detail(value: int, groups: int) -> int:
    """The number of active token groups M (Eq. 4, the ``--detail`` control): 1..N."""
    if int(value) != value or not 1 <= value <= groups:
        raise SettingError(f"detail {value}: this model has {groups} token groups; use 1..{groups}")
    return int(value)


@dataclass
class HiTokConfig:
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    vfm: Any = None  # VFMConfig or None (no VFM: Table 4 row (a), what offline training can use)
    name: str = "custom"
    fidelity: float = 0.0  # default weight of the faithful image at inference; needs a restorer or a guide
    restorer: RestorerConfig | None = None  # the faithful end of the fidelity dial (models/restorer.py)
    texture_restorer: bool = False  # a second restorer of the same shape, trained on a teacher's texture
    texture: float = 0.0  # default share of the texture restorer in the restorer's weights
    texture_noise: bool = False  # the texture restorer has body noise inputs (models/restorer.py), the
    texture_noise_gate: bool = False  # faithful one none: they scale from 0 along the dial
    texture_noise_mask: float = 0.0  # the texture restorer's noise mask, grey levels (0: none; models/restorer.py)

    def __post_init__(self):
        t, g = self.tokenizer, self.generator
        if t.patch % SCALE or g.lr_patch * SCALE != t.patch:
            raise ValueError(f"generator lr_patch ({g.lr_patch}) x {SCALE} must equal tokenizer patch ({t.patch})")
        if (g.groups, g.codebook_size) != (t.groups, t.codebook_size):
            raise ValueError("generator groups/codebook_size must match the tokenizer's")
        if g.head == "codebook" and g.latent_dim != t.latent_dim:
            raise ValueError("the codebook head's latent_dim must match the tokenizer's")
        if self.restorer is not None and self.tokenizer.guide_width:
            raise ValueError("a model has either a restorer or an LR-guided decoder, not both")
        check_fidelity(self.fidelity, guided=self.restorer is not None or self.tokenizer.guide_width > 0)
        if self.texture_restorer and self.restorer is None:
            raise ValueError("a texture restorer needs a restorer (they are interpolated)")
        if self.restorer is not None and self.restorer.has_noise:
            raise ValueError("the faithful restorer has no noise inputs (only a texture restorer may)")
        if (self.texture_noise or self.texture_noise_gate or self.texture_noise_mask) and not self.texture_restorer:
            raise ValueError("texture_noise / _gate / _mask name a texture restorer's noise inputs: the model has "
                             "none")
        check_texture(self.texture, self.texture_restorer)


class HiTok(nn.Module):
    """Tokenizer + generator (+ VFM) of one config; `upscale` is Fig. 2's inference path, the stages of
    Sec. 3.3 train the parts (hitok.train)."""

    def __init__(self, cfg: HiTokConfig, with_encoder: bool = True,
                 defer_token_path: Callable[["HiTok"], None] | None = None):
        """``defer_token_path``: with a restorer, build only the restorer now, and call this on the first use of
        :attr:`tokenizer` or :attr:`generator`; it must call :meth:`build_token_path` (models/io.py loads the
        token path's weights from the model file in it). Fidelity 1 runs the restorer alone: 86 % of the
        shipped model's parameters are then never built, read or converted."""
        super().__init__()
        self.config = cfg
        self.with_encoder = with_encoder
        if defer_token_path is None or cfg.restorer is None:
            self.build_token_path()
        else:
            self._deferred_token_path = defer_token_path
        self.restorer = Restorer(cfg.restorer) if cfg.restorer is not None else None
        self.texture_restorer = Restorer(self.texture_restorer_config) if cfg.texture_restorer else None
        self.metadata: dict[str, str] = {}  # provenance read from / written to the model file

    @property
    def texture_restorer_config(self) -> RestorerConfig:
        """The texture restorer's shape: the restorer's, with the noise inputs the config names."""
        cfg = self.config
        return replace(cfg.restorer, body_noise=cfg.texture_noise, noise_gate=cfg.texture_noise_gate,
                       noise_mask=cfg.texture_noise_mask)

    def build_token_path(self) -> None:
        """Build the tokenizer and the generator (with its VFM) of the config, randomly initialised."""
        cfg = self.config
        self.tokenizer = Tokenizer(cfg.tokenizer, with_encoder=self.with_encoder)
        vfm = None
        if cfg.vfm is not None:
            from .vfm import VFM
            vfm = VFM(cfg.vfm)
        self.generator = Generator(cfg.generator, vfm)

    @property
    def token_path_built(self) -> bool:
        return "tokenizer" in self._modules

    def ensure_token_path(self) -> None:
        """Build a deferred token path now (before saving the whole model, say); nothing if it is built. A load
        that fails (a damaged or changed file) leaves it unbuilt, so the next use fails the same way instead of
        running randomly initialised weights; it is built outside inference mode (an Upscaler's first call may
        be inside one), so its parameters are ordinary tensors."""
        loader = self.__dict__.pop("_deferred_token_path", None)
        if loader is None:
            return
        try:
            with torch.inference_mode(False):
                loader(self)
        except BaseException:
            for name in ("tokenizer", "generator"):
                self._modules.pop(name, None)
            self._deferred_token_path = loader
            raise

    def __getattr__(self, name: str):
        # Only reached for names that are not plain attributes: nn.Module's lookup of submodules and parameters.
        if name in ("tokenizer", "generator"):
            self.ensure_token_path()
        return super().__getattr__(name)

    @property
    def scale(self) -> int:
        """The upscaling factor, SCALE."""
        return SCALE

    @property
    def lr_align(self) -> int:
        """LR pixels the input sides must be multiples of: one generator token (lr_patch x token_stride)."""
        g = self.config.generator
        return g.lr_patch * g.token_stride

    @property
    def has_encoder(self) -> bool:
        return self.with_encoder

    @property
    def attention_window(self) -> int:
        """Window period (in units of lr_align LR pixels) when every attention on the inference path is windowed,
        else 0 (a global-attention trunk or a VFM anywhere); see :attr:`tile_align` (models/window.py)."""
        t, g = self.config.tokenizer.window, self.config.generator.window
        if t <= 0 or g <= 0 or self.config.vfm is not None:
            return 0
        lr_patch = self.config.generator.lr_patch  # LR pixels per tokenizer token
        return window_period((t * lr_patch, g * self.lr_align), self.lr_align)

    @property
    def tile_align(self) -> int:
        """LR pixels a tile side must be a multiple of: a token, or a whole attention window for a windowed model, so
        that every tile puts its windows where a whole-image pass puts them (then tiles agree beyond
        :meth:`receptive_field` from their edges)."""
        return self.lr_align * (self.attention_window or 1)

    def receptive_field(self, color_fix: bool = False) -> int | None:
        """LR pixels (one side) an input pixel can move :meth:`upscale`'s output by; None for global attention
        (models/reach.py)."""
        return reach.receptive_field(self, color_fix)

    def settings(self, detail: int | None = None, fidelity: float | None = None) -> tuple[int, float]:
        """(detail, fidelity) for :meth:`upscale`, checked against this model (:class:`SettingError`, one line):
        detail = the active token groups M in 1..N (None: all N); fidelity in [0, 1] (None: the config's), above 0
        only with a faithful path (:attr:`guided`)."""
        groups = self.config.tokenizer.groups
        return (check_detail(groups if detail is None else detail, groups),
                check_fidelity(self.config.fidelity if fidelity is None else fidelity, self.guided))

    def texture_setting(self, texture: float | None = None) -> float:
        """``texture`` for :meth:`upscale` checked against this model (None: the config's)."""
        return check_texture(self.config.texture if texture is None else texture, self.texture_restorer is not None)

    def uses_texture(self, fidelity: float) -> bool:
        """Whether ``texture`` moves :meth:`upscale`'s output at this fidelity (the restorer's image is in it)."""
        return self.texture_restorer is not None and fidelity > 0

    def restore(self, lr: torch.Tensor, texture: float = 0.0, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """The restorer's image with its weights moved ``texture`` of the way to the texture restorer's (ESRGAN's
        network interpolation of a PSNR-trained and a detail-trained net: one network's cost at any setting).
        Weights only the texture restorer has (its noise inputs) start from 0, where they do nothing. ``origin``:
        where ``lr`` starts in the picture (LR pixels), so that tiles draw the same noise where they overlap."""
        if texture == 0:
            return self.restorer(lr, origin)
        if texture == 1:
            return self.texture_restorer(lr, origin)
        faithful = dict(self.restorer.named_parameters())
        mixed = {name: torch.lerp(faithful[name], b, texture) if name in faithful else b * texture
                 for name, b in self.texture_restorer.named_parameters()}
        return torch.func.functional_call(self.texture_restorer, mixed, (lr, origin))

    def uses_detail(self, fidelity: float) -> bool:
        """Whether ``detail`` moves :meth:`upscale`'s output at this fidelity: not at 1 on a model with a restorer,
        where the restorer alone makes the picture (the token path is skipped)."""
        return self.restorer is None or fidelity < 1

    def generate(self, lr: torch.Tensor) -> GeneratorOutput:
        """The generator's forward with the tokenizer's codebooks at hand (the "codebook" head scores them)."""
        return self.generator(lr, self.tokenizer.quantizer.codebook)

    def predict_indices(self, lr: torch.Tensor) -> torch.Tensor:
        """lr (B, 3, h, w) in [0, 1] -> top-1 indices (B, N, h/r, w/r).

        With the "codebook" head, top-1 of -s_g ||z'_g - C_g[k]||^2 (s_g > 0) is the nearest code of the predicted
        latent, so the quantizer's chunked Eq. 2 search gives it without the N x K logits (2.6x faster, MODEL_CARD)."""
        if self.config.generator.head == "codebook":
            return self.tokenizer.quantizer.nearest(self.generator.predict_latent(lr))
        return self.generate(lr).logits.argmax(dim=2)

    def encode(self, hr: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.encode(hr)

    @property
    def guided(self) -> bool:
        """The model has a faithful image to blend in (a restorer, or the LR-guided decoder of models/guide.py):
        `fidelity` > 0 means something."""
        return self.restorer is not None or self.config.tokenizer.guide_width > 0

    def decode_indices(self, indices: torch.Tensor, detail: int | None = None, lr: torch.Tensor | None = None,
                       fidelity: float = 0.0) -> torch.Tensor:
        return self.tokenizer.decode_indices(indices, detail, lr, fidelity)

    def upscale(self, lr: torch.Tensor, detail: int | None = None, color_fix: bool = False,
                fidelity: float | None = None, texture: float | None = None,
                origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """lr (B, 3, h, w) in [0, 1], h and w multiples of lr_align -> (B, 3, 4h, 4w) in [0, 1].

        color_fix: take the token image's coarse band from the LR input (models/colorfix.py; not in the paper).
        fidelity: weight of the faithful image, 0 (tokens only, the paper) .. 1 (None: the config's). With a
        restorer, 1 is the restorer alone (the token path is skipped) and values between blend its image with
        the token image; with an LR-guided decoder, the guide's weight in the decoder (models/guide.py).
        texture: with a texture restorer, how far the restorer moves towards it (:meth:`restore`), 0 .. 1 (None:
        the config's). origin: where this tile starts in the picture, in LR pixels (the noise a texture restorer
        may draw is tied to picture position, so tiles agree)."""
        r = self.lr_align
        if lr.shape[-1] % r or lr.shape[-2] % r:
            raise ValueError(f"LR sides must be multiples of {r}, got {tuple(lr.shape[-2:])}")
        detail, fidelity = self.settings(detail, fidelity)
        if self.restorer is None:
            sr = self.decode_indices(self.predict_indices(lr), detail, lr, fidelity)
            return colorfix.color_fix(sr, lr) if color_fix else sr
        texture = self.texture_setting(texture)
        faithful = self.restore(lr, texture, origin).float() if fidelity > 0 else None
        if fidelity == 1:
            return faithful
        sr = self.decode_indices(self.predict_indices(lr), detail).float()
        sr = colorfix.color_fix(sr, lr) if color_fix else sr
        return sr if faithful is None else sr + fidelity * (faithful - sr)


def with_restorer(model: HiTok, restorer: Restorer, fidelity: float = 1.0) -> HiTok:
    """A copy of a trained model whose faithful end is `restorer` (its LR guide and texture restorer, if any,
    dropped): the tokens, generator and token-only decoder are kept as they are."""
    if restorer.config.has_noise:
        raise ValueError(f"a faithful restorer has no noise inputs, got {restorer.config} (a texture restorer: "
                         f"attach it with --texture-from)")
    tok = replace(model.config.tokenizer, guide_width=0)
    # a texture restorer of the base was fine-tuned from the base's restorer: it does not interpolate with this one
    cfg = replace(model.config, tokenizer=tok, restorer=restorer.config, fidelity=fidelity, texture_restorer=False,
                  texture=0.0, texture_noise=False, texture_noise_gate=False, texture_noise_mask=0.0)
    out = HiTok(cfg, with_encoder=model.has_encoder)
    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith(("tokenizer.decoder.guide.", "restorer.", "texture_restorer."))}
    state |= {f"restorer.{k}": v for k, v in restorer.state_dict().items()}
    out.load_state_dict(state)
    out.metadata = dict(model.metadata)
    return out


def with_texture(model: HiTok, texture_restorer: Restorer, texture: float = 0.0) -> HiTok:
    """A copy of a model with a restorer whose texture end is `texture_restorer` (same shape, body noise inputs
    allowed; fine-tuned from that restorer, so the two interpolate), `texture` its default setting."""
    tcfg = texture_restorer.config
    if model.restorer is None or replace(tcfg, body_noise=False, noise_gate=False,
                                         noise_mask=0.0) != model.config.restorer:
        raise ValueError(f"a texture restorer must have the shape of the model's restorer ({model.config.restorer})"
                         f" (body noise allowed), got {tcfg}")
    out = HiTok(replace(model.config, texture_restorer=True, texture=texture, texture_noise=tcfg.body_noise,
                        texture_noise_gate=tcfg.noise_gate, texture_noise_mask=tcfg.noise_mask),
                with_encoder=model.has_encoder)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("texture_restorer.")}
    out.load_state_dict(state | {f"texture_restorer.{k}": v for k, v in texture_restorer.state_dict().items()})
    out.metadata = dict(model.metadata)
    return out


def add_guide(model: HiTok, width: int, blocks: int) -> HiTok:
    """A copy of a trained model with a fresh LR guide on its decoder (models/guide.py): the guide's last layer
    starts at zero, so every fidelity decodes exactly as the original until the decoder stage trains it."""
    cfg = replace(model.config, tokenizer=replace(model.config.tokenizer, guide_width=width, guide_blocks=blocks))
    guided = HiTok(cfg, with_encoder=model.has_encoder)
    missing, unexpected = guided.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("tokenizer.decoder.guide.") for k in missing):
        raise ValueError(f"cannot add a guide: unexpected {unexpected}, missing {missing}")
    guided.metadata = dict(model.metadata)
    return guided.to(next(model.parameters()).device)
