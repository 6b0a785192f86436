"""AMBER NetCDF trajectory and restart files: format, readers, kill safety, truncation, restarts."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from dpengine.io.netcdf import (AmberTrajectoryWriter, cell_lengths_angles, read_restart,
                                standard_orientation, truncate_trajectory, write_restart)
from dpengine.units import EV_TO_KCAL_MOL

mda = pytest.importorskip("MDAnalysis")
REPO = Path(__file__).resolve().parents[2]
KJ_PER_KCAL = 4.184  # MDAnalysis converts AMBER forces to kJ/(mol·Å)


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


TRICLINIC = np.array([[10.0, 0.0, 0.0], [2.5, 9.0, 0.0], [-1.5, 2.0, 8.5]])


def frames(rng, n_frames, n_atoms, box):
    """Random frames: (time_ps, positions Å, box, velocities Å/fs, forces eV/Å, step)."""
    out = []
    for i in range(n_frames):
        r = rng.uniform(0, 8, (n_atoms, 3))
        out.append((0.002 * i, r, None if box is None else box, rng.normal(0, 0.01, (n_atoms, 3)),
                    rng.normal(0, 1, (n_atoms, 3)), 2 * i))
    return out


def write(path, fr, n_atoms, periodic, **kw):
    with AmberTrajectoryWriter(path, n_atoms, periodic, velocities=True, forces=True, **kw) as w:
        for t, r, h, v, f, s in fr:
            w.write_frame(t, r, h, velocities=v, forces=f, step=s)


def read_mda(path, n_atoms):
    """Read every frame with MDAnalysis, turning any warning into an error."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        u = mda.Universe.empty(n_atoms, trajectory=True)
        u.load_new(str(path), format="NCDF")
        for ts in u.trajectory:
            out.append(dict(time=ts.time, pos=ts.positions.copy(),
                            vel=ts.velocities.copy() if ts.has_velocities else None,
                            frc=ts.forces.copy() if ts.has_forces else None,
                            dims=None if ts.dimensions is None else ts.dimensions.copy(),
                            tri=None if ts.dimensions is None else ts.triclinic_dimensions.copy()))
        u.trajectory.close()
    return out


