"""Tests of ``dpengine train / freeze / test`` (tools/train): learning, exact restarts,
frozen model = checkpoint through both evaluation paths, hand-computed statistics, bad data,
the fast path against plain autograd, and the configuration's errors."""
import copy
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dpengine.config import ConfigError
from dpengine_tools.train import stats
from dpengine_tools.train.config import load_config, parse_config
from dpengine_tools.train.data import DataError, load_system
from dpengine_tools.train.schedule import LearningRate, batch_size_for, prefactor

REPO = Path(__file__).resolve().parents[2]
WATER = REPO / "inputs" / "water" / "data"


def slice_system(src: Path, dst: Path, frames: int) -> Path:
    """A copy of the deepmd/npy system ``src`` with its first ``frames`` frames (one set)."""
    (dst / "set.000").mkdir(parents=True)
    shutil.copy(src / "type.raw", dst)
    shutil.copy(src / "type_map.raw", dst)
    for name in ("coord", "box", "energy", "force"):
        np.save(dst / "set.000" / f"{name}.npy", np.load(src / "set.000" / f"{name}.npy")[:frames])
    return dst


def tiny_config(tmp: Path, train, valid, **training) -> dict:
    """A small se_e2_a model (rcut 4 Å) on the given systems; ``training`` overrides keys."""
    data = {
        "model": {"type_map": ["O", "H"],
                  "descriptor": {"rcut": 4.0, "rcut_smth": 0.5, "sel": [16, 32],
                                 "neuron": [4, 8], "axis_neuron": 4},
                  "fitting": {"neuron": [16, 16]}},
        "data": {"train": [str(p) for p in train], "validation": [str(p) for p in valid],
                 "batch_size": 1, "stat_batches": 10},
        "learning_rate": {"start_lr": 3e-3, "stop_lr": 3e-4, "decay_steps": 10},
        "training": dict({"steps": 6, "seed": 7, "display_interval": 3,
                          "checkpoint_interval": 3, "threads": 1}, **training),
    }
    return parse_config(data, "test.toml", tmp)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("water")
    train = [slice_system(WATER / "data_0", tmp / "a", 4), slice_system(WATER / "data_1", tmp / "b", 3)]
    valid = [slice_system(WATER / "data_3", tmp / "v", 3)]
    return tmp, train, valid


def run_trainer(cfg, out, **kw):
    from dpengine_tools.train.trainer import Trainer
    trainer = Trainer(copy.deepcopy(cfg), out, progress=False, log=lambda m: None, **kw)
    trainer.run()
    return trainer


# ------------------------------------------------------------------ training behaviour
def test_training_lowers_validation_error(small_data, tmp_path):
    tmp, train, valid = small_data
    cfg = tiny_config(tmp, train, valid, steps=60, display_interval=20, checkpoint_interval=60)
    cfg["learning_rate"].update(start_lr=1e-2, stop_lr=1e-3, decay_steps=20)
    from dpengine_tools.train.trainer import Trainer
    trainer = Trainer(cfg, tmp_path, progress=False, log=lambda m: None)
    before = trainer.evaluate()
    trainer.run()
    after = trainer.evaluate()
    assert after["rmse_f"] < 0.9 * before["rmse_f"]
    assert after["rmse_e"] < before["rmse_e"]
    lines = [l.split() for l in (tmp_path / "lcurve.out").read_text().splitlines()
             if not l.startswith("#")]
    assert [int(l[0]) for l in lines] == [1, 20, 40, 60]
    assert len(lines[0]) == 8                      # step, 3 × (val, trn), lr
    header = (tmp_path / "lcurve.out").read_text().splitlines()[0].split()
    assert header == ["#", "step", "rmse_val", "rmse_trn", "rmse_e_val", "rmse_e_trn",
                      "rmse_f_val", "rmse_f_trn", "lr"]


