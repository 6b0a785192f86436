"""Tests of dpengine.structure: readers, format guessing, masses, Maxwell-Boltzmann."""
from __future__ import annotations

import shutil
from pathlib import Path

import ase
import ase.io
import ase.units
import numpy as np
import pytest
from scipy import stats

from dpengine import units
from dpengine.structure import (FORMATS, Structure, StructureError, guess_format, masses_for,
                                maxwell_boltzmann, read_structure)

WATER = Path("/work/shared/data/water")
needs_water = pytest.mark.skipif(not WATER.is_dir(), reason="shared water data not present")


def error(*args, **kwargs) -> str:
    with pytest.raises(StructureError) as info:
        read_structure(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def lammps_text(atoms: list[tuple], box=((0, 10), (0, 10), (0, 10)), tilt=None,
                masses=None, velocities=None, n_types=2, atoms_comment=" # atomic") -> str:
    """A LAMMPS data file; atoms are (id, type, x, y, z[, ix, iy, iz])."""
    lines = ["LAMMPS data written by the test", "", f"{len(atoms)} atoms",
             f"{n_types} atom types"]
    lines += [f"{lo} {hi} {a}lo {a}hi" for (lo, hi), a in zip(box, "xyz")]
    if tilt is not None:
        lines.append(f"{tilt[0]} {tilt[1]} {tilt[2]} xy xz yz")
    if masses:
        lines += ["", "Masses", ""] + [f"{t} {m}" for t, m in masses.items()]
    lines += ["", f"Atoms{atoms_comment}", ""] + [" ".join(map(str, a)) for a in atoms]
    if velocities:
        lines += ["", "Velocities", ""] + [" ".join(map(str, v)) for v in velocities]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- LAMMPS data
@needs_water
def test_conf_lmp_water():
    s = read_structure(WATER / "conf.lmp", type_map=["O", "H"])
    assert isinstance(s, Structure) and s.n_atoms == 192
    np.testing.assert_allclose(s.box, np.eye(3) * 12.4447)
    assert s.symbols == ["O"] * 64 + ["H"] * 128
    assert s.velocities is None and s.masses is None
    assert s.positions.dtype == np.float64 and s.positions.shape == (192, 3)
    # order and values against a direct reading of the Atoms section, sorted by atom id
    lines = (WATER / "conf.lmp").read_text().split("Atoms")[1].strip().splitlines()[1:]
    rows = sorted((int(w[0]), int(w[1]), [float(x) for x in w[2:5]])
                  for w in (line.split() for line in lines if line.strip()))
    assert [r[0] for r in rows] == list(range(1, 193))
    np.testing.assert_array_equal(s.positions, np.array([r[2] for r in rows]))
    assert s.symbols == [["O", "H"][r[1] - 1] for r in rows]


def test_lammps_sorted_by_atom_id(tmp_path):
    path = tmp_path / "shuffled.lmp"
    path.write_text(lammps_text([(3, 2, 3.0, 0, 0), (1, 1, 1.0, 0, 0), (2, 2, 2.0, 0, 0)],
                                atoms_comment=""))
    s = read_structure(path, type_map=["O", "H"])
    np.testing.assert_array_equal(s.positions[:, 0], [1.0, 2.0, 3.0])
    assert s.symbols == ["O", "H", "H"]


def test_lammps_triclinic_velocities_masses_origin_images(tmp_path):
    lx, ly, lz, xy, xz, yz = 10.0, 11.0, 12.0, 1.5, -2.0, 0.75
    atoms = [(2, 1, 5.0, 6.0, 7.0, 0, 0, 0), (1, 2, 1.0, 2.0, 3.0, 1, 0, -1)]
    velocities = [(1, 1.0, -2.0, 3.0), (2, 10.0, 20.0, -30.0)]  # Å/ps
    path = tmp_path / "tri.data"
    path.write_text(lammps_text(atoms, box=((1.0, 1 + lx), (-2.0, -2 + ly), (0.5, 0.5 + lz)),
                                tilt=(xy, xz, yz), masses={1: 15.999, 2: 2.014},
                                velocities=velocities, atoms_comment=" # metal"))
    s = read_structure(path, type_map=["O", "H"])
    np.testing.assert_allclose(s.box, [[lx, 0, 0], [xy, ly, 0], [xz, yz, lz]], atol=1e-12)
    assert s.symbols == ["H", "O"]
    # atom 1 carries image flags (1, 0, -1): unwrapped by a − c; all shifted to the origin
    origin = np.array([1.0, -2.0, 0.5])
    expect1 = np.array([1.0, 2.0, 3.0]) + s.box[0] - s.box[2] - origin
    np.testing.assert_allclose(s.positions[0], expect1, atol=1e-12)
    np.testing.assert_allclose(s.positions[1], np.array([5.0, 6.0, 7.0]) - origin, atol=1e-12)
    np.testing.assert_allclose(s.velocities, [[1e-3, -2e-3, 3e-3], [1e-2, 2e-2, -3e-2]],
                               rtol=1e-12)
    np.testing.assert_allclose(s.masses, [2.014, 15.999])


def test_lammps_errors(tmp_path):
    path = tmp_path / "conf.lmp"
    path.write_text(lammps_text([(1, 1, 0, 0, 0), (2, 3, 1, 1, 1)], n_types=3))
    message = error(path)
    assert str(path) in message and "give type_map" in message
    message = error(path, type_map=["O", "H"])
    assert message == f"{path}: 3 atom types but type_map has 2 entries (O, H)"
    assert error(path, frame=1, type_map=["O", "H", "C"]) == (
        f"{path}: frame 1 requested but conf.lmp has 1 frame")
    bad = tmp_path / "bad.lmp"
    bad.write_text(lammps_text([(1, 1, 0, 0), (2, 2, 1, 1, 1)]))
    message = error(bad, type_map=["O", "H"])
    assert message.startswith(f"{bad}: cannot read as LAMMPS data (atomic style): ")
    general = tmp_path / "general.lmp"
    general.write_text("x\n\n1 atoms\n1 atom types\n10 0 0 avec\n0 10 0 bvec\n0 0 10 cvec\n"
                       "0 0 0 abc origin\n\nAtoms # atomic\n\n1 1 0 0 0\n")
    assert "general triclinic" in error(general, type_map=["O"])
    assert error(tmp_path / "nothere.lmp", type_map=["O"]) == (
        f"{tmp_path / 'nothere.lmp'}: file not found")


# --------------------------------------------------------------------------- ASE formats
def water_molecule(pbc=True) -> ase.Atoms:
    atoms = ase.Atoms("OH2", positions=[[1.0, 1.1, 1.2], [1.9, 1.1, 1.2], [0.8, 2.0, 1.3]])
    if pbc:
        atoms.cell = [[6.0, 0.0, 0.0], [1.0, 7.0, 0.0], [0.5, -0.5, 8.0]]
        atoms.pbc = True
    return atoms


def test_extxyz_round_trip_frames_and_velocities(tmp_path):
    frames = []
    for k in range(3):
        atoms = water_molecule()
        atoms.positions += 0.1 * k
        atoms.set_velocities((np.arange(9.0).reshape(3, 3) + k) * 1e-3 / ase.units.fs)
        frames.append(atoms)
    path = tmp_path / "traj.extxyz"
    ase.io.write(path, frames, format="extxyz")
    s = read_structure(path, frame=2)
    assert s.symbols == ["O", "H", "H"]
    np.testing.assert_allclose(s.positions, frames[2].positions, atol=1e-7)
    np.testing.assert_allclose(s.box, frames[2].cell.array)
    np.testing.assert_allclose(s.velocities, (np.arange(9.0).reshape(3, 3) + 2) * 1e-3,
                               rtol=1e-6)
    assert error(path, frame=7) == f"{path}: frame 7 requested but traj.extxyz has 3 frames"


def test_extxyz_open_and_partial_boundaries(tmp_path):
    path = tmp_path / "mol.xyz"
    ase.io.write(path, water_molecule(pbc=False), format="extxyz")
    s = read_structure(path)
    assert s.box is None and s.velocities is None and s.masses is None
    np.testing.assert_allclose(s.positions, water_molecule(pbc=False).positions)
    slab = water_molecule()
    slab.pbc = [True, True, False]
    ase.io.write(path, slab, format="extxyz")
    message = error(path)
    assert message.startswith(f"{path}: partial periodicity") and "not supported" in message
    path.write_text("3\nnot a header\nO 0 0\n")
    assert error(path).startswith(f"{path}: cannot read as extxyz: ")


@pytest.mark.parametrize("name", ["POSCAR", "CONTCAR", "water.vasp"])
def test_vasp_round_trip(tmp_path, name):
    atoms = water_molecule()
    atoms.set_velocities(np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]) * 1e-3 / ase.units.fs)
    path = tmp_path / name
    ase.io.write(path, atoms, format="vasp")
    assert guess_format(path) == "vasp"
    s = read_structure(path)
    assert s.symbols == ["O", "H", "H"]
    np.testing.assert_allclose(s.positions, atoms.positions, atol=1e-12)
    np.testing.assert_allclose(s.box, atoms.cell.array)
    np.testing.assert_allclose(s.velocities, [[1e-3, 2e-3, 3e-3], [4e-3, 5e-3, 6e-3],
                                              [7e-3, 8e-3, 9e-3]], rtol=1e-12)
    assert error(path, frame=1) == f"{path}: frame 1 requested but {name} has 1 frame"