def test_orthorhombic_read_by_mdanalysis(tmp_path):
    rng = np.random.default_rng(1)
    box = np.diag([12.0, 13.0, 14.0])
    fr = frames(rng, 4, 7, box)
    write(tmp_path / "t.nc", fr, 7, True)
    got = read_mda(tmp_path / "t.nc", 7)
    assert len(got) == 4
    for (t, r, h, v, f, s), g in zip(fr, got):
        assert g["time"] == pytest.approx(t, rel=1e-6)
        np.testing.assert_allclose(g["pos"], r, rtol=1e-6, atol=1e-5)  # untouched (standard box)
        np.testing.assert_allclose(g["vel"], v * 1000.0, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(g["frc"] / KJ_PER_KCAL, f * EV_TO_KCAL_MOL, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g["dims"], [12, 13, 14, 90, 90, 90], rtol=1e-6)


@pytest.mark.parametrize("rotate", [False, True])
def test_triclinic_read_by_mdanalysis(tmp_path, rotate):
    rng = np.random.default_rng(2)
    rot = random_rotation(rng) if rotate else np.eye(3)
    box = TRICLINIC @ rot.T  # rows rotated: same cell, general orientation when rotate
    fr = frames(rng, 3, 6, box)
    fr = [(t, r @ rot.T, h, v @ rot.T, f @ rot.T, s) for t, r, h, v, f, s in fr]
    write(tmp_path / "t.nc", fr, 6, True)
    got = read_mda(tmp_path / "t.nc", 6)
    lengths, angles = cell_lengths_angles(box)
    np.testing.assert_allclose(lengths, np.linalg.norm(TRICLINIC, axis=1), rtol=1e-12)
    for (t, r, h, v, f, s), g in zip(fr, got):
        np.testing.assert_allclose(g["dims"], np.r_[lengths, angles], rtol=1e-6)
        lmat = g["tri"].astype(np.float64)  # the reader's cell: a along x, b in the xy plane
        np.testing.assert_allclose(lmat, TRICLINIC, atol=1e-4)
        # fractional coordinates, and the same map for velocities and forces, are preserved
        np.testing.assert_allclose(g["pos"] @ np.linalg.inv(lmat), r @ np.linalg.inv(box), atol=2e-6)
        np.testing.assert_allclose(g["vel"] @ np.linalg.inv(lmat), 1000 * v @ np.linalg.inv(box), atol=1e-6)
        np.testing.assert_allclose(g["frc"] / KJ_PER_KCAL @ np.linalg.inv(lmat),
                                   EV_TO_KCAL_MOL * f @ np.linalg.inv(box), atol=2e-5)
        d_got = np.linalg.norm(g["pos"][:, None] - g["pos"][None], axis=-1)
        np.testing.assert_allclose(d_got, np.linalg.norm(r[:, None] - r[None], axis=-1), atol=1e-5)
    if not rotate:  # a box in standard orientation is written untouched
        with netCDF4.Dataset(tmp_path / "t.nc") as ds:
            assert np.array_equal(ds["coordinates"][0], fr[0][1].astype(np.float32))


def test_standard_orientation_math():
    rng = np.random.default_rng(3)
    for _ in range(20):
        box = np.tril(rng.uniform(-3, 3, (3, 3))) + np.diag(rng.uniform(6, 12, 3))
        h = box @ random_rotation(rng).T
        lmat, q = standard_orientation(h)
        np.testing.assert_allclose(h @ q, lmat, atol=1e-12)
        np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(lmat, box, atol=1e-12)
    assert standard_orientation(TRICLINIC)[1] is None
    lmat, q = standard_orientation(np.diag([-5.0, 6.0, 7.0]))  # left-handed: reflection
    np.testing.assert_allclose(lmat, np.diag([5.0, 6.0, 7.0]), atol=1e-14)
    with pytest.raises(ValueError, match="singular"):
        standard_orientation(np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]]))


