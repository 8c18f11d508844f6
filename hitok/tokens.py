"""``hitok tokenize`` / ``hitok detokenize``: look at the hierarchical tokens themselves.

(The file is ``tokens.py``, not ``tokenize.py``: that name would shadow the standard library's
``tokenize`` whenever this folder is on sys.path, and ``inspect``/``linecache`` import it.)

HiTokSR (Sec. 3.1) splits the latent into N groups with their own codebooks; decoding with the
first M groups only (Eq. 4) gives a coarse-to-fine sequence of images. ``tokenize`` either
encodes a photo with the tokenizer's encoder (``--source hr``: what the codebooks can hold) or
predicts the tokens from the photo taken as an LR input with the generator (``--source lr``:
what upscale would decode), then

* dumps the indices, shape (N, h, w), dtype uint16 (int32 if K > 65536), in a .safetensors file
  whose metadata holds the model id, N, K, patch, source, the decoded image size and the grid;
* prints per-group code usage (codes used of K, perplexity of the code histogram);
* writes a preview: one labelled PNG, panels ``input | detail 1 | ... | detail N`` side by side.

``detokenize`` decodes a dump with all N groups; the result equals the preview's detail N panel
bit for bit (same decoder, same indices, both quantised to 8 bits the same way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .errors import UserError, one_line
from .fsutil import atomic_path
from .imageio import DEFAULT_MAX_PIXELS, Picture

CODES_FORMAT = "hitok-codes-1"
LABEL_H = 14  # pixels of label strip above each preview panel
GAP = 4  # pixels between preview panels


@dataclass
class Codes:
    indices: torch.Tensor  # (N, h, w) int64
    meta: dict[str, str]

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.meta["image_width"]), int(self.meta["image_height"])


def picture_to_tensor(pic: Picture) -> torch.Tensor:
    rgb = pic.pixels if not pic.grey else np.repeat(pic.pixels, 3, axis=2)
    return torch.from_numpy(rgb.astype(np.float32) / pic.max_value).permute(2, 0, 1)[None]  # (1, 3, H, W)


def _pad_to(x: torch.Tensor, m: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % m, 0, -h % m), mode="replicate") if (h % m or w % m) else x


def tokenize(model, img: torch.Tensor, source: str, model_id: str) -> Codes:
    """Indices of a (1, 3, H, W) image; ``source`` 'hr' (encoder) or 'lr' (generator)."""
    cfg = model.config.tokenizer
    h, w = img.shape[-2:]
    with torch.inference_mode():
        if source == "hr":
            if not model.has_encoder:
                raise UserError("this model file has no tokenizer encoder; use --source lr")
            idx = model.encode(_pad_to(img, cfg.patch))  # (1, N, H/p, W/p)
            size = (w, h)
        elif source == "lr":
            idx = model.predict_indices(_pad_to(img, model.lr_align))  # (1, N, h/r, w/r)
            size = (w * model.scale, h * model.scale)
        else:
            raise UserError(f"--source {source!r}: use hr or lr")
    idx = idx[0].to("cpu", torch.int64)
    meta = {"format": CODES_FORMAT, "model_id": model_id, "groups": str(cfg.groups),
            "codebook_size": str(cfg.codebook_size), "patch": str(cfg.patch), "source": source,
            "image_width": str(size[0]), "image_height": str(size[1]),
            "grid_height": str(idx.shape[1]), "grid_width": str(idx.shape[2])}
    return Codes(idx, meta)


def save_codes(path: Path, codes: Codes) -> None:
    k = int(codes.meta["codebook_size"])
    # Indices < K <= 65536 fit uint16 (torch >= 2.3 stores it in safetensors as U16).
    dtype = torch.uint16 if k <= 1 << 16 else torch.int32
    with atomic_path(path) as tmp:
        save_file({"indices": codes.indices.to(dtype).contiguous()}, str(tmp), metadata=codes.meta)


def load_codes(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Codes:
    """A token dump, checked: a damaged one, or one that would decode to more than ``max_pixels`` (the decoder
    runs on the whole image at once), is a UserError."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .safetensors file ({one_line(exc)})") from None
    needed = ("model_id", "groups", "codebook_size", "image_width", "image_height")
    if meta.get("format") != CODES_FORMAT or "indices" not in tensors or any(k not in meta for k in needed):
        raise UserError(f"{path}: not a hitok token dump (made by `hitok tokenize`)")
    numbers = {k: _positive(path, meta, k) for k in ("groups", "codebook_size", "patch", "image_width",
                                                      "image_height") if k in meta or k != "patch"}
    idx = tensors["indices"].to(torch.int64)
    if idx.ndim != 3 or idx.shape[0] != numbers["groups"]:
        raise UserError(f"{path}: indices have shape {tuple(idx.shape)}, expected ({meta['groups']}, h, w)")
    if idx.numel() and (idx.min() < 0 or idx.max() >= numbers["codebook_size"]):
        raise UserError(f"{path}: indices outside the codebook (0..{numbers['codebook_size'] - 1})")
    w, h = numbers["image_width"], numbers["image_height"]
    if "patch" in numbers:  # the decoder makes patch x patch pixels per token; the image is that, cropped
        h, w = idx.shape[1] * numbers["patch"], idx.shape[2] * numbers["patch"]
        if numbers["image_width"] > w or numbers["image_height"] > h:
            raise UserError(f"{path}: metadata says {numbers['image_width']}x{numbers['image_height']} pixels, more "
                            f"than its tokens hold ({w}x{h}); the dump is damaged: run `hitok tokenize` again")
    if w * h > max_pixels:
        raise UserError(f"{path}: decodes to {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,}; pass "
                        f"--max-pixels {w * h} if you trust this dump")
    return Codes(idx, meta)


