"""Resumable on-disk storage of sample chunks: a manifest plus one npz per chunk.

Layout of ``out_dir`` (`jaxlens.io.prepare_out_dir(..., overwrite=True)` removes exactly
these files)::

    chunks/manifest.json      settings of the run and their hash
    chunks/chunk_00000.npz    'samples' [m, H, W, C], 'indices' [m] global chain indices, 'settings_hash'
    chunks/chunk_00001.npz    ...

Every file is written to a temporary name in the same directory and renamed
into place, so a killed run leaves either a complete chunk or none. A rerun
with the same settings skips the chunks that exist; a rerun with different
settings is refused rather than mixing samples of two runs (unless no chunk
has been written yet, in which case the manifest is simply replaced).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any

import numpy as np

from jaxlens import io

__all__ = ["ChunkStore", "array_digest", "settings_hash"]

_FORMAT = "jaxlens.sample.chunks/1"
_CHUNK_RE = re.compile(r"^chunk_(\d{5})\.npz$")


def array_digest(arr: Any, *, decimals: int | None = None) -> str:
    """sha256 of an array's dtype, shape and bytes (optionally after relative rounding).

    Rounding to `decimals` digits relative to the largest magnitude makes the
    digest of a computed quantity (e.g. the lens operator applied to a probe)
    insensitive to last-bit differences between machines.
    """
    a = np.asarray(arr)
    if decimals is not None:
        a = a.astype(np.float64)
        scale = np.max(np.abs(a)) if a.size else 0.0
        a = np.round(a / scale, decimals) if scale > 0 else a
        a = a + 0.0  # folds -0.0 into 0.0
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def settings_hash(settings: dict) -> str:
    """sha256 of a JSON-serialisable settings dict (key order does not matter)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class ChunkStore:
    """The chunk files of one sampling run.

    Attributes:
      out_dir: directory of the run (created if missing).
      settings: JSON-serialisable description of everything the samples depend on.
    """

    out_dir: str
    settings: dict

    @property
    def hash(self) -> str:
        return settings_hash(self.settings)

    @property
    def folder(self) -> str:
        return os.path.join(self.out_dir, "chunks")

    def written(self) -> list[int]:
        """Sorted indices of the chunk files present."""
        if not os.path.isdir(self.folder):
            return []
        return sorted(int(m.group(1)) for name in os.listdir(self.folder)
                      if (m := _CHUNK_RE.match(name)))

    def open(self) -> None:
        """Creates the directory and manifest, or checks an existing manifest.

        Raises:
          ValueError: the directory holds chunks of a run with different settings.
        """
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, "manifest.json")
        if os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
            if old.get("hash") == self.hash:
                return
            if self.written():
                before = old.get("settings", {})
                changed = sorted(k for k in set(before) | set(self.settings)
                                 if before.get(k) != self.settings.get(k))
                raise ValueError(
                    f"{self.out_dir} holds samples drawn with other settings (changed: {changed}); "
                    "use another out_dir or delete it"
                )
        text = json.dumps({"format": _FORMAT, "hash": self.hash, "settings": self.settings},
                          indent=1, sort_keys=True)
        io.write_text(path, text)

    def path(self, chunk: int) -> str:
        return os.path.join(self.folder, f"chunk_{chunk:05d}.npz")

    def exists(self, chunk: int) -> bool:
        return os.path.exists(self.path(chunk))

    def save(self, chunk: int, indices: np.ndarray, samples: np.ndarray, evaluations: np.ndarray) -> None:
        """Atomically writes one chunk: its chains' samples and network evaluations."""
        io.save_arrays(self.path(chunk), indices=np.asarray(indices), samples=np.asarray(samples),
                       evaluations=np.asarray(evaluations), settings_hash=np.asarray(self.hash))

    def load(self, chunk: int, expected_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reads one chunk and checks that it belongs to this run.

        Returns:
          (samples [m, H, W, C], network evaluations [m]).
        """
        with np.load(self.path(chunk)) as data:
            if str(data["settings_hash"]) != self.hash:
                raise ValueError(f"{self.path(chunk)} was written by a run with other settings")
            if not np.array_equal(data["indices"], expected_indices):
                raise ValueError(f"{self.path(chunk)} holds chains {data['indices']!r}, not the expected ones")
            return np.array(data["samples"]), np.array(data["evaluations"])
