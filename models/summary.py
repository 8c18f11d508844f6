"""Parameter and MAC counts per component (`hitok presets`, the README's comparison with the paper's Table 2).

MACs are counted by torch.utils.flop_counter on the meta device (no memory, no compute), for the inference path
LR -> generator (+ VFM) -> top-1 -> decoder, and the restorer where there is one; FLOPs / 2 = MACs. `total_macs`
is the cost at the model's default fidelity: a restorer at fidelity 1 skips the token path (models/sr_model.py)."""
import torch
from torch.utils.flop_counter import FlopCounterMode

from .sr_model import HiTok, HiTokConfig


def _params(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def component_params(model: HiTok) -> dict[str, int]:
    gen = model.generator
    vfm = _params(gen.vfm)
    return {
        "encoder": _params(model.tokenizer.encoder),
        "codebooks": _params(model.tokenizer.quantizer),
        "decoder": _params(model.tokenizer.decoder),
        "generator": _params(gen) - vfm,
        "vfm": vfm,
        "restorer": _params(model.restorer),
        "texture_restorer": _params(model.texture_restorer),  # interpolated with the restorer: no MACs of its own
    }


def inference_macs(model: HiTok, lr_size: int = 128) -> dict[str, int]:
    """MACs of one lr_size x lr_size LR input through the inference path, split by component."""
    lr = torch.empty(1, 3, lr_size, lr_size, device=next(model.parameters()).device)
    out = {}
    with FlopCounterMode(display=False) as fc:
        logits = model.generate(lr).logits
    total_gen = fc.get_total_flops() // 2
    vfm = 0
    if model.generator.vfm is not None:
        scale = model.config.generator.vfm_input_scale
        side = round(lr_size * scale)
        with FlopCounterMode(display=False) as fc:
            model.generator.vfm(torch.empty(1, 3, side, side, device=lr.device))
        vfm = fc.get_total_flops() // 2
    out["generator"], out["vfm"] = total_gen - vfm, vfm
    idx = torch.zeros(logits.shape[0], logits.shape[1], *logits.shape[3:], dtype=torch.long, device=lr.device)
    with FlopCounterMode(display=False) as fc:
        model.tokenizer.decode_latent(model.tokenizer.quantizer.embed(idx))
    out["decoder"] = fc.get_total_flops() // 2
    out["restorer"] = 0
    if model.restorer is not None:
        with FlopCounterMode(display=False) as fc:
            model.restorer(lr)
        out["restorer"] = fc.get_total_flops() // 2
    return out


def summarize(cfg: HiTokConfig, lr_size: int = 128) -> dict:
    """Build the model on the meta device (instant, no memory) and count."""
    with torch.device("meta"):
        model = HiTok(cfg)
    with torch.no_grad():
        macs = inference_macs(model, lr_size)
    params = component_params(model)
    inference_params = sum(v for k, v in params.items() if k != "encoder")
    default = {k: v for k, v in macs.items() if k == "restorer"} \
        if model.restorer is not None and cfg.fidelity == 1 else macs
    return {"params": params, "inference_params": inference_params, "macs": macs,
            "total_macs": sum(default.values())}
