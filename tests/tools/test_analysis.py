"""Tests of ``dpengine analyze`` (tools/analysis): exact crystal results, ideal-gas and
random-walk statistics, MDAnalysis agreement on an engine trajectory, and bad input."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dpengine.io.netcdf import AmberTrajectoryWriter, standard_orientation
from dpengine_tools.analysis import dynamics, pairs, steinhardt
from dpengine_tools.analysis.trajectory import Trajectory, box_from_lengths_angles

REPO = Path(__file__).resolve().parents[2]
WATER = REPO / "inputs" / "water"


def write_traj(path, frames, velocities=None, dt=0.1):
    """AMBER trajectory from a list of (positions [N, 3], box [3, 3]) with dpengine's writer
    (which rotates any box into the standard orientation)."""
    n = len(frames[0][0])
    with AmberTrajectoryWriter(path, n, True, velocities=velocities is not None) as w:
        w.sync = lambda: None
        for k, (pos, box) in enumerate(frames):
            w.write_frame(k * dt, pos, box,
                          velocities=None if velocities is None else velocities[k] / 1000.0)
    return Trajectory(path)


def lattice(basis, cell, reps):
    """Positions of a crystal: fractional ``basis`` in ``cell`` (rows), ``reps`` copies per
    axis; returns (positions [N, 3], supercell [3, 3])."""
    grid = np.array([(i, j, k) for i in range(reps) for j in range(reps) for k in range(reps)])
    frac = (grid[:, None, :] + np.asarray(basis, float)[None]).reshape(-1, 3)
    return frac @ cell, cell * reps


def run_cli(argv, capsys):
    from dpengine.cli import main
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


# --------------------------------------------------------------------------- reader
def test_box_from_lengths_angles_matches_the_writers_standard_orientation():
    h = np.array([[11.0, 0.4, -0.3], [2.5, 10.0, 0.7], [-1.2, 3.1, 9.5]])
    from dpengine.io.netcdf import cell_lengths_angles
    lengths, angles = cell_lengths_angles(h)
    np.testing.assert_allclose(box_from_lengths_angles(lengths, angles),
                               standard_orientation(h)[0], atol=1e-12)
    np.testing.assert_array_equal(box_from_lengths_angles([3.0, 4.0, 5.0], [90, 90, 90]),
                                  np.diag([3.0, 4.0, 5.0]))


# --------------------------------------------------------------------------- RDF
@pytest.mark.parametrize("method", ["pairs", "nlist"])
def test_ideal_gas_rdf_is_one_in_a_triclinic_cell_that_changes_size(tmp_path, method):
    rng = np.random.default_rng(5)
    h0 = np.array([[14.0, 0.0, 0.0], [4.0, 13.0, 0.0], [-3.0, 2.5, 12.0]])
    frames = []
    for k in range(12):                                   # NPT-like: the cell breathes
        h = h0 * (1.0 + 0.03 * np.sin(k))
        frames.append(((rng.random((600, 3)) + rng.integers(-1, 2, (600, 3))) @ h, h))
    traj = write_traj(tmp_path / "gas.nc", frames)
    fr = traj.select()
    rmax = pairs.max_rmax(traj, fr)
    for a, b in ((np.arange(300), np.arange(300)), (np.arange(300), np.arange(300, 600))):
        res = pairs.rdf(traj, fr, a, b, bins=25, method=method, show_progress=False)
        assert res.edges[-1] == pytest.approx(rmax)
        same = a[0] == b[0]
        expected = res.counts / res.g                       # ideal-gas ordered-pair counts
        sigma = np.sqrt((2.0 if same else 1.0) / expected)  # Poisson, doubled when A = B
        ok = res.r > 1.5
        assert np.all(np.abs(res.g[ok] - 1.0) < 5 * sigma[ok])
        assert abs(np.average(res.g[ok], weights=expected[ok]) - 1.0) < 0.01
        assert res.peak["r_peak"] is None                   # no structure, no first peak


def test_rdf_search_methods_agree_exactly(tmp_path):
    rng = np.random.default_rng(1)
    h = np.array([[12.0, 0.0, 0.0], [5.0, 11.0, 0.0], [2.0, -4.0, 10.0]])
    traj = write_traj(tmp_path / "r.nc", [(rng.random((300, 3)) @ h, h) for _ in range(3)])
    kw = dict(frames=traj.select(), atoms_a=np.arange(100), atoms_b=np.arange(100, 300),
              rmax=4.0, bins=40, show_progress=False)
    one, two = (pairs.rdf(traj, method=m, **kw) for m in ("pairs", "nlist"))
    np.testing.assert_array_equal(one.counts, two.counts)
    np.testing.assert_allclose(one.g, two.g, rtol=1e-12)


def test_fcc_rdf_and_coordination_match_the_shells_in_a_primitive_triclinic_cell(tmp_path):
    a = 4.0                               # shells: a/√2 (12), a (6), a√1.5 (24), a√2 (12)
    prim = 0.5 * a * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    pos, box = lattice([[0, 0, 0]], prim, 6)               # 216 atoms, 60°-rhombohedral cell
    traj = write_traj(tmp_path / "fcc.nc", [(pos, box)])
    all_atoms = np.arange(len(pos))
    for method in ("pairs", "nlist"):
        res = pairs.rdf(traj, traj.select(), all_atoms, all_atoms, rmax=6.0, bins=600,
                        method=method, show_progress=False)
        for r, n in ((2.5, 0), (3.4, 12), (4.4, 18), (5.3, 42), (5.9, 54)):
            k = int(r / 0.01)
            assert res.coordination[k] == pytest.approx(n, abs=1e-9), (method, r)
        assert res.peak["r_peak"] == pytest.approx(a / np.sqrt(2), abs=0.01)
        assert res.peak["coordination"] == pytest.approx(12.0)
        # the first shell's bin holds exactly 12 neighbours per atom: g = 12 / (ρ ΔV)
        k = int(a / np.sqrt(2) / 0.01)
        rho = (len(pos) - 1) / abs(np.linalg.det(box))
        dv = 4 / 3 * np.pi * (res.edges[k + 1] ** 3 - res.edges[k] ** 3)
        assert res.g[k] == pytest.approx(12.0 / (rho * dv))


# --------------------------------------------------------------------------- Steinhardt
CRYSTALS = {  # basis, cell, cutoff between shells, Q4, Q6
    "fcc": ([[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]], np.eye(3) * 4.0, 3.4,
            0.19094, 0.57452),
    "bcc": ([[0, 0, 0], [.5, .5, .5]], np.eye(3) * 4.0, 4.5, 0.03637, 0.51069),
    "hcp": ([[0, 0, 0], [1 / 3, 2 / 3, .5]],
            np.array([[3.0, 0, 0], [-1.5, 1.5 * np.sqrt(3), 0], [0, 0, 3.0 * np.sqrt(8 / 3)]]),
            3.5, 0.09722, 0.48476),
}


@pytest.mark.parametrize("name", sorted(CRYSTALS))
def test_steinhardt_q6_of_perfect_crystals(tmp_path, name):
    basis, cell, rc, q4, q6 = CRYSTALS[name]
    pos, box = lattice(basis, cell, 4)
    rot = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))[0]   # any orientation
    traj = write_traj(tmp_path / f"{name}.nc", [(pos @ rot, box @ rot)])
    res = steinhardt.steinhardt(traj, traj.select(), np.arange(len(pos)), rc,
                                show_progress=False)
    assert res.mean[6] == pytest.approx(q6, abs=2e-5)
    assert res.mean[6] == pytest.approx({"fcc": 0.575, "bcc": 0.511, "hcp": 0.485}[name], abs=1e-3)
    assert res.mean[4] == pytest.approx(q4, abs=2e-5)
    assert res.std[6] < 1e-6 and res.isolated == 0
    assert res.neighbours == {"fcc": 12, "bcc": 14, "hcp": 12}[name]
    if name != "hcp":                                      # all q_lm equal: Q̄ = Q
        assert res.mean_bar[6] == pytest.approx(q6, abs=2e-5)


def test_spherical_harmonics_match_scipy_up_to_the_condon_shortley_phase():
    from scipy.special import sph_harm_y
    rng = np.random.default_rng(0)
    theta, phi = rng.uniform(0, np.pi, 50), rng.uniform(-np.pi, np.pi, 50)
    for l in (0, 1, 4, 6, 12):
        m = np.arange(l + 1)
        ref = sph_harm_y(l, m[None], theta[:, None], phi[:, None]) * (-1.0) ** m
        np.testing.assert_allclose(steinhardt.spherical_harmonics(l, np.cos(theta), phi), ref,
                                   atol=1e-12)


def test_steinhardt_cli_with_a_types_file(tmp_path, capsys):
    basis, cell, rc, _, q6 = CRYSTALS["bcc"]
    pos, box = lattice(basis, cell, 3)
    write_traj(tmp_path / "bcc.nc", [(pos, box)] * 2).close()
    (tmp_path / "types.txt").write_text("# one element per atom\n" + "Fe\n" * len(pos))
    rc_, out, err = run_cli(["analyze", "steinhardt", str(tmp_path / "bcc.nc"), "--types-file",
                             str(tmp_path / "types.txt"), "--types", "Fe", "--cutoff", str(rc),
                             "-o", str(tmp_path), "--json", "-q"], capsys)
    assert rc_ == 0, err
    data = json.loads(out)
    assert data["Q6_mean"] == pytest.approx(q6, abs=2e-5)
    assert Path(data["table"]).is_file() and Path(data["plot"]).is_file()


def test_density_follows_a_cell_that_changes_size(tmp_path, capsys):
    rng = np.random.default_rng(6)
    boxes = [np.diag([10.0, 11.0, 12.0]) * (1 + 0.02 * k) + np.triu(np.ones((3, 3)), 1).T
             for k in range(5)]                               # triclinic, growing
    write_traj(tmp_path / "npt.nc", [(rng.random((50, 3)) @ h, h) for h in boxes]).close()
    (tmp_path / "type.raw").write_text("0\n" * 50)           # DeePMD-kit style, with --type-map
    rc, out, err = run_cli(["analyze", "density", str(tmp_path / "npt.nc"), "--types-file",
                            str(tmp_path / "type.raw"), "--type-map", "Ar", "-o", str(tmp_path),
                            "--json", "-q"], capsys)
    assert rc == 0, err
    table = np.loadtxt(json.loads(out)["table"], delimiter=",", skiprows=1)
    expected = [50 * 39.948 / np.linalg.det(h) * 1.66053906660 for h in boxes]
    np.testing.assert_allclose(table[:, 2], expected, rtol=1e-9)


# --------------------------------------------------------------------------- dynamics
def test_msd_of_a_wrapped_random_walk_gives_d(tmp_path):
    rng = np.random.default_rng(3)
    n, sigma, dt = 400, 0.2, 0.1                            # D = σ² / (2 dt) = 0.2 Å²/ps
    h = np.array([[10.0, 0.0, 0.0], [2.0, 10.0, 0.0], [1.0, 1.0, 10.0]])
    x = rng.random((n, 3)) @ h
    frames = []
    for _ in range(600):
        frames.append((((x @ np.linalg.inv(h)) % 1.0) @ h, h))   # stored wrapped
        x = x + rng.normal(0.0, sigma, x.shape)
    traj = write_traj(tmp_path / "walk.nc", frames, dt=dt)
    res = dynamics.msd(traj, traj.select(), np.arange(n), show_progress=False)
    d_true = sigma ** 2 / (2 * dt)
    assert res.D_err < 0.05 * d_true
    assert abs(res.D - d_true) < 4 * res.D_err + 0.01 * d_true
    assert res.alpha == pytest.approx(1.0, abs=0.05)
    assert len(res.block_d) == 5 and not res.notes
    # MSD(τ) = 6 D τ at every lag (no drift: the centre-of-mass correction is tiny here)
    k = len(res.t) // 2
    assert res.msd[k] == pytest.approx(6 * d_true * res.t[k], rel=0.05)


def test_vacf_spectrum_peaks_at_the_oscillation_frequency(tmp_path):
    rng = np.random.default_rng(4)
    n, dt, nu = 50, 0.005, 20.0                             # ps, THz
    t = np.arange(400) * dt
    phase = rng.uniform(0, 2 * np.pi, (n, 3))
    vel = np.cos(2 * np.pi * nu * t[:, None, None] + phase[None])          # Å/ps
    h = np.eye(3) * 10.0
    traj = write_traj(tmp_path / "osc.nc", [(np.zeros((n, 3)) + 1.0, h)] * len(t), vel, dt=dt)
    res = dynamics.vacf(traj, traj.select(), np.arange(n), show_progress=False)
    np.testing.assert_allclose(res.c[:20], 1.5 * np.cos(2 * np.pi * nu * res.t[:20]), atol=0.05)
    assert res.freq[int(np.argmax(res.spectrum))] == pytest.approx(nu, abs=1.0 / res.t[-1])


# --------------------------------------------------------------------------- engine trajectory
@pytest.fixture(scope="module")
def water_run(tmp_path_factory):
    """10 NVE steps of the shipped water model, a frame (with velocities) every step."""
    from dpengine.cli import main
    d = tmp_path_factory.mktemp("water_run")
    shutil.copy(WATER / "conf.lmp", d / "conf.lmp")
    (d / "run.toml").write_text(f"""
