"""Data-parallel training across processes (torchrun or `--nproc`), NCCL on GPUs and gloo on the CPU.

Launch on one machine with 8 GPUs:

    torchrun --standalone --nproc_per_node=8 --no-python hitok train tokenizer --data DIR --out RUN

or let hitok spawn the workers itself: `hitok train tokenizer ... --nproc 8`.

Every process holds a full replica and draws its own batches (CropStream's `rank`). Gradients are averaged by
torch's DistributedDataParallel, one wrapper around the stage module (train/stages.py: its forward is the whole
training pass) and one around the discriminator; only a stage whose trained parameters can sit out a step (the
tokenizer's codebook during its autoencoder warm-up) has DDP look for unused ones. What DDP does not cover is
done here: the quantizer's usage statistics are averaged every step (DDP's buffer broadcast would keep rank 0's
instead), and after k-means init or dead-code restarts (which draw random encoder outputs of the local batch,
outside the optimizer) rank 0's tensors are broadcast (train/codebook.py)."""
from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this module created the process group and must destroy it

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_type: str) -> DistEnv:
    """Join the process group torchrun (or `spawn`) described in the environment; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    if dist.is_initialized():
        return DistEnv(rank, world, local, owns_group=False)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    return DistEnv(rank, world, local, owns_group=True)


def shutdown(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, env: DistEnv, find_unused: bool = False) -> nn.Module:
    """`module` inside DistributedDataParallel when there are several processes (itself otherwise). DDP broadcasts
    rank 0's parameters and buffers once here, so the replicas start equal. `find_unused`: some trained parameter
    may get no gradient in a step (DDP then walks the graph after every backward to find it)."""
    if not env.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel
    dev = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None,
                                   broadcast_buffers=False, find_unused_parameters=find_unused)


def no_sync(wrapped: nn.Module, sync: bool):
    """DDP's no_sync() for the accumulation micro-steps before the last (a no-op without DDP)."""
    if sync or not hasattr(wrapped, "no_sync"):
        return contextlib.nullcontext()
    return wrapped.no_sync()


def broadcast_module(module: nn.Module, env: DistEnv, src: int = 0) -> None:
    """Make every tensor of module.state_dict() equal to rank `src`'s (parameters and buffers)."""
    if not env.enabled:
        return
    for t in module.state_dict().values():  # state_dict tensors share storage with the module
        dist.broadcast(t, src)


def average_float_buffers(module: nn.Module, env: DistEnv) -> None:
    """Average floating buffers (e.g. the quantizer's usage EMA) so decisions based on them agree."""
    if not env.enabled:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b.div_(env.world)


def agree_max(values: list[float], env: DistEnv, device: torch.device) -> list[float]:
    """Element-wise maximum over processes: stop flags and elapsed time, so all ranks take the same branch."""
    if not env.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def replica_spread(params: list[torch.Tensor], env: DistEnv, device: torch.device) -> float:
    """Largest difference between processes of a checksum of `params` (0.0 when the replicas agree)."""
    if not env.enabled:
        return 0.0
    s = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1).to(device)
    hi, lo = s.clone(), s.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return float(hi - lo)


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(rank: int, world: int, port: int, fn, args: tuple) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    fn(*args)


def spawn(nproc: int, fn, *args) -> None:
    """Run fn(*args) in `nproc` fresh processes forming one process group (what torchrun does on one machine)."""
    import torch.multiprocessing as mp
    mp.spawn(_spawned, args=(nproc, free_port(), fn, args), nprocs=nproc, join=True)
