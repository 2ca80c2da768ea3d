"""One resolution of the NCSN++ U-Net: an encoder level and a decoder level.

The encoder level also carries the progressive *input* pyramid (the image, down-sampled
alongside the features and merged into them); the decoder level carries the progressive
*output* pyramid (an image-space prediction up-sampled and refined at every level).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlens.nn.layers import (
    AttnBlock,
    BlockOptions,
    Combine,
    Downsample,
    Upsample,
    act,
    conv3x3,
    group_norm,
    residual,
)
from jaxlens.nn.resnet import ResnetBlockBigGAN, ResnetBlockDDPM

__all__ = ["DownLevel", "UpLevel"]

RESBLOCK_TYPES = ("biggan", "ddpm")
PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
COMBINE = ("sum", "cat")


def make_resblock(kind: str, out_ch: int | None, opts: BlockOptions, name: str) -> nn.Module:
    if kind == "biggan":
        return ResnetBlockBigGAN(out_ch=out_ch, opts=opts, name=name)
    return ResnetBlockDDPM(out_ch=out_ch, opts=opts, name=name)


class DownLevel(nn.Module):
    """Residual blocks (each followed by attention if `attention`) at one resolution,
    then, if `downsample`, a 2× down-sampling step that merges in the input pyramid.

    Attributes:
      out_ch: features of this level's residual blocks.
      num_res_blocks: residual blocks before down-sampling.
      attention: attention after every residual block.
      downsample: whether this level down-samples (all but the coarsest).
      resblock_type: 'biggan' (down-sampling residual block) or 'ddpm' (Downsample).
      progressive_input: 'none', 'input_skip' (FIR-down-sampled image merged by
        `Combine`) or 'residual' (conv-down-sampled image averaged with the features).
      combine: 'sum' or 'cat', for 'input_skip'.
      opts: shared hyper-parameters.
    """

    out_ch: int
    num_res_blocks: int
    attention: bool
    downsample: bool
    resblock_type: str = "biggan"
    progressive_input: str = "input_skip"
    combine: str = "sum"
    opts: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(
        self, h: jax.Array, temb: jax.Array | None, image: jax.Array | None, *, train: bool
    ) -> tuple[list[jax.Array], jax.Array | None]:
        """Returns the skip activations (the last is the output) and the input pyramid.

        Args:
          h: [B, H, W, F] features.
          temb: [B, E] time embedding or None.
          image: [B, H, W, C'] input pyramid at this resolution, or None.
          train: enables dropout.
        """
        o = self.opts
        skips = []
        for i in range(self.num_res_blocks):
            h = make_resblock(self.resblock_type, self.out_ch, o, f"res_{i}")(h, temb, train=train)
            if self.attention:
                h = AttnBlock(o, name=f"attn_{i}")(h)
            skips.append(h)
        if not self.downsample:
            return skips, image
        if self.resblock_type == "biggan":
            h = ResnetBlockBigGAN(down=True, opts=o, name="down")(h, temb, train=train)
        else:
            h = Downsample(with_conv=o.resamp_with_conv, opts=o, name="down")(h)
        if self.progressive_input == "input_skip":
            image = Downsample(opts=o, name="image_down")(image)
            h = Combine(self.combine, o, name="combine")(image, h)
        elif self.progressive_input == "residual":
            image = Downsample(h.shape[-1], with_conv=True, opts=o, name="image_down")(image)
            h = image = residual(image, h, o)
        skips.append(h)
        return skips, image


class UpLevel(nn.Module):
    """Residual blocks over [features, skip] at one resolution, attention if
    `attention`, the output-pyramid update, then, if `upsample`, 2× up-sampling.

    Attributes:
      out_ch: features of this level's residual blocks.
      attention: one attention block after the residual blocks.
      upsample: whether this level up-samples (all but the finest).
      image_channels: C of the network's output image.
      resblock_type: 'biggan' (up-sampling residual block) or 'ddpm' (Upsample).
      progressive: 'none', 'output_skip' (image-space pyramid: FIR-up-sampled and
        summed with GroupNorm → swish → conv3x3 of the features) or 'residual'.
      opts: shared hyper-parameters.
    """

    out_ch: int
    attention: bool
    upsample: bool
    image_channels: int
    resblock_type: str = "biggan"
    progressive: str = "output_skip"
    opts: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(
        self,
        h: jax.Array,
        temb: jax.Array | None,
        skips: Sequence[jax.Array],
        pyramid: jax.Array | None,
        *,
        train: bool,
    ) -> tuple[jax.Array, jax.Array | None]:
        """Returns the features for the next (finer) level and the output pyramid.

        Args:
          h: [B, H, W, F] features.
          temb: [B, E] time embedding or None.
          skips: encoder activations at this resolution, consumed in order.
          pyramid: output pyramid from the coarser level, or None at the coarsest.
          train: enables dropout.
        """
        o = self.opts
        for i, skip in enumerate(skips):
            block = make_resblock(self.resblock_type, self.out_ch, o, f"res_{i}")
            h = block(jnp.concatenate([h, skip.astype(h.dtype)], axis=-1), temb, train=train)
        if self.attention:
            h = AttnBlock(o, name="attn")(h)
        h, pyramid = self._update_pyramid(h, pyramid)
        if self.upsample:
            if self.resblock_type == "biggan":
                h = ResnetBlockBigGAN(up=True, opts=o, name="up")(h, temb, train=train)
            else:
                h = Upsample(with_conv=o.resamp_with_conv, opts=o, name="up")(h)
        return h, pyramid

    def _update_pyramid(self, h, pyramid):
        o = self.opts
        if self.progressive == "output_skip":
            feats = act(group_norm(h, o, name="pyramid_norm"))
            conv = conv3x3(self.image_channels, o, init_scale=o.init_scale, name="pyramid_conv")
            # The pyramid is the network output: accumulate it in float32.
            out = conv(feats).astype(jnp.float32)
            if pyramid is not None:
                out = out + Upsample(opts=o, name="pyramid_up")(pyramid)
            return h, out
        if self.progressive == "residual":
            if pyramid is None:
                feats = act(group_norm(h, o, name="pyramid_norm"))
                return h, conv3x3(h.shape[-1], o, name="pyramid_conv")(feats)
            pyramid = Upsample(h.shape[-1], with_conv=True, opts=o, name="pyramid_up")(pyramid)
            h = residual(pyramid, h, o)
            return h, h
        return h, pyramid
