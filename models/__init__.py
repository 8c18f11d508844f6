"""hitok.models — the HiTokSR model core: tokenizer, quantizer, generator, LR guide, restorer, VFM, presets,
save/load, and the model's own geometry (receptive field, tile alignment, valid settings). What only training
needs (DWT targets, discriminator, GAN/REPA/LPIPS losses) is hitok.train.losses. Imports nothing of hitok outside
this package.

Names are loaded on first use (PEP 562), as in hitok/__init__.py: ``hitok.models.errors``, which the library's
image I/O needs, must not pull torch in with it."""
import importlib

_PUBLIC = {
    "HiTok": "sr_model", "HiTokConfig": "sr_model", "Restorer": "restorer", "RestorerConfig": "restorer",
    "Generator": "generator", "GeneratorConfig": "generator", "Tokenizer": "tokenizer",
    "TokenizerConfig": "tokenizer", "ModelFileError": "errors", "SettingError": "errors",
    "config_from_dict": "io", "load_model_file": "io", "read_metadata": "io", "save_model": "io", "presets": "presets",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_PUBLIC[name]}")
    return module if name == _PUBLIC[name] else getattr(module, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