def test_restart_equals_uninterrupted_run(small_data, tmp_path):
    tmp, train, valid = small_data
    cfg = tiny_config(tmp, train, valid)
    full = run_trainer(cfg, tmp_path / "full")
    assert (tmp_path / "full" / "model.ckpt-3.pt").is_file()
    resumed = run_trainer(cfg, tmp_path / "half", restart=tmp_path / "full" / "model.ckpt-3.pt")
    for (name, a), b in zip(full.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), name
    lc_full = (tmp_path / "full" / "lcurve.out").read_text().splitlines()
    lc_half = (tmp_path / "half" / "lcurve.out").read_text().splitlines()
    assert lc_half == [l for l in lc_full if l.startswith("#") or int(l.split()[0]) > 3]


def test_frozen_model_equals_checkpoint(small_data, tmp_path):
    """Checkpoint (training fast path) = frozen file through the Taichi path and through the
    plain-torch reference path, to round-off; also the CLI round trip and `dpengine info`."""
    from dpengine.cli import main
    from dpengine.model.io import load_network, read_metadata
    from dpengine.model.reference import evaluate_reference
    import dpengine
    from dpengine_tools.train.fastpath import predict
    tmp, train, valid = small_data
    cfg = tiny_config(tmp, train, valid, steps=3)
    trainer = run_trainer(cfg, tmp_path)
    assert main(["freeze", str(tmp_path / "model.ckpt.pt"), "-o", str(tmp_path / "m.pt")]) == 0
    meta = read_metadata(tmp_path / "m.pt")
    assert meta["type_map"] == ["O", "H"] and meta["sel"] == [16, 32] and meta["rcut"] == 4.0
    assert meta["training_input"]["training"]["steps"] == 3 and meta["precision"] == "float64"
    # closest pair distance of the training frames (minimum image, brute force; cubic boxes)
    closest = np.inf
    for system in trainer.train_systems:
        for x, box in zip(system.coords, system.boxes):
            d = x[:, None] - x[None]
            d -= np.round(d / np.diag(box)) * np.diag(box)
            r = np.linalg.norm(d, axis=-1)
            closest = min(closest, r[~np.eye(len(x), dtype=bool)].min())
    assert meta["min_nbor_dist"] == pytest.approx(closest, rel=1e-12)
    state = torch.load(tmp_path / "model.ckpt.pt", weights_only=False)
    del state["min_nbor_dist"]                  # a checkpoint of an earlier dpengine
    torch.save(state, tmp_path / "old.ckpt.pt")
    assert main(["freeze", str(tmp_path / "old.ckpt.pt"), "-o", str(tmp_path / "old.pt")]) == 0
    assert read_metadata(tmp_path / "old.pt")["min_nbor_dist"] == pytest.approx(closest, rel=1e-12)
    model = dpengine.load_model(tmp_path / "m.pt")
    net, _ = load_network(tmp_path / "m.pt")
    system = trainer.valid_systems[0]
    for k in range(2):
        with torch.no_grad():
            fast = predict(trainer.net, trainer.valid_caches[0].batch([k]), create_graph=False)
        taichi = model.evaluate(system.coords[k], system.boxes[k], system.types)
        ref = evaluate_reference(net, system.coords[k], system.boxes[k], system.types)
        e = float(fast["energy"][0])
        assert taichi["energy"] == pytest.approx(e, rel=1e-13, abs=1e-9)
        assert float(ref["energy"].detach()) == pytest.approx(e, rel=1e-13, abs=1e-9)
        f = fast["force"][0].detach().numpy()
        np.testing.assert_allclose(taichi["forces"], f, rtol=0, atol=1e-11)
        np.testing.assert_allclose(ref["forces"].detach().numpy(), f, rtol=0, atol=1e-11)
    assert main(["test", "-m", str(tmp_path / "m.pt"), "-s", str(valid[0]), "-n", "2",
                 "--detail", str(tmp_path / "d")]) == 0
    e_out = np.loadtxt(tmp_path / "d.e.out")
    assert e_out.shape == (2, 2) and np.loadtxt(tmp_path / "d.f.out").shape == (2 * 192, 6)
    v_out = np.loadtxt(tmp_path / "d.v.out")     # written without virial labels too (dp test)
    assert v_out.shape == (2, 18) and not v_out[:, :9].any() and v_out[:, 9:].any()
    with torch.no_grad():
        energies = [float(predict(trainer.net, trainer.valid_caches[0].batch([k]),
                                  forces=False)["energy"][0]) for k in range(2)]
    np.testing.assert_allclose(e_out[:, 1], energies, rtol=1e-13)
    from dpengine_tools.train.trainer import Trainer
    for init in (tmp_path / "m.pt", tmp_path / "model.ckpt.pt"):      # --init-model
        started = Trainer(copy.deepcopy(cfg), tmp_path / "init", init_model=init,
                          progress=False, log=lambda m: None)
        for (name, a), b in zip(trainer.net.state_dict().items(),
                                started.net.state_dict().values()):
            assert torch.equal(a, b), name



