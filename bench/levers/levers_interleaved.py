# issue 13 lever measurement (scratch script kept for reproducibility; scratch paths under /tmp/spd). Run from the repo root with the venv python.
"""Side-by-side levers, interleaved rounds, 1 thread. Output: table + PSNR vs eager on val."""
import copy, json, math, os, sys, time
import numpy as np, torch
from PIL import Image
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", "/tmp/spd/ind2")
from hitok.models.io import load_model
import hitok.models.quantizer as Q
ROUNDS = int(os.environ.get("ROUNDS", "3"))
VARIANTS = os.environ.get("VARIANTS", "eager,chunk,compile,qdyn,ort").split(",")
m = load_model(str(__import__('hitok.model_store', fromlist=['x']).default_model_path())).eval().to(memory_format=torch.channels_last)
kw = dict(active_groups=4, fix_colors=True, fidelity=1.0)
val = sorted(os.listdir('/work/shared/data/val'))
def lr_hr(name):
    im = Image.open(f'/work/shared/data/val/{name}').convert('RGB')
    w, h = im.size; s = 512
    hr = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    lr = hr.resize((128, 128), Image.BICUBIC)
    t = lambda p: torch.from_numpy(np.asarray(p, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    return t(lr).contiguous(memory_format=torch.channels_last), t(hr)
pairs = [lr_hr(n) for n in val]
fns, info = {}, {}
def eager(lr):
    old = Q._CHUNK_CPU; Q._CHUNK_CPU = Q._CHUNK
    try: return m.upscale(lr, **kw)
    finally: Q._CHUNK_CPU = old
fns["eager"] = eager
def chunk(lr): return m.upscale(lr, **kw)
if "chunk" in VARIANTS: fns["chunk"] = chunk
if "compile" in VARIANTS:
    Q._CHUNK = int(os.environ.get("CCHUNK", Q._CHUNK))
    if os.environ.get("FREEZE"):
        import torch._inductor.config as ic; ic.freezing = True
    cf = torch.compile(m.upscale)
    t = time.perf_counter()
    with torch.inference_mode(): cf(pairs[0][0], **kw)
    info["compile_first_s"] = time.perf_counter() - t
    fns["compile"] = lambda lr: cf(lr, **kw)
if "qdyn" in VARIANTS:
    mq = torch.ao.quantization.quantize_dynamic(copy.deepcopy(m), {torch.nn.Linear}, dtype=torch.qint8)
    fns["qdyn+chunk"] = lambda lr: mq.upscale(lr, **kw)
if "ort" in VARIANTS and os.path.exists("/tmp/spd/m128.onnx"):
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = torch.get_num_threads()
    t = time.perf_counter()
    sess = ort.InferenceSession("/tmp/spd/m128.onnx", so, providers=["CPUExecutionProvider"])
    info["ort_session_s"] = time.perf_counter() - t
    iname = sess.get_inputs()[0].name
    fns["ort"] = lambda lr: torch.from_numpy(sess.run(None, {iname: lr.contiguous().numpy()})[0])
times = {k: [] for k in fns}
cpu = {k: [] for k in fns}
outs = {k: [] for k in fns}
with torch.inference_mode():
    for k, f in fns.items(): f(pairs[0][0])  # warm-up
    for r in range(ROUNDS):
        for k, f in fns.items():
            t = time.perf_counter(); c = time.process_time(); f(pairs[0][0]); times[k].append(time.perf_counter() - t); cpu[k].append(time.process_time() - c)
    for k, f in fns.items():
        outs[k] = [f(lr) for lr, _ in pairs]
def psnr(a, b):
    mse = (a - b).pow(2).mean().item(); return 10 * math.log10(1 / max(mse, 1e-20))
def y(x):
    return (16 + 65.481 * x[:, 0] + 128.553 * x[:, 1] + 24.966 * x[:, 2]) / 255
def psnr_y(a, b, crop=4):
    a8 = (a.clamp(0, 1) * 255).round() / 255; b8 = b
    ya, yb = y(a8)[..., crop:-crop, crop:-crop], y(b8)[..., crop:-crop, crop:-crop]
    return psnr(ya, yb)
rows = {}
for k in fns:
    rows[k] = dict(best_s=min(times[k]), times=times[k],
                   psnr_vs_eager=float(np.mean([psnr(o, e) for o, e in zip(outs[k], outs["eager"])])),
                   min_psnr_vs_eager=float(min(psnr(o, e) for o, e in zip(outs[k], outs["eager"]))),
                   psnr_y_gt=float(np.mean([psnr_y(o, hr) for o, (_, hr) in zip(outs[k], pairs)])))
    rows[k]["speedup_vs_eager"] = min(times["eager"]) / rows[k]["best_s"]
    rows[k]["cpu_best_s"] = min(cpu[k]); rows[k]["cpu_times"] = cpu[k]
    rows[k]["cpu_speedup_vs_eager"] = min(cpu["eager"]) / min(cpu[k])
print(json.dumps(dict(rows=rows, info=info, threads=torch.get_num_threads(), load=os.getloadavg()), indent=1))
for k, r in rows.items():
    print(f"{k:10s} best {r['best_s']:.3f}s  x{r['speedup_vs_eager']:.2f} cpu {r['cpu_best_s']:.3f}s x{r['cpu_speedup_vs_eager']:.2f}  psnr_vs_eager {r['psnr_vs_eager']:.1f} (min {r['min_psnr_vs_eager']:.1f})  psnrY_gt {r['psnr_y_gt']:.3f}")