def test_open_boundary_and_torch_inputs(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    fr = frames(rng, 2, 5, None)
    with AmberTrajectoryWriter(tmp_path / "t.nc", 5, periodic=False, velocities=True) as w:
        for t, r, _, v, f, s in fr:
            w.write_frame(t, torch.tensor(r), velocities=torch.tensor(v), forces=f, step=s)
    got = read_mda(tmp_path / "t.nc", 5)
    assert got[1]["dims"] is None and got[1]["frc"] is None
    np.testing.assert_allclose(got[1]["pos"], fr[1][1], atol=1e-5)
    np.testing.assert_allclose(got[1]["vel"], fr[1][3] * 1000, atol=1e-5)
    with netCDF4.Dataset(tmp_path / "t.nc") as ds:
        assert "cell_lengths" not in ds.variables and "cell_spatial" not in ds.dimensions


def test_header_follows_convention(tmp_path):
    rng = np.random.default_rng(5)
    write(tmp_path / "t.nc", frames(rng, 2, 3, TRICLINIC), 3, True, title="water box")
    with netCDF4.Dataset(tmp_path / "t.nc") as ds:
        assert ds.data_model == "NETCDF3_64BIT_OFFSET"
        assert (ds.Conventions, ds.ConventionVersion, ds.program, ds.title) == \
            ("AMBER", "1.0", "dpengine", "water box")
        assert isinstance(ds.programVersion, str) and isinstance(ds.application, str)
        assert ds.dimensions["frame"].isunlimited() and len(ds.dimensions["frame"]) == 2
        assert {k: len(d) for k, d in ds.dimensions.items() if k != "frame"} == dict(
            spatial=3, atom=3, cell_spatial=3, cell_angular=3, label=5)
        ds.set_auto_chartostring(False)
        assert b"".join(ds["spatial"][:]) == b"xyz" and b"".join(ds["cell_spatial"][:]) == b"abc"
        assert [b"".join(row) for row in ds["cell_angular"][:]] == [b"alpha", b"beta ", b"gamma"]
        expect = dict(time=("f4", ("frame",), "picosecond"),
                      coordinates=("f4", ("frame", "atom", "spatial"), "angstrom"),
                      cell_lengths=("f8", ("frame", "cell_spatial"), "angstrom"),
                      cell_angles=("f8", ("frame", "cell_angular"), "degree"),
                      velocities=("f4", ("frame", "atom", "spatial"), "angstrom/picosecond"),
                      forces=("f4", ("frame", "atom", "spatial"), "kilocalorie/mole/angstrom"))
        for name, (dt, dims, units) in expect.items():
            var = ds[name]
            assert (var.dtype.str[1:], var.dimensions, var.units) == (dt, dims, units), name
        assert list(ds["dpengine_step"][:]) == [0, 2]


@pytest.mark.skipif(shutil.which("ncdump") is None, reason="ncdump not installed")
def test_ncdump_header(tmp_path):
    write(tmp_path / "t.nc", frames(np.random.default_rng(6), 1, 2, TRICLINIC), 2, True)
    out = subprocess.run(["ncdump", "-h", str(tmp_path / "t.nc")], capture_output=True,
                         text=True, check=True).stdout
    assert ':Conventions = "AMBER"' in out and "frame = UNLIMITED ; // (1 currently)" in out
    assert "char cell_angular(cell_angular, label)" in out


def test_mdtraj_reads(tmp_path):
    md = pytest.importorskip("mdtraj")
    rng = np.random.default_rng(7)
    fr = frames(rng, 3, 4, TRICLINIC)
    write(tmp_path / "t.nc", fr, 4, True)
    top = md.Topology()
    res = top.add_residue("MOL", top.add_chain())
    for _ in range(4):
        top.add_atom("O", md.element.oxygen, res)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        traj = md.load_netcdf(str(tmp_path / "t.nc"), top=top)
    assert traj.n_frames == 3
    np.testing.assert_allclose(traj.xyz[2] * 10, fr[2][1], atol=1e-5)  # nm -> Å
    np.testing.assert_allclose(traj.unitcell_vectors[0] * 10, TRICLINIC, atol=1e-4)
    np.testing.assert_allclose(traj.time, [0.0, 0.002, 0.004], rtol=1e-6)  # ps


CHILD = textwrap.dedent("""
    import sys, time, numpy as np
    from dpengine.io.netcdf import AmberTrajectoryWriter
    n_atoms, n_then_wait = 50, int(sys.argv[2])
    box = np.array([[10.0, 0, 0], [1.0, 11.0, 0], [0.5, 0.5, 12.0]])
    w = AmberTrajectoryWriter(sys.argv[1], n_atoms, True, velocities=True)
    i = 0
    while True:
        r = np.full((n_atoms, 3), float(i))
        w.write_frame(0.001 * i, r, box, velocities=r * 1e-3, step=i)
        i += 1
        print(i, flush=True)
        if n_then_wait and i == n_then_wait:
            time.sleep(600)
""")


def spawn(path, n_then_wait):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(n_then_wait)],
                            stdout=subprocess.PIPE, text=True, env=env)


def check_frames(path, at_least):
    """Every frame in the file, read by MDAnalysis and by netCDF4, is complete and correct."""
    got = read_mda(path, 50)
    assert len(got) >= at_least
    for i, g in enumerate(got):
        assert np.all(g["pos"] == i) and np.allclose(g["vel"], i) and g["time"] == pytest.approx(0.001 * i)
    with netCDF4.Dataset(path) as ds:
        assert len(ds.dimensions["frame"]) == len(got)
        assert np.array_equal(ds["dpengine_step"][:], np.arange(len(got)))
    return len(got)