# --------------------------------------------------------------------------- deepmd/npy
@needs_water
def test_deepmd_frames_across_sets():
    system = WATER / "data_1"
    coords = [np.load(system / s / "coord.npy") for s in ("set.000", "set.001")]
    boxes = [np.load(system / s / "box.npy") for s in ("set.000", "set.001")]
    n0 = coords[0].shape[0]
    type_map = (system / "type_map.raw").read_text().split()
    types = np.loadtxt(system / "type.raw", dtype=int)
    for frame, (k, local) in [(0, (0, 0)), (n0 - 1, (0, n0 - 1)), (n0 + 5, (1, 5))]:
        s = read_structure(system, frame=frame)
        np.testing.assert_array_equal(s.positions, coords[k][local].reshape(-1, 3))
        np.testing.assert_array_equal(s.box, boxes[k][local].reshape(3, 3))
        assert s.symbols == [type_map[t] for t in types]
    total = n0 + coords[1].shape[0]
    assert error(system, frame=total) == (
        f"{system}: frame {total} requested but data_1 has {total} frames")
    assert guess_format(system) == "deepmd-npy"


@needs_water
def test_deepmd_nopbc_and_type_map(tmp_path):
    system = tmp_path / "sys"
    shutil.copytree(WATER / "data_0", system)
    (system / "type_map.raw").unlink()
    (system / "nopbc").write_text("")
    message = error(system)
    assert message.startswith(f"{system}: no type_map.raw; give type_map")
    s = read_structure(system, format="deepmd-npy", frame=3, type_map=["X1", "X2"])
    assert s.box is None and set(s.symbols) == {"X1", "X2"}
    np.testing.assert_array_equal(
        s.positions, np.load(system / "set.000" / "coord.npy")[3].reshape(-1, 3))
    assert error(system, type_map=["O"]).startswith(f"{system}: type index 1 but type map has")
    assert error(system / "type.raw", format="deepmd-npy") == (
        f"{system / 'type.raw'}: a deepmd/npy system is a folder, not a file")


