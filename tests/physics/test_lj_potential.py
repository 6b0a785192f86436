"""Reference potentials: Lennard-Jones (against ASE, finite differences, tail corrections,
mixing), harmonic springs, their sum, the box-aware neighbour list, and the
Kolafa–Nezbeda equation of state."""
import math

import numpy as np
import pytest
import torch

from dpengine.neighbor import NeighborList
from dpengine.potential import SumPotential
from dpengine.potentials import BoxAwareNeighborList, HarmonicSprings, LennardJones
from dpengine.potentials import lj_eos

from md_helpers import EPS, SIGMA, fcc

RC = 2.5 * SIGMA


def _config(seed=0, tilt=True, ncell=3):
    pos, box = fcc(ncell, 5.4)
    rng = np.random.default_rng(seed)
    pos = pos + rng.normal(0, 0.15, pos.shape)
    if tilt:  # same lattice, sheared cell vectors (b' = b + 0.3a, c' = c − 0.2a + 0.1b)
        box = np.array([box[0], box[1] + 0.3 * box[0], box[2] - 0.2 * box[0] + 0.1 * box[1]])
    return pos, box


def _eval(pot, pos, box, types=None, skin=0.0):
    n = len(pos)
    x = torch.tensor(pos)
    b = None if box is None else torch.tensor(box)
    t = torch.zeros(n, dtype=torch.int32) if types is None else torch.tensor(types, dtype=torch.int32)
    nl = NeighborList(max(pot.cutoff, 1.0), skin)
    nl.update(x, b, force=True)
    return pot.compute(x, b, t, nl, atom_energy=True)


def test_lj_matches_ase_shifted():
    from ase import Atoms
    from ase.calculators.lj import LennardJones as AseLJ
    pos, box = _config()
    res = _eval(LennardJones(["Ar"], {"Ar": EPS}, {"Ar": SIGMA}, RC, "shift"), pos, box)
    atoms = Atoms("Ar%d" % len(pos), positions=pos, cell=box, pbc=True)
    atoms.calc = AseLJ(sigma=SIGMA, epsilon=EPS, rc=RC, smooth=False)
    assert abs(float(res.energy) - atoms.get_potential_energy()) < 1e-10
    np.testing.assert_allclose(res.forces.numpy(), atoms.get_forces(), atol=1e-11)
    virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
    np.testing.assert_allclose(res.virial.numpy(), virial, atol=1e-10)
    assert abs(float(res.atom_energy.sum()) - float(res.energy)) < 1e-10


@pytest.mark.parametrize("box_kind", ["triclinic", "open"])
def test_forces_and_virial_are_derivatives(box_kind):
    pos, box = _config(1)
    if box_kind == "open":
        box = None
    pot = LennardJones(["Ar"], {"Ar": EPS}, {"Ar": SIGMA}, RC, "shift")
    res = _eval(pot, pos, box)
    # small h: the shifted potential's force jumps at r_c, a pair that close to r_c would
    # spoil a wider difference; round-off is ~1e-15 · 6 eV / h
    h = 1e-7
    for i, a in [(0, 0), (5, 1), (17, 2), (40, 0)]:
        p, m = pos.copy(), pos.copy()
        p[i, a] += h
        m[i, a] -= h
        fd = -(float(_eval(pot, p, box).energy) - float(_eval(pot, m, box).energy)) / (2 * h)
        assert abs(fd - float(res.forces[i, a])) < 1e-6
    if box is None:
        return
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = h
            ep = float(_eval(pot, pos @ (np.eye(3) + eps), box @ (np.eye(3) + eps)).energy)
            em = float(_eval(pot, pos @ (np.eye(3) - eps), box @ (np.eye(3) - eps)).energy)
            assert abs(-(ep - em) / (2 * h) - float(res.virial[a, b])) < 1e-6


