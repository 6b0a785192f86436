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


def _case(tmp_path, water_model, text: str = "", steps: int = 20, **output) -> Path:
    """A water input file in tmp_path using the fixture model; extra TOML appended."""
    shutil.copy(WATER / "conf.lmp", tmp_path / "conf.lmp")
    out = dict(trajectory_interval=5, thermo_interval=5, restart_interval=10, velocities=True,
               forces=True)
    out.update(output)
    lines = ["[system]", 'structure = "conf.lmp"', 'type_map = ["O", "H"]', "[potential]",
             f'model = "{water_model}"', "[md]", f"steps = {steps}", "timestep = 0.5",
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
    assert abs(thermo[0, 5] - 330.0) < 1e-6  # exact initial temperature
    assert (tmp_path / "out" / "restart.ncrst").is_file()


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
    assert np.all(devi[:, 1:] == 0)  # identical committee: zero deviation


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
