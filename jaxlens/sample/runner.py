"""The runner: the sampling core (`jaxlens.sample.core`) in chunks, on a mesh, with progress.

It adds no mathematics. The chains are those of `posterior_chains` / `prior_chains`:
chain g's randomness depends on (key, g) only, not on how many devices, processes
or chunks the run uses. One device and eight give the same samples, bit for bit
when the per-chain work is elementwise and otherwise up to the float32 rounding of
reductions whose vectorisation depends on the number of chains per device
(≈ 1e-7 relative; CG stopping decisions can amplify this to ≈ the CG tolerance).

Chains are processed in chunks of `chunk_size`. A chunk is padded to a multiple
of the device count, sharded along the mesh axis 'data' (which may span several
processes under `jax.distributed`), and integrated by a `shard_map` of the core's
`advance_chains`, in ~100 segments when a progress bar is shown. With `out_dir`,
process 0 writes each finished chunk at once to out_dir/chunks (see
`chunks.ChunkStore`), and a rerun with the same settings loads finished chunks
instead of recomputing them. Only process 0 touches the disk, so the
processes need no shared filesystem; every process returns all samples.
"""

from __future__ import annotations

import math
import zipfile
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from jaxlens.mesh import data_mesh
from jaxlens.sample.chunks import ChunkStore, array_digest
from jaxlens.sample.core import advance_chains, check_key, denoise_chains, init_chains
from jaxlens.sample.likelihood import Likelihood, Tweedie, likelihood_from_name, posterior_score
from jaxlens.sample.observation import Observation, observe
from jaxlens.sample.solvers import EulerMaruyama, Solver
from jaxlens.sde import VESDE

__all__ = ["sample_prior", "sample_posterior", "sample_observations", "data_mesh"]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

_PROGRESS_UPDATES = 100


def _global(arr: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # Builds a global array from host data that every process holds in full.
    return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])


def _to_host(x: jax.Array) -> np.ndarray:
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _from_process0(value: np.ndarray) -> np.ndarray:
    if jax.process_count() == 1:
        return value
    return np.asarray(multihost_utils.broadcast_one_to_all(value))


def _open_store(out_dir: str | None, settings: dict) -> ChunkStore | None:
    if out_dir is None:
        return None
    store = ChunkStore(str(out_dir), settings)
    error = None
    if jax.process_index() == 0:
        try:
            store.open()
        except ValueError as err:
            error = err
    # All processes must raise together, or the others would wait in a collective.
    if _from_process0(np.int32(error is not None)):
        raise error or ValueError(f"process 0 refused {out_dir}: it holds a run with other settings")
    return store


def _load_everywhere(store: ChunkStore, chunk: int, want: np.ndarray, shape, dtype) -> tuple[np.ndarray, np.ndarray]:
    samples, error = np.zeros((len(want),) + tuple(shape), dtype), None
    cost = np.zeros(len(want), np.int64)
    if jax.process_index() == 0:
        try:
            samples, cost = store.load(chunk, want)
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as err:
            error = err
    if _from_process0(np.int32(error is not None)):
        raise ValueError(f"cannot reuse chunk {chunk} in {store.out_dir}: {error or 'see process 0'}")
    return _from_process0(samples), _from_process0(cost)


