# issue 13 lever measurement (scratch script kept for reproducibility; scratch paths under /tmp/spd). Run from the repo root with the venv python.
"""eager vs int8-Linear vs ORT on the 4 val images (512 px centre crop, bicubic x1/4 LR): PSNR between paths,
PSNR-Y and NIQE against GT, 1 thread."""
import math, os, warnings, json
warnings.filterwarnings("ignore")
import numpy as np, torch
from PIL import Image
torch.set_num_threads(1)
from hitok.models.io import load_model
from hitok import accel
from hitok.bench.niqe import niqe
from pathlib import Path
m = load_model(str(__import__('hitok.model_store', fromlist=['x']).default_model_path())).eval()
g, w = m.config.tokenizer.groups, m.config.fidelity
i8 = accel.Int8LinearEngine(m)
ort = accel.OrtEngine(m, "66f99d652b95", threads=1, export_after=1, root=Path("/tmp/spd/eng"))
def y(x): return (16 + 65.481 * x[:, 0] + 128.553 * x[:, 1] + 24.966 * x[:, 2]) / 255
def psnr(a, b): return 10 * math.log10(1 / max((a - b).pow(2).mean().item(), 1e-20))
def q8(x): return (x.clamp(0, 1) * 255).round() / 255
rows = {"eager": [], "int8": [], "onnx": []}
for name in sorted(os.listdir('/work/shared/data/val')):
    im = Image.open(f'/work/shared/data/val/{name}').convert('RGB'); W, H = im.size; s = 512
    hr = im.crop(((W - s) // 2, (H - s) // 2, (W - s) // 2 + s, (H - s) // 2 + s))
    t = lambda p: torch.from_numpy(np.asarray(p, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    lr, hrt = t(hr.resize((128, 128), Image.BICUBIC)), t(hr)
    with torch.inference_mode():
        outs = {"eager": m.upscale(lr, active_groups=g, fix_colors=True, fidelity=w),
                "int8": i8(lr, g, True, w), "onnx": ort(lr, g, True, w)}
    for k, o in outs.items():
        o8 = q8(o)
        rows[k].append(dict(img=name, psnr_vs_eager=psnr(o8, q8(outs["eager"])),
                            psnr_y=psnr(y(o8)[..., 4:-4, 4:-4], y(hrt)[..., 4:-4, 4:-4]),
                            niqe=niqe((o8[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), crop_border=4)))
for k, r in rows.items():
    pv = [x["psnr_vs_eager"] for x in r]
    print(f"{k}: psnr_vs_eager mean {np.mean(pv):.1f} min {min(pv):.1f} | PSNR-Y {np.mean([x['psnr_y'] for x in r]):.3f} | NIQE {np.mean([x['niqe'] for x in r]):.3f}")
print(json.dumps(rows))
