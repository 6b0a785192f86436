"""MD throughput of the shipped water model against DeePMD-kit (a benchmark, not a test).

Measures, in one run on one machine:
- dpengine MD (velocity Verlet step: neighbour list, environment, networks, forces) in
  µs/step/atom and ns/day (dt = 0.5 fs) for the 192-atom water box replicated r×r×r,
  float64 and float32, uncompressed and compressed;
- DeePMD-kit's Python inference ``DeepPot.eval`` on the same model (the fixture
  frozen_model.pth, imported with ``import_deepmd`` for dpengine), when a Python with
  deepmd-kit is given (``--deepmd-python``; ../shared/bench/install-deepmd-kit.sh makes one);
- the machine's float64 matrix-multiply rate (torch, 2048³) and the fraction of it that
  the model's FLOPs per step reach;
- peak memory (resident set on the CPU, allocated device memory on a GPU).

``--rounds N`` measures everything N times, DeePMD-kit and dpengine alternating in which goes
first (a VM's speed drifts by tens of per cent within minutes), and reports medians; the
speed-up is the median of the rounds' ratios. Writes a Markdown table and a JSON file.
Example (docs/performance.md gives the exact command it was made with):

    python tools/bench.py --rounds 3 --deepmd-python /tmp/venv-deepmd/bin/python --out docs/performance
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dpengine  # (first: bounds OpenMP's spin-wait before torch loads)
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DPENGINE_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO / "tools"))
from bench_force import replicated_water  # noqa: E402

DEEPMD_SCRIPT = """
import json, sys, time
import numpy as np
from deepmd.infer import DeepPot
model, r, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
min_seconds = float(sys.argv[5])
data = np.load(sys.argv[4])
pos, box, types = data["pos"], data["box"], data["types"]
dp = DeepPot(model)
for _ in range(3):      # warm-up, as for dpengine (TorchScript optimises after two calls)
    dp.eval(pos.reshape(1, -1), box.reshape(1, -1), types)
times = []
while len(times) < repeats or sum(times) < min_seconds:
    t0 = time.perf_counter()
    dp.eval(pos.reshape(1, -1), box.reshape(1, -1), types)
    times.append(time.perf_counter() - t0)
print(json.dumps(dict(seconds=float(np.median(times)))))
"""


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gemm_rate(n: int = 2048, dtype=torch.float64, device="cpu") -> float:
    """FLOP/s of an n³ matrix product in torch (best of 3)."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(3):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def model_flops_per_atom(meta: dict) -> float:
    """FLOPs of one force evaluation per atom in DeePMD-kit's padded layout.

    Forward: every slot runs the embedding net and adds R̂ᵀG (4·M MACs); every atom forms
    D (4·M·M2 MACs) and runs its fitting net. Backward to the inputs costs as much again.
    """
    widths = [1] + list(meta["neuron"])
    emb = sum(a * b for a, b in zip(widths[:-1], widths[1:])) + 4 * widths[-1]
    fit_w = [widths[-1] * meta["axis_neuron"]] + list(meta["fitting_neuron"]) + [1]
    fit = sum(a * b for a, b in zip(fit_w[:-1], fit_w[1:]))
    macs = sum(meta["sel"]) * emb + 4 * widths[-1] * meta["axis_neuron"] + fit
    return 2 * 2 * macs


