"""Model compression: tables agree with the networks; off-table inputs fall back exactly."""
import numpy as np
import pytest
import torch

import dpengine
from dpengine.cli import main


@pytest.fixture(scope="module")
def compressed(water_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("compressed") / "water-c.pt"
    assert main(["compress", str(water_model), "-o", str(path)]) == 0
    return path


def test_compressed_matches_network(water_model, compressed, reference, device):
    """Issue targets: energies within 1e-6 eV/atom, forces within 1e-5 eV/Å (measured ~1e-13)."""
    plain = dpengine.load_model(water_model, device=device)
    tab = dpengine.load_model(compressed, device=device)
    assert tab.metadata["compression"]["step"] == 0.01
    for f in range(3):
        args = (reference["coord"][f].reshape(-1, 3), reference["box"][f].reshape(3, 3), reference["atype"])
        a, b = plain.evaluate(*args), tab.evaluate(*args)
        assert abs(a["energy"] - b["energy"]) / len(args[2]) < 1e-9
        assert np.abs(a["forces"] - b["forces"]).max() < 1e-8
        assert np.abs(a["virial"] - b["virial"]).max() < 1e-7
        assert np.abs(a["atom_energy"] - b["atom_energy"]).max() < 1e-9
    assert tab.potential.table_misses == 0  # the tables really were used


def test_off_table_input_falls_back_to_the_network(water_model, compressed, device):
    """Two atoms closer than the tabulated minimum distance (0.885 Å): exact fallback + warning."""
    plain = dpengine.load_model(water_model, device=device)
    tab = dpengine.load_model(compressed, device=device)
    pos = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [2.0, 1.0, 0.0]])
    types = np.array([0, 1, 1])
    with pytest.warns(RuntimeWarning, match="outside the compression table"):
        b = tab.evaluate(pos, None, types)
    a = plain.evaluate(pos, None, types)
    assert tab.potential.table_misses == 1
    assert a["energy"] == b["energy"]
    assert np.array_equal(a["forces"], b["forces"])


@pytest.mark.parametrize("type_one_side, per_slot, activation",
                         [(False, False, "tanh"), (True, True, "tanh"), (True, False, "gelu")])
def test_compressed_float32_and_other_layout(tmp_path, device, type_one_side, per_slot,
                                             activation):
    """type_one_side = false, float32 networks, statistics that differ slot by slot (every
    slot visited, none folded into the empty-slot constant), gelu nets (the fitting part
    through autograd instead of the explicit tanh sweeps): compressed = network."""
    from conftest import random_se_a_model
    path = random_se_a_model(tmp_path / "m.pt", 2, type_one_side, davg_ramp=0.05 * per_slot,
                             activation=activation, min_nbor_dist=0.8)
    assert main(["compress", str(path), "-o", str(tmp_path / "c.pt"), "--step", "0.005"]) == 0
    rng = np.random.default_rng(4)
    box = np.diag([7.2, 7.2, 7.2])
    grid = np.array([[i, j, k] for i in range(4) for j in range(4) for k in range(4)], float)
    pos = grid * 1.8 + rng.uniform(-0.2, 0.2, grid.shape)   # nearest neighbours ≥ 1.4 Å
    types = rng.integers(0, 2, len(pos))
    for precision, tol in (("float64", 1e-9), ("float32", 1e-3)):
        a = dpengine.load_model(path, device=device, precision=precision).evaluate(pos, box, types)
        tab = dpengine.load_model(tmp_path / "c.pt", device=device, precision=precision)
        b = tab.evaluate(pos, box, types)
        assert tab.potential.table_misses == 0
        assert tab.potential.compact is not per_slot
        assert all((kinds is None) == (activation != "tanh") for kinds in tab.potential._fit_kinds)
        assert abs(a["energy"] - b["energy"]) < tol * len(pos)
        assert np.abs(a["forces"] - b["forces"]).max() < tol


def test_compress_needs_a_minimum_distance(tmp_path, capsys):
    from dpengine.model.io import save_model
    from dpengine.model.network import DeepPotSE
    path = save_model(DeepPotSE(["A"], [4], 3.0, 1.0, [2, 4], 2, [4]), tmp_path / "m.pt")
    assert main(["compress", str(path), "-o", str(tmp_path / "c.pt")]) == 2
    assert "--min-distance" in capsys.readouterr().err
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.parametrize("stored", [False, True])
def test_gpu_thread_layout_equals_cpu_layout(stored):
    """The forward kernel's GPU branch (a thread per atom and channel) run on the CPU gives
    the CPU branch's numbers (to round-off), with G from a table or from a store of rows,
    so the branch CI cannot run on a GPU is still exercised."""
    from dpengine.backend import init_taichi
    import taichi as ti
    from taichi_kernels.tabulate import embedded_forward
    init_taichi("cpu")
    rng = np.random.default_rng(5)
    n, widths, m, n_int = 7, [8, 16], 5, 40
    env = torch.tensor(rng.uniform(0.0, 0.35, (n, sum(widths), 4)))
    davg = torch.tensor(rng.uniform(-0.01, 0.01, (2, sum(widths), 4)))
    inv_dstd = torch.tensor(rng.uniform(0.9, 1.1, (2, sum(widths), 4)))
    if stored:      # rows G of 30 inputs, read by every slot at a random row
        values = torch.tensor(rng.normal(size=(30, m))).reshape(-1)
        rows = torch.tensor(rng.integers(0, 30, (n, sum(widths))), dtype=torch.int32)
    else:
        values = torch.tensor(rng.normal(size=(2, n_int, 6, m))).reshape(-1)
        rows = torch.zeros(1, 1, dtype=torch.int32)
    slot_block = torch.tensor([t for t, w in enumerate(widths) for _ in range(w)],
                              dtype=torch.int32)
    slot_rank = torch.tensor([r for w in widths for r in range(w)], dtype=torch.int32)
    filled = torch.minimum(torch.tensor(rng.integers(0, 17, (n, 2)), dtype=torch.int32),
                           torch.tensor(widths, dtype=torch.int32))   # some empty slots
    types = torch.tensor(rng.integers(0, 2, n), dtype=torch.int32)
    sel = torch.tensor(widths, dtype=torch.int32)
    empty_terms = torch.tensor(rng.normal(size=(2, 2, 4, m))).reshape(-1)
    out = []
    for per_atom in (m, 0):
        t_mat = torch.zeros(n, 4, m, dtype=torch.float64)
        outside = torch.zeros(1, dtype=torch.int32)
        embedded_forward(env, davg, inv_dstd, types, slot_block, slot_rank, filled, values,
                         rows, n_int, 0.0, 0.01, 2, 1, sel, empty_terms, t_mat, outside,
                         per_atom, ti.f64, stored)
        out.append(t_mat)
    # equal up to the order of the floating-point operations the compiler chose
    torch.testing.assert_close(out[0], out[1], rtol=1e-13, atol=1e-13)
    assert out[0].abs().sum() > 0
