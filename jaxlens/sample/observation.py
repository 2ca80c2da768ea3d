"""One lensed observation as a pytree: the data, its noise, and the lens that made it.

The observation is y = A x + η with η ~ N(0, diag(σ_n²)). `observe` validates the
inputs once and returns an `Observation` whose arrays are leaves, so a batch of
observations (stacked y, σ_n and lens parameters) can be `jax.vmap`ped, and the
lens can be differentiated:

  obs = observe(y, sigma_n, lens=lens, geometry=geometry)   # A = A(lens), traced or not
  obs = observe(y, sigma_n, A=A, AT=AT)                     # any matrix-free pair

Pixels that are masked or have infinite σ_n carry no information: y is zero there,
σ_n² is one, and `valid` is zero, so they drop out of every sum and linear system.
"""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxlens.lensing import Geometry, LensParams, lens_operator

__all__ = ["Observation", "observe"]

Operator = Callable[[jax.Array], jax.Array]


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(xs))


@flax.struct.dataclass
class Observation:
    """A validated observation; build it with `observe`.

    Attributes:
      y: [h, w, C] data, zero on pixels that carry no information.
      noise_var: [h, w, C] σ_n², one on pixels that carry no information.
      valid: [h, w, C] 1.0 on pixels that are used, 0.0 elsewhere.
      lens: the lens parameters (a pytree: traced under jit, vmap and grad), or None when
        the operator was given directly.
      geometry: the grids (static), with `lens`.
      operator: (A, AT) given directly or already built from the lens (static).
    """

    y: jax.Array
    noise_var: jax.Array
    valid: jax.Array
    lens: LensParams | None = None
    geometry: Geometry | None = flax.struct.field(pytree_node=False, default=None)
    operator: tuple[Operator, Operator] | None = flax.struct.field(pytree_node=False, default=None)

    def operators(self) -> tuple[Operator, Operator]:
        """(A, AT): the given pair, or the lens operator of `lens` (ray-traced on each call)."""
        if self.operator is not None:
            return self.operator
        return lens_operator(self.lens, self.geometry)

    def bind(self) -> "Observation":
        """The same observation with (A, AT) built once, for a loop that applies them many times."""
        return self if self.operator is not None else self.replace(operator=self.operators())

    @property
    def source_shape(self) -> tuple[int, ...]:
        if self.operator is None:
            return (self.geometry.src_npix, self.geometry.src_npix) + tuple(self.y.shape[2:])
        _, AT = self.operator
        return tuple(jax.eval_shape(AT, jax.ShapeDtypeStruct(self.y.shape, self.y.dtype)).shape)

    def residual(self, x: jax.Array) -> jax.Array:
        """Masked residual valid · (y − A x), [h, w, C]."""
        A, _ = self.operators()
        return self.valid * (self.y - A(x))


def observe(
    y: jax.typing.ArrayLike,
    sigma_n: jax.typing.ArrayLike,
    *,
    lens: LensParams | None = None,
    geometry: Geometry | None = None,
    A: Operator | None = None,
    AT: Operator | None = None,
    mask: jax.typing.ArrayLike | None = None,
) -> Observation:
    """Validates an observation and the lens or operator that made it.

    Give either `lens` and `geometry` (A is then `lens_operator(lens, geometry)`, and the
    observation is differentiable in the lens) or the pair `A`, `AT`. Works on traced
    arrays; the value checks then run only where the values are known.

    Args:
      y: observation [h, w] or [h, w, C]; a 2-D y is given a channel axis.
      sigma_n: noise standard deviation in the units of y: a scalar or a map
        broadcastable to y. Must be > 0; +inf marks pixels without information.
      lens: lens parameters (with `geometry`).
      geometry: source, ray-tracing and detector grids (with `lens`).
      A: forward operator, source [H, W, C] → image [h, w, C] (with `AT`).
      AT: its adjoint, [h, w, C] → [H, W, C].
      mask: optional boolean array broadcastable to y; True marks pixels to ignore
        (numpy.ma convention).

    Returns:
      An Observation.

    Raises:
      ValueError: neither or both of (lens, geometry) and (A, AT); σ_n ≤ 0 or NaN;
        NaN/Inf in used pixels of y; a y whose shape is not A's output shape.
    """
    by_lens, by_operator = lens is not None or geometry is not None, A is not None or AT is not None
    if by_lens == by_operator:
        raise ValueError("give either lens= and geometry=, or A= and AT=")
    if by_lens and (lens is None or geometry is None):
        raise ValueError("a lens needs its geometry, and a geometry its lens")
    if by_operator and (A is None or AT is None):
        raise ValueError("give both A and AT")
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.float32)
    if y.ndim == 2:
        y = y[..., None]
    if y.ndim != 3:
        raise ValueError(f"y must be [h, w] or [h, w, C], got shape {y.shape}")
    sigma_n = jnp.asarray(sigma_n, y.dtype)
    if sigma_n.ndim == 2 and y.shape[-1] == 1 and sigma_n.shape == y.shape[:2]:
        sigma_n = sigma_n[..., None]
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        if mask.ndim == 2 and mask.shape == y.shape[:2]:
            mask = mask[..., None]
    for name, arr in (("sigma_n", sigma_n), ("mask", mask)):
        if arr is None:
            continue
        try:
            ok = jnp.broadcast_shapes(arr.shape, y.shape) == y.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{name} of shape {arr.shape} does not broadcast to y's shape {y.shape}")
    sigma_n = jnp.broadcast_to(sigma_n, y.shape)
    valid = jnp.isfinite(sigma_n)
    if mask is not None:
        valid &= ~jnp.broadcast_to(mask, y.shape)
    if _is_concrete(y, sigma_n, valid):
        s, v, yy = np.asarray(sigma_n), np.asarray(valid), np.asarray(y)
        if np.any(np.isnan(s)) or np.any(s <= 0):
            raise ValueError("sigma_n must be > 0 everywhere (use +inf or the mask for unused pixels)")
        if not np.all(np.isfinite(yy[v])):
            raise ValueError("y has NaN or Inf in pixels that are not masked; mask them or set sigma_n=inf")
        if not v.any():
            raise ValueError("every pixel of y is masked or has infinite noise")
    obs = Observation(
        y=jnp.where(valid, y, 0.0),
        noise_var=jnp.where(valid, sigma_n, 1.0) ** 2,
        valid=valid.astype(y.dtype),
        lens=lens,
        geometry=geometry,
        operator=(A, AT) if by_operator else None,
    )
    _check_operator_shapes(obs)
    return obs


def _check_operator_shapes(obs: Observation) -> None:
    y = obs.y
    if obs.operator is None:  # a lens: the shapes follow from the geometry, no ray tracing needed
        g = obs.geometry
        src, out = (g.src_npix, g.src_npix) + y.shape[2:], (g.img_npix, g.img_npix) + y.shape[2:]
        if out != y.shape:
            raise ValueError(f"y has shape {y.shape} but the geometry observes images of shape {out}")
        return
    A, AT = obs.operator
    try:
        src = jax.eval_shape(AT, jax.ShapeDtypeStruct(y.shape, y.dtype)).shape
        out = jax.eval_shape(A, jax.ShapeDtypeStruct(src, y.dtype)).shape
    except (ValueError, TypeError) as err:
        raise ValueError(f"the lens operator does not accept y of shape {y.shape}: {err}") from err
    if out != y.shape:
        raise ValueError(f"y has shape {y.shape} but A maps sources {src} to images {out}")
