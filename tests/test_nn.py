"""Tests for jaxlens.nn: FIR resampling against scipy, the NCSN++ parameter count of the
paper, and the behaviour the trainer and the sampler rely on."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import convolve2d, upfirdn

from jaxlens.nn import (
    NCSNpp,
    conv_downsample_2d,
    downsample_2d,
    init_params,
    param_count,
    upfirdn2d,
    upsample_2d,
    upsample_conv_2d,
)

TAPS = np.array([1.0, 3.0, 3.0, 1.0])
TINY = dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,))
SIZE = 16


# ----------------------------------------------------------------------------- GroupNorm


@pytest.mark.parametrize("shape,groups", [((2, 8, 8, 32), 8), ((1, 16, 16, 64), 16), ((3, 4, 4, 256), 32)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_group_norm_matches_flax_with_the_same_parameters(shape, groups, dtype):
    import flax.linen as nn

    from jaxlens.nn.layers import GroupNorm

    # An offset larger than the spread exercises E[x²] − mean² in float32, as flax does it.
    x = (3.0 * jax.random.normal(jax.random.key(0), shape) + 5.0).astype(dtype)
    ours, ref = GroupNorm(num_groups=groups), nn.GroupNorm(num_groups=groups, epsilon=1e-6, dtype=jnp.float32)
    params = ref.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, params)
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(2), p.shape), params)
    got, want = ours.apply(params, x), ref.apply(params, x.astype(jnp.float32))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, rtol=1e-5)
    # Each group of the output is standardised before the per-channel affine map.
    z = (np.asarray(got) - np.asarray(params["params"]["bias"])) / np.asarray(params["params"]["scale"])
    z = z.reshape(shape[0], -1, groups, shape[-1] // groups).transpose(0, 2, 1, 3).reshape(shape[0], groups, -1)
    np.testing.assert_allclose(z.mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(-1), 1.0, atol=1e-4)


# ----------------------------------------------------------------------------- FIR


def _separable_upfirdn(x, up, down, keep):
    """scipy.signal.upfirdn along H then W, keeping `keep` of each full output."""
    h = TAPS / TAPS.sum() * up
    for axis in (1, 2):
        x = np.apply_along_axis(lambda v: upfirdn(h, v, up, down)[keep], axis, x)
    return x


def _conv_same_numpy(x, w):
    """Cross-correlation with zero 'SAME' padding: [B,H,W,I] ⊛ [k,k,I,O]."""
    k = w.shape[0]
    xp = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    windows = sliding_window_view(xp, (k, k), axis=(1, 2))  # [B, H, W, I, k, k]
    return np.einsum("bhwikl,klio->bhwo", windows, w)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)


def test_fir_upsample_matches_scipy_upfirdn(images):
    # Full output index m of the up-sampled sequence is StyleGAN2's output m - 1.
    expected = _separable_upfirdn(images, 2, 1, slice(1, 33))
    got = jax.jit(upsample_2d)(images)
    assert got.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_fir_downsample_matches_scipy_upfirdn(images):
    expected = _separable_upfirdn(images, 1, 2, slice(1, 9))
    got = jax.jit(downsample_2d)(images)
    assert got.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("up, down, pad", [(2, 1, (2, 1)), (1, 2, (1, 1)), (3, 2, (0, 2))])
def test_upfirdn2d_with_2d_kernel_matches_scipy_convolve2d(images, up, down, pad):
    kernel = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
    z = np.zeros((2, 16 * up, 16 * up, 3), np.float32)
    z[:, ::up, ::up] = images
    z = np.pad(z, ((0, 0), pad, pad, (0, 0)))
    expected = np.stack(
        [
            np.stack([convolve2d(z[b, :, :, c], kernel, mode="valid") for c in range(3)], -1)
            for b in range(2)
        ]
    )[:, ::down, ::down]
    got = upfirdn2d(images, kernel, up=up, down=down, pad=pad)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # A separable 2-D kernel gives the same as its 1-D taps (the fast path).
    taps = np.array([1.0, 3.0, 3.0, 1.0], np.float32)
    np.testing.assert_allclose(
        upfirdn2d(images, np.outer(taps, taps), up=up, down=down, pad=pad),
        upfirdn2d(images, taps, up=up, down=down, pad=pad),
        rtol=1e-5, atol=1e-4,
    )


@pytest.mark.parametrize("taps", [[1.0, 3.0, 3.0, 1.0], [0.5, -1.0, 2.0, 4.0, 1.5]])
@pytest.mark.parametrize("up, pad", [(2, (2, 1)), (2, (0, 0)), (3, (1, 4)), (2, (6, 5)), (4, (0, 3))])
def test_polyphase_upsampling_equals_zero_insertion_then_filtering(images, taps, up, pad):
    """The 1-D up-sampling path (polyphase) against the definition: insert up − 1 zeros after each pixel,
    pad, convolve along each axis with numpy, keeping the 'valid' outputs."""
    taps = np.asarray(taps, np.float32)
    z = np.zeros((2, 16 * up, 16 * up, 3), np.float64)
    z[:, ::up, ::up] = images
    z = np.pad(z, ((0, 0), pad, pad, (0, 0)))
    for axis in (1, 2):
        z = np.apply_along_axis(lambda v: np.convolve(v, taps, mode="valid"), axis, z)
    got = jax.jit(lambda x: upfirdn2d(x, taps, up=up, pad=pad))(images)
    assert got.shape == z.shape
    np.testing.assert_allclose(got, z, atol=1e-4)


def test_fir_keeps_constants_away_from_borders():
    const = np.full((1, 16, 16, 2), 2.5, np.float32)
    np.testing.assert_allclose(upsample_2d(const)[:, 2:-2, 2:-2], 2.5, rtol=1e-6)
    np.testing.assert_allclose(downsample_2d(const)[:, 1:-1, 1:-1], 2.5, rtol=1e-6)
    # Pixels outside the image are zero, so the border loses 1/8 per side of the kernel.
    np.testing.assert_allclose(downsample_2d(const)[0, 0, 4, 0], 2.5 * 7 / 8, rtol=1e-6)


def test_fir_down_of_up_recovers_smooth_image():
    yy, xx = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    smooth = np.sin(2 * np.pi * xx / 32.0) * np.cos(2 * np.pi * yy / 32.0)
    smooth = smooth[None, :, :, None].astype(np.float32)
    back = downsample_2d(upsample_2d(smooth))
    # The [1,3,3,1] low-pass of a 1/32-cycle wave changes it by ≈ 1 - cos terms ~ 1%.
    np.testing.assert_allclose(back[:, 3:-3, 3:-3], smooth[:, 3:-3, 3:-3], atol=0.03)


def test_fused_resampling_convs_equal_unfused_in_the_interior(images):
    w = np.random.default_rng(1).normal(size=(3, 3, 3, 4)).astype(np.float32)
    up_fused = np.asarray(jax.jit(upsample_conv_2d)(images, w))
    up_ref = _conv_same_numpy(np.asarray(upsample_2d(images)), w)
    assert up_fused.shape == up_ref.shape == (2, 32, 32, 4)
    np.testing.assert_allclose(up_fused[:, 3:-3, 3:-3], up_ref[:, 3:-3, 3:-3], atol=1e-4)
    down_fused = np.asarray(jax.jit(conv_downsample_2d)(images, w))
    down_ref = np.asarray(downsample_2d(_conv_same_numpy(images, w)))
    assert down_fused.shape == down_ref.shape == (2, 8, 8, 4)
    np.testing.assert_allclose(down_fused[:, 1:-1, 1:-1], down_ref[:, 1:-1, 1:-1], atol=1e-4)


# ----------------------------------------------------------------------- parameters


def test_paper_configuration_has_the_reference_parameter_count():
    assert param_count(NCSNpp(), 256, 1) == 65_542_023


def test_parameter_count_grows_with_channels_as_the_architecture_predicts():
    # Each image channel adds: conv_in (9·nf), one 1×1 Combine conv per down-sampling
    # (nf·ch_mult[i], i < L-1) and one 3×3 pyramid conv with bias per level.
    nf, ch_mult = 16, (1, 2, 2)
    per_channel = 9 * nf + sum(nf * m for m in ch_mult[:-1]) + sum(9 * nf * m + 1 for m in ch_mult)
    model = NCSNpp(nf=nf, ch_mult=ch_mult, attn_resolutions=(8,))
    assert param_count(model, 32, 3) - param_count(model, 32, 1) == 2 * per_channel


# -------------------------------------------------------------------------- network


def _apply(model):
    def apply(params, x, sigma, key=None):
        train = key is not None
        rngs = {"dropout": key} if train else None
        return model.apply({"params": params}, x, sigma, train=train, rngs=rngs)

    return jax.jit(apply)


@pytest.fixture(scope="module")
def default3():
    """The tiny network with score_sde's default init (init_scale 0), on 3 channels.

    The same two images are seen at low σ (rows 0-1) and high σ (rows 2-3); one
    `init_with_output` gives parameters and outputs in a single compilation.
    """
    model = NCSNpp(**TINY)
    x = jax.random.normal(jax.random.key(4), (2, SIZE, SIZE, 3))
    x = jnp.concatenate([x, x])
    sigma = jnp.array([0.01, 0.2, 5.0, 80.0])
    init = jax.jit(lambda k: model.init_with_output(k, x, sigma))
    key = jax.random.key(3)
    out, variables = init.lower(key).compile({"xla_backend_optimization_level": 0})(key)
    return variables["params"], x[:2], out[:2], out[2:]


@pytest.fixture(scope="module")
def tiny():
    """The tiny network with init_scale 1 (every branch matters at init), on 1 channel."""
    model = NCSNpp(**TINY, init_scale=1.0, dropout=0.3)
    params = init_params(model, jax.random.key(0), SIZE, 1)
    x = jax.random.normal(jax.random.key(1), (3, SIZE, SIZE, 1))
    sigma = jnp.array([0.05, 1.0, 20.0])
    return model, params, x, sigma, _apply(model)


def test_initialisation_follows_score_sde(default3):
    params = default3[0]
    kernel = np.asarray(params["conv_in"]["kernel"])  # [3, 3, 3, nf]
    limit = math.sqrt(3.0 * 2.0 / (9 * 3 + 9 * TINY["nf"]))  # variance_scaling fan_avg uniform
    assert kernel.shape == (3, 3, 3, TINY["nf"])
    assert 0.8 * limit < np.abs(kernel).max() <= limit
    # init_scale = 0 -> scale 1e-10: the last conv of each residual branch starts at ~0.
    last = np.asarray(params["down_0"]["res_0"]["conv_1"]["kernel"])  # [3, 3, nf, nf]
    limit = math.sqrt(3.0 * 1e-10 * 2.0 / (9 * TINY["nf"] * 2))
    assert 0.8 * limit < np.abs(last).max() <= limit
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))


def test_output_shape_dtype_for_one_and_three_channels(tiny, default3):
    _, params, x, sigma, apply = tiny
    for out, inp in ((apply(params, x, sigma), x), (default3[2], default3[1])):
        assert out.shape == inp.shape and out.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(out))) and float(jnp.abs(out).max()) > 0


def test_residual_branches_start_near_zero_with_zero_init_scale(default3):
    # With init_scale = 0 every σ-dependent branch ends in a layer of scale 1e-10, so at
    # init the output hardly depends on σ (score_sde's initialisation); with init_scale
    # 1 it changes at O(1) (test_output_depends_on_sigma).
    _, _, out, other = default3
    assert float(jnp.max(jnp.abs(out - other))) < 1e-3 * float(jnp.max(jnp.abs(out)))


def test_deterministic_without_train_and_dropout_with_it(tiny):
    _, params, x, sigma, apply = tiny
    a, b = apply(params, x, sigma), apply(params, x, sigma)
    np.testing.assert_array_equal(a, b)
    # 'rbg' keys only because XLA:CPU compiles them faster than threefry dropout masks.
    d1 = apply(params, x, sigma, jax.random.key(1, impl="rbg"))
    d1_again = apply(params, x, sigma, jax.random.key(1, impl="rbg"))
    d2 = apply(params, x, sigma, jax.random.key(2, impl="rbg"))
    np.testing.assert_array_equal(d1, d1_again)
    assert float(jnp.max(jnp.abs(d1 - d2))) > 1e-3
    assert float(jnp.max(jnp.abs(d1 - a))) > 1e-3


def test_edm_preconditioning_at_init_is_the_exact_gaussian_score():
    # With zero-init output layers F ≈ 0, so D = c_skip x and ε = −σ x/(σ² + σ_d²): the exact ε of
    # N(0, σ_d² I) data, at small and large σ alike (no cancellation at σ = 1e-4).
    sd = 0.3
    model = NCSNpp(**TINY, sigma_data=sd)
    x = jax.random.normal(jax.random.key(1), (3, SIZE, SIZE, 1))
    sigma = jnp.array([1e-4, 0.3, 50.0])
    init = jax.jit(lambda k: model.init_with_output(k, x, sigma))
    key = jax.random.key(0)
    out, _ = init.lower(key).compile({"xla_backend_optimization_level": 0})(key)
    s = sigma[:, None, None, None]
    # F is ~1e-5, not 0, at init (the output pyramid), hence atol.
    np.testing.assert_allclose(out, -s * x / (s**2 + sd**2), rtol=1e-4, atol=1e-4)


def test_output_depends_on_sigma(tiny):
    _, params, x, sigma, apply = tiny
    out = apply(params, x, sigma)
    other = apply(params, x, sigma * 3.0)
    rel = jnp.linalg.norm((out - other).reshape(3, -1), axis=1) / jnp.linalg.norm(
        out.reshape(3, -1), axis=1
    )
    assert float(rel.min()) > 1e-2


def test_batched_call_equals_per_example_calls_under_vmap(tiny):
    model, params, x, sigma, apply = tiny
    batched = apply(params, x, sigma)

    def one(xi, si):
        # A scalar σ is broadcast over the (one-image) batch.
        return model.apply({"params": params}, xi[None], si)[0]

    per_example = jax.jit(jax.vmap(one))(x, sigma)
    np.testing.assert_allclose(per_example, batched, rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_stays_close(tiny):
    model, params, x, sigma, apply = tiny
    bf16 = model.clone(dtype=jnp.bfloat16)
    shapes = jax.eval_shape(
        lambda k: bf16.init(k, jnp.zeros(x.shape), jnp.ones(sigma.shape)), jax.random.key(0)
    )
    assert jax.tree.structure(shapes["params"]) == jax.tree.structure(params)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))
    # Every convolution and matmul really runs on bfloat16 operands.
    hlo = _apply(bf16).lower(params, x, sigma).as_text().splitlines()
    ops = [line for line in hlo if "stablehlo.convolution" in line or "dot_general" in line]
    operand_types = [line.rsplit(" : (", 1)[1].split("->")[0] for line in ops]
    assert len(ops) > 20 and all("f32" not in t and "bf16" in t for t in operand_types)
    ref = apply(params, x, sigma)
    out = _apply(bf16)(params, x, sigma)
    assert out.dtype == jnp.float32
    rel = float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref))
    assert 0 < rel < 0.05, rel


@pytest.mark.parametrize(
    "options",
    [
        dict(resblock_type="ddpm", progressive="residual", progressive_input="residual"),
        dict(progressive="none", progressive_input="input_skip", progressive_combine="cat"),
        dict(fir=False, conditional=False),
    ],
)
def test_score_sde_variants_trace_to_the_right_shapes(options):
    # Shapes only (their resampling numerics are tested above): compiling each variant
    # would dominate the run time of this file.
    model = NCSNpp(**TINY, **options)
    x = jnp.ones((1, SIZE, SIZE, 2))
    out, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x, jnp.ones(1))
    assert out.shape == x.shape and out.dtype == jnp.float32
    names = set(variables["params"])
    assert ("temb_0" in names) == options.get("conditional", True)
    assert ("conv_out" in names) == (options.get("progressive", "output_skip") != "output_skip")


@pytest.mark.parametrize(
    "model, shape, sigma_shape, match",
    [
        (NCSNpp(**{**TINY, "attn_resolutions": ()}), (1, 15, 15, 1), (1,), "divisible"),
        (NCSNpp(nf=8, ch_mult=(1, 2, 2), attn_resolutions=()), (1, 18, 18, 1), (1,), "divisible"),
        (NCSNpp(**TINY), (1, 16, 8, 1), (1,), "square"),
        (NCSNpp(**{**TINY, "attn_resolutions": (4,)}), (1, 16, 16, 1), (1,), "attn_resolutions"),
        (NCSNpp(**TINY), (16, 16, 1), (1,), r"\[B, H, W, C\]"),
        (NCSNpp(**TINY), (2, 16, 16, 1), (3,), "sigma"),
        (NCSNpp(**{**TINY, "nf": 2}), (1, 16, 16, 1), (1,), "GroupNorm"),
    ],
)
def test_bad_inputs_raise_value_error(model, shape, sigma_shape, match):
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape), jnp.ones(sigma_shape))


@pytest.mark.parametrize(
    "field, value",
    [("resblock_type", "ddpm++"), ("progressive", "skip"), ("progressive_combine", "max"),
     ("ch_mult", ()), ("dropout", 1.0), ("sigma_data", -0.1)],
)
def test_bad_fields_raise_value_error(field, value):
    with pytest.raises(ValueError, match=field):
        NCSNpp(**{field: value})