@pytest.mark.parametrize("n_then_wait", [5, 0])
def test_readable_while_running_and_after_sigkill(tmp_path, n_then_wait):
    path = tmp_path / "t.nc"
    proc = spawn(path, n_then_wait)
    try:
        target = n_then_wait or 30
        reported = 0
        while reported < target:
            line = proc.stdout.readline()
            assert line, "writer process died"
            reported = int(line)
        if n_then_wait:  # the writer is alive, holding the file open
            assert check_frames(path, n_then_wait) == n_then_wait
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    check_frames(path, target)


def test_append_truncates_by_time_and_step(tmp_path):
    path = tmp_path / "t.nc"
    rng = np.random.default_rng(8)
    fr = frames(rng, 10, 3, TRICLINIC)  # times 0.002*i, steps 2*i
    write(path, fr, 3, True)
    # restart at frame 6, its time computed differently (off by rounding): frame 6 is dropped
    t_restart = np.nextafter(np.nextafter(0.002 * 6, 0), 0)
    with AmberTrajectoryWriter(path, 3, True, velocities=True, forces=True, append=True) as w:
        assert w.n_frames == 10
        assert w.truncate_after(t_restart) == 6
        for t, r, h, v, f, s in fr[6:]:
            w.write_frame(t, r, h, velocities=v, forces=f, step=s)
    got = read_mda(path, 3)
    assert [round(g["time"], 6) for g in got] == [round(0.002 * i, 6) for i in range(10)]
    np.testing.assert_allclose(got[7]["pos"], fr[7][1], atol=1e-5)
    assert truncate_trajectory(path, step=9) == 5  # keeps steps <= 9: 0, 2, 4, 6, 8
    assert truncate_trajectory(path, step=6) == 4  # a frame at exactly `step` is kept
    assert truncate_trajectory(path, time_ps=1.0) == 4  # nothing to drop: file untouched
    with netCDF4.Dataset(path) as ds:
        assert list(ds["dpengine_step"][:]) == [0, 2, 4, 6] and ds.Conventions == "AMBER"
        assert ds["coordinates"].units == "angstrom" and ds["cell_angular"].shape == (3, 5)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    with pytest.raises(ValueError, match="exactly one"):
        truncate_trajectory(path, 1.0, step=3)


def test_append_errors_and_create(tmp_path):
    path = tmp_path / "t.nc"
    write(path, frames(np.random.default_rng(9), 2, 3, TRICLINIC), 3, True)
    with pytest.raises(ValueError, match="atoms"):
        AmberTrajectoryWriter(path, 4, True, velocities=True, forces=True, append=True)
    with pytest.raises(ValueError, match="forces present"):
        AmberTrajectoryWriter(path, 3, True, velocities=True, append=True)
    with AmberTrajectoryWriter(tmp_path / "new.nc", 3, False, append=True) as w:  # created
        w.write_frame(0.0, np.zeros((3, 3)))
        with pytest.raises(ValueError, match="given a box"):
            w.write_frame(0.0, np.zeros((3, 3)), box=np.eye(3))
        with pytest.raises(ValueError, match="shape"):
            w.write_frame(0.0, np.zeros((4, 3)))
        assert w.n_frames == 1
    with AmberTrajectoryWriter(path, 3, True, velocities=True, forces=True, append=True) as w:
        with pytest.raises(ValueError, match="needs a box"):
            w.write_frame(0.0, np.zeros((3, 3)))
        with pytest.raises(ValueError, match="needs forces"):
            w.write_frame(0.0, np.zeros((3, 3)), TRICLINIC, velocities=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="closed"):
        w.write_frame(0.0, np.zeros((3, 3)), TRICLINIC)


