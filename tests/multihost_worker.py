"""One process of the two-process sampling test (tests/test_multihost.py).

Run as ``python tests/multihost_worker.py PROCESS_ID PORT OUT_DIR`` with
XLA_FLAGS giving each process its CPU devices. It joins a two-process JAX
runtime over gloo, samples the posterior of `problem()` with chunks written to
OUT_DIR, deletes the second chunk (process 0), resumes, and saves both results
as OUT_DIR/result_<PROCESS_ID>.npz. Exit code 3 with 'GLOO_UNAVAILABLE' means
this jaxlib has no gloo CPU collectives.
"""

from __future__ import annotations

import os
import sys

RUN = dict(n_chains=10, n_steps=120, chunk_size=6, progress=False, likelihood="eq19")


def problem():
    """The shared inputs: (key, score_fn, y, A, AT, sigma_n, sde)."""
    import jax

    from jaxlens.lensing import Geometry, LensParams, lens_operator, simulate
    from jaxlens.reference import gaussian_prior_sample, gaussian_prior_score, smooth_gaussian_prior
    from jaxlens.sde import VESDE

    geom = Geometry(src_npix=16, src_fov=2.0, fine_npix=32, img_fov=3.0, pool=2)
    lens = LensParams(1.0, 0.1, -0.05, 0.02, -0.03, 0.02, 0.01)
    sde = VESDE(1e-3, 40.0)
    prior = smooth_gaussian_prior((16, 16, 1))
    A, AT = lens_operator(lens, geom)
    x = gaussian_prior_sample(jax.random.key(5), prior, 1)[0]
    y = simulate(jax.random.key(6), x, lens, geom, 0.05)
    return jax.random.key(11), gaussian_prior_score(prior, sde), y, A, AT, 0.05, sde


def main(process_id: int, port: int, out_dir: str) -> None:
    import jax

    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception as err:  # noqa: BLE001 - any failure here means no gloo
        print(f"GLOO_UNAVAILABLE {err!r}", flush=True)
        sys.exit(3)
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                               process_id=process_id, initialization_timeout=90)
    import numpy as np
    from jax.experimental import multihost_utils

    from jaxlens.sample import sample_posterior

    assert jax.process_count() == 2 and jax.device_count() == 2 * jax.local_device_count()
    key, score, y, A, AT, sigma_n, sde = problem()
    first = sample_posterior(key, score, y, A, AT, sigma_n, sde, out_dir=out_dir, **RUN)
    if process_id == 0:
        os.remove(os.path.join(out_dir, "chunks", "chunk_00001.npz"))
    multihost_utils.sync_global_devices("chunk 1 deleted")
    computed = []
    resumed = sample_posterior(key, score, y, A, AT, sigma_n, sde, out_dir=out_dir,
                               on_chunk=lambda c, n: computed.append(c), **RUN)
    np.savez(os.path.join(out_dir, f"result_{process_id}.npz"), first=first, resumed=resumed,
             computed=np.asarray(computed), n_devices=jax.device_count())
    jax.distributed.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
