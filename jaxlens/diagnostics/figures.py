"""Paper figures with matplotlib, drawn off-screen.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas directly,
never through pyplot, so nothing opens a window, no global figure registry
fills up, and the process's backend is left alone. The format follows the
file suffix (.png, .pdf, .svg, ...).

Conventions: images are shown with origin='lower' (index [i, j] at (x_j, y_i),
FITS-like) and, when a field of view is given, axes in arcsec centred on the
origin. Brightness uses one colour scale per plane so that truth, samples and
mean are comparable; residuals use a diverging map centred on zero.
Multi-band inputs ([..., H, W, C]) are shown one band at a time (`channel`).

Each function returns the path it wrote; `figsize` (inches) and `dpi` fix the
pixel size of raster output exactly (no tight bounding box).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxlens.diagnostics.metrics import posterior_moments, reduced_chi2, residual_snr

__all__ = ["coverage_plot", "figure1", "figure3", "image_grid", "noise_sweep_figure", "save_figure"]

_STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "image.origin": "lower",
    "image.interpolation": "nearest",
    "savefig.facecolor": "white",
}
_RESID_CMAP = "RdBu_r"
_STD_CMAP = "viridis"


def _band(x: np.ndarray, channel: int, what: str, ndim: int) -> np.ndarray:
    """Selects one band: [..., H, W] stays, [..., H, W, C] -> [..., H, W]."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == ndim + 1:
        if not -x.shape[-1] <= channel < x.shape[-1]:
            raise ValueError(f"{what}: channel {channel} out of range for {x.shape[-1]} bands")
        x = x[..., channel]
    if x.ndim != ndim:
        raise ValueError(f"{what}: expected {ndim} (or {ndim + 1} with bands) dimensions, got shape {x.shape}")
    return x


def _extent(fov: float | None, shape: tuple[int, int]):
    if fov is None:
        return (-0.5, shape[1] - 0.5, -0.5, shape[0] - 0.5)
    h = float(fov) / 2.0
    return (-h, h, -h, h)


def _limits(*arrays, lo: float = 0.5, hi: float = 99.5) -> tuple[float, float]:
    values = np.concatenate([np.ravel(a)[np.isfinite(np.ravel(a))] for a in arrays])
    if values.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(values, [lo, hi])
    return (float(vmin), float(vmax)) if vmax > vmin else (float(vmin) - 0.5, float(vmin) + 0.5)


def _symmetric(x, floor: float = 3.0) -> float:
    finite = np.abs(np.ravel(x)[np.isfinite(np.ravel(x))])
    return max(floor, float(np.percentile(finite, 99.5))) if finite.size else floor


def _panel(fig, ax, image, *, fov, title=None, cmap="magma", vmin=None, vmax=None, colorbar=True,
           label=None, ticks=True, xlabel=False, ylabel=False):
    im = ax.imshow(image, extent=_extent(fov, image.shape), cmap=cmap, vmin=vmin, vmax=vmax)
    if title:
        ax.set_title(title)
    if colorbar:
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        cb.ax.tick_params(labelsize=6)
        if label:
            cb.set_label(label, fontsize=7)
    unit = "arcsec" if fov is not None else "pixel"
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        if xlabel:
            ax.set_xlabel(f"x [{unit}]")
        if ylabel:
            ax.set_ylabel(f"y [{unit}]")
    return im


def _note(ax, text: str) -> None:
    ax.text(0.04, 0.96, text, transform=ax.transAxes, ha="left", va="top", color="white", fontsize=7,
            bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5, "edgecolor": "none"})