def test_fitting_activation_other_than_tanh(small_data, tmp_path):
    """A GELU fitting net (autograd fallback of the fast path) trains and validates (the
    validation, run without grad, crashed), and its frozen file evaluates as the checkpoint
    does through the engine (the loader had rebuilt the fitting nets with tanh)."""
    import dpengine
    from dpengine_tools.train.fastpath import predict
    from dpengine_tools.train.freeze import freeze
    tmp, train, valid = small_data
    cfg = tiny_config(tmp, train, valid, steps=2, display_interval=1)
    cfg["model"]["fitting"]["activation"] = "gelu"
    trainer = run_trainer(cfg, tmp_path / "out")
    lcurve = np.loadtxt(tmp_path / "out" / "lcurve.out")
    assert np.isfinite(lcurve).all() and lcurve.shape[0] == 2
    freeze(tmp_path / "out" / "model.ckpt.pt", tmp_path / "m.pt")
    model = dpengine.load_model(tmp_path / "m.pt")
    assert [l.activation for l in model.potential.net.fittings[0].layers] == \
        ["gelu", "gelu", "linear"]
    system = trainer.valid_systems[0]
    with torch.no_grad():
        fast = predict(trainer.net, trainer.valid_caches[0].batch([0]), create_graph=False)
    out = model.evaluate(system.coords[0], system.boxes[0], system.types)
    assert out["energy"] == pytest.approx(float(fast["energy"][0].detach()), rel=1e-13, abs=1e-9)
    np.testing.assert_allclose(out["forces"], fast["force"][0].detach().numpy(), rtol=0, atol=1e-11)

def test_float32_slot_kernels_match_torch_path(small_data, tmp_path):
    """A float32 model: energies, forces and the parameter gradients of a force + energy loss
    by the Taichi slot kernels (float32 sums, vectors of 4 float32 channels) equal those of
    the torch slot path within float32 round-off."""
    from dpengine_tools.train.fastpath import predict
    from dpengine_tools.train.trainer import Trainer
    tmp, train, valid = small_data
    cfg = tiny_config(tmp, train, valid, steps=1)
    cfg["model"]["precision"] = "float32"
    trainer = Trainer(copy.deepcopy(cfg), tmp_path / "out", progress=False, log=lambda m: None)
    batch = trainer.train_caches[0].batch([0])
    params = [p for p in trainer.net.parameters() if p.numel()]
    results = []
    for kernels in (True, False):
        pred = predict(trainer.net, batch, slot_kernels=kernels)
        assert pred["force"].dtype == torch.float32
        loss = ((pred["force"] - batch.force) ** 2).mean() + pred["energy"].sum() ** 2 * 1e-6
        results.append((pred, torch.autograd.grad(loss, params)))
    (fast, g_fast), (plain, g_plain) = results
    assert float(fast["energy"][0].detach()) == pytest.approx(float(plain["energy"][0].detach()),
                                                       rel=1e-6)
    torch.testing.assert_close(fast["force"], plain["force"], rtol=0, atol=2e-7)
    for a, b in zip(g_fast, g_plain):                    # measured: ≤ 3e-8 on scales 0.04–8
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-7)


def shuffled_system(src: Path, dst: Path, seed: int = 5) -> Path:
    """A copy of ``src`` (one set) with its atoms in a random order (types no longer sorted)."""
    (dst / "set.000").mkdir(parents=True)
    shutil.copy(src / "type_map.raw", dst)
    types = np.loadtxt(src / "type.raw", dtype=int)
    order = np.random.default_rng(seed).permutation(len(types))
    np.savetxt(dst / "type.raw", types[order], fmt="%d")
    for name in ("coord", "box", "energy", "force"):
        x = np.load(src / "set.000" / f"{name}.npy")
        if name in ("coord", "force"):
            x = x.reshape(len(x), -1, 3)[:, order].reshape(len(x), -1)
        np.save(dst / "set.000" / f"{name}.npy", x)
    return dst