# -- restarts ---------------------------------------------------------------------------------
def extras():
    torch = pytest.importorskip("torch")
    return {
        "nhc_xi": np.array([0.1, -0.0, np.nan, 1e-300, np.inf]),
        "nhc_v": np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32),
        "rng_counter": np.array([2**62 + 3, -2**63], dtype=np.int64),
        "key": np.array([2**64 - 1], dtype=np.uint64),
        "mask": np.array([[True, False], [False, True]]),
        "cplx": np.array([1 + 2j]), "small": np.arange(3, dtype=np.int16),
        "empty": np.zeros((0, 3)), "zero_d": np.array(2.5), "npscalar": np.float32(0.1),
        "py_int": 2**63 - 1, "py_float": 0.1, "py_bool": True,
        "type_map": "O H", "note": "é∞ " * 40, "blank": "", "tensor": torch.arange(4, dtype=torch.float64) / 3,
    }


def same(a, b) -> bool:
    if isinstance(a, (str, bool, int, float)):
        return type(a) is type(b) and (a == b or (a != a and b != b))
    a = a.detach().numpy() if hasattr(a, "detach") else a
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes() and \
        isinstance(b, np.ndarray) == isinstance(a, np.ndarray)


@pytest.mark.parametrize("box_kind", ["rotated", "orthorhombic", "open"])
def test_restart_bit_exact_round_trip(tmp_path, box_kind):
    rng = np.random.default_rng(10)
    rot = random_rotation(rng)
    box = {"rotated": TRICLINIC @ rot.T, "orthorhombic": np.diag([9.1, 9.2, 9.3]), "open": None}[box_kind]
    r, v = rng.normal(0, 5, (9, 3)), rng.normal(0, 0.01, (9, 3))
    ex = extras()
    write_restart(tmp_path / "r.nc", 12.345, r, v, box, ex, step=2**40 + 7)
    back = read_restart(tmp_path / "r.nc")
    assert back["positions"].tobytes() == r.tobytes() and back["velocities"].tobytes() == v.tobytes()
    assert (back["box"] is None) if box is None else back["box"].tobytes() == box.tobytes()
    assert back["step"] == 2**40 + 7 and back["time_ps"] == 12.345
    assert set(back["extra"]) == set(ex)
    for k in ex:
        assert same(ex[k], back["extra"][k]), k
    with netCDF4.Dataset(tmp_path / "r.nc") as ds:  # the AMBER part of the file
        assert (ds.data_model, ds.Conventions, ds.ConventionVersion) == \
            ("NETCDF3_64BIT_OFFSET", "AMBERRESTART", "1.0")
        assert "frame" not in ds.dimensions and ds["time"].shape == () and ds["time"].units == "picosecond"
        assert ds["coordinates"].dtype == np.float64 and ds["velocities"].units == "angstrom/picosecond"
        crd, vel = np.asarray(ds["coordinates"][:]), np.asarray(ds["velocities"][:])
        if box is None:
            assert np.array_equal(crd, r) and np.allclose(vel, 1000 * v)
            assert "cell_lengths" not in ds.variables
        else:
            lengths, angles = ds["cell_lengths"][:], ds["cell_angles"][:]
            np.testing.assert_allclose(lengths, np.linalg.norm(box, axis=1), rtol=1e-14)
            lmat = standard_orientation(box)[0]
            np.testing.assert_allclose(crd @ np.linalg.inv(lmat), r @ np.linalg.inv(box), atol=1e-12)
            np.testing.assert_allclose(vel @ np.linalg.inv(lmat), 1000 * v @ np.linalg.inv(box), atol=1e-12)
            assert ds["cell_angles"].units == "degree" and np.all((angles > 0) & (angles < 180))


def test_restart_read_by_mdtraj(tmp_path):
    md = pytest.importorskip("mdtraj")
    r = np.random.default_rng(11).uniform(0, 9, (4, 3))
    write_restart(tmp_path / "r.ncrst", 3.0, r, np.zeros((4, 3)), TRICLINIC, step=1500)
    with md.formats.AmberNetCDFRestartFile(str(tmp_path / "r.ncrst")) as f:
        xyz, t, lengths, angles = f.read()
    np.testing.assert_allclose(xyz[0], r, atol=1e-12)
    np.testing.assert_allclose(lengths[0], np.linalg.norm(TRICLINIC, axis=1), rtol=1e-14)
    assert t[0] == 3.0


