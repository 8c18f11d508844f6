# issue 13 lever measurement (scratch script kept for reproducibility; scratch paths under /tmp/spd). Run from the repo root with the venv python.
"""Interleaved, 1 thread, wall + CPU time: Real-ESRGAN (ncnn) vs hitok levers on the same 128x128 image."""
import copy, json, os, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
torch.set_num_threads(1)
from hitok.bench.speed import test_image
from hitok.bench.realesrgan import RealESRGAN, find_model_files
from hitok.models.io import load_model
import hitok.models.quantizer as Q
from hitok.upscaler import Upscaler
from hitok import accel
ROUNDS = int(os.environ.get("ROUNDS", "4"))
img = test_image(128, 128)
param, bin_ = find_model_files(None)
net = RealESRGAN(param, bin_, tile=128, threads=1)
os.environ["HITOK_ENGINE"] = "torch"
m = load_model(str(__import__('hitok.model_store', fromlist=['x']).default_model_path()))
up = Upscaler(m, torch.device('cpu'), torch.float32, model_id="66f99d652b95")
lr = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
info = {}
mq = torch.ao.quantization.quantize_dynamic(copy.deepcopy(up.model), {torch.nn.Linear}, dtype=torch.qint8)
kw = dict(active_groups=up.detail, fix_colors=up.fix_colors, fidelity=up.fidelity)
eng = accel.OrtEngine(up.model, "66f99d652b95", threads=1, export_after=1, root=__import__("pathlib").Path("/tmp/spd/eng"))
t = time.perf_counter(); c = time.process_time()
with torch.inference_mode(): eng(lr, **{"detail": up.detail, "fix_colors": up.fix_colors, "fidelity": up.fidelity})
info["ort_first_call_s"] = time.perf_counter() - t; info["ort_first_call_cpu_s"] = time.process_time() - c
info["ort_exported"] = list(eng.exported)
eng2 = accel.OrtEngine(up.model, "66f99d652b95", threads=1, export_after=99, root=__import__("pathlib").Path("/tmp/spd/eng"))
t = time.perf_counter()
with torch.inference_mode(): eng2(lr, detail=up.detail, fix_colors=up.fix_colors, fidelity=up.fidelity)
info["ort_cached_first_call_s"] = time.perf_counter() - t
def old_chunk():
    o = Q._CHUNK_CPU; Q._CHUNK_CPU = Q._CHUNK
    try: return up.tile_fn(lr)
    finally: Q._CHUNK_CPU = o
def q():
    with torch.inference_mode(): return mq.upscale(lr.contiguous(memory_format=torch.channels_last), **kw)
def ort():
    with torch.inference_mode(): return eng2(lr, detail=up.detail, fix_colors=up.fix_colors, fidelity=up.fidelity)
fns = {"Real-ESRGAN x4plus (ncnn)": lambda: net(img), "hitok eager, before (quantizer block 16384)": old_chunk,
       "hitok eager, quantizer block 256 (kept)": lambda: up.tile_fn(lr), "+ int8 dynamic Linear": q,
       "ONNX Runtime (CPU EP)": ort}
wall = {k: [] for k in fns}; cpu = {k: [] for k in fns}
for f in fns.values(): f()
for r in range(ROUNDS):
    for k, f in fns.items():
        t = time.perf_counter(); c = time.process_time(); f()
        wall[k].append(time.perf_counter() - t); cpu[k].append(time.process_time() - c)
R = "Real-ESRGAN x4plus (ncnn)"
res = {k: dict(wall=wall[k], cpu=cpu[k], best_wall=min(wall[k]), best_cpu=min(cpu[k]),
               ratio_wall=min(wall[R]) / min(wall[k]), ratio_cpu=min(cpu[R]) / min(cpu[k])) for k in fns}
print(json.dumps(dict(rows=res, info=info, load=os.getloadavg()), indent=1))
for k, r in res.items():
    print(f"| {k} | {r['best_wall']:.2f} | {r['best_cpu']:.2f} | {r['ratio_wall']:.2f} | {r['ratio_cpu']:.2f} |")
