"""Benchmark of ``dpengine analyze``: O–O RDF of a 1,000-frame, 1,536-atom water trajectory.

Builds the trajectory once (the shipped 64-H₂O box replicated 2×2×2, atoms displaced by
Gaussian noise of 0.1 Å per frame; AMBER NetCDF written by dpengine's writer, ~37 MB),
then times the O–O RDF with both pair-search methods, an ADF and a Steinhardt pass::

    python tools/bench_analysis.py [--frames 1000] [--threads 2] [--keep DIR]

Times are wall-clock seconds for the whole analysis call (reading included), the best of
``--repeat`` calls for the O–O RDF; Taichi's kernel compilation is done by a warm-up call on
a short trajectory first and reported separately; the load average is printed because the
machine may be shared. Not a test: run it by hand and quote the numbers.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_trajectory(path: Path, n_frames: int, seed: int = 7) -> list[str]:
    """Write the replicated water trajectory to ``path``; return the atom symbols."""
    from dpengine.io.netcdf import AmberTrajectoryWriter
    from dpengine.structure import read_structure

    s = read_structure(REPO / "inputs/water/conf.lmp", type_map=["O", "H"])
    shifts = np.array([(i, j, k) for i in range(2) for j in range(2) for k in range(2)], float)
    pos = np.concatenate([s.positions + sh @ s.box for sh in shifts])
    box = 2.0 * s.box
    rng = np.random.default_rng(seed)
    with AmberTrajectoryWriter(path, len(pos), True) as w:
        w.sync = lambda: None          # one sync at close instead of one per frame
        for f in range(n_frames):
            w.write_frame(0.01 * f, pos + rng.normal(0.0, 0.1, pos.shape), box)
    return s.symbols * 8


def timed(label: str, fn, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls (the least disturbed by other load), printed."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    note = f"  (best of {repeat}: {', '.join(f'{t:.2f}' for t in times)})" if repeat > 1 else ""
    print(f"{label:<46s} {min(times):8.2f} s{note}")
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2, help="Taichi CPU threads")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of the O-O RDF timings")
    ap.add_argument("--keep", help="folder to keep the trajectory in (default: a temp folder)")
    args = ap.parse_args()

    from dpengine.backend import init_taichi
    init_taichi("cpu", threads=args.threads)
    from dpengine_tools.analysis import pairs, steinhardt
    from dpengine_tools.analysis.trajectory import Trajectory

    folder = Path(args.keep or tempfile.mkdtemp(prefix="bench_analysis_"))
    folder.mkdir(parents=True, exist_ok=True)
    traj_path, warm_path = folder / "water1536.nc", folder / "warm.nc"
    t0 = time.perf_counter()
    symbols = make_trajectory(traj_path, args.frames)
    make_trajectory(warm_path, 3)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; Taichi threads "
          f"{args.threads}")
    print(f"wrote {traj_path} ({args.frames} frames, {len(symbols)} atoms, "
          f"{os.path.getsize(traj_path) / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s")
    oxygen = np.flatnonzero(np.asarray(symbols) == "O")

    with Trajectory(warm_path) as warm:
        fr = warm.select()
        timed("warm-up (Taichi compile or cache load)", lambda: (
            pairs.rdf(warm, fr, oxygen, oxygen, 6.0, method="pairs", show_progress=False),
            pairs.rdf(warm, fr, oxygen, oxygen, 6.0, method="nlist", show_progress=False),
            pairs.adf(warm, fr, oxygen, oxygen, oxygen, 3.5, show_progress=False),
            steinhardt.steinhardt(warm, fr, oxygen, 3.5, show_progress=False)))
    with Trajectory(traj_path) as traj:
        fr = traj.select()
        rmax = pairs.max_rmax(traj, fr)
        timed("read all frames (no analysis)", lambda: [c for c in traj.chunks(fr)])
        for method in ("pairs", "nlist"):
            timed(f"O-O RDF r_max 6 A, 200 bins, {method}", lambda: pairs.rdf(
                traj, fr, oxygen, oxygen, 6.0, method=method, show_progress=False), args.repeat)
        timed(f"O-O RDF r_max {rmax:.2f} A (default), pairs", lambda: pairs.rdf(
            traj, fr, oxygen, oxygen, None, method="pairs", show_progress=False))
        hydrogen = np.flatnonzero(np.asarray(symbols) == "H")
        for method in ("pairs", "nlist"):
            timed(f"O-H RDF r_max 6 A, {method}", lambda: pairs.rdf(
                traj, fr, oxygen, hydrogen, 6.0, method=method, show_progress=False))
        timed("O-O-O ADF r_c 3.5 A", lambda: pairs.adf(
            traj, fr, oxygen, oxygen, oxygen, 3.5, show_progress=False))
        timed("Steinhardt Q4/Q6 of O, r_c 3.5 A", lambda: steinhardt.steinhardt(
            traj, fr, oxygen, 3.5, show_progress=False))
    print(f"load average {os.getloadavg()[0]:.1f}")
    if not args.keep:
        for p in (traj_path, warm_path):
            p.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