def _positive(path: Path, meta: dict[str, str], key: str) -> int:
    """A metadata field that must be a whole number above 0 (a damaged or hand-edited dump otherwise)."""
    value = meta[key]
    if not value.strip().isdigit() or int(value) < 1:
        raise UserError(f"{path}: metadata {key}={value!r} is not a whole number above 0; the dump is damaged: "
                        "run `hitok tokenize` again")
    return int(value)


def check_model_matches(codes: Codes, model, model_id: str) -> None:
    cfg = model.config.tokenizer
    if (int(codes.meta["groups"]), int(codes.meta["codebook_size"])) != (cfg.groups, cfg.codebook_size):
        raise UserError(f"the dump has N={codes.meta['groups']} K={codes.meta['codebook_size']} but the model "
                        f"has N={cfg.groups} K={cfg.codebook_size}; pass the --model that made it")
    if codes.meta["model_id"] != model_id:
        raise UserError(f"the dump was made with model {codes.meta['model_id']}, this is model {model_id}; "
                        "pass the --model that made it")


def decode_panel(model, codes: Codes, detail: int) -> np.ndarray:
    """Decode with the first ``detail`` groups -> (H, W, 3) uint8, cropped to the image size."""
    with torch.inference_mode():
        device = next(model.parameters()).device
        img = model.decode_indices(codes.indices[None].to(device), detail=detail)  # (1, 3, H', W')
    w, h = codes.image_size
    img = img[0, :, :h, :w].float().clamp(0, 1).permute(1, 2, 0).cpu()  # (H, W, 3)
    return (img * 255 + 0.5).floor().numpy().astype(np.uint8)


def code_usage(codes: Codes) -> list[dict]:
    """Per group: distinct codes used, fraction of K, perplexity exp(H) of the code histogram."""
    k = int(codes.meta["codebook_size"])
    rows = []
    for g, plane in enumerate(codes.indices):
        counts = torch.bincount(plane.flatten(), minlength=k).double()
        p = counts[counts > 0] / counts.sum()
        rows.append({"group": g + 1, "used": int((counts > 0).sum()), "codebook_size": k,
                     "fraction": float((counts > 0).sum() / k),
                     "perplexity": float(math.exp(-(p * p.log()).sum())) if len(p) else 0.0})
    return rows


def panel_box(index: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of panel ``index`` in the preview."""
    left = index * (width + GAP)
    return left, LABEL_H, left + width, LABEL_H + height


def make_preview(panels: list[np.ndarray], labels: list[str]) -> Image.Image:
    h, w = panels[0].shape[:2]
    sheet = Image.new("RGB", (len(panels) * (w + GAP) - GAP, LABEL_H + h), (255, 255, 255))
    font = ImageFont.load_default()
    for i, (panel, label) in enumerate(zip(panels, labels)):
        left, top, _, _ = panel_box(i, w, h)
        # Each label is drawn on a strip as wide as its panel, so a long one is clipped
        # instead of running into the neighbour's.
        strip = Image.new("RGB", (w, LABEL_H), (255, 255, 255))
        ImageDraw.Draw(strip).text((1, 1), label, fill=(0, 0, 0), font=font)
        sheet.paste(strip, (left, 0))
        sheet.paste(Image.fromarray(panel), (left, top))
    return sheet


def input_panel(img: torch.Tensor, codes: Codes) -> np.ndarray:
    """The input as it compares to the decoded panels: as is (hr) or bicubic x4 (lr)."""
    w, h = codes.image_size
    pil = Image.fromarray((img[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    return np.asarray(pil if pil.size == (w, h) else pil.resize((w, h), Image.BICUBIC))


def write_preview(path: Path, model, img: torch.Tensor, codes: Codes) -> None:
    n = int(codes.meta["groups"])
    panels = [input_panel(img, codes)] + [decode_panel(model, codes, m) for m in range(1, n + 1)]
    labels = ["input" if codes.meta["source"] == "hr" else "input x4"] + [f"detail {m}" for m in range(1, n + 1)]
    sheet = make_preview(panels, labels)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