def test_truncations_and_tail_corrections():
    pos, box = _config(2, tilt=False, ncell=4)
    n, vol = len(pos), abs(np.linalg.det(box))
    kw = dict(type_map=["Ar"], epsilon={"Ar-Ar": EPS}, sigma={"Ar-Ar": SIGMA}, cutoff=RC)
    cut = _eval(LennardJones(truncation="cut", **kw), pos, box)
    shift = _eval(LennardJones(truncation="shift", **kw), pos, box)
    tail = _eval(LennardJones(truncation="tail", **kw), pos, box)
    np.testing.assert_array_equal(cut.forces.numpy(), shift.forces.numpy())
    np.testing.assert_array_equal(cut.virial.numpy(), shift.virial.numpy())
    # the shift is u(r_c) per pair inside r_c
    x = pos[None] - pos[:, None]
    x -= np.round(x @ np.linalg.inv(box)) @ box   # the cell is > 2 r_c wide: minimum image
    r = np.linalg.norm(x, axis=-1)[np.triu_indices(n, 1)]
    uc = 4 * EPS * ((SIGMA / RC) ** 12 - (SIGMA / RC) ** 6)
    assert abs(float(cut.energy) - float(shift.energy) - uc * np.sum(r < RC)) < 1e-10
    # tail corrections: the textbook one-component formulas (Allen & Tildesley eq. 2.144)
    rho, y = n / vol, SIGMA / RC
    e_tail = 8.0 / 3.0 * math.pi * n * rho * EPS * SIGMA ** 3 * (y ** 9 / 3 - y ** 3)
    p_tail = 16.0 / 3.0 * math.pi * rho ** 2 * EPS * SIGMA ** 3 * (2.0 / 3.0 * y ** 9 - y ** 3)
    assert abs(float(tail.energy) - float(cut.energy) - e_tail) < 1e-10
    np.testing.assert_allclose((tail.virial - cut.virial).numpy(), np.eye(3) * p_tail * vol,
                               atol=1e-10)


def test_pair_tables_and_mixing():
    pos, box = _config(3, tilt=False)
    types = np.arange(len(pos)) % 2
    kw = dict(cutoff=RC, truncation="tail")
    same = _eval(LennardJones(["Ar"], {"Ar": EPS}, {"Ar": SIGMA}, **kw), pos, box)
    # two element names with identical parameters: the same physics, split over pairs
    mixed = LennardJones(["Ar", "Kr"], {"Ar": EPS, "Kr": EPS}, {"Ar": SIGMA, "Kr": SIGMA}, **kw)
    res = _eval(mixed, pos, box, types)
    assert abs(float(res.energy) - float(same.energy)) < 1e-10
    np.testing.assert_allclose(res.forces.numpy(), same.forces.numpy(), atol=1e-12)
    np.testing.assert_allclose(res.virial.numpy(), same.virial.numpy(), atol=1e-10)
    # Lorentz–Berthelot for unlike pairs not given; explicit pairs win
    lb = LennardJones(["A", "B"], {"A": 0.01, "B": 0.04}, {"A": 3.0, "B": 4.0}, 9.0)
    assert lb.epsilon[0, 1] == pytest.approx(0.02) and lb.sigma[0, 1] == pytest.approx(3.5)
    ex = LennardJones(["A", "B"], {"A": 0.01, "B": 0.04, "B-A": 0.5}, {"A": 3.0, "B": 4.0}, 9.0)
    assert ex.epsilon[0, 1] == ex.epsilon[1, 0] == 0.5
    with pytest.raises(ValueError, match="no value for the pair B-B"):
        LennardJones(["A", "B"], {"A": 0.01}, {"A": 3.0, "B": 4.0}, 9.0)
    with pytest.raises(ValueError, match="not in the type map"):
        LennardJones(["A"], {"C": 0.01}, {"A": 3.0}, 9.0)