[system]
structure = "conf.lmp"
type_map = ["O", "H"]
[potential]
model = "{(WATER / 'water.pt').as_posix()}"
[md]
steps = 10
timestep = 0.5
temperature = 330.0
seed = 7
[output]
trajectory_interval = 1
velocities = true
thermo_interval = 1
restart_interval = 10
""")
    assert main(["run", str(d / "run.toml"), "-o", str(d / "out"), "-q", "--steps", "10"]) == 0
    return d


@pytest.mark.parametrize("types", [("O", "O"), ("O", "H")])
def test_rdf_agrees_with_mdanalysis_on_an_engine_trajectory(water_run, tmp_path, capsys, types):
    import MDAnalysis as mda
    from MDAnalysis.analysis.rdf import InterRDF

    traj = water_run / "out" / "traj.nc"
    rc, out, err = run_cli(["analyze", "rdf", str(traj), "--input", str(water_run / "run.toml"),
                            "--types", *types, "--rmax", "6.0", "--bins", "60", "-o",
                            str(tmp_path), "--json", "-q"], capsys)
    assert rc == 0, err
    ours = json.loads(out)
    table = np.genfromtxt(ours["table"], delimiter=",", names=True)
    u = mda.Universe(str(water_run / "conf.lmp"), str(traj), topology_format="DATA", format="NCDF",
                     atom_style="id type x y z")
    assert len(u.trajectory) == ours["frames"] == 11
    g1, g2 = (u.select_atoms(f"type {1 if t == 'O' else 2}") for t in types)
    ref = InterRDF(g1, g2, nbins=60, range=(0.0, 6.0),
                   exclusion_block=(1, 1) if types[0] == types[1] else None).run()
    r, g = (table[name] for name in table.dtype.names[:2])
    np.testing.assert_allclose(r, ref.results.bins, atol=1e-12)
    # float32 coordinates: a pair within ~1e-6 Å of a bin edge may fall either way
    assert np.abs(g - ref.results.rdf).max() < 0.02 * max(1.0, ref.results.rdf.max())
    assert np.abs(g - ref.results.rdf).sum() / ref.results.rdf.sum() < 2e-3


def test_reader_reads_a_trajectory_written_by_mdanalysis(water_run, tmp_path):
    """Another program's AMBER file (MDAnalysis' writer: its own layout, scale factors)."""
    import MDAnalysis as mda

    src = water_run / "out" / "traj.nc"
    u = mda.Universe(str(water_run / "conf.lmp"), str(src), topology_format="DATA",
                     format="NCDF", atom_style="id type x y z")
    with mda.Writer(str(tmp_path / "mda.nc"), u.atoms.n_atoms, format="NCDF", velocities=True,
                    scale_velocities=20.455) as w:            # AMBER's own velocity unit
        for _ in u.trajectory:
            w.write(u.atoms)
    with Trajectory(src) as ours, Trajectory(tmp_path / "mda.nc") as theirs:
        assert theirs.n_frames == ours.n_frames and theirs.has_velocities
        fr = ours.select()
        a = next(ours.chunks(fr, velocities=True))
        b = next(theirs.chunks(fr, velocities=True))
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-5)
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-5)
        np.testing.assert_allclose(b.velocities, a.velocities, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(b.time, a.time, atol=1e-6)


def test_every_analysis_writes_a_table_a_plot_and_json(water_run, tmp_path, capsys):
    traj, toml = str(water_run / "out" / "traj.nc"), str(water_run / "run.toml")
    common = ["--input", toml, "-o", str(tmp_path), "--json", "-q"]
    runs = {"rdf": ["--types", "O", "H"], "adf": ["--types", "O", "O", "O", "--cutoff", "3.5"],
            "steinhardt": ["--types", "O", "--cutoff", "3.5"],
            "msd": ["--types", "O", "--fit", "0.001", "0.002", "--blocks", "2"],
            "density": [], "vacf": ["--types", "H"]}
    results = {}
    for name, extra in runs.items():
        rc, out, err = run_cli(["analyze", name, traj, *extra, *common], capsys)
        assert rc == 0, (name, err)
        data = json.loads(out)
        assert data["analysis"] == name and data["frames"] == 11
        lines = Path(data["table"]).read_text().splitlines()
        assert "[" in lines[0] and lines[1].startswith("# ")
        assert Path(data["plot"]).stat().st_size > 5000
        results[name] = data
    assert results["vacf"]["c0_A2_per_ps2"] > 0
    # 64 H2O in a 12.4447 Å cube: 64 · 18.015 amu / 1927.3 Å³ · 1.66054 = 0.9934 g/cm³
    assert results["density"]["density_mean"] == pytest.approx(0.99337, abs=1e-4)
    assert results["density"]["density_std"] < 1e-9            # NVE: constant volume
    rc, out, err = run_cli(["analyze", "rdf", traj, "--types", "H", "H", "--no-plot", "--prefix",
                            "np_", *common], capsys)
    assert rc == 0 and json.loads(out)["plot"] is None
    assert (tmp_path / "np_rdf_H-H.csv").is_file() and not (tmp_path / "np_rdf_H-H.png").exists()
    rc, out, err = run_cli(["analyze", "thermo", str(water_run / "out" / "thermo.log"), "--columns",
                            "temp", "etotal", "-o", str(tmp_path), "--json"], capsys)
    assert rc == 0, err
    assert set(json.loads(out)["columns"]) == {"temp", "etotal"}


def test_json_is_all_of_stdout_in_a_fresh_process(water_run, tmp_path):
    """Scripts pipe `--json` into a parser: no Taichi banner or progress text on stdout."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "dpengine", "analyze", "density",
                           str(water_run / "out" / "traj.nc"), "--input",
                           str(water_run / "run.toml"), "-o", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["analysis"] == "density"