def test_format_guessing(tmp_path):
    for name, fmt in [("a.xyz", "extxyz"), ("a.extxyz", "extxyz"), ("POSCAR", "vasp"),
                      ("CONTCAR_1", "vasp"), ("x.poscar", "vasp"), ("conf.lmp", "lammps-data"),
                      ("water.data", "lammps-data"), ("data.water", "lammps-data")]:
        assert guess_format(tmp_path / name) == fmt
    path = tmp_path / "structure.pdb"
    path.write_text("x")
    message = error(path)
    assert str(path) in message and "cannot guess" in message
    assert all(f in message for f in FORMATS)
    assert "unknown format 'pdb'" in error(path, format="pdb")
    (tmp_path / "empty").mkdir()
    assert "folder without type.raw" in error(tmp_path / "empty")


# --------------------------------------------------------------------------- masses, MB
def test_masses_for():
    m = masses_for(["O", "H", "H"])
    np.testing.assert_allclose(m, [15.999, 1.008, 1.008], atol=1e-3)
    m = masses_for(["O", "H", "H"], {"H": 2.014})
    np.testing.assert_allclose(m[1:], [2.014, 2.014])
    assert masses_for(["Xx"], {"Xx": 3.0}).tolist() == [3.0]
    with pytest.raises(StructureError,
                       match=r"no standard mass for element 'Xx'.*\[system\] masses"):
        masses_for(["O", "Xx"])
    with pytest.raises(StructureError, match="mass of 'H' must be a positive number"):
        masses_for(["H"], {"H": -1.0})


def kinetic_temperature(masses, v) -> float:
    ke = 0.5 * np.sum(masses[:, None] * v * v) * units.KE_TO_EV
    return 2.0 * ke / ((3 * len(masses) - 3) * units.KB)


def test_maxwell_boltzmann_exact_temperature_zero_momentum_reproducible():
    masses = masses_for(["O", "H", "H"] * 20)
    v = maxwell_boltzmann(masses, 300.0, seed=42)
    assert v.shape == (60, 3) and v.dtype == np.float64
    np.testing.assert_allclose((masses[:, None] * v).sum(axis=0), 0.0, atol=1e-14)
    assert kinetic_temperature(masses, v) == pytest.approx(300.0, rel=1e-12)
    np.testing.assert_array_equal(v, maxwell_boltzmann(masses, 300.0, seed=42))
    assert not np.allclose(v, maxwell_boltzmann(masses, 300.0, seed=43))
    assert np.all(maxwell_boltzmann(masses, 0.0, seed=1) == 0)
    assert np.all(maxwell_boltzmann(masses[:1], 300.0, seed=1) == 0)
    with pytest.raises(ValueError):
        maxwell_boltzmann(-masses, 300.0, seed=1)
    with pytest.raises(ValueError):
        maxwell_boltzmann(masses, -1.0, seed=1)


def test_maxwell_boltzmann_distribution():
    temperature = 500.0
    masses = masses_for(["O", "H", "H"] * 1000)
    v = maxwell_boltzmann(masses, temperature, seed=2024)
    scaled = (np.sqrt(masses)[:, None] * v).ravel()  # sqrt(amu)·Å/fs ~ N(0, kT·ACCEL)
    sigma = np.sqrt(units.KB * temperature * units.ACCEL)
    result = stats.kstest(scaled, "norm", args=(0.0, sigma))
    assert result.pvalue > 1e-3
    # the same test with a wrong variance fails: the test has power
    assert stats.kstest(scaled, "norm", args=(0.0, 1.1 * sigma)).pvalue < 1e-3
    # light and heavy atoms alike
    for element in ("O", "H"):
        sel = np.repeat(np.array(["O", "H", "H"] * 1000) == element, 3)
        assert stats.kstest(scaled[sel], "norm", args=(0.0, sigma)).pvalue > 1e-3
