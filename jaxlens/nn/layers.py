"""Building blocks of NCSN++ (Song et al. 2021): convolutions, GroupNorm, resampling,
attention and the progressive-input combiner.

Initialisation follows score_sde (the DDPM scheme): every kernel is
variance_scaling(scale, 'fan_avg', 'uniform') with scale 1, except the last layer of each
residual branch, which uses `init_scale` (0 means 1e-10, so each residual block starts as
the identity), and the query/key/value projections of attention, which use 0.1. Biases
start at zero.

Mixed precision: convolutions and dense layers compute in `BlockOptions.dtype` with
parameters in `param_dtype`; GroupNorm and the attention softmax run in float32.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlens.nn import resample

__all__ = [
    "BlockOptions",
    "default_init",
    "conv3x3",
    "conv1x1",
    "dense",
    "GroupNorm",
    "group_norm",
    "residual",
    "Upsample",
    "Downsample",
    "Combine",
    "AttnBlock",
]

act = nn.swish


class BlockOptions(NamedTuple):
    """Hyper-parameters shared by every block of one network.

    Attributes:
      dropout: dropout rate inside residual blocks (active only when train=True).
      fir: FIR [fir_kernel] resampling if True, else nearest / mean pooling.
      fir_kernel: 1-D FIR taps (made separable).
      skip_rescale: divide residual sums by √2.
      init_scale: init scale of the last layer of each residual branch (0 -> 1e-10).
      resamp_with_conv: whether stand-alone Upsample/Downsample layers carry a conv.
      dtype: compute dtype of convolutions and dense layers.
      param_dtype: dtype of parameters.
    """

    dropout: float = 0.0
    fir: bool = True
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0
    resamp_with_conv: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32


def default_init(scale: float = 1.0) -> nn.initializers.Initializer:
    """DDPM initialiser; a scale of 0 means 1e-10 (variance scaling needs scale > 0)."""
    return nn.initializers.variance_scaling(scale or 1e-10, "fan_avg", "uniform")


def conv3x3(
    features: int, opts: BlockOptions, *, init_scale: float = 1.0, stride: int = 1, name=None
) -> nn.Conv:
    """3×3 'SAME' convolution with bias and DDPM initialisation."""
    return nn.Conv(
        features,
        kernel_size=(3, 3),
        strides=(stride, stride),
        padding="SAME",
        kernel_init=default_init(init_scale),
        dtype=opts.dtype,
        param_dtype=opts.param_dtype,
        name=name,
    )


def conv1x1(features: int, opts: BlockOptions, *, init_scale: float = 1.0, name=None) -> nn.Conv:
    """1×1 convolution with bias and DDPM initialisation."""
    return nn.Conv(
        features,
        kernel_size=(1, 1),
        kernel_init=default_init(init_scale),
        dtype=opts.dtype,
        param_dtype=opts.param_dtype,
        name=name,
    )


def dense(features: int, opts: BlockOptions, *, init_scale: float = 1.0, name=None) -> nn.Dense:
    """Dense layer over the last axis (score_sde's `NIN` for images) with DDPM init."""
    return nn.Dense(
        features,
        kernel_init=default_init(init_scale),
        dtype=opts.dtype,
        param_dtype=opts.param_dtype,
        name=name,
    )


class GroupNorm(nn.Module):
    """GroupNorm in float32 with per-channel `scale` and `bias` (flax.linen.GroupNorm's parameters).

    Same statistics as flax's (mean and E[x²] − mean², clipped at 0, in float32) but computed
    as per-channel sums over H and W, which stay vectorised along the minor channel axis of
    NHWC, then folded into one per-channel multiply-add. On CPU this is 1.4–3× faster than
    flax's reshape to [B, H, W, G, C/G] (docs/validation.md, "Speed on the CPU").
    The parameter names and shapes are flax's, so checkpoints load either way.
    """

    num_groups: int
    epsilon: float = 1e-6
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, c, g = x.shape[0], x.shape[-1], self.num_groups
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype).astype(jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype).astype(jnp.float32)
        x = x.astype(jnp.float32)
        axes = tuple(range(1, x.ndim - 1))
        count = math.prod(x.shape[1:-1]) * (c // g)
        mean = jnp.sum(x, axis=axes).reshape(b, g, c // g).sum(-1) / count
        mean_sq = jnp.sum(x * x, axis=axes).reshape(b, g, c // g).sum(-1) / count
        inv_std = jax.lax.rsqrt(jnp.maximum(mean_sq - mean * mean, 0.0) + self.epsilon)
        gain = jnp.repeat(inv_std, c // g, axis=1) * scale
        shift = bias - jnp.repeat(mean, c // g, axis=1) * gain
        expand = (b,) + (1,) * len(axes) + (c,)
        return x * gain.reshape(expand) + shift.reshape(expand)


def group_norm(x: jax.Array, opts: BlockOptions, *, name=None) -> jax.Array:
    """GroupNorm with min(C//4, 32) groups, in float32 (ε = 1e-6, as flax and score_sde).

    Raises:
      ValueError: if C < 4 or C is not divisible by the number of groups.
    """
    channels = x.shape[-1]
    groups = min(channels // 4, 32)
    if groups < 1 or channels % groups:
        raise ValueError(
            f"GroupNorm uses min(C//4, 32) groups and needs C >= 4 divisible by them; got "
            f"C={channels}. Choose nf and ch_mult so every feature count is a multiple of 32 "
            "(or of C//4 below 128)."
        )
    return GroupNorm(num_groups=groups, epsilon=1e-6, param_dtype=opts.param_dtype, name=name)(x)


def residual(x: jax.Array, h: jax.Array, opts: BlockOptions) -> jax.Array:
    """Skip connection x + h, divided by √2 if `skip_rescale`, in the compute dtype."""
    out = x.astype(opts.dtype) + h.astype(opts.dtype)
    # A Python float is weakly typed, so bfloat16 stays bfloat16.
    return out / math.sqrt(2.0) if opts.skip_rescale else out


def _fir_conv_weights(module: nn.Module, cin: int, cout: int, opts: BlockOptions):
    w = module.param("weight", default_init(), (3, 3, cin, cout), opts.param_dtype)
    b = module.param("bias", nn.initializers.zeros, (cout,), opts.param_dtype)
    return w.astype(opts.dtype), b.astype(opts.dtype)


class Upsample(nn.Module):
    """2× up-sampling, optionally with a 3×3 conv to `out_ch` features.

    With FIR and a conv this is StyleGAN2's fused up-sampling convolution.
    """

    out_ch: int | None = None
    with_conv: bool = False
    opts: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, H, W, C] -> [B, 2H, 2W, out_ch or C]."""
        o = self.opts
        out_ch = self.out_ch or x.shape[-1]
        if not self.with_conv:
            if o.fir:
                return resample.upsample_2d(x, o.fir_kernel)
            return resample.naive_upsample_2d(x)
        if not o.fir:
            return conv3x3(out_ch, o)(resample.naive_upsample_2d(x))
        w, b = _fir_conv_weights(self, x.shape[-1], out_ch, o)
        return resample.upsample_conv_2d(x.astype(o.dtype), w, o.fir_kernel) + b


class Downsample(nn.Module):
    """2× down-sampling, optionally with a 3×3 conv to `out_ch` features.

    With FIR and a conv this is StyleGAN2's fused down-sampling convolution.
    """

    out_ch: int | None = None
    with_conv: bool = False
    opts: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, H, W, C] -> [B, H/2, W/2, out_ch or C]."""
        o = self.opts
        out_ch = self.out_ch or x.shape[-1]
        if not self.with_conv:
            if o.fir:
                return resample.downsample_2d(x, o.fir_kernel)
            return resample.naive_downsample_2d(x)
        if not o.fir:
            return conv3x3(out_ch, o, stride=2)(x)
        w, b = _fir_conv_weights(self, x.shape[-1], out_ch, o)
        return resample.conv_downsample_2d(x.astype(o.dtype), w, o.fir_kernel) + b


class Combine(nn.Module):
    """Merges the down-sampled input image x into features y through a 1×1 conv.

    Attributes:
      method: 'sum' (h + y, keeps y's channels) or 'cat' (concatenates, doubling them).
    """

    method: str = "sum"
    opts: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """x [B, H, W, C], y [B, H, W, F] -> [B, H, W, F] ('sum') or [B, H, W, 2F]."""
        h = conv1x1(y.shape[-1], self.opts)(x).astype(self.opts.dtype)
        y = y.astype(self.opts.dtype)
        if self.method == "sum":
            return h + y
        if self.method == "cat":
            return jnp.concatenate([h, y], axis=-1)
        raise ValueError(f"Combine method must be 'sum' or 'cat', got {self.method!r}")


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, with a residual connection.

    Queries, keys and values are per-pixel linear maps of GroupNorm(x); logits are scaled
    by C^-1/2 and the softmax is taken in float32. The output projection uses init_scale.
    """

    opts: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, H, W, C] -> [B, H, W, C]."""
        o = self.opts
        b, hgt, wid, c = x.shape
        h = group_norm(x, o, name="norm")
        q = dense(c, o, init_scale=0.1, name="query")(h).reshape(b, hgt * wid, c)
        k = dense(c, o, init_scale=0.1, name="key")(h).reshape(b, hgt * wid, c)
        v = dense(c, o, init_scale=0.1, name="value")(h).reshape(b, hgt * wid, c)
        logits = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(logits * c**-0.5, axis=-1).astype(o.dtype)
        h = jnp.einsum("bqk,bkc->bqc", weights, v).reshape(b, hgt, wid, c)
        h = dense(c, o, init_scale=o.init_scale, name="out")(h)
        return residual(x, h, o)
