"""Thermo log, DeePMD-kit model_devi.out log and the model deviation formula."""
from __future__ import annotations

import numpy as np
import pytest

from dpengine.io.thermo import (MODEL_DEVI_COLUMNS, ModelDeviationLog, ThermoLog, model_deviation,
                                truncate_log_after_step)

COLUMNS = [("step", None), ("time", "ps"), ("pe", "eV"), ("ke", "eV"), ("etotal", "eV"),
           ("temp", "K"), ("press", "bar"), ("vol", "A^3"), ("conserved", "eV")]
TOKENS = "step time[ps] pe[eV] ke[eV] etotal[eV] temp[K] press[bar] vol[A^3] conserved[eV]".split()


def rows(steps, rng):
    return [[s, 0.0005 * s, *rng.normal(-1000, 100, 3), *rng.uniform(0, 400, 2),
             1234.5678901234, -1e-20 * s] for s in steps]


def test_thermo_header_and_loadtxt(tmp_path):
    path = tmp_path / "thermo.log"
    data = rows(range(0, 50, 10), np.random.default_rng(0))
    with ThermoLog(path, COLUMNS) as log:
        for i, row in enumerate(data):
            log.write(row)
            # flushed at once: another reader sees every line written so far
            assert len(path.read_text().splitlines()) == i + 2
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and lines[0].split()[1:] == TOKENS
    assert lines[1].split()[0] == "0" and lines[2].split()[0] == "10"  # integer step
    table = np.loadtxt(path)
    assert table.shape == (5, 9)
    np.testing.assert_allclose(table, np.array(data, dtype=float), rtol=1e-9, atol=0)
    # the header lines up with the data columns
    ends = [lines[0].index(t) + len(t) for t in TOKENS]
    assert all(lines[1][e - 1] != " " and (e == len(lines[1]) or lines[1][e] == " ") for e in ends)


def test_thermo_mapping_torch_nan_and_errors(tmp_path):
    torch = pytest.importorskip("torch")
    with ThermoLog(tmp_path / "t.log", [("step", ""), ("temp", "K"), ("overflow", None)]) as log:
        log.write({"temp": torch.tensor(300.25, dtype=torch.float64), "step": np.int64(7),
                   "overflow": 0})
        log.write([8, float("nan"), 3])
        with pytest.raises(ValueError, match="missing"):
            log.write({"step": 1})
        with pytest.raises(ValueError, match="3 columns"):
            log.write([1, 2.0])
        with pytest.raises(ValueError, match="integer"):
            log.write([1.5, 2.0, 0])
    table = np.loadtxt(tmp_path / "t.log")
    np.testing.assert_array_equal(table[0], [7, 300.25, 0])
    assert np.isnan(table[1, 1])
    for bad in ([("a b", "K")], [("t", "k m")], [("x", None), ("x", None)], []):
        with pytest.raises(ValueError):
            ThermoLog(tmp_path / "bad.log", bad)


def test_thermo_append_truncates_and_keeps_one_header(tmp_path):
    path = tmp_path / "thermo.log"
    rng = np.random.default_rng(1)
    with ThermoLog(path, COLUMNS) as log:
        for row in rows(range(0, 100, 10), rng):
            log.write(row)
    with open(path, "a") as fh:  # a process killed mid-line
        fh.write("     100  0.05  -10")
    with ThermoLog(path, COLUMNS, append=True) as log:  # restarted from step 60
        assert log.truncate_after_step(60) == 7
        for row in rows(range(70, 130, 10), rng):
            log.write(row)
    text = path.read_text()
    assert text.count("#") == 1
    steps = np.loadtxt(path)[:, 0]
    np.testing.assert_array_equal(steps, np.arange(0, 130, 10))
    with pytest.raises(ValueError, match="columns differ"):
        ThermoLog(path, COLUMNS[:-1], append=True)
    with ThermoLog(tmp_path / "fresh.log", COLUMNS, append=True) as log:  # missing: created
        log.write(rows([0], rng)[0])
    assert (tmp_path / "fresh.log").read_text().startswith("# ")
    with ThermoLog(tmp_path / "nostep.log", [("temp", "K")]) as log:
        with pytest.raises(ValueError, match="no 'step' column"):
            log.truncate_after_step(3)


DEEPMD_HEADER = ("#       step         max_devi_v         min_devi_v         avg_devi_v"
                 "         max_devi_f         min_devi_f         avg_devi_f             devi_e")


def test_model_devi_format_matches_deepmd(tmp_path):
    path = tmp_path / "model_devi.out"
    rng = np.random.default_rng(2)
    data = np.column_stack([np.arange(0, 50, 10), rng.uniform(1e-4, 1.0, (5, 7))])
    with ModelDeviationLog(path) as log:
        for row in data:
            log.write(int(row[0]), dict(zip(MODEL_DEVI_COLUMNS, row[1:])))
    lines = path.read_text().splitlines()
    assert lines[0] == DEEPMD_HEADER
    # what deepmd.infer.model_devi.write_model_devi_out writes for the data lines
    ref = tmp_path / "ref.out"
    np.savetxt(ref, data, fmt=["%12d"] + ["%19.6e"] * 7, delimiter="")
    assert lines[1:] == ref.read_text().splitlines()
    assert all(len(line) == 12 + 7 * 19 for line in lines)
    table = np.loadtxt(path)
    np.testing.assert_allclose(table, data, rtol=1e-6)
    with pytest.raises(ValueError, match="devi_e"):
        ModelDeviationLog(tmp_path / "x.out").write(0, {c: 0.0 for c in MODEL_DEVI_COLUMNS[:-1]})


