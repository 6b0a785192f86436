"""Shared fixtures: the DeePMD-kit fixture model (imported once per session) and the water data.

``DPENGINE_TEST_DEVICE=cuda`` runs the device-aware tests on the GPU (Taichi holds one
architecture per process, so a test session uses one device).
"""
import os
from pathlib import Path

import dpengine  # noqa: F401  (first: sets OpenMP's passive waiting before torch loads)

import numpy as np
import pytest

SHARED = Path(os.environ.get("DPENGINE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
FIXTURE = SHARED / "fixtures" / "deepmd_se_e2_a"
WATER = SHARED / "data" / "water"
REPO = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("DPENGINE_TEST_DEVICE", "cpu")


def pytest_configure(config):
    from dpengine.backend import init_taichi
    init_taichi(DEVICE)


@pytest.fixture(scope="session")
def device() -> str:
    """The device the engine runs on in this test session ("cpu" or "cuda")."""
    return DEVICE


@pytest.fixture(scope="session")
def water_model(tmp_path_factory) -> Path:
    """DeePMD-kit's fixture model converted by ``import_deepmd`` (a dpengine .pt)."""
    from dpengine.model.import_deepmd import import_deepmd
    if not FIXTURE.is_dir():
        pytest.skip(f"{FIXTURE} not present")
    return import_deepmd(FIXTURE / "frozen_model.pth", tmp_path_factory.mktemp("model") / "water.pt")


@pytest.fixture(scope="session")
def reference() -> dict:
    """DeePMD-kit's own predictions on the first 5 frames of data_3."""
    return dict(np.load(FIXTURE / "reference.npz"))
