"""i2i: a reproducible pipeline for unpaired image-to-image translation (CycleGAN, MUNIT)."""

__version__ = "0.1.0"