def _check_counts(n_chains, n_steps, chunk_size) -> int:
    for name, v in (("n_chains", n_chains), ("n_steps", n_steps)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if chunk_size is None:
        return int(n_chains)
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return min(int(chunk_size), int(n_chains))


def _programs(score_fn, likelihood, sde, solver, mesh, shape, dtype, n_steps, seg, key_impl):
    """The jitted, sharded init / segment / denoise programs of one run.

    The observation, the key and the step offset are arguments, not constants, so
    every chunk and segment of the run reuses the compiled code.
    """

    def chain_score(obs):
        return posterior_score(score_fn, likelihood, obs, sde, counted=True)

    def init(key_data, index):
        key = jax.random.wrap_key_data(key_data, impl=key_impl)
        return init_chains(key, index, sde, shape, dtype)

    def segment(key_data, obs, index, x, start):
        key = jax.random.wrap_key_data(key_data, impl=key_impl)
        steps = start + jnp.arange(seg, dtype=jnp.int32)
        return advance_chains(key, index, x, chain_score(obs), sde, steps, n_steps, solver=solver, with_cost=True)

    def finish(obs, x):
        return denoise_chains(chain_score(obs), sde, x)

    chains = P("data")

    def sharded(fn, in_specs, donate=(), out_specs=chains):
        mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
        return jax.jit(mapped, donate_argnums=donate)

    return (
        sharded(init, (P(), chains)),
        sharded(segment, (P(), P(), chains, chains, P()), donate=(3,), out_specs=(chains, chains)),
        sharded(finish, (P(), chains), donate=(1,)),
    )


def _run(
    key, score_fn, likelihood, obs, sde, shape, dtype, n_chains, n_steps, *, solver, denoise, chunk_size,
    out_dir, mesh, progress, on_chunk, settings,
) -> tuple[np.ndarray, np.ndarray]:
    """(samples [n_chains, ...], network evaluations of each chain [n_chains])."""
    check_key(key)
    chunk_size = _check_counts(n_chains, n_steps, chunk_size)
    mesh = data_mesh() if mesh is None else mesh
    if tuple(mesh.axis_names) != ("data",):
        raise ValueError(f"the mesh must have the single axis 'data', got {mesh.axis_names}")
    n_dev = mesh.devices.size
    padded = math.ceil(chunk_size / n_dev) * n_dev
    n_chunks = math.ceil(n_chains / chunk_size)
    seg = math.ceil(n_steps / _PROGRESS_UPDATES) if progress else n_steps
    n_seg = math.ceil(n_steps / seg)
    key_impl = str(jax.random.key_impl(key))
    key_data = np.asarray(jax.random.key_data(key))

    settings = dict(settings, shape=list(shape), dtype=str(np.dtype(dtype)), n_chains=int(n_chains),
                    n_steps=int(n_steps), chunk_size=chunk_size, sigma_min=sde.sigma_min,
                    sigma_max=sde.sigma_max, solver=repr(solver), denoise=bool(denoise),
                    key=array_digest(key_data), key_impl=key_impl)
    store = _open_store(out_dir, settings)

    init_fn, segment_fn, finish_fn = _programs(score_fn, likelihood, sde, solver, mesh, tuple(shape),
                                               np.dtype(dtype), int(n_steps), seg, key_impl)
    chains = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    key_arg = _global(key_data, replicated)
    if obs is not None:
        obs = jax.tree.map(lambda a: _global(np.asarray(a), replicated), obs)

    def chain_indices(c: int) -> np.ndarray:
        return np.arange(c * chunk_size, min((c + 1) * chunk_size, n_chains), dtype=np.int32)

    done = np.zeros(n_chunks, np.int32)
    if store is not None and jax.process_index() == 0:
        done = np.asarray([store.exists(c) for c in range(n_chunks)], np.int32)
    done = _from_process0(done)

    bar = tqdm(total=int(n_chunks - done.sum()) * n_steps, unit="step", desc="sampling",
               disable=not progress or jax.process_index() != 0)
    results, costs = [], []
    try:
        for c in range(n_chunks):
            want = chain_indices(c)
            if done[c]:
                samples, cost = _load_everywhere(store, c, want, shape, dtype)
                results.append(samples)
                costs.append(cost)
                continue
            bar.set_postfix(chunk=f"{c + 1}/{n_chunks}")
            index = _global(np.arange(c * chunk_size, c * chunk_size + padded, dtype=np.int32), chains)
            x, evaluations = init_fn(key_arg, index), 0
            for s in range(n_seg):
                x, n = segment_fn(key_arg, obs, index, x, _global(np.asarray(s * seg, np.int32), replicated))
                evaluations = evaluations + n  # on the devices: one transfer per chunk, below
                if progress:
                    x.block_until_ready()
                    bar.update(min(seg, n_steps - s * seg))
            cost = _to_host(evaluations)[: len(want)].astype(np.int64)
            if denoise:
                x = finish_fn(obs, x)
                cost += 1
            samples = _to_host(x)[: len(want)]
            if store is not None and jax.process_index() == 0:
                store.save(c, want, samples, cost)
            results.append(samples)
            costs.append(cost)
            if on_chunk is not None:
                on_chunk(c, n_chunks)
    finally:
        bar.close()
    return np.concatenate(results, axis=0), np.concatenate(costs)


def sample_prior(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: VESDE,
    shape: tuple[int, int, int],
    n_chains: int,
    n_steps: int,
    *,
    solver: Solver = EulerMaruyama(),
    denoise: bool = False,
    dtype=jnp.float32,
    chunk_size: int | None = None,
    out_dir: str | None = None,
    mesh: Mesh | None = None,
    progress: bool = True,
    on_chunk: Callable[[int, int], None] | None = None,
    tag: str = "",
    return_cost: bool = False,
):
    """Unconditional samples of the prior by integrating the reverse SDE.

    Args:
      key: typed PRNG key (jax.random.key). Chain g uses fold_in(key, g) only.
      score_fn: prior score of ONE state, score_fn(x [H, W, C], t scalar) → [H, W, C].
      sde: the VE SDE; chains start from σ_max · N(0, I) at t = 1.
      shape: (H, W, C) of one sample.
      n_chains: number of independent chains (samples).
      n_steps: N, steps from t = 1 to t = 0.
      solver: EulerMaruyama() (the paper), PredictorCorrector(...) or ProbabilityFlow(...).
      denoise: apply a final Tweedie step at t = 0.
      dtype: floating dtype of the state.
      chunk_size: chains per chunk (default: all in one chunk).
      out_dir: if set, each finished chunk is written there and a rerun resumes.
      mesh: a Mesh with the one axis 'data' (default: all devices of all processes).
      progress: show a tqdm bar over steps (the scan then runs in ~100 segments).
      on_chunk: called as on_chunk(chunk, n_chunks) after each computed chunk.
      tag: free text stored in the manifest; name the prior (checkpoint) here,
        since the manifest cannot fingerprint score_fn itself.
      return_cost: also return each chain's network evaluations, counted as the run makes
        them (a forward pass, a Jacobian-vector or a vector-Jacobian product each count one).

    Returns:
      samples [n_chains, H, W, C] as a numpy array, on every process; with `return_cost`,
      (samples, evaluations [n_chains]).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"shape must be (H, W, C), got {shape}")
    settings = {"kind": "prior", "tag": str(tag)}
    samples, cost = _run(key, score_fn, None, None, sde, shape, jnp.dtype(dtype), n_chains, n_steps,
                         solver=solver, denoise=denoise, chunk_size=chunk_size, out_dir=out_dir, mesh=mesh,
                         progress=progress, on_chunk=on_chunk, settings=settings)
    return (samples, cost) if return_cost else samples


def sample_posterior(
    key: jax.Array,
    score_fn: ScoreFn,
    y: jax.typing.ArrayLike,
    A: Callable[[jax.Array], jax.Array],
    AT: Callable[[jax.Array], jax.Array],
    sigma_n: jax.typing.ArrayLike,
    sde: VESDE,
    n_chains: int,
    n_steps: int,
    *,
    likelihood: Likelihood | str = Tweedie(),
    mask: jax.typing.ArrayLike | None = None,
    solver: Solver = EulerMaruyama(),
    denoise: bool = False,
    chunk_size: int | None = None,
    out_dir: str | None = None,
    mesh: Mesh | None = None,
    progress: bool = True,
    on_chunk: Callable[[int, int], None] | None = None,
    tag: str = "",
    return_cost: bool = False,
):
    """Posterior samples of the source given a lensed observation y = A x + η.

    The same chains as `posterior_chains(key, score_fn, observe(y, sigma_n, A=A, AT=AT,
    mask=mask), sde, likelihood=..., ...)`, run in resumable chunks over every device.

    Args:
      key: typed PRNG key; chain g uses fold_in(key, g) only.
      score_fn: prior score of ONE state, score_fn(x [H, W, C], t) → [H, W, C].
      y: observation [h, w] or [h, w, C].
      A, AT: lens operator [H, W, C] → [h, w, C] and its adjoint.
      sigma_n: noise std, scalar or a map broadcastable to y (> 0; inf = unused pixel).
      sde: the VE SDE.
      n_chains: number of posterior samples.
      n_steps: N, steps from t = 1 to t = 0.
      likelihood: a term (Tweedie(...), the calibrated default; Eq19(), the paper's; Eq12(...);
        DPS()) or its name, which takes that term's default options.
      mask: optional boolean array broadcastable to y; True marks ignored pixels.
      solver, denoise, chunk_size, out_dir, mesh, progress, on_chunk, tag, return_cost: as in
        `sample_prior`.

    Returns:
      samples [n_chains, H, W, C] as numpy, on every process; with `return_cost`, (samples,
      network evaluations of each chain [n_chains]).

    Raises:
      ValueError: bad noise, non-finite used pixels of y, y not matching A, or an
        unknown likelihood.
    """
    if isinstance(likelihood, str):
        likelihood = likelihood_from_name(likelihood)
    obs = observe(y, sigma_n, A=A, AT=AT, mask=mask)
    shape = obs.source_shape
    probe = np.random.default_rng(0).standard_normal(shape).astype(obs.y.dtype)
    settings = {
        "kind": "posterior",
        "tag": str(tag),
        "likelihood": likelihood.name,
        **likelihood.options(),
        "y": array_digest(obs.y),
        "noise_var": array_digest(obs.noise_var),
        "valid": array_digest(obs.valid),
        "A_probe": array_digest(jax.jit(A)(probe), decimals=4),
    }
    samples, cost = _run(key, score_fn, likelihood, obs, sde, shape, obs.y.dtype, n_chains,
                         n_steps, solver=solver, denoise=denoise, chunk_size=chunk_size, out_dir=out_dir,
                         mesh=mesh, progress=progress, on_chunk=on_chunk, settings=settings)
    return (samples, cost) if return_cost else samples


def sample_observations(
    key: jax.Array,
    score_fn: ScoreFn,
    observations: list[Observation],
    sde: VESDE,
    *,
    likelihood: Likelihood | None = Tweedie(),
    n_chains: int,
    n_steps: int,
    batch: int = 1,
    solver: Solver = EulerMaruyama(),
    first: int = 0,
    progress: bool = True,
    return_cost: bool = False,
):
    """Posterior samples for many observations of one geometry, `batch` of them vmapped at a time.

    Observation k gives `posterior_chains(fold_in(key, first + k), score_fn, observations[k], ...)`
    whatever the batching, so a long study can be run in pieces. The lens of each observation is
    traced (one compilation for every lens); the last batch is padded by repeating an observation.

    Args:
      key: typed PRNG key.
      score_fn: prior score of ONE state.
      observations: from `observe(y, sigma_n, lens=..., geometry=...)`, all of the same shapes.
      sde, likelihood, n_chains, n_steps, solver: as in `posterior_chains`; likelihood=None
        samples the prior (the observations then only set the keys and the batching).
      batch: observations per vmapped call.
      first: the index of observations[0] in the study (its key is fold_in(key, first)).
      progress: a tqdm bar over chain-steps (the scan then runs in ~100 segments).
      return_cost: also return each chain's network evaluations, as in `sample_posterior`.

    Returns:
      samples [len(observations), n_chains, H, W, C] as numpy; with `return_cost`, (samples,
      evaluations [len(observations), n_chains]).
    """
    _check_counts(n_chains, n_steps, None)
    if not observations:
        raise ValueError("no observations to sample")
    if any(o.lens is None for o in observations):
        raise ValueError("sample_observations needs observations made with lens= and geometry=")
    shape, dtype = observations[0].source_shape, observations[0].y.dtype
    seg = math.ceil(n_steps / _PROGRESS_UPDATES) if progress else n_steps
    index = jnp.arange(n_chains, dtype=jnp.int32)

    @jax.jit
    def init(keys):
        return jax.vmap(lambda k: init_chains(k, index, sde, shape, dtype))(keys)

    @jax.jit
    def segment(keys, obs, x, start):
        steps = start + jnp.arange(seg, dtype=jnp.int32)

        def one(k, o, xo):
            score = posterior_score(score_fn, likelihood, o, sde, counted=True)
            return advance_chains(k, index, xo, score, sde, steps, n_steps, solver=solver, with_cost=True)

        return jax.vmap(one)(keys, obs, x)

    n = len(observations)
    order = list(range(n)) + [n - 1] * (-n % batch)
    out, costs = [], []
    with tqdm(total=n * n_chains * n_steps, unit="chain-step", desc="sampling", disable=not progress) as bar:
        for b in range(0, len(order), batch):
            sel = order[b : b + batch]
            keys = jnp.stack([jax.random.fold_in(key, first + i) for i in sel])
            obs = jax.tree.map(lambda *v: jnp.stack(v), *(observations[i] for i in sel))
            x, cost = init(keys), np.zeros((len(sel), n_chains), np.int64)
            for start in range(0, n_steps, seg):
                x, c = segment(keys, obs, x, jnp.int32(start))
                cost += np.asarray(c)
                bar.update(len(set(sel)) * n_chains * min(seg, n_steps - start))
            out.append(np.asarray(x))
            costs.append(cost)
    samples, cost = np.concatenate(out)[:n], np.concatenate(costs)[:n]
    return (samples, cost) if return_cost else samples
