"""A tiny configuration for tests: 16² images, a ~30k-parameter network, a few steps."""

from configs import default


def get_config():
    c = default.get_config()
    c.data.npix = 16
    c.data.count = 64
    c.model.nf = 8
    c.model.ch_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (8,)
    c.sde.sigma_min = 1e-2
    c.sde.sigma_max = "auto"
    c.training.steps = 6
    c.training.batch_size = 8
    c.training.warmup_steps = 2
    c.training.checkpoint_every = 2
    c.training.log_every = 1
    c.training.grid_samples = 4
    c.training.grid_steps = 10
    c.training.quality_every = 3
    c.training.quality_samples = 8
    c.lens.fine_npix = 32
    c.lens.pool = 2
    c.lens.src_fov = 3.0
    c.lens.img_fov = 5.0
    c.sampling.n_chains = 4
    c.sampling.n_steps = 20
    c.sampling.chunk_size = 2
    return c