def md_step_time(model, r, device, precision, steps, min_seconds=0.0):
    """Median seconds of one NVE step on the r×r×r water box (after 3 warm-up steps), over
    at least ``steps`` steps and at least ``min_seconds`` of timed steps (the median of a
    few seconds rides out this kind of VM's slow spells, which last a fraction of one)."""
    from dpengine.deeppot import DeepPotential
    from dpengine.integrators import NVE
    from dpengine.neighbor import NeighborList
    from dpengine.state import State
    from dpengine.structure import maxwell_boltzmann
    pos, box, types = replicated_water(r)
    masses = np.where(types == 0, 15.999, 1.008)
    f64 = dict(dtype=torch.float64, device=device)
    state = State(torch.tensor(pos, **f64), torch.tensor(maxwell_boltzmann(masses, 330.0, 1), **f64),
                  torch.tensor(box, **f64), torch.tensor(types, dtype=torch.int32, device=device),
                  torch.tensor(masses, **f64), ["O", "H"])
    pot = DeepPotential(model, device=device, precision=precision)
    nlist = NeighborList(pot.cutoff, 2.0, device=device)

    def compute(st):
        nlist.update(st.positions, st.box)
        return pot.compute(st.positions, st.box, st.types, nlist)

    nve = NVE(0.5)
    result = compute(state)
    nve.init(state, result)
    times = []
    k = 0
    while len(times) < steps or sum(times) < min_seconds:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = nve.step(state, result, compute)
        if device == "cuda":
            torch.cuda.synchronize()
        if k >= 3:
            times.append(time.perf_counter() - t0)
        k += 1
    return float(np.median(times)), len(pos)


