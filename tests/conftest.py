"""Shared fixtures: phantom datasets generated once per test session (coarse grids for speed)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent / "cluster"))
from fixtures import slurm_cluster  # noqa: E402,F401  (a real one-node SLURM cluster, session scope)


def pytest_collection_modifyitems(config, items):
    """Everything under ``tests/pipeline/`` runs the whole pipeline on phantom data: mark it slow, so
    that ``pytest -m "not slow"`` is the quick run."""
    pipeline = Path(__file__).parent / "pipeline"
    for item in items:
        if pipeline in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)


def make_phantom(out_dir: Path, participant: str, modalities=("ctp",), **options) -> Path:
    """Generate one phantom participant into ``out_dir`` (appending to an existing dataset)."""
    from strokeperf.phantom import PhantomConfig, generate_dataset

    options.setdefault("voxel_size_mm", (3.0, 3.0, 6.0))
    generate_dataset(out_dir, PhantomConfig(**options), participant=participant,
                     modalities=tuple(modalities))
    return out_dir


@pytest.fixture(scope="session")
def small_ctp_dataset(tmp_path_factory) -> Path:
    """A coarse CTP phantom with one lesioned participant (seed 11), generated once."""
    return make_phantom(tmp_path_factory.mktemp("small_ctp") / "bids", "ok", seed=11)


@pytest.fixture
def ctp_dataset_copy(small_ctp_dataset, tmp_path) -> Path:
    """A private, writable copy of :func:`small_ctp_dataset`."""
    dst = tmp_path / "bids"
    shutil.copytree(small_ctp_dataset, dst)
    return dst
