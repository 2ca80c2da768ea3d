"""Per-image brightness normalisation of training cutouts.

The prior is learnt on surface brightness in arbitrary units, and the lens operator is
linear, so a normalisation must be a positive scale factor (optionally after clipping):
an offset such as the [-1, 1] map used by some image models would give the sky a non-zero
brightness that the lens would then magnify.

Kinds:
  * ``peak``: divide by the brightest pixel (over all channels), so the peak is 1.
    The default for PROBES and FITS folders. Adam et al. (2022) do not state their
    normalisation; the scripts released with later work by the same group on PROBES
    clip the g band at 1.48 (its upper range in their preprocessed cube) and rescale
    by that constant, which is ``Normalization('fixed', scale=1.48, clip=1.48)`` here.
  * ``sum``: divide by the total flux, so the pixels sum to ``scale`` (default 1).
  * ``fixed``: divide by the constant ``scale`` (keeps relative brightness between
    galaxies; pair it with ``clip`` to bound the range).
  * ``none``: leave the image unchanged (procedural galaxies are drawn with a peak in
    [0.7, 1] already).

``clip`` (same units as the input) bounds the input before scaling; negative pixels
(sky noise) are kept unless ``clip_negative=True``.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

__all__ = ["Normalization", "NORMALIZATION_KINDS"]

NORMALIZATION_KINDS = ("peak", "sum", "fixed", "none")


@dataclasses.dataclass(frozen=True)
class Normalization:
    """A per-image normalisation.

    Attributes:
      kind: one of ``NORMALIZATION_KINDS``.
      scale: for ``fixed``, the divisor; for ``peak`` and ``sum``, the target peak or sum.
      clip: if set, input values above it are set to it first.
      clip_negative: set negative input values to 0 first.
    """

    kind: str = "peak"
    scale: float = 1.0
    clip: float | None = None
    clip_negative: bool = False

    def __post_init__(self):
        if self.kind not in NORMALIZATION_KINDS:
            raise ValueError(f"normalization kind must be one of {NORMALIZATION_KINDS}, got {self.kind!r}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"normalization scale must be finite and > 0, got {self.scale}")
        if self.clip is not None and not (np.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"normalization clip must be finite and > 0, got {self.clip}")

    @classmethod
    def parse(cls, spec: str | Normalization | None) -> Normalization:
        """A `Normalization` from itself, None ('none'), or a string like ``peak``,
        ``sum``, ``fixed1.48``, ``fixed1.48_clip1.48`` (the format of `tag`)."""
        if isinstance(spec, Normalization):
            return spec
        if spec is None:
            return cls("none")
        m = re.fullmatch(r"(peak|sum|fixed|none)([0-9.eE+-]+)?(_clip([0-9.eE+-]+))?(_pos)?", str(spec))
        if not m:
            raise ValueError(f"cannot parse normalization {spec!r}; expected e.g. 'peak', 'sum', "
                             "'none', 'fixed1.48' or 'fixed1.48_clip1.48'")
        kind, scale, _, clip, pos = m.groups()
        return cls(kind, float(scale) if scale else 1.0, float(clip) if clip else None, bool(pos))

    @property
    def tag(self) -> str:
        """Short string naming this normalisation; `parse(tag)` gives it back."""
        t = self.kind + (f"{self.scale:g}" if self.scale != 1.0 else "")
        if self.clip is not None:
            t += f"_clip{self.clip:g}"
        return t + ("_pos" if self.clip_negative else "")

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Normalise one image.

        Args:
          image: [H, W] or [H, W, C], finite.

        Returns:
          float32 array of the same shape.

        Raises:
          ValueError: non-finite pixels, or a peak/sum that is not positive.
        """
        x = np.asarray(image, np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("cannot normalize an image with non-finite pixels")
        if self.clip_negative:
            x = np.maximum(x, 0.0)
        if self.clip is not None:
            x = np.minimum(x, self.clip)
        if self.kind == "peak":
            d = x.max() / self.scale
        elif self.kind == "sum":
            d = x.sum() / self.scale
        elif self.kind == "fixed":
            d = self.scale
        else:
            d = 1.0
        if not d > 0:
            raise ValueError(f"cannot {self.kind}-normalize an image whose {self.kind} is {d * self.scale:g} <= 0")
        return (x / d).astype(np.float32)
