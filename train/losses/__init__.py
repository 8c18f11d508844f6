"""What only training needs: the targets, the discriminator and the loss terms of HiTokSR's stages (Sec. 3.1-3.3).

dwt.py            frequency-matched targets T(l) of masked decoding (Eq. 5)
discriminator.py  the U-Net discriminator of the GAN terms (Real-ESRGAN)
gan_loss.py       hinge / vanilla adversarial losses (Table 6)
repa.py           REPA alignment of the LoRA-tuned VFM (Sec. 3.2)
lpips.py          LPIPS (VGG16) perceptual distance (Eq. 6, Eq. 10); the benchmarks use it as a metric too
ldl.py            LDL's artefact-weighted pixel loss (the restorer's GAN)
grid.py           power at the 2 / 4 px grid frequencies beyond the photo's (the restorer's GAN)
texture_stats.py  patch-wise statistics of detail (sliced Wasserstein): texture without its exact placement
subpixel.py       detail tied to the LR grid's sub-pixel phase (stripes, checkerboards, pixelation)

hitok.models (what inference and model files need) never imports these; tests/test_api.py holds it to that."""