def _new(figsize, dpi) -> Figure:
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path, *, dpi: float | None = None) -> Path:
    """Writes `fig` to `path` (its folder made if needed), laid out tightly unless it has a layout engine
    already; `dpi` defaults to the figure's. Also for pyplot figures (close them after)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=dpi or fig.dpi)
    return path


def figure1(
    path,
    *,
    truth_source,
    observation,
    samples,
    lens_images_of_samples,
    sigma_n,
    truth_lensed=None,
    src_fov: float | None = None,
    img_fov: float | None = None,
    channel: int = 0,
    sample_indices: tuple[int, int] = (0, 1),
    mask=None,
    cmap: str = "magma",
    figsize: tuple[float, float] = (15.0, 5.4),
    dpi: int = 150,
) -> Path:
    """The layout of Adam et al. (2022) figure 1: source plane on top, image plane below.

    Columns: truth / observation; two posterior samples / their lensed images
    (annotated with χ²_ν); posterior mean; posterior std; residual SNR, which
    is (truth − mean)/std in the source plane and (y − mean of A x)/σ_n in the
    image plane. For real data (`truth_source=None`) the truth and its residual
    panels are left empty: the figure shows only what is known.

    Args:
      path: output file.
      truth_source: [H, W] or [H, W, C], or None for observed data.
      observation: y, [h, w] or [h, w, C].
      samples: posterior samples [N, H, W] or [N, H, W, C], N ≥ 2.
      lens_images_of_samples: A x for each sample, [N, h, w] or [N, h, w, C].
      sigma_n: noise σ_n, scalar or [h, w] map (+inf masks a pixel).
      truth_lensed: optional noise-free A x_true [h, w(, C)]; its χ²_ν against
        y is shown on the observation panel as the reference value (≈ 1).
      src_fov, img_fov: fields of view in arcsec (None: pixel axes).
      channel: band shown for multi-band inputs.
      sample_indices: which two samples to show.
      mask: optional boolean [h, w], True for pixels left out of χ²_ν.
      cmap: brightness colour map.
      figsize, dpi: figure size in inches and resolution.
    """
    truth = None if truth_source is None else _band(truth_source, channel, "truth_source", 2)
    y = _band(observation, channel, "observation", 2)
    xs = _band(samples, channel, "samples", 3)
    axs = _band(lens_images_of_samples, channel, "lens_images_of_samples", 3)
    if truth is not None and xs.shape[1:] != truth.shape:
        raise ValueError(f"samples {xs.shape} do not match truth_source {truth.shape}")
    if axs.shape[1:] != y.shape:
        raise ValueError(f"lens_images_of_samples {axs.shape} do not match observation {y.shape}")
    if axs.shape[0] != xs.shape[0] or xs.shape[0] < 2:
        raise ValueError(f"need N ≥ 2 samples and as many lensed images, got {xs.shape[0]} and {axs.shape[0]}")
    a, b = (int(k) for k in sample_indices)
    if not (0 <= a < xs.shape[0] and 0 <= b < xs.shape[0]):
        raise ValueError(f"sample_indices {sample_indices} out of range for {xs.shape[0]} samples")
    sigma = np.asarray(sigma_n, dtype=np.float64)
    sigma = sigma[..., channel] if sigma.ndim == 3 else sigma
    chi2 = reduced_chi2(y[None] - axs, sigma, mask=mask)

    mean, std = posterior_moments(xs)
    amean, astd = posterior_moments(axs)
    z_img = residual_snr(y, amean, sigma)
    src_lim = _limits(*(v for v in (truth, xs[a], xs[b], mean) if v is not None))
    img_lim = _limits(y, axs[a], axs[b], amean)

    with matplotlib.rc_context(_STYLE):
        fig = _new(figsize, dpi)
        ax = fig.subplots(2, 6)
        top = [(truth, "Ground truth"), (xs[a], f"Sample {a}"), (xs[b], f"Sample {b}"), (mean, "Posterior mean")]
        for k, (img, title) in enumerate(top):
            if img is None:
                ax[0, k].axis("off")
                continue
            _panel(fig, ax[0, k], img, fov=src_fov, title=title, cmap=cmap, vmin=src_lim[0], vmax=src_lim[1],
                   colorbar=k == 3, ylabel=k == 0)
        _panel(fig, ax[0, 4], std, fov=src_fov, title="Posterior std", cmap=_STD_CMAP)
        if truth is None:
            ax[0, 5].axis("off")
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                z_src = np.where(std > 0, (truth - mean) / std, np.nan)
            s = _symmetric(z_src)
            _panel(fig, ax[0, 5], z_src, fov=src_fov, title="(truth − mean) / std", cmap=_RESID_CMAP, vmin=-s,
                   vmax=s)
        bottom = [(y, "Observation"), (axs[a], f"Lensed sample {a}"), (axs[b], f"Lensed sample {b}"),
                  (amean, "Mean of lensed samples")]
        for k, (img, title) in enumerate(bottom):
            _panel(fig, ax[1, k], img, fov=img_fov, title=title, cmap=cmap, vmin=img_lim[0], vmax=img_lim[1],
                   colorbar=k == 3, xlabel=True, ylabel=k == 0)
        _note(ax[1, 1], f"$\\chi^2_\\nu$ = {chi2[a]:.2f}")
        _note(ax[1, 2], f"$\\chi^2_\\nu$ = {chi2[b]:.2f}")
        if truth_lensed is not None:
            t_img = _band(truth_lensed, channel, "truth_lensed", 2)
            if t_img.shape != y.shape:
                raise ValueError(f"truth_lensed {t_img.shape} does not match observation {y.shape}")
            _note(ax[1, 0], f"truth $\\chi^2_\\nu$ = {float(reduced_chi2(y - t_img, sigma, mask=mask)):.2f}")
        _panel(fig, ax[1, 4], astd, fov=img_fov, title="Std of lensed samples", cmap=_STD_CMAP, xlabel=True)
        r = _symmetric(z_img)
        _panel(fig, ax[1, 5], z_img, fov=img_fov, title="Residual SNR (y − mean)/σ$_n$", cmap=_RESID_CMAP,
               vmin=-r, vmax=r, xlabel=True)
        return save_figure(fig, path)


def _grid_shape(n: int, ncols: int) -> tuple[int, int]:
    if int(ncols) != ncols or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols}")
    ncols = min(int(ncols), n)
    return -(-n // ncols), ncols


def image_grid(
    path,
    images,
    ncols: int,
    titles: Sequence[str] | None = None,
    *,
    fov: float | None = None,
    channel: int = 0,
    cmap: str = "magma",
    shared_scale: bool = False,
    notes: Sequence[str] | None = None,
    panel_size: float = 1.6,
    figsize: tuple[float, float] | None = None,
    dpi: int = 150,
) -> Path:
    """A grid of images without axes (prior samples, galaxy sets).

    Args:
      images: [N, H, W] or [N, H, W, C].
      ncols: panels per row.
      titles: optional N titles.
      fov: field of view, arcsec, shown as a scale note in the first panel.
      shared_scale: one colour scale for all panels (else each its own).
      notes: optional N short texts drawn inside the panels.
      panel_size: inches per panel when figsize is None.
    """
    x = _band(images, channel, "images", 3)
    n = x.shape[0]
    if n < 1:
        raise ValueError("image_grid needs at least one image")
    for name, seq in (("titles", titles), ("notes", notes)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries for {n} images")
    rows, cols = _grid_shape(n, ncols)
    if figsize is None:
        figsize = (panel_size * cols, panel_size * rows * (1.12 if titles is not None else 1.0))
    lim = _limits(x) if shared_scale else (None, None)
    with matplotlib.rc_context(_STYLE):
        fig = _new(figsize, dpi)
        ax = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for k, a in enumerate(ax):
            if k >= n:
                a.set_axis_off()
                continue
            vmin, vmax = lim if shared_scale else _limits(x[k])
            _panel(fig, a, x[k], fov=fov, title=None if titles is None else titles[k], cmap=cmap,
                   vmin=vmin, vmax=vmax, colorbar=False, ticks=False)
            if notes is not None:
                _note(a, notes[k])
        if fov is not None:
            ax[0].text(0.96, 0.04, f'{fov:g}"', transform=ax[0].transAxes, ha="right", va="bottom",
                       color="white", fontsize=6)
        return save_figure(fig, path)


def figure3(
    path,
    samples,
    chi2,
    *,
    ncols: int = 4,
    fov: float | None = None,
    channel: int = 0,
    cmap: str = "magma",
    figsize: tuple[float, float] | None = None,
    dpi: int = 150,
) -> Path:
    """A grid of posterior samples, each annotated with its χ²_ν (paper figure 3).

    Args:
      samples: [N, H, W] or [N, H, W, C].
      chi2: [N] reduced χ² of each sample's lensed image against y.
    """
    x = _band(samples, channel, "samples", 3)
    c = np.asarray(chi2, dtype=np.float64).ravel()
    if c.shape != (x.shape[0],):
        raise ValueError(f"chi2 has {c.size} values for {x.shape[0]} samples")
    notes = [f"$\\chi^2_\\nu$ = {v:.2f}" for v in c]
    return image_grid(path, x, ncols, fov=fov, cmap=cmap, shared_scale=True, notes=notes,
                      figsize=figsize, dpi=dpi)


def coverage_plot(
    path,
    curves: Mapping[str, tuple],
    *,
    title: str | None = None,
    figsize: tuple[float, float] = (3.6, 3.4),
    dpi: int = 150,
) -> Path:
    """TARP coverage curves against the diagonal.

    Args:
      curves: label -> (alpha, ecp) or (alpha, ecp, ecp_std); with a std the
        1σ and 2σ bands are shaded.
    """
    if not curves:
        raise ValueError("coverage_plot needs at least one curve")
    with matplotlib.rc_context(_STYLE):
        fig = _new(figsize, dpi)
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1, label="ideal")
        for label, curve in curves.items():
            if len(curve) not in (2, 3):
                raise ValueError(f"curve {label!r} must be (alpha, ecp) or (alpha, ecp, ecp_std)")
            alpha, ecp = (np.asarray(v, dtype=np.float64) for v in curve[:2])
            if alpha.ndim != 1 or alpha.shape != ecp.shape:
                raise ValueError(f"curve {label!r}: alpha {alpha.shape} and ecp {ecp.shape} must be equal 1-D")
            (line,) = ax.plot(alpha, ecp, lw=1.5, label=label)
            if len(curve) == 3:
                sd = np.asarray(curve[2], dtype=np.float64)
                if sd.shape != alpha.shape:
                    raise ValueError(f"curve {label!r}: ecp_std {sd.shape} does not match alpha {alpha.shape}")
                for k, shade in ((2, 0.15), (1, 0.3)):
                    ax.fill_between(alpha, ecp - k * sd, ecp + k * sd, color=line.get_color(), alpha=shade, lw=0)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel(r"Credibility level $\alpha$")
        ax.set_ylabel("Expected coverage probability")
        if title:
            ax.set_title(title)
        ax.legend(loc="upper left", frameon=False)
        return save_figure(fig, path)


def noise_sweep_figure(
    path,
    *,
    truth_source,
    observations,
    samples,
    noise_levels: Sequence[float],
    truth_lensed=None,
    src_fov: float | None = None,
    img_fov: float | None = None,
    channel: int = 0,
    cmap: str = "magma",
    figsize: tuple[float, float] | None = None,
    dpi: int = 150,
) -> Path:
    """Out-of-distribution noise experiment: one observation and one posterior sample per noise level.

    Layout: a truth column on the left (noise-free lensed truth on top when
    given, truth source below), then one column per noise level with the
    observation on top and a posterior sample below, so every source-plane
    panel sits in the bottom row next to the truth.

    Args:
      truth_source: [H, W(, C)].
      observations: [L, h, w(, C)], one per noise level.
      samples: [L, H, W(, C)], one posterior sample per noise level.
      noise_levels: L values of σ_n, shown as column titles.
      truth_lensed: optional noise-free A x_true [h, w(, C)].
    """
    truth = _band(truth_source, channel, "truth_source", 2)
    ys = _band(observations, channel, "observations", 3)
    xs = _band(samples, channel, "samples", 3)
    levels = [float(v) for v in noise_levels]
    n = len(levels)
    if n < 1 or ys.shape[0] != n or xs.shape[0] != n:
        raise ValueError(f"need one observation and one sample per noise level: {n} levels, "
                         f"{ys.shape[0]} observations, {xs.shape[0]} samples")
    if xs.shape[1:] != truth.shape:
        raise ValueError(f"samples {xs.shape} do not match truth_source {truth.shape}")
    if figsize is None:
        figsize = (1.9 * (n + 1), 4.1)
    src_lim = _limits(truth)
    with matplotlib.rc_context(_STYLE):
        fig = _new(figsize, dpi)
        ax = fig.subplots(2, n + 1, squeeze=False)
        if truth_lensed is not None:
            t_img = _band(truth_lensed, channel, "truth_lensed", 2)
            if t_img.shape != ys.shape[1:]:
                raise ValueError(f"truth_lensed {t_img.shape} does not match observations {ys.shape}")
            _panel(fig, ax[0, 0], t_img, fov=img_fov, title="Noise-free lensed truth", cmap=cmap,
                   colorbar=False, ylabel=True)
        else:
            ax[0, 0].set_axis_off()
        _panel(fig, ax[1, 0], truth, fov=src_fov, title="Ground truth", cmap=cmap, vmin=src_lim[0],
               vmax=src_lim[1], colorbar=False, xlabel=True, ylabel=True)
        for k in range(n):
            _panel(fig, ax[0, k + 1], ys[k], fov=img_fov, title=f"$\\sigma_n$ = {levels[k]:.3g}", cmap=cmap,
                   colorbar=False, ticks=False)
            _panel(fig, ax[1, k + 1], xs[k], fov=src_fov, title="Posterior sample", cmap=cmap, vmin=src_lim[0],
                   vmax=src_lim[1], colorbar=False, ticks=False)
        return save_figure(fig, path)