# --------------------------------------------------------------------------- bad input
def test_bad_input_gives_clear_errors(water_run, tmp_path, capsys):
    toml = str(water_run / "run.toml")
    traj = str(water_run / "out" / "traj.nc")
    (tmp_path / "text.nc").write_text("not a netcdf file\n")
    with AmberTrajectoryWriter(tmp_path / "empty.nc", 192, True):
        pass
    cases = [
        (["rdf", str(tmp_path / "text.nc"), "--types", "O", "O"], ["text.nc", "not a NetCDF"]),
        (["rdf", str(tmp_path / "missing.nc"), "--types", "O", "O"],
         ["missing.nc", "does not exist"]),
        (["rdf", str(tmp_path / "empty.nc"), "--types", "O", "O"], ["empty.nc", "no frames"]),
        (["rdf", traj, "--types", "O", "Xe"], ["'Xe'", "not present", "O, H"]),
        (["rdf", traj, "--types", "O", "O", "--skip", "50"], ["--skip 50", "11 frames"]),
        (["rdf", traj, "--types", "O", "O", "--rmax", "9"], ["--rmax 9", "6.2"]),
        (["vacf", traj, "--types", "O", "--max-lag", "5"], ["--max-lag"]),
    ]
    for argv, words in cases:
        rc, out, err = run_cli(["analyze", *argv, "--input", toml, "-o", str(tmp_path), "-q"],
                               capsys)
        assert rc == 2, (argv, out, err)
        assert err.count("\n") == 1 and all(w in err for w in words), (argv, err)
    rc, out, err = run_cli(["analyze", "rdf", traj, "--types", "O", "O", "-o", str(tmp_path)],
                           capsys)
    assert rc == 2 and "--input" in err and "--types-file" in err
    (tmp_path / "types.txt").write_text("O\nH\n")
    rc, out, err = run_cli(["analyze", "rdf", traj, "--types", "O", "O", "--types-file",
                            str(tmp_path / "types.txt")], capsys)
    assert rc == 2 and "2 atoms" in err and "192" in err
