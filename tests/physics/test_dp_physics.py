"""Physics of the Deep Potential path: finite differences, invariances, smoothness."""
import numpy as np
import pytest

import dpengine


@pytest.fixture(scope="module")
def model(water_model, device):
    return dpengine.load_model(water_model, device=device)


@pytest.fixture(scope="module")
def frame(reference):
    return reference["coord"][1].reshape(-1, 3), reference["box"][1].reshape(3, 3), reference["atype"]


def test_forces_are_minus_energy_gradient(model, frame):
    pos, box, types = frame
    forces = model.evaluate(pos, box, types)["forces"]
    h = 1e-4
    rng = np.random.default_rng(0)
    for i, a in zip(rng.integers(0, len(pos), 6), rng.integers(0, 3, 6)):
        plus, minus = pos.copy(), pos.copy()
        plus[i, a] += h
        minus[i, a] -= h
        fd = -(model.evaluate(plus, box, types)["energy"]
               - model.evaluate(minus, box, types)["energy"]) / (2 * h)
        # central difference error ~ h² E''' ≈ 1e-8 eV/Å; energies ~3e4 eV carry 1e-11 round-off / h
        assert abs(fd - forces[i, a]) < 2e-6, (i, a, fd, forces[i, a])


def test_virial_is_minus_strain_derivative(model, frame):
    """W_ab = −∂E/∂ε_ab for x → x(I + ε), box → box(I + ε) (row vectors)."""
    pos, box, types = frame
    virial = model.evaluate(pos, box, types)["virial"]
    h = 1e-5
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = h
            ep = model.evaluate(pos @ (np.eye(3) + eps), box @ (np.eye(3) + eps), types)["energy"]
            em = model.evaluate(pos @ (np.eye(3) - eps), box @ (np.eye(3) - eps), types)["energy"]
            assert abs(-(ep - em) / (2 * h) - virial[a, b]) < 2e-5, (a, b)


def test_translation_rotation_permutation_invariance(model, frame):
    pos, box, types = frame
    ref = model.evaluate(pos, box, types)
    shifted = model.evaluate(pos + np.array([3.3, -17.1, 40.2]), box, types)
    assert abs(shifted["energy"] - ref["energy"]) < 1e-9
    assert np.abs(shifted["forces"] - ref["forces"]).max() < 1e-10
    # a general rotation of positions and cell together
    from scipy.spatial.transform import Rotation
    rot = Rotation.from_euler("zyx", [0.3, -1.1, 2.0]).as_matrix()
    rotated = model.evaluate(pos @ rot.T, box @ rot.T, types)
    assert abs(rotated["energy"] - ref["energy"]) < 1e-9
    assert np.abs(rotated["forces"] - ref["forces"] @ rot.T).max() < 1e-10
    assert np.abs(rotated["virial"] - rot @ ref["virial"] @ rot.T).max() < 1e-8
    perm = np.random.default_rng(3).permutation(len(pos))
    permuted = model.evaluate(pos[perm], box, types[perm])
    assert abs(permuted["energy"] - ref["energy"]) < 1e-9
    assert np.abs(permuted["forces"] - ref["forces"][perm]).max() < 1e-10
    assert np.abs(permuted["atom_energy"] - ref["atom_energy"][perm]).max() < 1e-10


def test_open_boundaries_equal_large_box(model, frame):
    """A cluster in a box much larger than the cutoff: periodic and open results agree."""
    pos = frame[0][:30] - frame[0][:30].mean(0)
    types = frame[2][:30]
    open_ = model.evaluate(pos, None, types)
    boxed = model.evaluate(pos, np.eye(3) * 60.0, types)
    assert abs(open_["energy"] - boxed["energy"]) < 1e-10
    assert np.abs(open_["forces"] - boxed["forces"]).max() < 1e-12


@pytest.mark.parametrize("crossing", ["rcut_smth", "rcut"])
def test_smooth_when_an_atom_crosses(model, crossing):
    """Energy and force of an O–H dimer are continuous (no jump) across r_s and r_c.

    The switch is C² at both ends, so on a grid of step δ the first differences of E stay
    O(δ) and the second differences O(δ²); a discontinuity would show up as an O(1) jump.
    """
    r0 = {"rcut_smth": 0.5, "rcut": 6.0}[crossing]
    rs = r0 + np.linspace(-1e-3, 1e-3, 41)
    energies, forces = [], []
    for r in rs:
        out = model.evaluate(np.array([[0.0, 0.0, 0.0], [r, 0.0, 0.0]]), None, np.array([0, 1]))
        energies.append(out["energy"])
        forces.append(out["forces"][1, 0])
    energies, forces = np.array(energies), np.array(forces)
    step = rs[1] - rs[0]
    de = np.diff(energies)
    # the force is −dE/dr: first differences bounded by max|F|·δ (plus round-off)
    assert np.abs(de).max() <= np.abs(forces).max() * step * 1.5 + 1e-11
    # the force itself is continuous: no jump larger than the local variation allows
    assert np.abs(np.diff(forces)).max() < 1e-3 * max(np.abs(forces).max(), 1e-3) + 1e-9
    if crossing == "rcut":
        far = model.evaluate(np.array([[0.0, 0.0, 0.0], [6.5, 0.0, 0.0]]), None, np.array([0, 1]))
        assert abs(energies[-1] - far["energy"]) < 1e-12
        assert abs(forces[-1]) < 1e-12
