"""dpengine against LAMMPS + DeePMD-kit on the same NVE run (a validation and a benchmark).

Both programs start from the same positions and velocities (the shipped 192-atom water box
replicated r×r×r, Maxwell-Boltzmann velocities at 330 K without net momentum, written to one
LAMMPS data file with Masses and Velocities) and integrate NVE with velocity Verlet for
``--steps`` steps of 0.5 fs: LAMMPS with ``pair_style deepmd`` on DeePMD-kit's frozen model,
``dpengine run`` on the same model imported with ``dpengine import-deepmd``. Reported per r:
the largest differences in potential and total energy over the thermo lines (every 10 steps),
in positions, velocities and forces at the last step, and both programs' speed (ns/day over the
whole MD loop, as each measures it) with their ratio. With ``--compressed MODEL.pth`` (DeePMD-kit's ``dp --pt
compress`` of the same model, made where its custom operators are built, e.g. the LAMMPS
environment's ``dp``) the run is repeated with LAMMPS on that file and dpengine on
``dpengine compress`` of the imported model. Kinetic energies and temperatures differ
at the 1e-6 level by construction: LAMMPS's metal units use older values of k_B and of the
m·v² → eV factor than dpengine's CODATA 2018 ones.

../shared/bench/install-lammps-deepmd.sh makes the LAMMPS environment; run this script with
the LD_LIBRARY_PATH it prints exported. Example (docs/lammps.md gives the exact command):

    python tools/compare_lammps.py --lmp /tmp/venv-lammps/bin/lmp --reps 1 2 --out docs/lammps
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DPENGINE_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO / "tools"))
from bench import cpu_name  # noqa: E402
from bench_force import replicated_water  # noqa: E402

MASSES = {0: 15.999, 1: 1.008}           # g/mol, O and H: the same in both programs
KB_EV = 8.617333262e-5                   # eV/K
MVV2E = 1.0364269e-4                     # eV per (g/mol)·(Å/ps)²
LAMMPS_INPUT = """units metal
boundary p p p
atom_style atomic
neighbor 2.0 bin
neigh_modify every 1 delay 0 check yes
read_data {data}
pair_style deepmd {model}
pair_coeff * * O H
fix 1 all nve
timestep 0.0005
thermo_style custom step pe ke etotal
thermo_modify format float %.10f
thermo 10
dump d all custom {steps} dump.lmp id x y z vx vy vz fx fy fz
dump_modify d format float %.15g sort id
run {steps}
"""
DPENGINE_INPUT = """[system]
structure = "{data}"
type_map = ["O", "H"]
[potential]
model = "{model}"
[md]
ensemble = "nve"
timestep = 0.5
steps = {steps}
[output]
trajectory = "traj.nc"
trajectory_interval = {steps}
velocities = true
forces = true
thermo = "thermo.log"
thermo_interval = 10
"""


def write_data(path: Path, r: int, seed: int = 2024) -> None:
    """LAMMPS data file (atomic style, metal units) with Masses and Velocities (Å/ps)."""
    pos, box, types = replicated_water(r)
    masses = np.array([MASSES[t] for t in types])
    rng = np.random.default_rng(seed)
    vel = rng.normal(size=pos.shape) * np.sqrt(KB_EV * 330.0 / (masses[:, None] * MVV2E))
    vel -= (masses[:, None] * vel).sum(0) / masses.sum()
    lines = ["# dpengine/LAMMPS comparison", f"{len(pos)} atoms", "2 atom types",
             f"0.0 {box[0, 0]:.10f} xlo xhi", f"0.0 {box[1, 1]:.10f} ylo yhi",
             f"0.0 {box[2, 2]:.10f} zlo zhi", "", "Masses", "", f"1 {MASSES[0]}",
             f"2 {MASSES[1]}", "", "Atoms # atomic", ""]
    lines += [f"{k + 1} {types[k] + 1} {x:.17g} {y:.17g} {z:.17g}" for k, (x, y, z) in enumerate(pos)]
    lines += ["", "Velocities", ""]
    lines += [f"{k + 1} {x:.17g} {y:.17g} {z:.17g}" for k, (x, y, z) in enumerate(vel)]
    path.write_text("\n".join(lines) + "\n")


def lammps_thermo(log: str) -> np.ndarray:
    """[step, pe, ke, etotal] rows of the thermo block of a LAMMPS log."""
    block = re.split(r"^\s*Step\s+PotEng.*$", log, maxsplit=1, flags=re.M)[1]
    rows = [line.split() for line in block.split("Loop time", 1)[0].splitlines() if line.strip()]
    return np.array([[float(x) for x in row[:4]] for row in rows])


def last_dump_frame(path: Path) -> np.ndarray:
    """[N, 9] x y z vx vy vz fx fy fz of the last frame of a LAMMPS custom dump."""
    frame = path.read_text().split("ITEM: TIMESTEP")[-1].splitlines()
    start = next(k for k, line in enumerate(frame) if line.startswith("ITEM: ATOMS")) + 1
    return np.array([[float(x) for x in line.split()[1:]] for line in frame[start:] if line.strip()])


def compare(r: int, args, model_pth: Path, model_pt: Path, work: Path) -> dict:
    import netCDF4
    from dpengine.units import EV_TO_KCAL_MOL
    work.mkdir(parents=True)
    write_data(work / "conf.lmp", r)
    (work / "in.lmp").write_text(LAMMPS_INPUT.format(data="conf.lmp", model=model_pth,
                                                     steps=args.steps))
    (work / "run.toml").write_text(DPENGINE_INPUT.format(data="conf.lmp", model=model_pt,
                                                         steps=args.steps))
    lmp = subprocess.run([args.lmp, "-in", "in.lmp"], cwd=work, capture_output=True, text=True)
    if lmp.returncode:
        raise RuntimeError(f"LAMMPS failed ({work / 'in.lmp'}):\n{lmp.stdout[-2000:]}{lmp.stderr[-2000:]}")
    dpe = subprocess.run([sys.executable, "-m", "dpengine", "run", "run.toml", "-o", "out"],
                         cwd=work, capture_output=True, text=True)
    if dpe.returncode:
        raise RuntimeError(f"dpengine run failed ({work}):\n{dpe.stderr[-3000:]}")
    ref = lammps_thermo(lmp.stdout)
    ours = np.loadtxt(work / "out" / "thermo.log")[:, [0, 2, 3, 4]]
    if not np.array_equal(ref[:, 0], ours[:, 0]):
        raise RuntimeError(f"thermo steps differ: LAMMPS {ref[:, 0]}, dpengine {ours[:, 0]}")
    last = last_dump_frame(work / "dump.lmp")
    with netCDF4.Dataset(work / "out" / "traj.nc") as ds:
        pos, vel = np.array(ds["coordinates"][-1], float), np.array(ds["velocities"][-1], float)
        frc = np.array(ds["forces"][-1], float) / EV_TO_KCAL_MOL
    box = np.diag(replicated_water(r)[1])
    dx = pos - last[:, :3]
    dx -= box * np.round(dx / box)
    loop = float(re.search(r"Loop time of ([0-9.eE+-]+)", lmp.stdout).group(1))
    lmp_speed = args.steps * 0.5e-6 / loop * 86400          # ns/day (LAMMPS prints 2-3 digits)
    dpe_speed = float(re.findall(r"([0-9.]+) ns/day", dpe.stdout)[-1])
    n = len(last)
    return dict(atoms=n, steps=args.steps, max_abs_dpe_ev=float(np.abs(ours[:, 1] - ref[:, 1]).max()),
                max_abs_detotal_ev=float(np.abs(ours[:, 3] - ref[:, 3]).max()),
                max_rel_dke=float(np.abs(ours[:, 2] / ref[:, 2] - 1).max()),
                max_abs_dx_a=float(np.abs(dx).max()),
                max_abs_dv_a_per_ps=float(np.abs(vel - last[:, 3:6]).max()),
                max_abs_df_ev_per_a=float(np.abs(frc - last[:, 6:9]).max()),
                lammps_ns_per_day=lmp_speed, dpengine_ns_per_day=dpe_speed,
                speedup=dpe_speed / lmp_speed)


def write_markdown(report: dict, path: str) -> str:
    """The table of ``report`` (as main writes it to JSON) as Markdown at ``path``."""
    lines = ["# dpengine against LAMMPS + DeePMD-kit", "",
             "Written by `tools/compare_lammps.py` (its docstring says what is compared). "
             f"Same NVE run in both programs: the water box replicated r×r×r, {report['steps']} "
             "velocity-Verlet steps of 0.5 fs from the same positions and velocities; LAMMPS "
             "`pair_style deepmd` on DeePMD-kit's frozen model, `dpengine run` on the same "
             "model imported (compressed: DeePMD-kit's `dp --pt compress` file in LAMMPS, "
             "`dpengine compress` of the imported model in dpengine). Differences: energies over the thermo lines (every 10 steps), "
             "positions/velocities/forces at the last step (dpengine's trajectory stores "
             "float32). Speed: ns/day over each program's whole MD loop (LAMMPS: its loop "
             "time; dpengine: its progress line, first steps included).", "",
             f"Measured {report['date']} on {report['machine']} ({report['cpus']} cores); "
             f"model {Path(report['model']).name}; LAMMPS with DeePMD-kit's pair style from "
             "../shared/bench/install-lammps-deepmd.sh (deepmd-kit[lmp] 3.2.0).", "",
             f"Command: `{report['command']}`", "",
             "| model | atoms | max abs ΔPE eV | max abs ΔE_total eV | max rel ΔKE | max abs Δx Å | "
             "max abs Δv Å/ps | max abs ΔF eV/Å | LAMMPS ns/day | dpengine ns/day | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row.get('model', 'uncompressed')} | {row['atoms']} "
                     f"| {row['max_abs_dpe_ev']:.1e} | {row['max_abs_detotal_ev']:.1e} "
                     f"| {row['max_rel_dke']:.1e} | {row['max_abs_dx_a']:.1e} "
                     f"| {row['max_abs_dv_a_per_ps']:.1e} | {row['max_abs_df_ev_per_a']:.1e} "
                     f"| {row['lammps_ns_per_day']:.3g} | {row['dpengine_ns_per_day']:.3g} "
                     f"| {row['speedup']:.1f} |")
    text = "\n".join(lines) + "\n"
    Path(path).write_text(text)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lmp", required=True, help="LAMMPS binary with pair_style deepmd")
    ap.add_argument("--model", default=str(SHARED / "fixtures" / "deepmd_se_e2_a" / "frozen_model.pth"),
                    help="DeePMD-kit frozen model (.pth)")
    ap.add_argument("--compressed", help="the same model compressed by DeePMD-kit (.pth): "
                                         "also compare compressed MD")
    ap.add_argument("--reps", type=int, nargs="+", default=[1])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", default="docs/lammps", help="output prefix (.md and .json)")
    args = ap.parse_args()
    from dpengine.model.compress import compress_model
    from dpengine.model.import_deepmd import import_deepmd
    tmp = Path(tempfile.mkdtemp(prefix="dpengine-lammps-"))
    model_pth = Path(args.model).resolve()
    model_pt = import_deepmd(model_pth, tmp / "model.pt")
    pairs = [("uncompressed", model_pth, model_pt)]
    if args.compressed:
        pairs.append(("compressed", Path(args.compressed).resolve(),
                      compress_model(model_pt, tmp / "model-c.pt")))
    rows = []
    for name, lammps_model, dpengine_model in pairs:
        for r in args.reps:
            row = dict(model=name, **compare(r, args, lammps_model, dpengine_model,
                                             tmp / f"{name}-r{r}"))
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = dict(date=time.strftime("%Y-%m-%d"), machine=cpu_name(), cpus=os.cpu_count(),
                  model=str(model_pth), steps=args.steps, command=" ".join(sys.argv), rows=rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=1))
    print(write_markdown(report, args.out + ".md"))


if __name__ == "__main__":
    main()
