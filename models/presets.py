"""Model presets as plain functions (LlamaGen's VQ_16, nanoGPT's GPTConfig): `paper`, `small`, `tiny`."""
from .generator import GeneratorConfig
from .sr_model import HiTokConfig
from .tokenizer import TokenizerConfig


def paper(vfm_weights: str = "pretrained") -> HiTokConfig:
    """Table 6: p=16, C=32, N=4, K=1024 per group; encoder, decoder and generator 12 x 768; DINOv3-B VFM."""
    from .vfm import VFMConfig
    return HiTokConfig(
        tokenizer=TokenizerConfig(patch=16, latent_dim=32, groups=4, codebook_size=1024,
                                  enc_dim=768, enc_depth=12, dec_dim=768, dec_depth=12, heads=12),
        generator=GeneratorConfig(lr_patch=4, groups=4, codebook_size=1024, dim=768, depth=12, heads=12,
                                  conv_widths=(64, 128, 256), conv_blocks=(1, 1, 2)),
        vfm=VFMConfig(name="vit_base_patch16_dinov3", weights=vfm_weights),
        name="paper",
    )


def small() -> HiTokConfig:
    """Sized for 2 CPU cores (training and inference); the measurements behind each choice are in MODEL_CARD.md.

    Tokenizer: p=4 (one token per LR pixel; p=16's 40 bits per 16x16 patch are too few for a briefly trained
    model to stay faithful), narrow conv stem/head around a short ViT with 8x8-token windows.
    Generator: 8x8-window Transformer on 2x2-LR-pixel tokens (a quarter of the token grid), a conv upsampler back
    to the grid, then heads that score the codebooks by distance to a predicted latent (models/heads.py). No VFM
    (nothing pretrained can be downloaded offline; Table 4 row (a))."""
    return HiTokConfig(
        tokenizer=TokenizerConfig(patch=4, latent_dim=32, groups=4, codebook_size=1024,
                                  enc_dim=128, enc_depth=1, dec_dim=128, dec_depth=2, heads=4, window=8,
                                  conv_widths=(32, 64, 128), enc_conv_blocks=(0, 0, 1), dec_conv_blocks=(0, 0, 2)),
        generator=GeneratorConfig(lr_patch=1, groups=4, codebook_size=1024, dim=256, depth=6, heads=8, window=8,
                                  conv_widths=(64, 128), conv_blocks=(1, 1), token_stride=2,
                                  up_widths=(96, 192), up_blocks=(1, 0), head="codebook", latent_dim=32),
        vfm=None,
        name="small",
    )


def tiny(vfm: bool = False) -> HiTokConfig:
    """For tests: a few thousand parameters; p=8 so LR tiles must align to 2 pixels."""
    vfm_cfg = None
    if vfm:
        from .vfm import VFMConfig
        vfm_cfg = VFMConfig(name="vit_small_patch16_dinov3", weights="none", lora_rank=2, cls_layers=(0, 1),
                            model_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2})
    return HiTokConfig(
        tokenizer=TokenizerConfig(patch=8, latent_dim=8, groups=2, codebook_size=16, enc_dim=16, enc_depth=1,
                                  dec_dim=16, dec_depth=1, heads=2, conv_widths=(4, 8, 8, 16),
                                  enc_conv_blocks=(0, 0, 1, 1), dec_conv_blocks=(0, 0, 1, 1)),
        generator=GeneratorConfig(lr_patch=2, groups=2, codebook_size=16, dim=16, depth=1, heads=2,
                                  conv_widths=(8, 16), conv_blocks=(1, 1), vfm_input_scale=1.0),
        vfm=vfm_cfg,
        name="tiny",
    )


PRESETS = {"tiny": tiny, "small": small, "paper": paper}
