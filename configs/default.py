"""Every setting, with its default. Other configs import this and override a few fields.

Run-time overrides: `--config.training.steps=100`, `--config.sampling.n_chains=8`, ...
The config is locked, so a misspelt key is an error.
"""

import ml_collections

from jaxlens.sample import Eq12, Tweedie


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Training data. `name`: procedural_galaxies | probes | fits_folder.
    c.data = d = ml_collections.ConfigDict()
    d.name = "procedural_galaxies"
    d.data_dir = "~/jaxlens_data"  # TFDS array_record files are written and read here
    d.manual_dir = ""  # PROBES / FITS cutouts (probes, fits_folder)
    d.npix = 64
    d.channels = 1
    d.count = 20000  # procedural_galaxies only
    d.normalization = "auto"  # auto (none for procedural, peak for cutouts) | peak | sum | none
    d.augment = True

    # Score network (NCSN++), constructor fields of jaxlens.nn.NCSNpp.
    c.model = m = ml_collections.ConfigDict()
    m.nf = 128
    m.ch_mult = (1, 1, 2, 2, 2, 2, 2)
    m.num_res_blocks = 2
    m.attn_resolutions = (16,)
    m.dropout = 0.0
    m.fir = True
    m.fir_kernel = (1, 3, 3, 1)
    m.skip_rescale = True
    m.fourier_scale = 16.0
    m.init_scale = 0.0
    # EDM preconditioning (c_in, c_skip, c_out) around a data std: "none" (score_sde's ε-network),
    # "auto" (the pixel standard deviation of the training set) or a number, e.g. "0.04".
    m.sigma_data = "none"
    m.dtype = "float32"  # compute dtype: float32 | bfloat16

    # VE SDE. sigma_max: "auto" (largest pairwise distance in the training set) or a number.
    c.sde = s = ml_collections.ConfigDict()
    s.sigma_min = 1e-4
    s.sigma_max = "auto"

    # DSM training (score_sde's recipe).
    c.training = t = ml_collections.ConfigDict()
    t.steps = 1_300_000
    t.batch_size = 64
    t.learning_rate = 2e-4
    t.warmup_steps = 5000
    t.grad_clip = 1.0
    t.ema_decay = 0.999
    t.t_min = 1e-5
    # Noise levels of the loss: uniform_t (t ~ U(t_min, 1), score_sde) | lognormal (ln σ ~
    # N(ln σ_data + p_mean, p_std²), EDM; needs model.sigma_data). A preconditioned network's loss
    # takes EDM's weighting.
    t.noise_levels = "uniform_t"
    t.p_mean = 0.0
    t.p_std = 2.0
    t.checkpoint_every = 5000
    t.keep_checkpoints = 3
    t.log_every = 50
    t.grid_samples = 16  # prior samples drawn into a PNG at each checkpoint
    t.grid_steps = 500
    # Prior quality (morphology KS, prior-alone TARP, each with its noise floor) against the held-out
    # split, logged to metrics.jsonl every quality_every steps (0: never); grid_steps steps per sample.
    t.quality_every = 5000
    t.quality_samples = 64

    # Lens and observation of the simulated (held-out) problem used by bin/sample.
    c.lens = l = ml_collections.ConfigDict()
    l.theta_e = 1.2
    l.e1 = 0.1
    l.e2 = -0.05
    l.center_x = 0.0
    l.center_y = 0.0
    l.gamma1 = 0.02
    l.gamma2 = -0.01
    l.src_fov = 3.0  # arcsec, source plane
    l.img_fov = 6.0  # arcsec, image plane
    l.fine_npix = 256  # ray-tracing grid; the observation has fine_npix / pool pixels
    l.pool = 2
    l.sigma_n = 0.05  # noise std, in source brightness units
    l.source_seed = 1_000_000  # held-out procedural galaxy seed

    # Posterior sampling.
    c.sampling = p = ml_collections.ConfigDict()
    p.n_chains = 16
    p.n_steps = 0  # 0: the smallest N with step_confidence(N) >= confidence (eq19: and >= stable_steps)
    p.confidence = 0.99
    p.chunk_size = 16
    p.likelihood = "eq19"  # eq19 (the paper) | eq12 | tweedie | dps (see jaxlens.sample.likelihood)
    # Each likelihood's own options; their defaults are the library's (one place).
    p.cg_tol = Eq12.cg_tol  # eq12: CG relative tolerance
    p.cg_maxiter = Eq12.cg_maxiter  # eq12: CG iteration cap
    p.lanczos_cap = Tweedie.lanczos_cap  # tweedie: most Jacobian-vector products per step
    p.lanczos_tol = Tweedie.lanczos_tol  # tweedie: relative tolerance of the Lanczos solve
    p.drift_tol = Tweedie.drift_tol  # tweedie: stop the solve once it moves the drift less than this (0: off)
    # tweedie, research: (lo, hi), also differentiate through the covariance where lo <= σ(t) <= hi. Right on
    # exact-score priors; on the shipped learned prior it wrecks the samples (docs/validation.md).
    p.covariance_gradient_sigmas = ml_collections.config_dict.placeholder(tuple)
    p.solver = "em"  # em (the paper) | pc | ode
    p.snr = 0.16  # Langevin corrector signal-to-noise (solver=pc)
    p.denoise = False  # final Tweedie denoising step
    p.seed = 1

    # Joint lens and source inference (bin/sample --fit_lens): Gaussian lens prior around the first guess
    # (--lens, else the config's lens), widths by kind; 0 holds a parameter fixed. See jaxlens.fit_lens.
    c.fit_lens = f = ml_collections.ConfigDict()
    f.enabled = False
    f.theta_e_std = 0.1  # arcsec
    f.e_std = 0.05
    f.center_std = 0.05  # arcsec
    f.gamma_std = 0.02
    f.leapfrog_steps = 3
    f.step_size = 0.5
    f.refresh_cycles = 0
    f.refresh_t = 0.5
    f.n_steps = 200  # one lens move per step: the lens needs more than the source alone (0: sampling.n_steps)
    return c
