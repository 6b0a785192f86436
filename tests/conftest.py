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


def random_se_a_model(path: Path, seed: int, type_one_side: bool, davg_ramp: float = 0.0,
                      dstd_ramp: float = 0.0, activation: str = "tanh", sel=(20, 40),
                      **extra) -> Path:
    """A small random se_e2_a model file (O/H, sel [20, 40] unless given, rcut 4 Å,
    embedding [4, 8], axis 3, fitting [10, 10]); ``davg_ramp``/``dstd_ramp`` make the
    statistics differ slot by slot (radial davg, angular dstd); ``activation`` of all nets;
    ``extra``: metadata."""
    import torch
    from dpengine.model.io import save_model
    from dpengine.model.network import DeepPotSE
    torch.manual_seed(seed)
    net = DeepPotSE(["O", "H"], list(sel), 4.0, 1.0, [4, 8], 3, [10, 10],
                    type_one_side=type_one_side, activation=activation)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.5)
        net.davg[:, :, 0] = 0.1 + torch.linspace(0.0, davg_ramp, net.nnei)
        net.dstd.fill_(0.8)
        net.dstd[:, :, 1:] += torch.linspace(0.0, dstd_ramp, net.nnei)[:, None]
    return save_model(net, path, extra=extra or None)
