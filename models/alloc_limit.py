"""A ceiling on the tensor elements that building a model may allocate, checked before each allocation.

A model file's config decides what gets built, so a hostile one could ask for hundreds of GB. The load builds
under :class:`AllocationLimit`: every tensor factory call (``torch.empty``, ``zeros``, ``randn``, ... : where
parameters and buffers come from) first adds the elements it asks for to a running total, and the call that would
take the total past the limit raises :class:`AllocationLimitExceeded` instead of allocating.

Why not count the parameters on the meta device first: building on the meta device runs the Python meta kernels of
``randn``, ``normal_`` and ``div`` (the codebooks' and the restorer's initialisation), whose first use imports
sympy and torch._dynamo, 0.8 s of a 2 s ``hitok upscale`` on 2 CPU cores. Guarding the real build costs
microseconds per factory call, and a legitimate model is built once instead of twice."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.overrides import TorchFunctionMode

# The factories whose first argument is the size (or whose positional arguments are its sides).
_SIZED = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.empty_strided}


class AllocationLimitExceeded(RuntimeError):
    def __init__(self, requested: int, limit: int):
        super().__init__(f"building needs over {requested:,} tensor elements, above the limit of {limit:,}")
        self.requested, self.limit = requested, limit


def _elements(args: tuple, kwargs: dict) -> int:
    size = kwargs.get("size")
    if size is None and args:
        size = args[0] if isinstance(args[0], Sequence) else args  # empty(2, 3) or empty((2, 3))
    return math.prod(int(s) for s in size or ())


class AllocationLimit(TorchFunctionMode):
    """``with AllocationLimit(n): build()``: at most ``n`` elements from tensor factories in all, across devices.

    Tensors that operations make from existing ones (``w.repeat_interleave(4)``, ``randn(...) / s``) are not
    counted: they are bounded by what a factory already allocated."""

    def __init__(self, limit: int, allocated: int = 0):
        """``allocated``: what earlier builds of the same model took (a deferred part: models/io.py)."""
        super().__init__()
        self.limit, self.allocated = limit, allocated

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SIZED:
            total = self.allocated + _elements(args, kwargs)
            if total > self.limit:
                raise AllocationLimitExceeded(total, self.limit)
            self.allocated = total
        return func(*args, **kwargs)
