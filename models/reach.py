"""How far one LR pixel can move a windowed model's output: the receptive field a tiler needs.

A tile cut on the attention-window grid (models/window.py) puts its windows where a whole-image pass puts them,
so tiled output equals whole-image output everywhere farther than this reach from a tile edge. Shifted windows
carry information at most half a window further per block (depth x window/2 tokens per trunk); the conv stems and
heads add their kernels' reach (:func:`conv_reach`), an LR guide (models/guide.py) its CNN's and back-projection's,
the colour fix (models/colorfix.py) its blur's, and a restorer (models/restorer.py) its own, blended in."""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import colorfix

if TYPE_CHECKING:
    from .sr_model import HiTok


def conv_reach(widths: tuple[int, ...], blocks: tuple[int, ...], up: bool) -> float:
    """Reach (one side, pixels of the full-resolution level) of models/convblocks.py's ConvDown (up=False)
    or ConvUp (up=True): a 3x3 conv at level i reaches one element (2**i px), a ResBlock holds two, and
    each level change one resampling conv (at the finer level going down, the coarser going up)."""
    reach = 1.0  # the 3x3 conv at full resolution (ConvDown's first, ConvUp's last)
    last = len(widths) - 1
    for i, b in enumerate(blocks):
        resample = (i > 0) if up else (i < last)
        reach += (2 * b + resample) * 2**i
    return reach


def receptive_field(model: HiTok, color_fix: bool = False) -> int | None:
    """LR pixels (one side) an input pixel can move ``model.upscale``'s output by, or None when some attention is
    global (then every pixel of a tile can, and only the tiler's blend hides seams)."""
    if not model.attention_window:
        return None
    g, t = model.config.generator, model.config.tokenizer
    lr_per_token = g.lr_patch
    lr_per_gen_token = g.lr_patch * g.token_stride  # a strided generator's tokens cover s x s grid cells
    gen = (conv_reach(g.conv_widths, g.conv_blocks, up=False) if g.conv_widths else 0) \
        + g.depth * g.window / 2 * lr_per_gen_token \
        + (conv_reach(g.up_widths, g.up_blocks, up=True) * lr_per_token if g.up_widths else 0)
    dec_hr = conv_reach(t.conv_widths, t.dec_conv_blocks, up=True) if t.conv_widths else 0  # HR pixels
    trunk = t.dec_depth * t.window / 2 * lr_per_token
    dec = trunk + dec_hr / model.scale
    # From the config, not the module: a restorer model's token path may be unbuilt (io.py, lazy loading).
    if t.guide_width > 0:  # the head's two 3x3 convs over the trunk's output, or the LR guide's whole CNN
        guide = model.tokenizer.decoder.guide
        dec = max(dec, trunk + 2 * lr_per_token, guide.reach * lr_per_token) \
            + colorfix.reach(0) + 1  # then its back-projection: the bicubic taps down and up
    reach = int(-(-(gen + dec) // 1)) + (colorfix.reach() if color_fix else 0)
    restorers = [r for r in (model.restorer, model.texture_restorer) if r is not None]
    return max([reach] + [r.reach for r in restorers])
