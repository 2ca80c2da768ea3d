"""Noise-conditional residual blocks of NCSN++: BigGAN-style (with built-in FIR
resampling) and DDPM-style.

Both compute GroupNorm → swish → conv3x3, add a per-channel bias from the time
embedding, then GroupNorm → swish → dropout → conv3x3 (init_scale), and add a
(possibly projected) shortcut.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxlens.nn import resample
from jaxlens.nn.layers import (
    BlockOptions,
    act,
    conv1x1,
    conv3x3,
    dense,
    group_norm,
    residual,
)

__all__ = ["ResnetBlockBigGAN", "ResnetBlockDDPM"]


def _second_half(h, temb, out_ch, opts: BlockOptions, train: bool) -> jax.Array:
    """Time-embedding bias, then GroupNorm → swish → dropout → conv3x3(init_scale)."""
    if temb is not None:
        h = h + dense(out_ch, opts, name="temb_proj")(act(temb))[:, None, None, :]
    h = act(group_norm(h, opts, name="norm_1"))
    h = nn.Dropout(opts.dropout)(h, deterministic=not train)
    return conv3x3(out_ch, opts, init_scale=opts.init_scale, name="conv_1")(h)


class ResnetBlockBigGAN(nn.Module):
    """BigGAN residual block; resamples both branches by 2 when `up` or `down`.

    The shortcut gets a 1×1 conv whenever the shape changes.

    Attributes:
      out_ch: output features (default: the input's).
      up: up-sample by 2 (FIR if opts.fir, else nearest).
      down: down-sample by 2 (FIR if opts.fir, else mean pooling).
      opts: shared hyper-parameters.
    """

    out_ch: int | None = None
    up: bool = False
    down: bool = False
    opts: BlockOptions = BlockOptions()

    def _resample(self, x: jax.Array) -> jax.Array:
        o = self.opts
        if self.up:
            return resample.upsample_2d(x, o.fir_kernel) if o.fir else resample.naive_upsample_2d(x)
        if self.down:
            if o.fir:
                return resample.downsample_2d(x, o.fir_kernel)
            return resample.naive_downsample_2d(x)
        return x

    @nn.compact
    def __call__(
        self, x: jax.Array, temb: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        """x [B, H, W, C], temb [B, E] or None -> [B, H', W', out_ch]."""
        if self.up and self.down:
            raise ValueError("ResnetBlockBigGAN cannot both up- and down-sample")
        o = self.opts
        out_ch = self.out_ch or x.shape[-1]
        h = self._resample(act(group_norm(x, o, name="norm_0")))
        x = self._resample(x)
        h = conv3x3(out_ch, o, name="conv_0")(h)
        h = _second_half(h, temb, out_ch, o, train)
        if x.shape[-1] != out_ch or self.up or self.down:
            x = conv1x1(out_ch, o, name="shortcut")(x)
        return residual(x, h, o)


class ResnetBlockDDPM(nn.Module):
    """DDPM residual block (no resampling).

    Attributes:
      out_ch: output features (default: the input's).
      conv_shortcut: project a changed shortcut with a 3×3 conv instead of a per-pixel
        linear map (score_sde's NIN, init scale 0.1).
      opts: shared hyper-parameters.
    """

    out_ch: int | None = None
    conv_shortcut: bool = False
    opts: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(
        self, x: jax.Array, temb: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        """x [B, H, W, C], temb [B, E] or None -> [B, H, W, out_ch]."""
        o = self.opts
        out_ch = self.out_ch or x.shape[-1]
        h = conv3x3(out_ch, o, name="conv_0")(act(group_norm(x, o, name="norm_0")))
        h = _second_half(h, temb, out_ch, o, train)
        if x.shape[-1] != out_ch:
            if self.conv_shortcut:
                x = conv3x3(out_ch, o, name="shortcut")(x)
            else:
                x = dense(out_ch, o, init_scale=0.1, name="shortcut")(x)
        return residual(x, h, o)
