"""NCSN++ (Song et al. 2021, score_sde) as a noise-conditional ε-network.

The architecture and initialisation follow score_sde's `ncsnpp` model exactly (the
default fields are the configuration of Adam et al. 2022 / score_sde's
`ve/celebahq_256_ncsnpp_continuous`, 65,542,023 parameters at 256² and C = 1), but the
module returns

    ε_θ(x, σ) = σ · s_θ(x, σ),

*not* the score: the caller divides by σ (score_sde's `scale_by_sigma` divides inside).
With x = x₀ + σ z, denoising score matching trains ε_θ ≈ −z.

With `sigma_data > 0` the U-Net F is wrapped in EDM's preconditioning (Karras et al. 2022):
the denoiser D = c_skip x + c_out F(c_in x, σ), with c_in = 1/√(σ² + σ_d²),
c_skip = σ_d²/(σ² + σ_d²), c_out = σ σ_d/√(σ² + σ_d²), and the module still returns
ε_θ = (D − x)/σ, so every caller of the score is unchanged. F's input and target then have unit
variance at every σ, and a zero F is the exact score of N(0, σ_d² I) data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlens.nn.embedding import GaussianFourierProjection
from jaxlens.nn.layers import AttnBlock, BlockOptions, act, conv3x3, dense, group_norm
from jaxlens.nn.levels import (
    COMBINE,
    PROGRESSIVE,
    PROGRESSIVE_INPUT,
    RESBLOCK_TYPES,
    DownLevel,
    UpLevel,
    make_resblock,
)

__all__ = ["NCSNpp", "param_count", "init_params"]


class NCSNpp(nn.Module):
    """NCSN++ U-Net conditioned on the noise level σ through Fourier features of log σ.

    Input images are used as given (score_sde first maps [0, 1] data to [−1, 1] when
    `data.centered` is False; here normalisation belongs to the data pipeline).

    Attributes:
      nf: base number of features.
      ch_mult: feature multiplier per resolution, finest first; the image is halved
        len(ch_mult) − 1 times.
      num_res_blocks: residual blocks per resolution in the encoder (one more in the
        decoder).
      attn_resolutions: spatial sizes (in pixels) at which attention is applied; each
        must be one of the network's resolutions. The bottleneck always has attention.
      dropout: dropout rate in residual blocks; uses the 'dropout' RNG when train=True.
      resamp_with_conv: give stand-alone Upsample/Downsample layers a conv (these only
        appear with resblock_type='ddpm').
      conditional: condition residual blocks on the σ embedding (a 2-layer MLP).
      fir: FIR resampling with `fir_kernel`; otherwise nearest / mean pooling.
      fir_kernel: 1-D FIR taps.
      skip_rescale: divide every residual sum by √2.
      init_scale: init scale of the last layer of each residual branch (convolution or
        attention output) and of the output convolutions (0 -> 1e-10: blocks start as
        the identity).
      resblock_type: 'biggan' (resampling inside residual blocks) or 'ddpm'.
      progressive: output pyramid, 'output_skip', 'residual' or 'none'.
      progressive_input: input pyramid, 'input_skip', 'residual' or 'none'.
      progressive_combine: how 'input_skip' merges the image, 'sum' or 'cat'.
      fourier_scale: standard deviation of the Fourier frequencies of log σ.
      dtype: compute dtype (e.g. jnp.bfloat16); GroupNorm, softmax, the σ embedding and
        the output pyramid stay in float32, and the output is always float32.
      param_dtype: parameter dtype.
      sigma_data: > 0: EDM preconditioning with this data standard deviation; 0: none (score_sde).
    """

    nf: int = 128
    ch_mult: Sequence[int] = (1, 1, 2, 2, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.0
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = True
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0
    resblock_type: str = "biggan"
    progressive: str = "output_skip"
    progressive_input: str = "input_skip"
    progressive_combine: str = "sum"
    fourier_scale: float = 16.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    sigma_data: float = 0.0

    def __post_init__(self):
        _check_fields(self)
        super().__post_init__()

    @property
    def opts(self) -> BlockOptions:
        return BlockOptions(
            dropout=self.dropout,
            fir=self.fir,
            fir_kernel=tuple(self.fir_kernel),
            skip_rescale=self.skip_rescale,
            init_scale=self.init_scale,
            resamp_with_conv=self.resamp_with_conv,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

    def resolutions(self, image_size: int) -> tuple[int, ...]:
        """Spatial size at each level, finest first."""
        return tuple(image_size >> i for i in range(len(self.ch_mult)))

    @nn.compact
    def __call__(self, x: jax.Array, sigma: jax.Array, *, train: bool = False) -> jax.Array:
        """ε_θ(x, σ); the score is ε_θ / σ.

        Args:
          x: [B, H, W, C] noisy images, H = W divisible by 2^(len(ch_mult) − 1).
          sigma: [B] (or scalar) noise standard deviations, > 0, in the units of x.
          train: enables dropout (needs the 'dropout' RNG if dropout > 0).

        Returns:
          [B, H, W, C] float32 ε_θ.

        Raises:
          ValueError: for a bad shape, an image size incompatible with ch_mult or
            attn_resolutions, or feature counts GroupNorm cannot split.
        """
        sigma = self._check_inputs(x, sigma)
        if self.sigma_data > 0:
            s = sigma.astype(jnp.float32)[:, None, None, None]
            norm = jnp.sqrt(jnp.square(s) + self.sigma_data**2)
            f = self._unet(x / norm, sigma, train)
            # ε = (D − x)/σ with D = c_skip x + c_out F, written without cancellation at small σ.
            return self.sigma_data * f / norm - s * x.astype(jnp.float32) / jnp.square(norm)
        return self._unet(x, sigma, train)

    def _unet(self, x: jax.Array, sigma: jax.Array, train: bool) -> jax.Array:
        o = self.opts
        temb = self._embed(sigma)
        hs = self._encode(x, temb, train)
        h = make_resblock(self.resblock_type, None, o, "mid_res_0")(hs[-1], temb, train=train)
        h = AttnBlock(o, name="mid_attn")(h)
        h = make_resblock(self.resblock_type, None, o, "mid_res_1")(h, temb, train=train)
        h, pyramid = self._decode(h, temb, hs, x.shape[-1], train)
        if self.progressive == "output_skip":
            return pyramid.astype(jnp.float32)
        h = act(group_norm(h, o, name="norm_out"))
        out = conv3x3(x.shape[-1], o, init_scale=self.init_scale, name="conv_out")(h)
        return out.astype(jnp.float32)

    def _encode(self, x: jax.Array, temb: jax.Array | None, train: bool) -> list[jax.Array]:
        """All encoder activations, finest first; the last one feeds the bottleneck."""
        resolutions = self.resolutions(x.shape[1])
        image = x if self.progressive_input != "none" else None
        hs = [conv3x3(self.nf, self.opts, name="conv_in")(x)]
        for i, mult in enumerate(self.ch_mult):
            level = DownLevel(
                self.nf * mult, self.num_res_blocks, resolutions[i] in self.attn_resolutions,
                downsample=i < len(self.ch_mult) - 1, resblock_type=self.resblock_type,
                progressive_input=self.progressive_input, combine=self.progressive_combine,
                opts=self.opts, name=f"down_{i}",
            )
            skips, image = level(hs[-1], temb, image, train=train)
            hs.extend(skips)
        return hs

    def _decode(self, h, temb, hs: list[jax.Array], channels: int, train: bool):
        """Decoder levels, coarsest first, each consuming num_res_blocks + 1 skips."""
        resolutions = self.resolutions(hs[0].shape[1])
        n = self.num_res_blocks + 1
        pyramid = None
        for i in reversed(range(len(self.ch_mult))):
            skips, hs = hs[:-n - 1:-1], hs[:-n]
            level = UpLevel(
                self.nf * self.ch_mult[i], resolutions[i] in self.attn_resolutions,
                upsample=i > 0, image_channels=channels, resblock_type=self.resblock_type,
                progressive=self.progressive, opts=self.opts, name=f"up_{i}",
            )
            h, pyramid = level(h, temb, skips, pyramid, train=train)
        return h, pyramid

    def _embed(self, sigma: jax.Array) -> jax.Array | None:
        embed = GaussianFourierProjection(
            self.nf, self.fourier_scale, self.param_dtype, name="fourier"
        )
        temb = embed(jnp.log(sigma.astype(jnp.float32)))
        if not self.conditional:
            return None
        temb = dense(4 * self.nf, self.opts, name="temb_0")(temb)
        return dense(4 * self.nf, self.opts, name="temb_1")(act(temb))

    def _check_inputs(self, x: jax.Array, sigma: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"NCSNpp expects x of shape [B, H, W, C], got {x.shape}")
        batch, height, width, _ = x.shape
        if height != width:
            raise ValueError(f"NCSNpp expects square images, got H={height}, W={width}")
        factor = 2 ** (len(self.ch_mult) - 1)
        if height % factor:
            raise ValueError(
                f"image size {height} must be divisible by 2^(len(ch_mult)-1) = {factor} "
                f"for ch_mult={tuple(self.ch_mult)}"
            )
        resolutions = self.resolutions(height)
        missing = sorted(set(self.attn_resolutions) - set(resolutions))
        if missing:
            raise ValueError(
                f"attn_resolutions {missing} are not among the resolutions {resolutions} "
                f"of a {height}² image with ch_mult={tuple(self.ch_mult)}"
            )
        sigma = jnp.asarray(sigma)
        if sigma.ndim == 0:
            sigma = jnp.broadcast_to(sigma, (batch,))
        if sigma.shape != (batch,):
            raise ValueError(
                f"sigma must be a scalar or of shape [B]=({batch},), got {sigma.shape}"
            )
        return sigma


def _check_fields(m: NCSNpp) -> None:
    choices = {
        "resblock_type": (m.resblock_type, RESBLOCK_TYPES),
        "progressive": (m.progressive, PROGRESSIVE),
        "progressive_input": (m.progressive_input, PROGRESSIVE_INPUT),
        "progressive_combine": (m.progressive_combine, COMBINE),
    }
    for field, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"NCSNpp.{field} must be one of {allowed}, got {value!r}")
    if m.nf < 1 or not m.ch_mult or min(m.ch_mult) < 1:
        raise ValueError(f"need nf >= 1 and positive ch_mult, got nf={m.nf}, ch_mult={m.ch_mult}")
    if m.num_res_blocks < 1:
        raise ValueError(f"num_res_blocks must be >= 1, got {m.num_res_blocks}")
    if not 0.0 <= m.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {m.dropout}")
    if not m.fir_kernel:
        raise ValueError("fir_kernel must have at least one tap")
    if not (m.sigma_data >= 0 and math.isfinite(m.sigma_data)):
        raise ValueError(f"sigma_data must be >= 0 (0: no preconditioning), got {m.sigma_data}")


_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _dummy_inputs(image_size: int, channels: int, batch: int = 1):
    x = jax.ShapeDtypeStruct((batch, image_size, image_size, channels), jnp.float32)
    return x, jax.ShapeDtypeStruct((batch,), jnp.float32)


def init_params(module: nn.Module, key: jax.Array, image_size: int, channels: int) -> Any:
    """Initial parameters of `module` for [B, image_size, image_size, channels] inputs.

    Args:
      module: an NCSNpp (or any module with the same call signature).
      key: PRNG key for the 'params' RNG.
      image_size: H = W of the images.
      channels: C of the images.

    Returns:
      The 'params' collection (a nested dict of float arrays).
    """
    x, sigma = _dummy_inputs(image_size, channels)

    def init(key):
        variables = module.init({"params": key}, jnp.zeros(x.shape), jnp.ones(sigma.shape))
        return variables["params"]

    # One XLA program, compiled without backend optimisation: with the default level,
    # XLA:CPU spends ~10x longer compiling the hundreds of threefry draws than running them.
    compiled = jax.jit(init).lower(key).compile(compiler_options=_FAST_COMPILE)
    return compiled(key)


def param_count(module: nn.Module, image_size: int, channels: int) -> int:
    """Number of parameters, from the shapes of `init` under `jax.eval_shape` (no FLOPs
    and no parameter memory, so it is cheap even for the 65M-parameter network)."""
    x, sigma = _dummy_inputs(image_size, channels)
    init = functools.partial(module.init, train=False)
    shapes = jax.eval_shape(init, jax.random.key(0), x, sigma)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes["params"]))
