"""The NCSN++ score network (Flax linen).

`NCSNpp(...)(x, sigma, train=...)` returns ε_θ(x, σ) [B, H, W, C]; the score is ε_θ/σ.
"""

from jaxlens.nn.embedding import GaussianFourierProjection
from jaxlens.nn.layers import AttnBlock, BlockOptions, Combine, Downsample, Upsample
from jaxlens.nn.ncsnpp import NCSNpp, init_params, param_count
from jaxlens.nn.resample import (
    conv_downsample_2d,
    downsample_2d,
    upfirdn2d,
    upsample_2d,
    upsample_conv_2d,
)
from jaxlens.nn.resnet import ResnetBlockBigGAN, ResnetBlockDDPM

__all__ = [
    "NCSNpp",
    "param_count",
    "init_params",
    "GaussianFourierProjection",
    "BlockOptions",
    "ResnetBlockBigGAN",
    "ResnetBlockDDPM",
    "AttnBlock",
    "Combine",
    "Upsample",
    "Downsample",
    "upfirdn2d",
    "upsample_2d",
    "downsample_2d",
    "upsample_conv_2d",
    "conv_downsample_2d",
]
