"""``dpengine test``: errors of a model on deepmd/npy systems, as DeePMD-kit's ``dp test``.

For every system, the first ``n`` frames (all by default) are evaluated with the engine's
fast path (``dpengine.load_model``: Taichi geometry, TorchScript networks) and compared with
the labels:

    energy  MAE, RMSE (eV) and MAE/N, RMSE/N (eV/atom), over frames
    force   MAE, RMSE (eV/Å) over all 3N components of all frames
    virial  MAE, RMSE (eV) and /N (eV/atom), over 9 components (systems with virial.npy)

The overall figures are averages over systems weighted by frames (energy, virial) or by
force components, combined as RMSE = √(Σ wᵢ RMSEᵢ² / Σ wᵢ) (DeePMD-kit's weighted average).
``detail`` writes PREFIX.e.out, PREFIX.e_peratom.out, PREFIX.f.out, PREFIX.v.out and
PREFIX.v_peratom.out with data and prediction columns and one ``# system: ...`` header per
system, as ``dp test --detail-file`` does (DeePMD-kit 3 included: the virial files are
always written, their data columns 0 for a system without virial.npy).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import load_systems

_V_NAMES = ["xx", "xy", "xz", "yx", "yy", "yz", "zx", "zy", "zz"]


def evaluate_system(model, system, n_frames: int | None = None) -> dict:
    """Predictions for the first ``n_frames`` frames: energy [F], force [F, N, 3], virial [F, 9]."""
    f = system.n_frames if not n_frames else min(n_frames, system.n_frames)
    energy, force, virial = np.empty(f), np.empty((f, system.n_atoms, 3)), np.empty((f, 9))
    for k in range(f):
        box = None if system.boxes is None else system.boxes[k]
        out = model.evaluate(system.coords[k], box, system.types)
        energy[k], force[k], virial[k] = out["energy"], out["forces"], out["virial"].reshape(9)
    return dict(energy=energy, force=force, virial=virial, n=f)


def errors(system, pred: dict) -> dict:
    """MAE/RMSE of one system (see the module docstring)."""
    f, n = pred["n"], system.n_atoms
    de = pred["energy"] - system.energy[:f]
    df = pred["force"] - system.forces[:f]
    out = dict(frames=f, atoms=n, e_mae=np.abs(de).mean(), e_rmse=np.sqrt(np.mean(de ** 2)),
               f_mae=np.abs(df).mean(), f_rmse=np.sqrt(np.mean(df ** 2)), f_count=df.size)
    out["e_mae_atom"], out["e_rmse_atom"] = out["e_mae"] / n, out["e_rmse"] / n
    if system.virial is not None:
        dv = pred["virial"] - system.virial[:f]
        out.update(v_mae=np.abs(dv).mean(), v_rmse=np.sqrt(np.mean(dv ** 2)))
        out["v_mae_atom"], out["v_rmse_atom"] = out["v_mae"] / n, out["v_rmse"] / n
    return out


def weighted(results: list[dict]) -> dict:
    """DeePMD-kit's weighted average over systems (RMSEs combined in quadrature)."""
    out = {}
    for key, weight in (("e", "frames"), ("f", "f_count"), ("v", "frames")):
        for suffix in ("", "_atom"):
            rows = [r for r in results if f"{key}_rmse{suffix}" in r]
            if not rows:
                continue
            w = np.array([r[weight] for r in rows], dtype=float)
            out[f"{key}_mae{suffix}"] = float(np.sum(w * [r[f"{key}_mae{suffix}"] for r in rows])
                                              / w.sum())
            out[f"{key}_rmse{suffix}"] = float(np.sqrt(np.sum(
                w * np.square([r[f"{key}_rmse{suffix}"] for r in rows])) / w.sum()))
    out["frames"] = sum(r["frames"] for r in results)
    return out


def format_errors(err: dict) -> list[str]:
    """The lines ``dp test`` prints for one system or the average."""
    lines = [f"Energy MAE         : {err['e_mae']:e} eV",
             f"Energy RMSE        : {err['e_rmse']:e} eV",
             f"Energy MAE/Natoms  : {err['e_mae_atom']:e} eV",
             f"Energy RMSE/Natoms : {err['e_rmse_atom']:e} eV",
             f"Force  MAE         : {err['f_mae']:e} eV/A",
             f"Force  RMSE        : {err['f_rmse']:e} eV/A"]
    if "v_rmse" in err:
        lines += [f"Virial MAE         : {err['v_mae']:e} eV",
                  f"Virial RMSE        : {err['v_rmse']:e} eV",
                  f"Virial MAE/Natoms  : {err['v_mae_atom']:e} eV",
                  f"Virial RMSE/Natoms : {err['v_rmse_atom']:e} eV"]
    return lines


def write_detail(prefix: str | Path, system, pred: dict, append: bool) -> None:
    """Append this system's data/prediction columns to the PREFIX.*.out files."""
    mode = "a" if append else "w"
    f, n, name = pred["n"], system.n_atoms, str(system.path)

    def save(suffix: str, data: np.ndarray, header: str) -> None:
        with open(f"{prefix}.{suffix}", mode) as fh:
            np.savetxt(fh, data, header=f"{name}: {header}")

    e = np.column_stack([system.energy[:f], pred["energy"]])
    save("e.out", e, "data_e pred_e")
    save("e_peratom.out", e / n, "data_e pred_e")
    fcols = np.column_stack([system.forces[:f].reshape(-1, 3), pred["force"].reshape(-1, 3)])
    save("f.out", fcols, "data_fx data_fy data_fz pred_fx pred_fy pred_fz")
    data_v = system.virial[:f] if system.virial is not None else np.zeros((f, 9))
    v = np.column_stack([data_v, pred["virial"]])
    head = " ".join([f"data_v{c}" for c in _V_NAMES] + [f"pred_v{c}" for c in _V_NAMES])
    save("v.out", v, head)
    save("v_peratom.out", v / n, head)


def run_test(model_path, systems, n_frames: int | None = None, detail: str | None = None,
             device: str = "cpu", out=print) -> dict:
    """Test ``model_path`` on the systems (paths); prints per system and overall; returns
    dict(systems=[per-system errors], average=weighted errors)."""
    import dpengine

    model = dpengine.load_model(model_path, device=device)
    loaded = load_systems(systems, model.type_map)
    results = []
    for i, system in enumerate(loaded):
        pred = evaluate_system(model, system, n_frames)
        err = errors(system, pred)
        results.append(err)
        out("# ---------------output of dpengine test---------------")
        out(f"# testing system : {system.path}")
        out(f"# number of test data : {err['frames']}")
        for line in format_errors(err):
            out(line)
        if detail:
            write_detail(detail, system, pred, append=i > 0)
    avg = weighted(results)
    out("# ----------weighted average of errors-----------")
    out(f"# number of systems : {len(results)}")
    for line in format_errors(avg):
        out(line)
    out("# -----------------------------------------------")
    return dict(systems=results, average=avg)