def test_springs():
    pos, box = _config(4)
    sites = pos + np.random.default_rng(5).normal(0, 0.3, pos.shape)
    k = 0.7
    sp = HarmonicSprings(["Ar"], {"Ar": k}, sites, box)
    res = _eval(sp, pos, box)
    d = pos - sites
    assert float(res.energy) == pytest.approx(0.5 * k * np.sum(d * d), rel=1e-13)
    np.testing.assert_allclose(res.forces.numpy(), -k * d, atol=1e-13)
    np.testing.assert_allclose(res.virial.numpy(), -k * d.T @ d, atol=1e-12)
    h = 1e-6
    for a, b in [(0, 0), (0, 1), (2, 1)]:  # sites follow the cell: W = −∂E/∂ε
        eps = np.zeros((3, 3))
        eps[a, b] = h
        ep = float(_eval(sp, pos @ (np.eye(3) + eps), box @ (np.eye(3) + eps)).energy)
        em = float(_eval(sp, pos @ (np.eye(3) - eps), box @ (np.eye(3) - eps)).energy)
        assert abs(-(ep - em) / (2 * h) - float(res.virial[a, b])) < 1e-7
    total = _eval(SumPotential(sp, LennardJones(["Ar"], {"Ar": EPS}, {"Ar": SIGMA}, RC)), pos, box)
    lj = _eval(LennardJones(["Ar"], {"Ar": EPS}, {"Ar": SIGMA}, RC), pos, box)
    assert float(total.energy) == pytest.approx(float(res.energy) + float(lj.energy), rel=1e-14)
    np.testing.assert_allclose(total.forces.numpy(), (res.forces + lj.forces).numpy(), atol=1e-14)
    with pytest.raises(ValueError, match="element Xe"):
        HarmonicSprings(["Ar", "Xe"], {"Ar": 1.0}, sites, box).check_types([0, 1])
    with pytest.raises(ValueError, match="not in the type map"):
        HarmonicSprings(["Ar"], {"Kr": 1.0}, sites, box)


def test_box_aware_neighbor_list_stays_complete():
    """Under growing affine compression and shear plus thermal noise the kept list gives
    exactly the forces of a list built from scratch, and rebuilds only when needed."""
    pos, box = _config(6, tilt=False)
    pot = LennardJones(["Ar"], {"Ar": EPS}, {"Ar": SIGMA}, RC)
    types = torch.zeros(len(pos), dtype=torch.int32)
    nl = BoxAwareNeighborList(pot.cutoff, 1.0)
    rng = np.random.default_rng(7)
    x = torch.tensor(pos)
    b = torch.tensor(box)
    for step in range(40):
        m = np.eye(3) * (1.0 - 0.003 * step)
        m[0, 1] = 0.0005 * step
        xs = x @ torch.tensor(m) + torch.tensor(rng.normal(0, 0.02, pos.shape))
        bs = b @ torch.tensor(m)
        nl.update(xs, bs)
        kept = pot.compute(xs, bs, types, nl.list)
        fresh = _eval(pot, xs.numpy(), bs.numpy())
        np.testing.assert_allclose(kept.forces.numpy(), fresh.forces.numpy(), atol=1e-12)
        assert float(kept.energy) == pytest.approx(float(fresh.energy), abs=1e-10)
    assert 1 < nl.n_builds < 40


def test_kolafa_nezbeda():
    # the values circulated with the SklogWiki Fortran version (single-precision literals)
    assert lj_eos.pressure(1.3, 0.2) == pytest.approx(0.12147936810578708, rel=5e-6)
    assert lj_eos.pressure(1.3, 0.4) == pytest.approx(0.11253334756806482, rel=1e-5)
    # P = ρT + ρ² ∂(A_res/N)/∂ρ, and the inverse density(P)
    for t, r in [(2.0, 0.5), (2.0, 0.8), (1.5, 0.3)]:
        h = 1e-5
        da = (lj_eos.free_energy_residual(t, r + h) - lj_eos.free_energy_residual(t, r - h)) / (2 * h)
        assert lj_eos.pressure(t, r) == pytest.approx(r * t + r * r * da, rel=1e-8)
        assert lj_eos.density(t, lj_eos.pressure(t, r)) == pytest.approx(r, rel=1e-10)
    # the ideal-gas limit
    assert lj_eos.pressure(2.0, 1e-6) == pytest.approx(2e-6, rel=1e-3)
