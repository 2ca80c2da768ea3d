"""The paper's configuration: PROBES galaxies at 256², 256² → 128² lens, NCSN++ 65.5M params."""

from configs import default


def get_config():
    c = default.get_config()
    c.data.name = "probes"
    c.data.manual_dir = "~/probes"  # see docs/data.md for the expected files
    c.data.npix = 256
    c.model.nf = 128
    c.model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = (16,)
    c.sde.sigma_min = 1e-4
    c.sde.sigma_max = "auto"  # 263.4 on PROBES
    c.training.batch_size = 64
    c.training.learning_rate = 2e-4
    c.training.warmup_steps = 5000
    c.training.grad_clip = 1.0
    c.training.ema_decay = 0.999
    c.lens.fine_npix = 256
    c.lens.pool = 2
    c.sampling.n_steps = 8000
    c.sampling.n_chains = 320
    c.sampling.chunk_size = 32
    return c
