"""``dpengine run`` end to end: outputs, restarts, signals, bad input."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from dpengine.cli import main

REPO = Path(__file__).resolve().parents[1]
WATER = REPO / "inputs" / "water"


DEVICE = os.environ.get("DPENGINE_TEST_DEVICE", "cpu")
cpu_only = pytest.mark.skipif(DEVICE != "cpu", reason="bit-for-bit reproducibility is a CPU property "
                              "(the GPU force scatter uses atomics)")


def _case(tmp_path, water_model, text: str = "", steps: int = 20, **output) -> Path:
    """A water input file in tmp_path using the fixture model; extra TOML appended."""
    shutil.copy(WATER / "conf.lmp", tmp_path / "conf.lmp")
    out = dict(trajectory_interval=5, thermo_interval=5, restart_interval=10, velocities=True,
               forces=True)
    out.update(output)
    lines = ["[system]", 'structure = "conf.lmp"', 'type_map = ["O", "H"]', "[potential]",
             f'model = "{water_model}"', f'device = "{DEVICE}"', "[md]", f"steps = {steps}", "timestep = 0.5",
             "temperature = 330.0", "seed = 7", "[output]"]
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in out.items()]
    path = tmp_path / "in.toml"
    path.write_text("\n".join(lines) + "\n" + text)
    return path


def _coords(path):
    with netCDF4.Dataset(path) as ds:
        return np.array(ds["coordinates"][:]), np.array(ds["velocities"][:]), np.array(ds["time"][:])


def test_run_writes_outputs(tmp_path, water_model):
    toml = _case(tmp_path, water_model)
    assert main(["run", str(toml), "-o", str(tmp_path / "out"), "-q"]) == 0
    thermo = np.loadtxt(tmp_path / "out" / "thermo.log")
    assert thermo.shape == (5, 10)
    assert list(thermo[:, 0]) == [0, 5, 10, 15, 20]
    header = (tmp_path / "out" / "thermo.log").read_text().splitlines()[0]
    for col in ("step", "time[ps]", "pe[eV]", "temp[K]", "press[bar]", "conserved[eV]"):
        assert col in header
    coords, vel, t = _coords(tmp_path / "out" / "traj.nc")
    assert coords.shape == (5, 192, 3)
    np.testing.assert_allclose(t, [0, 0.0025, 0.005, 0.0075, 0.01], atol=1e-7)
    with netCDF4.Dataset(tmp_path / "out" / "traj.nc") as ds:   # elements for ASE/OVITO
        assert sorted(np.unique(ds["atom_types"][:]).tolist()) == [1, 8]
        assert (np.array(ds["atom_types"][:]) == 8).sum() == 64
    assert abs(thermo[0, 5] - 330.0) < 1e-6  # exact initial temperature
    assert (tmp_path / "out" / "restart.ncrst").is_file()


@cpu_only
def test_restart_is_bit_exact(tmp_path, water_model):
    toml = _case(tmp_path, water_model, steps=20)
    assert main(["run", str(toml), "-o", str(tmp_path / "full"), "-q"]) == 0
    assert main(["run", str(toml), "-o", str(tmp_path / "half"), "-q", "--steps", "10"]) == 0
    assert main(["run", str(toml), "-o", str(tmp_path / "half"), "-q", "--steps", "20",
                 "--restart", str(tmp_path / "half" / "restart.ncrst")]) == 0
    full, half = _coords(tmp_path / "full" / "traj.nc"), _coords(tmp_path / "half" / "traj.nc")
    for a, b in zip(full, half):
        assert a.shape == b.shape
        assert np.array_equal(a, b)
    from dpengine.io.netcdf import read_restart
    ra = read_restart(tmp_path / "full" / "restart.ncrst")
    rb = read_restart(tmp_path / "half" / "restart.ncrst")
    assert ra["step"] == rb["step"] == 20
    assert np.array_equal(ra["positions"], rb["positions"])
    assert np.array_equal(ra["velocities"], rb["velocities"])
    ta = np.loadtxt(tmp_path / "full" / "thermo.log")
    tb = np.loadtxt(tmp_path / "half" / "thermo.log")
    assert np.array_equal(ta, tb)


@cpu_only
def test_sigterm_leaves_readable_trajectory_and_exact_restart(tmp_path, water_model):
    toml = _case(tmp_path, water_model, steps=100000, trajectory_interval=2, restart_interval=100000)
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "dpengine", "run", str(toml), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "traj.nc").exists():
            with netCDF4.Dataset(out / "traj.nc") as ds:
                if len(ds.dimensions["frame"]) >= 4:
                    break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and "restart" in err
    from dpengine.io.netcdf import read_restart
    saved = read_restart(out / "restart.ncrst")
    step = saved["step"]
    coords, _, _ = _coords(out / "traj.nc")
    assert len(coords) >= 4
    # the restart continues exactly: 4 more steps from it == an uninterrupted run to step + 4
    target = step + 4 - (step + 4) % 2
    assert main(["run", str(toml), "-o", str(out), "-q", "--steps", str(target),
                 "--restart", str(out / "restart.ncrst")]) == 0
    assert main(["run", str(toml), "-o", str(tmp_path / "straight"), "-q", "--steps",
                 str(target)]) == 0
    a, b = _coords(out / "traj.nc"), _coords(tmp_path / "straight" / "traj.nc")
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


def test_model_deviation(tmp_path, water_model):
    toml = _case(tmp_path, water_model, text=f'[model_deviation]\nmodels = ["{water_model}"]\n'
                 "interval = 5\n", steps=10)
    assert main(["run", str(toml), "-o", str(tmp_path / "o"), "-q"]) == 0
    devi = np.loadtxt(tmp_path / "o" / "model_devi.out")
    assert devi.shape == (3, 8)
    assert list(devi[:, 0]) == [0, 5, 10]
    # identical committee: zero deviation (to round-off on a GPU, where forces sum by atomics)
    assert np.all(np.abs(devi[:, 1:]) < 1e-9)


BAD = [
    ("[md]\ntimestpe = 1\n", "did you mean 'timestep'"),
    ("[md]\nensemble = \"nvx\"\n", "nve"),
    ("[md]\nsteps = \"many\"\n", "steps"),
    ("[md]\ntimestep = -1.0\n", "timestep"),
]


@pytest.mark.parametrize("extra, message", BAD)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, water_model, capsys, extra, message):
    toml = _case(tmp_path, water_model)
    text = toml.read_text()
    table, _, rest = extra.partition("\n")
    # put the bad key in its table (replace an existing key of the same name)
    key = rest.split("=")[0].strip()
    lines = [ln for ln in text.splitlines() if not ln.startswith(key + " ")]
    idx = lines.index(table)
    lines.insert(idx + 1, rest.strip())
    toml.write_text("\n".join(lines) + "\n")
    code = main(["run", str(toml), "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "in.toml" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_model_and_wrong_elements(tmp_path, water_model, capsys):
    toml = _case(tmp_path, water_model)
    toml.write_text(toml.read_text().replace(str(water_model), "nope.pt"))
    assert main(["run", str(toml), "-o", str(tmp_path / "out"), "-q"]) == 2
    assert "nope.pt" in capsys.readouterr().err
    toml = _case(tmp_path, water_model)
    toml.write_text(toml.read_text().replace('type_map = ["O", "H"]', 'type_map = ["O", "C"]'))
    assert main(["run", str(toml), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "'C'" in err and "type map" in err
    assert not (tmp_path / "out").exists()


def test_cli_version_and_help():
    out = subprocess.run([sys.executable, "-m", "dpengine", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("dpengine ")
    out = subprocess.run([sys.executable, "-m", "dpengine", "run", "--help"], capture_output=True, text=True)
    for opt in ("--steps", "--output-dir", "--restart", "--set", "--quiet"):
        assert opt in out.stdout


# --------------------------------------------------------------------------- ensembles
ARGON = REPO / "inputs" / "lj_argon"
LJ_TABLES = """[system]
structure = "argon.xyz"
[potential]
type = "lj"
epsilon = {Ar-Ar = 0.010323565}
sigma = {Ar-Ar = 3.405}
cutoff = 10.215
truncation = "tail"
"""


def _lj_case(tmp_path, md: str, steps: int = 40, structure: str = "argon.xyz", **output) -> Path:
    shutil.copy(ARGON / "argon.xyz", tmp_path / "argon.xyz")
    out = dict(trajectory_interval=5, thermo_interval=5, restart_interval=10, velocities=True)
    out.update(output)
    text = (LJ_TABLES.replace("argon.xyz", structure) + "[md]\n"
            + f"steps = {steps}\ntimestep = 5.0\ntemperature = 239.6\nseed = 99\n" + md
            + "\n[neighbor]\nskin = 1.0\n[output]\n"
            + "\n".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}"
                        for k, v in out.items()) + "\n")
    path = tmp_path / "lj.toml"
    path.write_text(text)
    return path


NPT_CASES = {
    "c-rescale+langevin": 'ensemble = "npt"\nthermostat = "langevin"\nlangevin_friction = 5.0\n'
                          'barostat = "c-rescale"\npressure = 2216.5\ntau_p = 500.0\n'
                          'compressibility = 1.0e-4\n',
    "c-rescale+csvr": 'ensemble = "npt"\nthermostat = "csvr"\nbarostat = "c-rescale"\n'
                      'coupling = "anisotropic"\npressure = 2216.5\ntau_p = 500.0\n'
                      'compressibility = 1.0e-4\n',
    "mtk": 'ensemble = "npt"\nthermostat = "nose-hoover-chain"\nbarostat = "mtk"\n'
           'coupling = "triclinic"\npressure = 2216.5\ntau_p = 500.0\n',
}


@cpu_only
@pytest.mark.parametrize("case", list(NPT_CASES))
def test_npt_restart_is_bit_exact(tmp_path, case):
    """Stop a stochastic (or extended-system) NPT run half way and continue it from the
    restart file: positions, velocities, cell, thermo lines (the conserved column too) and
    the ensemble variables equal those of the uninterrupted run bit for bit."""
    from dpengine.io.netcdf import read_restart
    toml = _lj_case(tmp_path, NPT_CASES[case], steps=40)
    assert main(["run", str(toml), "-o", str(tmp_path / "full"), "-q"]) == 0
    assert main(["run", str(toml), "-o", str(tmp_path / "half"), "-q", "--steps", "20"]) == 0
    assert main(["run", str(toml), "-o", str(tmp_path / "half"), "-q", "--steps", "40",
                 "--restart", str(tmp_path / "half" / "restart.ncrst")]) == 0
    for name in ("coordinates", "velocities", "cell_lengths", "cell_angles", "time"):
        with netCDF4.Dataset(tmp_path / "full" / "traj.nc") as a, \
                netCDF4.Dataset(tmp_path / "half" / "traj.nc") as b:
            assert np.array_equal(np.array(a[name][:]), np.array(b[name][:])), name
    ta = np.loadtxt(tmp_path / "full" / "thermo.log")
    tb = np.loadtxt(tmp_path / "half" / "thermo.log")
    assert ta.shape == (9, 10) and np.array_equal(ta, tb)
    assert np.ptp(ta[:, 7]) > 0  # the volume moved
    ra = read_restart(tmp_path / "full" / "restart.ncrst")
    rb = read_restart(tmp_path / "half" / "restart.ncrst")
    ens = [k for k in ra["extra"] if k.startswith("ensemble_")]
    assert ens and sorted(ens) == sorted(k for k in rb["extra"] if k.startswith("ensemble_"))
    for k in ens:
        assert np.array_equal(np.asarray(ra["extra"][k]), np.asarray(rb["extra"][k])), k
    assert np.array_equal(ra["box"], rb["box"]) and np.array_equal(ra["positions"], rb["positions"])


def _xyz_without_cell(tmp_path) -> str:
    text = (ARGON / "argon.xyz").read_text().splitlines()
    text[1] = 'Properties=species:S:1:pos:R:3 pbc="F F F"'
    (tmp_path / "cluster.xyz").write_text("\n".join(text[:56]).replace("256", "54", 1) + "\n")
    return "cluster.xyz"


ENSEMBLE_BAD = [
    ('ensemble = "nvt"\nthermostat = "nose-hoover"\n',
     'thermostat must be one of "langevin", "csvr", "nose-hoover-chain", "berendsen", got '
     'string "nose-hoover"; did you mean "nose-hoover-chain"?'),
    ('ensemble = "nvt"\nthermostat = "csvr"\ntau_t = -100.0\n', "[md] tau_t must be > 0 (fs), got -100"),
    ('ensemble = "npt"\nthermostat = "csvr"\nbarostat = "c-rescale"\npressure = 1.0\ntau_p = -5.0\n',
     "[md] tau_p must be > 0 (fs), got -5"),
    ('ensemble = "nvt"\nthermostat = "csvr"\npressure = 1.0\n',
     "[md] pressure = 1 (bar) is given but there is no barostat"),
    ('ensemble = "npt"\nthermostat = "csvr"\npressure = 1.0\n', '[md] ensemble = "npt" needs a barostat'),
    ('ensemble = "nvt"\nthermostat = "csvr"\nbarostat = "mtk"\npressure = 1.0\n',
     '[md] barostat = "mtk" is given but ensemble = "nvt"'),
    ('ensemble = "npt"\nthermostat = "csvr"\nbarostat = "mtk"\npressure = 1.0\n',
     'barostat = "mtk" integrates its own Nosé-Hoover chains'),
    ('ensemble = "nve"\nthermostat = "langevin"\n', 'thermostat = "langevin" is given but ensemble = "nve"'),
    ('ensemble = "nvt"\nthermostat = "csvr"\nyoshida_order = 4\n', "yoshida_order must be one of 1, 3, 5, 7"),
    ('ensemble = "npt"\nthermostat = "csvr"\nbarostat = "c-rescale"\npressure = 1.0\n'
     'coupling = "triclinic"\n', 'c-rescale" supports coupling'),
]


@pytest.mark.parametrize("md, message", ENSEMBLE_BAD)
def test_bad_ensemble_input(tmp_path, capsys, md, message):
    toml = _lj_case(tmp_path, md)
    assert main(["run", str(toml), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and "lj.toml" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_barostat_on_open_boundaries_is_an_error(tmp_path, capsys):
    md = 'ensemble = "npt"\nthermostat = "csvr"\nbarostat = "c-rescale"\npressure = 1.0\n'
    toml = _lj_case(tmp_path, md, structure=_xyz_without_cell(tmp_path))
    assert main(["run", str(toml), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "needs a periodic box" in err and "open boundaries" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_potential_keys_are_checked(tmp_path, capsys):
    toml = _lj_case(tmp_path, 'ensemble = "nve"\n')
    toml.write_text(toml.read_text().replace('cutoff = 10.215\n', ''))
    assert main(["run", str(toml), "-o", str(tmp_path / "o"), "-q"]) == 2
    assert "[potential] missing key 'cutoff' (needed by type \"lj\")" in capsys.readouterr().err
    toml.write_text(toml.read_text().replace('type = "lj"', 'type = "springs"'))
    assert main(["run", str(toml), "-o", str(tmp_path / "o"), "-q"]) == 2
    assert "epsilon is given but type" in capsys.readouterr().err


def test_restart_with_another_chain_length_is_an_error(tmp_path, capsys):
    md = 'ensemble = "nvt"\nthermostat = "nose-hoover-chain"\nchain_length = 3\n'
    toml = _lj_case(tmp_path, md, steps=10)
    assert main(["run", str(toml), "-o", str(tmp_path / "a"), "-q"]) == 0
    toml.write_text(toml.read_text().replace("chain_length = 3", "chain_length = 5"))
    code = main(["run", str(toml), "-o", str(tmp_path / "a"), "-q", "--steps", "20",
                 "--restart", str(tmp_path / "a" / "restart.ncrst")])
    err = capsys.readouterr().err
    assert code == 2 and "nhc_xi" in err and "(3,)" in err and "(5,)" in err


def test_sum_of_potentials_and_minimize(tmp_path, capsys):
    """LJ + springs as a sum (energies add), then FIRE with the cell under pressure: the run
    stops at the tolerances and says so."""
    md = 'ensemble = "minimize"\npressure = 0.0\nforce_tolerance = 1e-3\nstress_tolerance = 5.0\n'
    toml = _lj_case(tmp_path, md, steps=3000, trajectory_interval=1000, thermo_interval=1000)
    toml.write_text(toml.read_text().replace("temperature = 239.6", "temperature = 0.0"))
    assert main(["run", str(toml), "-o", str(tmp_path / "min")]) == 0
    out = capsys.readouterr().out
    assert "minimization converged" in out
    thermo = np.loadtxt(tmp_path / "min" / "thermo.log")
    assert thermo[-1, 0] < 3000 and abs(thermo[-1, 6]) < 5.0   # P ≈ 0 at T = 0
    assert thermo[-1, 2] < thermo[0, 2]                        # the enthalpy went down
    # the sum: springs at the starting sites add ½kΣΔ² to the LJ energy
    text = toml.read_text().replace('type = "lj"', 'type = ["lj", "springs"]\nspring_constant = 0.1')
    toml.write_text(text.replace('ensemble = "minimize"', 'ensemble = "nve"').replace(
        "pressure = 0.0\n", ""))
    assert main(["run", str(toml), "-o", str(tmp_path / "sum"), "-q", "--steps", "0"]) == 0
    a = np.loadtxt(tmp_path / "min" / "thermo.log")[0, 2]
    b = np.loadtxt(tmp_path / "sum" / "thermo.log", ndmin=2)[0, 2]
    assert abs(a - b) < 1e-9  # at the sites the springs add nothing


def test_water_npt_smoke(tmp_path, water_model):
    """The water NPT case (MTK, DP model, virial from the engine core) runs: the cell moves
    and the MTK conserved quantity stays put over 10 steps. The case's model is replaced by
    the fixture model imported by the current code."""
    case = (REPO / "inputs" / "water_npt" / "water_npt.toml").read_text()
    case = case.replace('"../water/conf.lmp"', f'"{WATER / "conf.lmp"}"')
    case = case.replace('"../water/water.pt"', f'"{water_model}"')
    (tmp_path / "water_npt.toml").write_text(case)
    assert main(["run", str(tmp_path / "water_npt.toml"), "-o", str(tmp_path / "w"), "-q",
                 "--steps", "10"]) == 0
    thermo = np.loadtxt(tmp_path / "w" / "thermo.log")
    assert thermo.shape == (2, 10) and np.all(np.isfinite(thermo))
    assert thermo[1, 7] != thermo[0, 7]
    assert abs(thermo[1, 8] - thermo[0, 8]) < 2e-3  # eV, 192 atoms