def test_restart_write_is_atomic(tmp_path):
    path = tmp_path / "r.nc"
    r = np.ones((2, 3))
    write_restart(path, 1.0, r, r, None, {"a": 1}, step=5)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="dtype"):
        write_restart(path, 2.0, r, r, None, {"a": 2, "bad": np.array(["x"], dtype=object)}, step=6)
    with pytest.raises(ValueError, match="extra key"):
        write_restart(path, 2.0, r, r, None, {"bad name": 1}, step=6)
    assert path.read_bytes() == before and read_restart(path)["step"] == 5
    assert os.listdir(tmp_path) == ["r.nc"]  # no temporary files left behind


def test_read_restart_errors(tmp_path):
    traj = tmp_path / "t.nc"
    write(traj, frames(np.random.default_rng(12), 1, 2, None), 2, False)
    with pytest.raises(ValueError, match=r"t\.nc.*AMBERRESTART"):
        read_restart(traj)
    (tmp_path / "x.txt").write_text("not netcdf\n")
    with pytest.raises(ValueError, match=r"x\.txt.*not a NetCDF"):
        read_restart(tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError):
        read_restart(tmp_path / "missing.nc")
    with netCDF4.Dataset(tmp_path / "amber.ncrst", "w", format="NETCDF3_64BIT_OFFSET") as ds:
        ds.Conventions, ds.ConventionVersion = "AMBERRESTART", "1.0"
        ds.createDimension("atom", 2)
        ds.createDimension("spatial", 3)
        ds.createVariable("coordinates", "f8", ("atom", "spatial"))[:] = 0.0
        ds.createVariable("time", "f8", ()).assignValue(0.0)
    with pytest.raises(ValueError, match=r"amber\.ncrst.*dpengine_positions, dpengine_step"):
        read_restart(tmp_path / "amber.ncrst")


def test_restart_overwrite_keeps_one_file(tmp_path):
    path = tmp_path / "r.nc"
    for step in range(3):
        write_restart(path, 0.1 * step, np.full((2, 3), step), None, np.eye(3) * 5, step=step)
    back = read_restart(path)
    assert back["step"] == 2 and back["velocities"] is None and back["extra"] == {}
    assert sorted(os.listdir(tmp_path)) == ["r.nc"]


def test_atomic_numbers_read_by_ase_and_ignored_by_amber_readers(tmp_path):
    """``atom_types`` (atomic numbers) gives ASE the elements; MDAnalysis (warnings are errors
    in read_mda) and MDTraj still read the file as before."""
    from ase.io.netcdftrajectory import NetCDFTrajectory
    import mdtraj
    rng = np.random.default_rng(4)
    box = np.diag([9.0, 9.5, 10.0])
    fr = frames(rng, 3, 6, box)
    write(tmp_path / "t.nc", fr, 6, True, atomic_numbers=[8, 1, 1, 8, 1, 1])
    traj = NetCDFTrajectory(str(tmp_path / "t.nc"))
    try:
        atoms = traj[-1]
    finally:
        traj.close()
    assert atoms.get_chemical_symbols() == ["O", "H", "H", "O", "H", "H"]
    np.testing.assert_allclose(atoms.positions, fr[-1][1], rtol=1e-6, atol=1e-5)
    assert len(read_mda(tmp_path / "t.nc", 6)) == 3
    top = mdtraj.Topology()
    chain = top.add_chain()
    for _ in range(6):
        top.add_atom("X", mdtraj.element.hydrogen, top.add_residue("R", chain))
    assert mdtraj.load_netcdf(str(tmp_path / "t.nc"), top=top).n_frames == 3
    with pytest.raises(ValueError, match="atomic_numbers"):
        AmberTrajectoryWriter(tmp_path / "bad.nc", 6, True, atomic_numbers=[8, 1])
