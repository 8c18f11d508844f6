"""The old import path of models/sr_model.py (``hitok.models.hitok``), kept for one release for code that still
imports it; new code imports ``hitok.models`` (``HiTok``, ``HiTokConfig``) or ``hitok.models.sr_model``."""
from .sr_model import HiTok, HiTokConfig, add_guide, with_restorer  # noqa: F401