@pytest.mark.parametrize("fit_act, shuffled, one_side, slot_kernels, channels", [
    ("tanh", False, False, True, 12), ("tanh", False, False, False, 12),
    ("gelu", False, False, True, 12), ("tanh", True, False, True, 12),
    ("tanh", False, True, True, 12), ("tanh", False, True, False, 12),
    ("tanh", False, False, True, 10), ("tanh", False, True, True, 9)])
def test_fast_path_matches_autograd(small_data, tmp_path, fit_act, shuffled, one_side,
                                    slot_kernels, channels):
    """Energies, forces, virial and the gradients of a force+energy+virial loss of the fast
    path equal plain autograd (double backpropagation) through DeepPotSE, for two-side
    (a harder case than the water example) and one-side models with resnet_dt; the slot
    sums by the Taichi kernels reading the rows and by gathered slots (torch); a gelu
    fitting net takes the autograd fallback for the fitting part; atoms not sorted by type
    take the scatter path of the fitting's per-type results; M = 12, 10 and 9 channels (the
    slot kernels' vectors of 4, 2 and 1 channels)."""
    from dpengine.model.reference import evaluate_reference
    from dpengine_tools.train.features import EnvironmentProvider, GeometryCache
    from dpengine_tools.train.fastpath import predict
    from dpengine_tools.train.model import build_network, init_parameters
    tmp, train, _ = small_data
    model = parse_config({"model": {"type_map": ["O", "H"], "descriptor": {
        "rcut": 4.0, "sel": [16, 32], "neuron": [3, 6, channels], "axis_neuron": 3,
        "type_one_side": one_side, "resnet_dt": True},
        "fitting": {"neuron": [8, 8], "activation": fit_act}},
        "data": {"train": [str(train[0])]}, "training": {"steps": 1}}, "t", tmp)["model"]
    net = build_network(model, [16, 32])
    init_parameters(net, 3)
    system = load_system(shuffled_system(train[0], tmp_path / "shuffled") if shuffled
                         else train[0], ["O", "H"])
    cache = GeometryCache(system, EnvironmentProvider(net), [16, 32])
    st = stats.EnvStat(2)
    cache.add_stats(st, range(system.n_frames))
    davg, dstd = st.davg_dstd(net.nnei)
    with torch.no_grad():
        net.davg.copy_(torch.as_tensor(davg))
        net.dstd.copy_(torch.as_tensor(dstd))
    cache.finalize(net.davg, net.dstd, torch.float64, virial=True, type_one_side=net.type_one_side)
    batch = cache.batch([1])
    assert (batch.type_ranges is None) == shuffled
    fast = predict(net, batch, virial=True, slot_kernels=slot_kernels)
    ref = evaluate_reference(net, system.coords[1], system.boxes[1], system.types,
                             create_graph=True)
    assert float(fast["energy"][0].detach()) == pytest.approx(float(ref["energy"].detach()), rel=1e-14)
    torch.testing.assert_close(fast["force"][0], ref["forces"], rtol=0, atol=1e-12)
    torch.testing.assert_close(fast["virial"][0], ref["virial"].reshape(9), rtol=0, atol=1e-11)
    label = torch.as_tensor(system.forces[1])
    loss_fast = ((fast["force"][0] - label) ** 2).mean() + fast["energy"][0] ** 2 * 1e-6 \
        + (fast["virial"][0] ** 2).sum() * 1e-4
    loss_ref = ((ref["forces"] - label) ** 2).mean() + ref["energy"] ** 2 * 1e-6 \
        + (ref["virial"] ** 2).sum() * 1e-4
    params = [p for p in net.parameters() if p.numel()]
    for a, b in zip(torch.autograd.grad(loss_fast, params), torch.autograd.grad(loss_ref, params)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


# ------------------------------------------------------------------ statistics by hand
def write_system(path: Path, types, coords, boxes, energies, type_map=("A", "B")):
    f, n = len(energies), len(types)
    (path / "set.000").mkdir(parents=True)
    np.savetxt(path / "type.raw", types, fmt="%d")
    (path / "type_map.raw").write_text("\n".join(type_map) + "\n")
    np.save(path / "set.000" / "coord.npy", np.asarray(coords).reshape(f, 3 * n))
    np.save(path / "set.000" / "box.npy", np.asarray(boxes).reshape(f, 9))
    np.save(path / "set.000" / "energy.npy", np.asarray(energies, dtype=float))
    np.save(path / "set.000" / "force.npy", np.zeros((f, 3 * n)))
    return path


def test_statistics_match_hand_computation(tmp_path):
    """davg/dstd (DeePMD-kit's EnvMatStatSe, empty slots counted as zeros) and the energy
    bias (least squares on type counts) of a tiny dataset, computed here by hand with the
    plain-numpy/torch reference environment."""
    from dpengine.model.reference import env_matrix, neighbor_slots
    from dpengine_tools.train.trainer import Trainer
    rng = np.random.default_rng(5)
    box = np.diag([7.0, 7.5, 8.0])
    sys_a = ([0, 1, 1], [-30.0, -30.3])      # A1 B2
    sys_b = ([0, 0, 1, 1, 1], [-53.1, -52.8, -53.0])   # A2 B3
    paths, all_env = [], {0: [], 1: []}
    rcut, rcut_smth, sel = 3.5, 1.0, [4, 6]
    counts, energies = [], []
    for name, (types, e) in zip("ab", (sys_a, sys_b)):
        coords = rng.uniform(0, 7, size=(len(e), len(types), 3))
        paths.append(write_system(tmp_path / name, types, coords, [box] * len(e), e))
        for k in range(len(e)):
            slot_j, images, _ = neighbor_slots(coords[k], box, np.array(types), rcut, sel)
            j = np.clip(slot_j, 0, None)
            rij = coords[k][j] - coords[k][:, None] + images @ box
            mask = torch.as_tensor(slot_j >= 0)
            env = env_matrix(torch.as_tensor(rij) * mask.unsqueeze(-1), mask, rcut, rcut_smth).numpy()
            for t in (0, 1):
                all_env[t].append(env[np.array(types) == t])
            counts.append(np.bincount(types, minlength=2))
            energies.append(e[k])
    cfg = parse_config({"model": {"type_map": ["A", "B"], "descriptor": {
        "rcut": rcut, "rcut_smth": rcut_smth, "sel": sel, "neuron": [2, 4], "axis_neuron": 2},
        "fitting": {"neuron": [4]}}, "data": {"train": [str(p) for p in paths],
        "stat_batches": 100}, "training": {"steps": 1, "threads": 1}}, "t", tmp_path)
    trainer = Trainer(cfg, tmp_path / "out", progress=False, log=lambda m: None)
    for t in (0, 1):
        rows = np.concatenate(all_env[t])                     # [atoms of type t, nnei, 4]
        r, a = rows[..., 0].ravel(), rows[..., 1:].ravel()
        std_r = max(np.sqrt(np.mean(r ** 2) - np.mean(r) ** 2), 1e-2)
        std_a = max(np.sqrt(np.mean(a ** 2) - np.mean(a) ** 2), 1e-2)
        np.testing.assert_allclose(trainer.net.davg[t].numpy(),
                                   np.tile([r.mean(), 0, 0, 0], (10, 1)), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(trainer.net.dstd[t].numpy(),
                                   np.tile([std_r, std_a, std_a, std_a], (10, 1)), rtol=1e-12)
    c, e = np.array(counts, float), np.array(energies)
    np.testing.assert_allclose(trainer.net.energy_bias.numpy(), np.linalg.solve(c.T @ c, c.T @ e),
                               rtol=1e-10)


def test_statistics_protection_and_absent_type():
    st = stats.EnvStat(3)
    env = np.zeros((2, 5, 4))
    env[:, 0, 0] = 0.5                  # radial values vary; angular ones are all zero
    env[0, 1, 0] = 0.7
    st.add(env, np.array([0, 0]), nnei=5)
    davg, dstd = st.davg_dstd(5)
    assert dstd[0, 0, 1] == stats.STD_PROTECTION          # σ(a) = 0 → 1e-2
    assert davg[0, 0, 0] == pytest.approx(1.7 / 10)
    assert np.all(dstd[1] == stats.STD_DEFAULT) and np.all(davg[1] == 0)   # no atoms of type 1
    assert np.all(st.davg_dstd(5, set_davg_zero=True)[0] == 0)


# ------------------------------------------------------------------ bad data
def _bad_copy(small_data, tmp_path) -> Path:
    return Path(shutil.copytree(small_data[1][0], tmp_path / "bad"))


def test_wrong_shape_names_system_set_file(small_data, tmp_path):
    bad = _bad_copy(small_data, tmp_path)
    np.save(bad / "set.000" / "force.npy", np.zeros((4, 575)))
    with pytest.raises(DataError, match=r"bad/set\.000/force\.npy: forces has shape \(4, 575\), "
                                        r"expected \(4, 576\)"):
        load_system(bad, ["O", "H"])


def test_nan_names_system_set_file(small_data, tmp_path):
    bad = _bad_copy(small_data, tmp_path)
    e = np.load(bad / "set.000" / "energy.npy")
    e[2] = np.nan
    np.save(bad / "set.000" / "energy.npy", e)
    with pytest.raises(DataError, match=r"bad/set\.000/energy\.npy: energies has NaN .*frame 2"):
        load_system(bad, ["O", "H"])


def test_type_missing_from_map(small_data, tmp_path):
    bad = _bad_copy(small_data, tmp_path)
    (bad / "type_map.raw").write_text("O\nC\n")
    with pytest.raises(DataError, match=r"bad: element C .* not in the model's type_map \[O, H\]"):
        load_system(bad, ["O", "H"])


def test_cli_reports_bad_data(small_data, tmp_path, capsys):
    from dpengine.cli import main
    bad = _bad_copy(small_data, tmp_path)
    (bad / "set.000" / "coord.npy").unlink()
    toml = tmp_path / "t.toml"
    toml.write_text('[model]\ntype_map = ["O", "H"]\n[data]\ntrain = ["bad"]\n'
                    '[training]\nsteps = 1\n')
    assert main(["train", str(toml), "-o", str(tmp_path / "o"), "-q"]) == 2
    assert "bad/set.000: coord.npy not found" in capsys.readouterr().err


# ------------------------------------------------------------------ configuration, schedule
def test_config_errors(tmp_path):
    (tmp_path / "d").mkdir()
    good = {"model": {"type_map": ["O"]}, "data": {"train": ["d"]}, "training": {"steps": 1}}
    cfg = parse_config(good, "t.toml", tmp_path)
    assert cfg["model"]["descriptor"]["sel"] == "auto" and cfg["loss"]["start_pref_f"] == 1000.0
    cases = [
        ({"model": {"type_map": ["O"], "descriptor": {"rcutt": 5.0}}},
         r"t\.toml: \[model\.descriptor\] unknown key 'rcutt'; did you mean 'rcut'\?"),
        ({"training": {"steps": 0}}, r"\[training\] steps must be an integer >= 1, got int 0"),
        ({"model": {"type_map": ["O"], "precision": "float16"}},
         r"\[model\] precision must be one of float64, float32"),
        ({"data": {"train": ["missing"]}}, r"\[data\] train\[0\]: no such file or folder"),
        ({"model": {"type_map": ["O"], "descriptor": {"sel": "atuo"}}}, r"sel must be \"auto\""),
        ({"learning_rate": {"start_lr": 1e-3, "stop_lr": 1e-2}}, r"stop_lr .* exceeds start_lr"),
        ({"trainning": {}}, r"unknown table 'trainning'; did you mean 'training'\?"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_config(dict(good, **change), "t.toml", tmp_path)
    toml = tmp_path / "x.toml"
    toml.write_text("[model\n")
    with pytest.raises(ConfigError, match="TOML syntax error"):
        load_config(toml)
    assert load_config(REPO / "inputs" / "water" / "train.toml")["model"]["descriptor"]["sel"] == [46, 92]


def test_learning_rate_and_prefactors():
    lr = LearningRate(1e-3, 3.51e-8, 5000, 1_000_000)
    assert lr.value(0) == 1e-3 and lr.value(4999) == 1e-3
    assert lr.value(5000) == pytest.approx(1e-3 * (3.51e-8 / 1e-3) ** (5000 / 1e6))
    assert lr.value(1_000_000) == pytest.approx(3.51e-8)
    short = LearningRate(1e-3, 1e-5, 5000, 200)           # decay_steps >= steps: DeePMD's 3
    assert short.decay_steps == 3
    assert prefactor(1000.0, 1.0, 1e-3, 1e-3) == 1000.0
    assert prefactor(0.02, 1.0, 0.5e-3, 1e-3) == pytest.approx(0.51)
    assert batch_size_for("auto", 192, 80) == 1 and batch_size_for("auto", 6, 80) == 6
    assert batch_size_for("auto:100", 30, 2) == 2 and batch_size_for(4, 192, 80) == 4
    assert math.isclose(stats.auto_sel([35, 67])[0], 40) and stats.auto_sel([35, 67])[1] == 76


def test_virial_training_and_test(small_data, tmp_path):
    """Data with virial.npy: the virial term enters the loss and lcurve, and `dpengine test`
    reports the virial errors and writes PREFIX.v.out."""
    from dpengine_tools.train.freeze import freeze
    from dpengine_tools.train.test import run_test
    tmp, train, valid = small_data
    sys_v = Path(shutil.copytree(train[0], tmp_path / "with_virial"))
    rng = np.random.default_rng(1)
    np.save(sys_v / "set.000" / "virial.npy", rng.normal(0, 5, size=(4, 9)))
    cfg = tiny_config(tmp, [sys_v], [sys_v], steps=2, display_interval=1)
    cfg["loss"].update(start_pref_v=1.0, limit_pref_v=1.0)
    trainer = run_trainer(cfg, tmp_path / "out")
    assert trainer.use_virial
    header = (tmp_path / "out" / "lcurve.out").read_text().splitlines()[0]
    assert "rmse_v_val" in header and "rmse_v_trn" in header
    freeze(tmp_path / "out" / "model.ckpt.pt", tmp_path / "m.pt")
    lines = []
    result = run_test(tmp_path / "m.pt", [sys_v], detail=str(tmp_path / "d"), out=lines.append)
    assert any(l.startswith("Virial RMSE") for l in lines)
    assert np.loadtxt(tmp_path / "d.v.out").shape == (4, 18)
    assert result["average"]["v_rmse"] > 0


@pytest.mark.parametrize("user_policy, expected", [(None, "ACTIVE"), ("PASSIVE", "PASSIVE")])
def test_train_command_chooses_active_openmp_waiting(user_policy, expected):
    """`dpengine train` switches OpenMP to active waiting before torch loads (through the
    real CLI entry: parse, then choose), unless the user set OMP_WAIT_POLICY."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if user_policy:
        env["OMP_WAIT_POLICY"] = user_policy
    code = ("import os, sys, dpengine.cli as c\n"
            "args = c.build_parser().parse_args(['train', 'x.toml'])\n"
            "c._choose_omp_wait_policy(args.command)\n"
            "print(os.environ['OMP_WAIT_POLICY'], os.environ.get('GOMP_SPINCOUNT'),\n"
            "      'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [expected, "None", "False"]


def test_md_openmp_waiting_is_a_bounded_spin():
    """Importing dpengine (MD) bounds GNU OpenMP's spin-wait (neither endless spinning,
    which starves Taichi's threads, nor a sleep after every torch op), unless the user
    chose a policy."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = "import os, dpengine; print(os.environ.get('GOMP_SPINCOUNT'))"
    run = lambda e: subprocess.run([sys.executable, "-c", code], env=e, capture_output=True,  # noqa: E731
                                   text=True, check=True).stdout.strip()
    assert run(env) == "100000"
    assert run(dict(env, OMP_WAIT_POLICY="PASSIVE")) == "None"
