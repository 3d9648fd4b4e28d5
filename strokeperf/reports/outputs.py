"""A session's derivatives as the reports read them: one modality's files and arrays (lazily, RAS).

Derivative naming is the datasink's (:mod:`strokeperf.interfaces.derivatives`, names from
:mod:`strokeperf.bids.derivatives`): ``<prefix>_desc-<mod>_<map>.nii.gz``,
``<prefix>_desc-<mod><Label>_mask.nii.gz`` and the ``<prefix>_desc-<mod>_<table>.tsv`` tables, each
with a JSON sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from strokeperf.bids.derivatives import MASK_LABELS, derivative_name, map_name, mask_name


def _load(path) -> tuple[np.ndarray, np.ndarray]:
    """Image data reoriented to RAS (float32) and the RAS affine."""
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def read_json(path: Path) -> dict:
    """The object in a JSON sidecar; ``{}`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class ModalityOutputs:
    """Files and arrays of one modality's derivatives (loaded lazily, RAS)."""

    def __init__(self, perf_dir: Path, prefix: str, modality: str, images: dict | None = None):
        self.dir, self.prefix, self.mod = perf_dir, prefix, modality
        self.images = {k: Path(v) for k, v in (images or {}).items()}
        self._cache: dict = {}

    def path(self, stem: str) -> Path:
        if stem in self.images:
            return self.images[stem]
        if stem in MASK_LABELS:
            return self.dir / mask_name(self.prefix, self.mod, MASK_LABELS[stem])
        return self.dir / map_name(self.prefix, self.mod, stem)

    def table(self, suffix: str) -> Path:
        return self.dir / derivative_name(self.prefix, self.mod, suffix)

    def has(self, stem: str) -> bool:
        return self.path(stem).exists()

    def array(self, stem: str) -> np.ndarray:
        if stem not in self._cache:
            data, affine = _load(self.path(stem))
            self._cache[stem] = data > 0.5 if stem in MASK_LABELS else data
            self._cache.setdefault("_affine", affine)
        return self._cache[stem]

    @property
    def affine(self) -> np.ndarray:
        if "_affine" not in self._cache:
            for stem in ("brain_mask", "cbf", "tmax"):
                if self.has(stem):
                    self.array(stem)
                    break
        return self._cache.get("_affine", np.eye(4))

    def units(self, stem: str, default: str) -> str:
        side = self.path(stem)
        return str(read_json(side.with_name(side.name.replace(".nii.gz", ".json"))).get("Units",
                                                                                          default))

    def existing_files(self) -> list[Path]:
        return sorted(p for p in self.dir.glob(f"{self.prefix}_desc-{self.mod}*")
                      if not p.name.startswith("."))
