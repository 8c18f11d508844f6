# issue 13 lever measurement (scratch script kept for reproducibility; scratch paths under /tmp/spd). Run from the repo root with the venv python.
import sys, time, torch
from torch.profiler import profile, ProfilerActivity
from hitok.models.io import load_model
from hitok.upscaler import Upscaler
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
m = load_model(str(__import__('hitok.model_store', fromlist=['x']).default_model_path()))
up = Upscaler(m, torch.device('cpu'), torch.float32)
torch.manual_seed(0)
lr = torch.rand(1, 3, 128, 128)
for _ in range(2): up.tile_fn(lr)
t = time.perf_counter(); up.tile_fn(lr); print('one tile_fn', time.perf_counter() - t)
with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as p:
    up.tile_fn(lr)
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