def deepmd_time(python, r, repeats, min_seconds=0.0):
    pos, box, types = replicated_water(r)
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "frame.npz", pos=pos, box=box, types=types)
        (Path(tmp) / "bench_deepmd.py").write_text(DEEPMD_SCRIPT)
        # DeePMD-kit runs with OpenMP's own defaults, not with what dpengine chose
        env = {k: v for k, v in os.environ.items()
               if dpengine.OMP_WAIT_POLICY_FROM_USER or k != "GOMP_SPINCOUNT"}
        env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
        out = subprocess.run([python, str(Path(tmp) / "bench_deepmd.py"),
                              str(SHARED / "fixtures" / "deepmd_se_e2_a" / "frozen_model.pth"),
                              str(r), str(repeats), str(Path(tmp) / "frame.npz"),
                              str(min_seconds)],
                             capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"DeePMD-kit benchmark failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--steps", type=int, default=5, help="timed MD steps per case (at least)")
    ap.add_argument("--min-seconds", type=float, default=2.0,
                    help="time each case (and DeePMD-kit's eval) for at least this long")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every case (and DeePMD-kit) this many times, alternating which "
                         "goes first; report medians, the speed-up as the median of the rounds' "
                         "ratios")
    ap.add_argument("--deepmd-python", help="python of an environment with deepmd-kit 3.2")
    ap.add_argument("--deepmd-max-rep", type=int, default=2,
                    help="largest replica measured with DeePMD-kit (its cost grows fast)")
    ap.add_argument("--out", default="docs/performance", help="output prefix (.md and .json)")
    args = ap.parse_args()
    from dpengine.backend import init_taichi
    from dpengine.model.compress import compress_model
    from dpengine.model.io import read_metadata
    init_taichi(args.device)
    tmp = Path(tempfile.mkdtemp())
    # the very model DeePMD-kit runs, imported; the shipped model has the same architecture
    fixture = SHARED / "fixtures" / "deepmd_se_e2_a" / "frozen_model.pth"
    if fixture.is_file():
        from dpengine.model.import_deepmd import import_deepmd
        model = import_deepmd(fixture, tmp / "water.pt")
        model_note = "DeePMD-kit's water example (fixture frozen_model.pth, imported)"
    else:
        model = REPO / "inputs" / "water" / "water.pt"
        model_note = "the shipped inputs/water/water.pt"
    meta = read_metadata(model)
    compressed = compress_model(model, tmp / "water-c.pt")
    gemm = gemm_rate(device=args.device)
    flops = model_flops_per_atom(meta)
    rows = []
    cases = [(precision, name, path) for precision in ("float64", "float32")
             for name, path in (("uncompressed", model), ("compressed", compressed))]
    for r in args.reps:
        with_ref = bool(args.deepmd_python) and r <= args.deepmd_max_rep and args.device == "cpu"
        refs, times = [], {case[:2]: [] for case in cases}

        def measure_ref():
            refs.append(deepmd_time(args.deepmd_python, r, max(2, args.steps // 2),
                                    args.min_seconds))

        def measure_cases():
            for precision, name, path in cases:
                times[precision, name].append(md_step_time(path, r, args.device, precision,
                                                           args.steps, args.min_seconds)[0])

        for k in range(args.rounds):        # alternate who goes first: the VM's speed drifts
            order = [measure_ref, measure_cases] if with_ref else [measure_cases]
            for measure in (order if k % 2 == 0 else order[::-1]):
                measure()
        n = len(replicated_water(r)[2])
        for (precision, name), secs in times.items():
            sec = float(np.median(secs))
            row = dict(atoms=n, precision=precision, model=name, seconds_per_step=sec,
                       us_per_step_atom=sec / n * 1e6, ns_per_day=0.5e-6 / sec * 86400,
                       seconds_per_round=secs)
            if with_ref:
                ratios = [a / b for a, b in zip(refs, secs)]
                row.update(deepmd_eval_seconds=float(np.median(refs)),
                           deepmd_seconds_per_round=refs,
                           speedup_vs_deepmd=float(np.median(ratios)), speedup_per_round=ratios)
            if name == "uncompressed" and precision == "float64":
                row["gemm_fraction"] = flops * n / sec / gemm
            rows.append(row)
            print(json.dumps(row), flush=True)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    report = dict(date=time.strftime("%Y-%m-%d"), machine=cpu_name(),
                  cpus=os.cpu_count(), torch_threads=torch.get_num_threads(), device=args.device,
                  gemm_float64_gflops=gemm / 1e9, model_flops_per_atom=flops,
                  peak_memory_mb=peak, command=" ".join(sys.argv), rows=rows)
    if args.device == "cuda":
        report["gpu"] = torch.cuda.get_device_name()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=1))
    where = report.get("gpu") or (f"{report['machine']}, {report['cpus']} cores, torch threads "
                                  f"{report['torch_threads']}")
    deepmd_note = (f"one `DeepPot.eval` of the same model by DeePMD-kit in the same run (up to "
                   f"{args.deepmd_max_rep ** 3 * 192:,} atoms)" if args.deepmd_python
                   else "not measured in this run")
    lines = [f"# Performance ({report['device']})", "",
             "Written by `tools/bench.py` (the command below regenerates this file). One MD "
             "step = neighbour-list check + environment + networks + forces + velocity "
             f"Verlet, median over at least {args.steps} steps and {args.min_seconds:g} s "
             "after 3 warm-up steps (DeePMD-kit's eval likewise, after 3 warm-up calls), "
             f"median of {args.rounds} round(s) (DeePMD-kit and dpengine alternating in "
             "which goes first; speed-up: the median of the rounds' ratios), on the shipped "
             f"water box replicated r×r×r; model: {model_note}, and its `dpengine compress` "
             f"table. DeePMD-kit column: {deepmd_note}. GEMM fraction: the model's FLOPs per "
             "step (DeePMD-kit layout: every sel slot, forward and backward) over the step "
             "time, divided by the float64 matrix-multiply rate measured in the same run."
             + (" GPU figures: performance_cuda.md." if args.device == "cpu" else ""), "",
             f"Measured {report['date']} on {report['device']} ({where}); "
             f"float64 GEMM {report['gemm_float64_gflops']:.1f} GFLOP/s; model "
             f"{flops / 1e6:.2f} MFLOP/atom/step (DeePMD-kit layout); peak memory "
             f"{peak:.0f} MB.", "", f"Command: `{report['command']}`", "",
             "| atoms | precision | model | s/step | µs/step/atom | ns/day | DeePMD-kit eval s | speed-up | GEMM fraction |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['atoms']} | {row['precision']} | {row['model']} | "
                     f"{row['seconds_per_step']:.4f} | {row['us_per_step_atom']:.1f} | "
                     f"{row['ns_per_day']:.3f} | {row.get('deepmd_eval_seconds', float('nan')):.3f} | "
                     f"{row.get('speedup_vs_deepmd', float('nan')):.1f} | "
                     f"{row.get('gemm_fraction', float('nan')):.2f} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
