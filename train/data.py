"""Training data: any folder of photos -> random HR crops (flips, 90-degree rotations) and, for the generator and
decoder stages, their x4 LR counterparts from the Real-ESRGAN degradation (train/degrade.py).

Every sample is a pure function of (seed, step, rank, slot): a resumed run sees exactly the batches the
uninterrupted run would have seen, whatever the number of DataLoader workers."""
import logging
import signal
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hitok.errors import one_line
from hitok.imageio import list_images, load_rgb8

log = logging.getLogger("hitok.train")


def load_rgb(path: Path) -> np.ndarray | None:
    """hitok.imageio.load_rgb8 (upright uint8 RGB (H, W, 3)), or None when the file is unreadable."""
    try:
        return load_rgb8(path)
    except Exception as e:  # any decoder failure: the run goes on without this file
        warnings.warn(f"skipping unreadable image {path}: {one_line(e, with_type=True)}", stacklevel=2)
        return None


class CropStream(IterableDataset):
    """Yields batches {"hr": (B, 3, S, S)[, "low_res": (B, 3, S/4, S/4)][, "degraded": (B,) bool][, "teacher":
    (B, 3, S, S)]} for steps start_step, start_step+1, ... ("degraded", with a PhotoDegradation: which LRs took
    its degraded branch).

    Batches (not samples) are the unit, so the order is deterministic with any number of workers: worker w makes
    the steps congruent to w modulo the worker count, and the DataLoader interleaves them round-robin."""

    def __init__(self, root: str | Path, crop: int, batch_size: int, seed: int = 0, start_step: int = 0,
                 with_low_res: bool = False, rank: int = 0, cache_images: int = 64, degrade_cfg=None,
                 max_steps: int | None = None, teacher_cache: str | Path | None = None):
        self.paths = list_images(root, recursive=True)
        if not self.paths:
            raise FileNotFoundError(f"no images (jpg/png/webp/tiff) found under {root}")
        self.crop, self.batch_size, self.seed = crop, batch_size, seed
        self.start_step, self.max_steps, self.rank = start_step, max_steps, rank
        self.with_low_res, self.degrade_cfg = with_low_res, degrade_cfg
        self.cache_images = cache_images
        self.teacher_cache = teacher_cache  # train/teacher.py's folder: adds an aligned "teacher" crop
        self._cache: OrderedDict[int, np.ndarray | None] = OrderedDict()
        self._bad: set[int] = set()

    def _image(self, i: int) -> np.ndarray | None:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        img = load_rgb(self.paths[i])
        if img is not None and self.teacher_cache is not None:
            img = self._with_teacher(i, img)
        if img is not None and min(img.shape[:2]) < self.crop:
            warnings.warn(f"skipping {self.paths[i]}: smaller than the {self.crop}px crop", stacklevel=2)
            img = None
        self._cache[i] = img
        if len(self._cache) > self.cache_images:
            self._cache.popitem(last=False)
        return img

    def _with_teacher(self, i: int, img: np.ndarray) -> np.ndarray | None:
        """The photo cut to a multiple of 4 with its teacher image as 3 more channels (H, W, 6), so one crop, flip
        and rotation serves both; None (the photo is skipped) when the teacher has not seen it."""
        from .teacher import load_teacher
        teacher = load_teacher(self.teacher_cache, self.paths[i])
        h, w = img.shape[0] // 4 * 4, img.shape[1] // 4 * 4
        if teacher is None or teacher.shape[:2] != (h, w):
            warnings.warn(f"skipping {self.paths[i]}: no teacher image in {self.teacher_cache} "
                          "(build it with train/teacher.py)", stacklevel=3)
            return None
        return np.concatenate([img[:h, :w], teacher], axis=2)

    def sample(self, step: int, slot: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step, self.rank, slot])
        for _ in range(100):
            i = int(rng.integers(len(self.paths)))
            if i in self._bad:
                continue
            img = self._image(i)
            if img is None:
                self._bad.add(i)
                if len(self._bad) == len(self.paths):
                    raise RuntimeError("no usable training images: every file was unreadable or too small")
                continue
            break
        else:
            raise RuntimeError("could not draw a usable training image in 100 tries")
        H, W = img.shape[:2]
        y, x = int(rng.integers(H - self.crop + 1)), int(rng.integers(W - self.crop + 1))
        if self.teacher_cache is not None:  # on the LR grid, where the teacher's output lines up
            y, x = y // 4 * 4, x // 4 * 4
        patch = img[y:y + self.crop, x:x + self.crop]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        patch = np.rot90(patch, k=int(rng.integers(4)))
        pixels = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1).float() / 255  # (3 or 6, S, S)
        hr = pixels[:3]
        out = {"hr": hr} if self.teacher_cache is None else {"hr": hr, "teacher": pixels[3:]}
        if self.with_low_res:
            from .degrade import DegradationConfig, PhotoDegradation, degrade, degrade_photo_flagged
            cfg = self.degrade_cfg or DegradationConfig()
            if isinstance(cfg, PhotoDegradation):  # with which crops took the degraded branch
                out["low_res"], out["degraded"] = degrade_photo_flagged(hr, rng, cfg)
            else:
                out["low_res"] = degrade(hr, rng, cfg)
        return out

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        items = [self.sample(step, s) for s in range(self.batch_size)]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        step = self.start_step + wid
        while self.max_steps is None or step < self.max_steps:
            yield step, self.batch(step)
            step += nw


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the training process decides when to stop (after the current
    # step, with a checkpoint), so workers must not die under it first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(stream: CropStream, workers: int, pin_memory: bool = False) -> DataLoader:
    return DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=pin_memory,
                      prefetch_factor=4 if workers > 0 else None,
                      worker_init_fn=_ignore_sigint if workers > 0 else None)
