"""Training speed and accuracy of ``dpengine train`` against DeePMD-kit on the water example.

Usage (DeePMD-kit from ../shared/bench/install-deepmd-kit.sh /tmp/venv-deepmd):

    python tools/bench_train.py [--deepmd-venv /tmp/venv-deepmd] [--steps 100] [--budget 600]
                                [--threads 1] [--workdir /tmp/bench_train] [--sequential]
                                [--repeats 1]

Both programs train DeePMD-kit's water example (se_e2_a, float64, sel [46, 92], rcut 6 Å,
embedding [25, 50, 100], axis 16, fitting [240, 240, 240], batch 1) on data_0..2 with the
same hyper-parameters (``../shared/fixtures/deepmd_se_e2_a/input.json`` and its twin
``inputs/water/train.toml``), in the same run of this script, with the same thread count.

1. Speed: DeePMD-kit trains ``--steps`` steps and dpengine three times as many (so that
   both are inside their training loops at the same time). Every progress line is
   time-stamped on arrival and each process's CPU time is sampled from /proc; seconds per
   step (wall and CPU) are taken over the window in which both were training, after each
   one's first display interval (warm-up), without the set-up (statistics, geometry
   cache). Periodic validation is included for both, at the same cadence: one batch every
   ``--steps``/20 steps (DeePMD-kit validates at every display, so both display then). The
   programs' own averages are recorded too.
2. Equal wall clock: each program trains for about ``--budget`` seconds of training loop —
   its step count is the budget divided by its time per step from part 1, and its
   learning rate decays over those steps — then the frozen model is tested on all 80
   frames of data_3 with the program's own ``test`` command (energy and force RMSE). The
   loop times actually taken are reported (the machine's load changes between parts).

By default the two programs run at the same time (each with ``--threads`` threads), so
that they share whatever load the machine has; ``--sequential`` runs one after the other.
``--repeats N`` repeats part 1 N times (with ``--sequential`` the order alternates, so that
a drift of the machine's speed does not favour one program) and reports the medians.
On an AMD CPU with AVX-512, dpengine runs MKL's AVX-512 kernels and DeePMD-kit, as
installed, MKL's AVX2 ones (dpengine/mkl_dispatch.py); ``--deepmd-mkl-avx512`` gives
DeePMD-kit the same kernels (dpengine's vendor-check library preloaded), and
``DPENGINE_MKL_AVX512=0`` in the environment takes them from dpengine: the two comparisons
with equal kernels. Which kernels each used is printed and recorded.
Results: printed, and written to WORKDIR/bench_train.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import dpengine  # (its import makes the choice the training processes make)
from dpengine import mkl_dispatch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "inputs" / "water" / "data"
FIXTURE_INPUT = REPO.parent / "shared" / "fixtures" / "deepmd_se_e2_a" / "input.json"


def deepmd_input(steps: int, disp: int) -> dict:
    cfg = json.loads(FIXTURE_INPUT.read_text())
    cfg["training"]["training_data"]["systems"] = [str(DATA / f"data_{i}") for i in range(3)]
    cfg["training"]["validation_data"]["systems"] = [str(DATA / "data_3")]
    cfg["training"]["validation_data"]["numb_btch"] = 1
    cfg["training"].update(numb_steps=steps, disp_freq=disp, save_freq=steps)
    cfg["training"].pop("stat_file", None)
    return cfg


def dpengine_input(steps: int, disp: int, threads: int) -> str:
    text = (REPO / "inputs" / "water" / "train.toml").read_text()
    text = text.replace('"data/', f'"{DATA}/')
    text = re.sub(r"(?m)^steps = \d+", f"steps = {steps}", text)
    text = re.sub(r"(?m)^display_interval = \d+", f"display_interval = {disp}", text)
    text = re.sub(r"(?m)^checkpoint_interval = \d+", f"checkpoint_interval = {steps}", text)
    text = re.sub(r"(?m)^validation_batches = \d+", "validation_batches = 1", text)
    text = re.sub(r"(?m)^stat_batches = \d+", "stat_batches = 20", text)
    return text + f"threads = {threads}\n"


def _env(threads: int, preload: Path | None = None) -> dict:
    env = dict(os.environ)
    if preload is not None:
        env["LD_PRELOAD"] = " ".join(filter(None, [str(preload), env.get("LD_PRELOAD")]))
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               DP_INTRA_OP_PARALLELISM_THREADS=str(threads), DP_INTER_OP_PARALLELISM_THREADS="1",
               DPENGINE_THREADS=str(threads), PYTHONUNBUFFERED="1")
    return env


class Monitored:
    """A training process whose output lines are time-stamped as they arrive and whose CPU
    time (user + system, all threads) is sampled from /proc every 0.25 s."""

    def __init__(self, name: str, argv: list[str], work: Path, threads: int, step_re: str,
                 preload: Path | None = None):
        self.name, self.work, self.step_re = name, work, re.compile(step_re)
        self.lines: list[tuple[float, str]] = []
        self.cpu: list[tuple[float, float]] = []
        self.log = open(work / "train.log", "w")
        self.proc = subprocess.Popen(argv, cwd=work, env=_env(threads, preload),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._reader.start()
        self._sampler.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.time(), line))
            self.log.write(line)
            self.log.flush()

    def _sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while self.proc.poll() is None:
            try:
                fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                self.cpu.append((time.time(), (int(fields[11]) + int(fields[12])) / tick))
            except (OSError, IndexError, ValueError):
                pass
            time.sleep(0.25)

    def wait(self) -> None:
        if self.proc.wait() != 0:
            raise RuntimeError(f"{self.name} training failed (exit {self.proc.returncode}); "
                               f"see {self.work / 'train.log'}")
        self._reader.join()
        self.log.close()

    def steps(self) -> list[tuple[float, int]]:
        """(arrival time, step) of every progress line of the training loop."""
        out = []
        for t, line in self.lines:
            m = self.step_re.search(line)
            if m:
                out.append((t, int(m.group(1))))
        return out


def start_deepmd(venv: Path, work: Path, steps: int, disp: int, threads: int,
                 mkl_avx512: bool = False) -> Monitored:
    work.mkdir(parents=True, exist_ok=True)
    (work / "input.json").write_text(json.dumps(deepmd_input(steps, disp), indent=1))
    return Monitored("DeePMD-kit", [str(venv / "bin" / "dp"), "--pt", "train", "input.json",
                                    "--skip-neighbor-stat"], work, threads,
                     r"Batch\s+(\d+): total wall time",
                     preload=mkl_dispatch.library_path() if mkl_avx512 else None)


def start_dpengine(work: Path, steps: int, disp: int, threads: int) -> Monitored:
    work.mkdir(parents=True, exist_ok=True)
    (work / "train.toml").write_text(dpengine_input(steps, disp, threads))
    return Monitored("dpengine", [sys.executable, "-m", "dpengine", "train", "train.toml", "-o",
                                  "."], work, threads, r"^step (\d+)/")


def _interp(samples: list[tuple[float, float]], t: float) -> float:
    before = [c for ts, c in samples if ts <= t]
    return before[-1] if before else (samples[0][1] if samples else float("nan"))


def rates(jobs: list[Monitored]) -> dict:
    """Wall and CPU seconds per step of each job over the window in which all of them were in
    their training loops (after their first display interval, which holds the warm-up)."""
    series = {j.name: j.steps() for j in jobs}
    for name, pts in series.items():
        if len(pts) < 3:
            raise RuntimeError(f"{name}: too few progress lines to time the training loop")
    lo = max(pts[1][0] for pts in series.values())
    hi = min(pts[-1][0] for pts in series.values())
    out = {}
    for job in jobs:
        pts = [(t, s) for t, s in series[job.name] if lo <= t <= hi]
        common = len(pts) >= 2 and pts[-1][1] > pts[0][1]
        if not common:                                  # no overlap: time its own loop
            pts = series[job.name][1:]
        (t0, s0), (t1, s1) = pts[0], pts[-1]
        n = max(s1 - s0, 1)
        out[job.name] = dict(wall_s_per_step=(t1 - t0) / n,
                             cpu_s_per_step=(_interp(job.cpu, t1) - _interp(job.cpu, t0)) / n,
                             steps_timed=s1 - s0, window_s=t1 - t0, common_window=common)
    return out


def deepmd_seconds_per_step(work: Path) -> float:
    m = re.search(r"average training time: ([0-9.]+) s/batch", (work / "train.log").read_text())
    if not m:
        raise RuntimeError(f"no average training time in {work / 'train.log'}")
    return float(m.group(1))


def dpengine_seconds_per_step(work: Path) -> float:
    """Training-loop wall time per step, validation included (as DeePMD-kit's figure)."""
    text = (work / "train.log").read_text()
    m = re.search(r"trained to step (\d+): ([0-9.]+) s/step \((\d+) steps, validation ([0-9.]+) s",
                  text)
    if not m:
        raise RuntimeError(f"no timing line in {work / 'train.log'}")
    per_step, n, valid = float(m.group(2)), int(m.group(3)), float(m.group(4))
    return per_step + valid / n


def _rmse(text: str) -> dict:
    def grab(label):
        hits = re.findall(label + r"\s*:\s*([0-9.eE+-]+)", text)
        return float(hits[-1])
    return dict(e_rmse_per_atom=grab(r"Energy RMSE/Natoms"), f_rmse=grab(r"Force  RMSE"))


def test_deepmd(venv: Path, work: Path, threads: int) -> dict:
    dp = str(venv / "bin" / "dp")
    subprocess.run([dp, "--pt", "freeze", "-o", "frozen.pth"], cwd=work, env=_env(threads),
                   check=True, capture_output=True)
    out = subprocess.run([dp, "--pt", "test", "-m", "frozen.pth", "-s", str(DATA / "data_3"),
                          "-n", "80"], cwd=work, env=_env(threads), check=True,
                         capture_output=True, text=True)
    (work / "test.log").write_text(out.stdout + out.stderr)
    return _rmse(out.stdout + out.stderr)


def test_dpengine(work: Path, threads: int) -> dict:
    py = [sys.executable, "-m", "dpengine"]
    subprocess.run(py + ["freeze", "model.ckpt.pt", "-o", "model.pt"], cwd=work, env=_env(threads),
                   check=True, capture_output=True)
    out = subprocess.run(py + ["test", "-m", "model.pt", "-s", str(DATA / "data_3")], cwd=work,
                         env=_env(threads), check=True, capture_output=True, text=True)
    (work / "test.log").write_text(out.stdout + out.stderr)
    return _rmse(out.stdout)


def run_pair(args, tag: str, steps_dp: int, steps_dpe: int, disp_dp: int, disp_dpe: int,
             dpengine_first: bool = False):
    """Train both programs (at the same time unless --sequential, then DeePMD-kit first unless
    ``dpengine_first``); returns their folders and the timing of their training loops."""
    work = args.workdir / tag
    makers = [lambda: start_deepmd(args.deepmd_venv, work / "deepmd", steps_dp, disp_dp,
                                   args.threads, args.deepmd_mkl_avx512),
              lambda: start_dpengine(work / "dpengine", steps_dpe, disp_dpe, args.threads)]
    if dpengine_first:
        makers.reverse()
    jobs = []
    if args.sequential:
        for make in makers:
            jobs.append(make())
            jobs[-1].wait()
    else:
        jobs = [make() for make in makers]
        for job in jobs:
            job.wait()
    return work / "deepmd", work / "dpengine", rates(jobs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deepmd-venv", type=Path, default=Path("/tmp/venv-deepmd"))
    parser.add_argument("--steps", type=int, default=100, help="steps of the speed measurement")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="training-loop seconds of the equal-wall-clock run (0: skip)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_train"))
    parser.add_argument("--sequential", action="store_true")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of the speed measurement (medians reported; with "
                             "--sequential the order alternates between rounds)")
    parser.add_argument("--deepmd-mkl-avx512", action="store_true",
                        help="preload dpengine's MKL vendor-check library into DeePMD-kit too "
                             "(dpengine/mkl_dispatch.py), so that both run MKL's AVX-512 "
                             "kernels on an AMD CPU")
    args = parser.parse_args(argv)
    if args.deepmd_mkl_avx512 and mkl_dispatch.library_path() is None:
        print("--deepmd-mkl-avx512: dpengine/_mkl_cpu.c is not built (pip install -e .)",
              file=sys.stderr)
        return 2
    if not (args.deepmd_venv / "bin" / "dp").is_file():
        print(f"DeePMD-kit not found in {args.deepmd_venv}; run "
              "../shared/bench/install-deepmd-kit.sh first", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = dict(threads=args.threads, concurrent=not args.sequential, steps=args.steps,
                  dpengine_mkl_avx512=dpengine.MKL_AVX512_ON_AMD,   # as in its training processes
                  deepmd_mkl_avx512=args.deepmd_mkl_avx512,
                  machine=os.uname().nodename, load_average_start=os.getloadavg())
    print(f"MKL's AVX-512 kernels (AMD CPU): dpengine "
          f"{'yes' if result['dpengine_mkl_avx512'] else 'no'}, DeePMD-kit "
          f"{'yes' if args.deepmd_mkl_avx512 else 'no'}", flush=True)
    disp = max(1, args.steps // 20)
    rounds = []
    for k in range(args.repeats):
        t0 = time.time()
        dp_dir, dpe_dir, timing = run_pair(args, f"speed-{k}", args.steps, 3 * args.steps, disp,
                                           disp, dpengine_first=k % 2 == 1)
        dpk, dpe = timing["DeePMD-kit"], timing["dpengine"]
        rounds.append(dict(
            deepmd_s_per_step=dpk["wall_s_per_step"], dpengine_s_per_step=dpe["wall_s_per_step"],
            speedup_wall=dpk["wall_s_per_step"] / dpe["wall_s_per_step"],
            speedup_cpu=dpk["cpu_s_per_step"] / dpe["cpu_s_per_step"], timing=timing,
            deepmd_own_average=deepmd_seconds_per_step(dp_dir),
            dpengine_own_average=dpengine_seconds_per_step(dpe_dir),
            wall_seconds=time.time() - t0))
        r = rounds[-1]
        print(f"speed, round {k + 1}/{args.repeats}: DeePMD-kit {dpk['wall_s_per_step']:.3f} s/step "
              f"wall, {dpk['cpu_s_per_step']:.3f} s/step CPU; dpengine "
              f"{dpe['wall_s_per_step']:.3f} s/step wall, {dpe['cpu_s_per_step']:.3f} s/step CPU; "
              f"ratio {r['speedup_wall']:.2f}x wall, {r['speedup_cpu']:.2f}x CPU (own averages: "
              f"{r['deepmd_own_average']:.3f} / {r['dpengine_own_average']:.3f} s/step)", flush=True)
    sp = result["speed"] = {key: statistics.median(r[key] for r in rounds) for key in (
        "deepmd_s_per_step", "dpengine_s_per_step", "speedup_wall", "speedup_cpu")}
    sp["rounds"] = rounds
    if args.repeats > 1:
        each = ", ".join(f"{r['speedup_wall']:.2f}" for r in rounds)
        print(f"speed, median of {args.repeats} rounds: DeePMD-kit {sp['deepmd_s_per_step']:.3f} "
              f"s/step, dpengine {sp['dpengine_s_per_step']:.3f} s/step; ratio "
              f"{sp['speedup_wall']:.2f}x wall (rounds: {each}), "
              f"{sp['speedup_cpu']:.2f}x CPU", flush=True)
    if args.budget > 0:
        steps_dp = max(20, int(args.budget / sp["deepmd_s_per_step"]))
        steps_dpe = max(20, int(args.budget / sp["dpengine_s_per_step"]))
        t0 = time.time()
        dp_dir, dpe_dir, timing = run_pair(args, "budget", steps_dp, steps_dpe,
                                           max(1, steps_dp // 20), max(1, steps_dpe // 20))
        eq = result["equal_wall_clock"] = dict(
            budget_seconds=args.budget, deepmd_steps=steps_dp, dpengine_steps=steps_dpe,
            deepmd_loop_seconds=deepmd_seconds_per_step(dp_dir) * steps_dp,
            dpengine_loop_seconds=dpengine_seconds_per_step(dpe_dir) * steps_dpe,
            timing=timing, wall_seconds=time.time() - t0)
        eq["deepmd_test"] = test_deepmd(args.deepmd_venv, dp_dir, args.threads)
        eq["dpengine_test"] = test_dpengine(dpe_dir, args.threads)
        print(f"equal wall clock ({args.budget:.0f} s of training): DeePMD-kit {steps_dp} steps "
              f"({eq['deepmd_loop_seconds']:.0f} s) → force RMSE {eq['deepmd_test']['f_rmse']:.4f} "
              f"eV/Å, energy {1000 * eq['deepmd_test']['e_rmse_per_atom']:.2f} meV/atom; dpengine "
              f"{steps_dpe} steps ({eq['dpengine_loop_seconds']:.0f} s) → force RMSE "
              f"{eq['dpengine_test']['f_rmse']:.4f} eV/Å, energy "
              f"{1000 * eq['dpengine_test']['e_rmse_per_atom']:.2f} meV/atom (data_3, 80 frames)")
    result["load_average_end"] = os.getloadavg()
    (args.workdir / "bench_train.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.workdir / 'bench_train.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
