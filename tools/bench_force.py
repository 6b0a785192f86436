"""Force-call throughput of the Deep Potential (a benchmark script, not a test).

Times one MD force evaluation (neighbour-list check + environment + networks + force
assembly) of the shipped water model on the 192-atom box replicated r×r×r, and prints
µs/step/atom. Usage:

    python tools/bench_force.py [--device cpu|cuda] [--reps 1 2 4] [--precision float64 float32]
"""
import argparse
import json
import time
from pathlib import Path

import dpengine  # noqa: F401  (first: bounds OpenMP's spin-wait before torch loads)
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def replicated_water(r: int):
    from dpengine.structure import read_structure
    s = read_structure(REPO / "inputs" / "water" / "conf.lmp", type_map=["O", "H"])
    shifts = np.array([[i, j, k] for i in range(r) for j in range(r) for k in range(r)], float)
    pos = (s.positions[None] + (shifts @ s.box)[:, None]).reshape(-1, 3)
    types = np.tile([0 if e == "O" else 1 for e in s.symbols], len(shifts))
    return pos, s.box * r, types


def time_force(model_path, r, device, precision, repeats=5):
    from dpengine.deeppot import DeepPotential
    from dpengine.neighbor import NeighborList
    pos, box, types = replicated_water(r)
    pot = DeepPotential(model_path, device=device, precision=precision)
    f64 = dict(dtype=torch.float64, device=device)
    x, h = torch.tensor(pos, **f64), torch.tensor(box, **f64)
    t = torch.tensor(types, dtype=torch.int32, device=device)
    nl = NeighborList(pot.cutoff, 2.0, device=device)

    def step():
        nl.update(x, h)
        return pot.compute(x, h, t, nl)

    step()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    out = dict(atoms=len(pos), device=device, precision=precision, seconds=sec,
               us_per_atom=sec / len(pos) * 1e6)
    if device == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "inputs" / "water" / "water.pt"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--precision", nargs="+", default=["float64", "float32"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from dpengine.backend import init_taichi
    init_taichi(args.device)
    for prec in args.precision:
        for r in args.reps:
            print(json.dumps(time_force(args.model, r, args.device, prec, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
