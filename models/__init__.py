"""hitok.models — the HiTokSR model core (tokenizer, quantizer, generator, VFM, discriminator, losses, presets,
save/load). Imports nothing of hitok outside this package."""
from . import presets
from .generator import Generator, GeneratorConfig
from .hitok import HiTok, HiTokConfig
from .io import ModelFileError, config_from_dict, load_model, read_metadata, save_model
from .restorer import Restorer, RestorerConfig
from .tokenizer import Tokenizer, TokenizerConfig

__all__ = ["HiTok", "HiTokConfig", "Restorer", "RestorerConfig", "Generator", "GeneratorConfig", "Tokenizer",
           "TokenizerConfig", "ModelFileError", "config_from_dict", "load_model", "read_metadata", "save_model", "presets"]