def test_model_devi_append_truncate(tmp_path):
    path = tmp_path / "model_devi.out"
    devi = {c: 0.5 for c in MODEL_DEVI_COLUMNS}
    with ModelDeviationLog(path) as log:
        for s in range(0, 100, 20):
            log.write(s, devi)
    with ModelDeviationLog(path, append=True) as log:
        assert log.truncate_after_step(40) == 3
        log.write(60, devi)
    assert path.read_text().splitlines()[0] == DEEPMD_HEADER
    np.testing.assert_array_equal(np.loadtxt(path)[:, 0], [0, 20, 40, 60])
    assert truncate_log_after_step(path, 0) == 1
    with open(path, "a") as fh:
        fh.write("garbage line\n")
    with pytest.raises(ValueError, match="no integer step"):
        truncate_log_after_step(path, 10)


def direct_model_deviation(f, w, e, n):
    """A loop-by-loop reference: population std over models."""
    m, natoms = f.shape[:2]
    eps = []
    for i in range(natoms):
        mean = sum(f[k, i] for k in range(m)) / m
        eps.append(np.sqrt(sum(np.dot(f[k, i] - mean, f[k, i] - mean) for k in range(m)) / m))
    v = w.reshape(m, 9) / n
    sig = [np.sqrt(sum((v[k, c] - v[:, c].mean()) ** 2 for k in range(m)) / m) for c in range(9)]
    epa = e / n
    return dict(max_devi_f=max(eps), min_devi_f=min(eps), avg_devi_f=sum(eps) / natoms,
                max_devi_v=max(sig), min_devi_v=min(sig), avg_devi_v=np.sqrt(sum(s * s for s in sig) / 9),
                devi_e=np.sqrt(sum((x - epa.mean()) ** 2 for x in epa) / m))


def test_model_deviation_against_direct_computation():
    rng = np.random.default_rng(3)
    for m, n in ((2, 5), (4, 17), (7, 3)):
        f, w, e = rng.normal(size=(m, n, 3)), rng.normal(size=(m, 3, 3)), rng.normal(size=m)
        got, ref = model_deviation(f, w, e, n), direct_model_deviation(f, w, e, n)
        assert set(got) == set(MODEL_DEVI_COLUMNS)
        for k in MODEL_DEVI_COLUMNS:
            assert got[k] == pytest.approx(ref[k], rel=1e-12), k
        assert model_deviation(f, w.reshape(m, 9), e, n) == got  # [M, 9] virials


def test_model_deviation_known_cases():
    rng = np.random.default_rng(4)
    f, w, e = rng.normal(size=(1, 6, 3)), rng.normal(size=(1, 3, 3)), rng.normal(size=1)
    same = model_deviation(np.repeat(f, 4, 0), np.repeat(w, 4, 0), np.repeat(e, 4), 6)
    assert all(v == 0.0 for v in same.values())  # identical models
    assert all(v == 0.0 for v in model_deviation(f, w, e, 6).values())  # a single model
    n = 4
    f = np.zeros((2, n, 3))
    f[1, 0, 0] = 2.0  # atom 0 differs by 2 eV/Å in x: ε = 1 there, 0 elsewhere
    w = np.zeros((2, 3, 3))
    w[1] = 2.0 * n * np.eye(3)  # per-atom virials 0 and 2·I: σ = 1 on the diagonal
    d = model_deviation(f, w, np.array([0.0, 2.0 * n]), n)
    assert (d["max_devi_f"], d["min_devi_f"], d["avg_devi_f"]) == (1.0, 0.0, 0.25)
    assert (d["max_devi_v"], d["min_devi_v"]) == (1.0, 0.0)
    assert d["avg_devi_v"] == pytest.approx(np.sqrt(3 / 9), rel=1e-15)  # RMS, not the mean
    assert d["devi_e"] == 1.0


def test_model_deviation_torch_and_shape_errors():
    torch = pytest.importorskip("torch")
    f = torch.randn(3, 5, 3, dtype=torch.float64)
    w = torch.randn(3, 3, 3, dtype=torch.float64)
    e = torch.randn(3, dtype=torch.float64)
    assert model_deviation(f, w, e, 5) == model_deviation(f.numpy(), w.numpy(), e.numpy(), 5)
    with pytest.raises(ValueError, match="forces"):
        model_deviation(np.zeros((3, 5)), w.numpy(), e.numpy(), 5)
    with pytest.raises(ValueError, match="virials"):
        model_deviation(f.numpy(), np.zeros((2, 3, 3)), e.numpy(), 5)
    with pytest.raises(ValueError, match="energies"):
        model_deviation(f.numpy(), w.numpy(), np.zeros(4), 5)
    with pytest.raises(ValueError, match="n_atoms"):
        model_deviation(f.numpy(), w.numpy(), e.numpy(), 0)
