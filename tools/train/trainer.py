"""``dpengine train``: fit a DeepPot-SE model to energies and forces, DeePMD-kit style.

Set-up (once): read the systems (:mod:`.data`); choose ``sel`` ("auto": neighbour
statistics of the training data, ×1.1, rounded up to a multiple of 4); build the engine's
``DeepPotSE`` with DeePMD-kit's initialisation; compute every frame's slots, environment
matrix and ∂R/∂r with the engine's Taichi kernels (:mod:`.features`); davg/dstd and the
energy bias from ``stat_batches`` batches per system (:mod:`.stats`).

Step t: lr(t) and the loss prefactors (:mod:`.schedule`); a system drawn with probability
∝ its frames, the next batch of its shuffled frames; energies and forces of the batch
(:func:`.fastpath.predict`, forces differentiable in the parameters); the loss; Adam.
Every ``display_interval`` steps (and at step 1) a line of ``lcurve.out`` (validation and
training RMSEs, learning rate, DeePMD-kit's columns); every ``checkpoint_interval`` steps
and at the end a checkpoint, from which ``--restart`` continues to the same result as an
uninterrupted run.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import dpengine
from dpengine.backend import keep_freed_memory
from dpengine.deeppot import SEL_CAP_RULE

from . import checkpoint as ckpt
from .data import load_systems
from .features import EnvironmentProvider, GeometryCache
from .fastpath import predict
from .model import DTYPES, block_uniform, build_network, init_parameters
from .schedule import LearningRate, Sampler, batch_size_for, energy_force_loss, has_term
from .stats import EnvStat, auto_sel, energy_bias, neighbor_statistics


def _adam(params, lr: float) -> torch.optim.Optimizer:
    """Adam (PyTorch defaults, as DeePMD-kit); the fused kernel where this torch has it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


class Trainer:
    """One training run. ``cfg`` is a validated configuration (:func:`.config.load_config`).

    ``restart``: a checkpoint to continue from (its model and state; the configuration's
    other tables apply). ``init_model``: a dpengine model file or checkpoint whose weights
    and statistics start a new run. ``log``: a callable for one-line messages.
    """

    def __init__(self, cfg: dict, output_dir=".", restart=None, init_model=None,
                 progress: bool = True, log=print):
        self.log, self.progress = log, progress
        self.out = Path(output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        state = ckpt.load_checkpoint(restart) if restart else None
        if state is not None:
            cfg = dict(cfg, model=state["config"]["model"])
        self.cfg = cfg
        tr = cfg["training"]
        if tr["threads"]:
            torch.set_num_threads(tr["threads"])
        keep_freed_memory()
        self.device = torch.device(tr["device"])
        self.dtype = DTYPES[cfg["model"]["precision"]]
        torch.manual_seed(tr["seed"])
        type_map = cfg["model"]["type_map"]
        t0 = time.perf_counter()
        self.train_systems = load_systems(cfg["data"]["train"], type_map)
        self.valid_systems = load_systems(cfg["data"]["validation"], type_map)
        self.sel = self._choose_sel(state)
        self.net = build_network(cfg["model"], self.sel)
        init_parameters(self.net, tr["seed"])
        fresh = state is None and init_model is None
        if state is not None:
            self.net.load_state_dict(state["model"])
        elif init_model is not None:
            self._load_init_model(init_model)
        self.net.to(self.device)
        provider = EnvironmentProvider(self.net.cpu(), device="cpu")
        self.net.to(self.device)
        full = not fresh and not block_uniform(self.net)
        self.train_caches = [GeometryCache(s, provider, self.sel, full) for s in self.train_systems]
        self.valid_caches = [GeometryCache(s, provider, self.sel, full) for s in self.valid_systems]
        self._check_sel_overflow()
        dcfg = cfg["data"]
        self.batch_sizes = [batch_size_for(dcfg["batch_size"], s.n_atoms, s.n_frames)
                            for s in self.train_systems]
        self.valid_batch_sizes = [batch_size_for(dcfg["validation_batch_size"], s.n_atoms,
                                                 s.n_frames) for s in self.valid_systems]
        if fresh:
            self._statistics(np.random.Generator(np.random.PCG64(tr["seed"])))
        self.use_virial = has_term(cfg["loss"], "v") and all(
            s.virial is not None for s in self.train_systems)
        if has_term(cfg["loss"], "v") and not self.use_virial:
            self.log("note: [loss] virial prefactors ignored: not every training system has "
                     "virial.npy")
        for c in self.train_caches + self.valid_caches:
            c.finalize(self.net.davg, self.net.dstd, self.dtype, self.use_virial,
                       self.net.type_one_side)
            c.to(self.device)
        self.lr = LearningRate(cfg["learning_rate"]["start_lr"], cfg["learning_rate"]["stop_lr"],
                               cfg["learning_rate"]["decay_steps"], tr["steps"])
        self.optimizer = _adam(self.net.parameters(), self.lr.start_lr)
        self.sampler = Sampler([s.n_frames for s in self.train_systems], self.batch_sizes,
                               tr["seed"] + 1)
        self.valid_sampler = Sampler([s.n_frames for s in self.valid_systems] or [1],
                                     self.valid_batch_sizes or [1], tr["seed"] + 2)
        self.step = 0
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.sampler.load_state(state["sampler"])
            if self.valid_systems:
                self.valid_sampler.load_state(state["validation_sampler"])
            torch.set_rng_state(state["torch_rng"])
            self.step = int(state["step"])
        self.setup_seconds = time.perf_counter() - t0
        self.log(f"set-up {self.setup_seconds:.1f} s: {len(self.train_systems)} training and "
                 f"{len(self.valid_systems)} validation systems, "
                 f"{sum(s.n_frames for s in self.train_systems)} training frames, "
                 f"sel {self.sel}, kept slots per type {self.train_caches[0].widths}"
                 + ("; MKL's AVX-512 kernels (AMD CPU; DPENGINE_MKL_AVX512=0 turns them off)"
                    if dpengine.MKL_AVX512_ON_AMD else ""))

    # ----------------------------------------------------------------- set-up helpers
    def _choose_sel(self, state) -> list[int]:
        if state is not None:
            return [int(s) for s in state["sel"]]
        sel = self.cfg["model"]["descriptor"]["sel"]
        if not isinstance(sel, str):
            return list(sel)
        ratio = float(sel.split(":")[1]) if ":" in sel else 1.1
        counts, _ = neighbor_statistics(self.train_systems,
                                        self.cfg["model"]["descriptor"]["rcut"],
                                        len(self.cfg["model"]["type_map"]))
        chosen = auto_sel(counts, ratio)
        self.log(f"sel = {sel}: largest neighbour counts {counts.tolist()} → sel {chosen}")
        return chosen

    def _load_init_model(self, path) -> None:
        path = Path(path)
        try:
            state = ckpt.load_checkpoint(path)["model"]
        except ValueError:
            from dpengine.model.io import load_network
            state = load_network(path, "cpu", self.dtype)[0].state_dict()
        own = self.net.state_dict()
        bad = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(f"{path}: its network does not match [model] of the input "
                             f"(first difference: {bad[0]})")
        self.net.load_state_dict({k: state[k].to(own[k].dtype) for k in own})

    def _check_sel_overflow(self) -> None:
        worst = np.max([c.max_neighbors for c in self.train_caches + self.valid_caches], axis=0)
        over = [f"{t}: {int(m)} > {s}" for t, m, s in zip(self.cfg["model"]["type_map"], worst,
                                                          self.sel) if m > s]
        if over:
            self.log(f"warning: some atoms have more neighbours than sel ({', '.join(over)}); "
                     f"{SEL_CAP_RULE}")

    def _statistics(self, rng) -> None:
        """davg/dstd and energy bias from ``stat_batches`` batches of each training system."""
        nb = self.cfg["data"]["stat_batches"]
        ntypes = self.net.ntypes
        stat = EnvStat(ntypes)
        energies, counts = [], []
        for cache, system, bs in zip(self.train_caches, self.train_systems, self.batch_sizes):
            n = min(nb * bs, system.n_frames)
            frames = np.sort(rng.choice(system.n_frames, size=n, replace=False))
            cache.add_stats(stat, frames)
            energies.append(system.energy[frames])
            counts.append(np.repeat(system.type_counts(ntypes)[None], n, axis=0))
        davg, dstd = stat.davg_dstd(self.net.nnei, self.cfg["model"]["descriptor"]["set_davg_zero"])
        bias = energy_bias(np.concatenate(energies), np.concatenate(counts))
        with torch.no_grad():
            self.net.davg.copy_(torch.as_tensor(davg))
            self.net.dstd.copy_(torch.as_tensor(dstd))
            self.net.energy_bias.copy_(torch.as_tensor(bias))
        self.log("energy bias " + ", ".join(f"{t} {b:.6f} eV" for t, b in
                                           zip(self.cfg["model"]["type_map"], bias)))

    # ---------------------------------------------------------------------- training
    def _loss(self, batch, lr: float, train: bool):
        forces = has_term(self.cfg["loss"], "f") or self.use_virial
        pred = predict(self.net, batch, forces=forces, virial=self.use_virial, create_graph=train)
        return energy_force_loss(pred, batch, lr, self.cfg["loss"], self.lr.start_lr,
                                 self.use_virial)

    def validate(self, lr: float) -> dict:
        """RMSEs averaged over ``validation_batches`` batches, weighted by their atoms."""
        if not self.valid_systems:
            return {}
        sums, atoms = {}, 0
        for _ in range(self.cfg["data"]["validation_batches"]):
            k, frames = self.valid_sampler.next()
            batch = self.valid_caches[k].batch(frames)
            with torch.no_grad():
                _, parts = self._loss(batch, lr, train=False)
            n = batch.n_atoms * batch.n_frames
            atoms += n
            for key, v in parts.items():
                sums[key] = sums.get(key, 0.0) + float(v) * n
        return {k: v / atoms for k, v in sums.items()}

    def evaluate(self, caches=None) -> dict:
        """Energy (eV/atom) and force (eV/Å) RMSE over every frame of ``caches`` (default:
        the validation systems), with the current parameters."""
        caches = self.valid_caches if caches is None else caches
        se, sf, n_e, n_f = 0.0, 0.0, 0, 0
        for cache in caches:
            for k in range(cache.n_frames):
                batch = cache.batch([k])
                with torch.no_grad():
                    pred = predict(self.net, batch, forces=True, create_graph=False)
                se += float(torch.sum(torch.square((pred["energy"].detach() - batch.energy)
                                                   / batch.n_atoms)))
                sf += float(torch.sum(torch.square(pred["force"].detach() - batch.force)))
                n_e, n_f = n_e + 1, n_f + batch.force.numel()
        return dict(rmse_e=math.sqrt(se / max(n_e, 1)), rmse_f=math.sqrt(sf / max(n_f, 1)))

    def train_step(self) -> dict:
        """One optimisation step; returns the training metrics of its batch (before the update)."""
        lr = self.lr.value(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        k, frames = self.sampler.next()
        batch = self.train_caches[k].batch(frames)
        self.optimizer.zero_grad(set_to_none=True)
        loss, parts = self._loss(batch, lr, train=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {key: float(v) for key, v in parts.items()}

    def run(self, time_limit: float | None = None) -> dict:
        """Train up to ``[training] steps``; returns a summary (seconds per step, last metrics).

        ``time_limit`` (s): stop earlier, with a checkpoint, once the training loop has run
        that long (for batch jobs; continue with ``--restart``).
        """
        tr = self.cfg["training"]
        total = tr["steps"]
        t_start = time.perf_counter()
        lcurve = _LCurve(self.out / tr["lcurve"], self.step, bool(self.valid_systems))
        bar = _Progress(total, self.step, self.progress)
        train_time, valid_time, last = 0.0, 0.0, {}
        try:
            while self.step < total:
                t0 = time.perf_counter()
                lr = self.lr.value(self.step)
                metrics = self.train_step()
                train_time += time.perf_counter() - t0
                step = self.step
                bar.advance(step)
                if step % tr["display_interval"] == 0 or step == 1 or step == total:
                    t1 = time.perf_counter()
                    valid = self.validate(lr)
                    valid_time += time.perf_counter() - t1
                    lcurve.write(step, metrics, valid, lr)
                    last = dict(train=metrics, valid=valid, lr=lr, step=step)
                    bar.note(metrics, valid)
                out_of_time = time_limit is not None and \
                    time.perf_counter() - t_start > time_limit
                if step % tr["checkpoint_interval"] == 0 or step == total or out_of_time:
                    self.save()
                if out_of_time:
                    self.log(f"time limit of {time_limit:.0f} s reached at step {step}")
                    break
        finally:
            bar.close()
            lcurve.close()
        n_steps = max(1, self.step - lcurve.start_step)
        summary = dict(steps=self.step, seconds_per_step=train_time / n_steps,
                       validation_seconds=valid_time, setup_seconds=self.setup_seconds, **last)
        self.log(f"trained to step {self.step}: {train_time / n_steps:.4f} s/step "
                 f"({n_steps} steps, validation {valid_time:.1f} s, set-up "
                 f"{self.setup_seconds:.1f} s)")
        return summary

    def save(self) -> Path:
        """Write a checkpoint of the current step."""
        tr = self.cfg["training"]
        state = dict(config=self.cfg, sel=self.sel, model=self.net.state_dict(),
                     min_nbor_dist=min(c.min_distance for c in self.train_caches),
                     optimizer=self.optimizer.state_dict(), sampler=self.sampler.state(),
                     validation_sampler=self.valid_sampler.state(), torch_rng=torch.get_rng_state())
        return ckpt.save_checkpoint(state, self.out, tr["checkpoint"], self.step,
                                    tr["max_checkpoints"])


class _LCurve:
    """``lcurve.out`` in DeePMD-kit's format; on restart, lines after the restart step go."""

    def __init__(self, path: Path, start_step: int, has_valid: bool):
        self.path, self.start_step, self.has_valid = path, start_step, has_valid
        self.header_done = False
        kept = []
        if start_step > 0 and path.is_file():
            for line in path.read_text().splitlines(keepends=True):
                if line.startswith("#"):
                    kept.append(line)
                    self.header_done = True
                elif line.split() and int(line.split()[0]) <= start_step:
                    kept.append(line)
        self.fh = open(path, "w")
        self.fh.writelines(kept)
        self.fh.flush()

    def write(self, step: int, train: dict, valid: dict, lr: float) -> None:
        keys = sorted(train)
        if not self.header_done:
            head = "# {:5s}".format("step")
            for k in keys:
                head += ("   %11s %11s" % (k + "_val", k + "_trn")) if self.has_valid else \
                    ("   %11s" % (k + "_trn"))
            self.fh.write(head + "   {:8s}\n".format("lr") + "# If there is no available "
                          "reference data, rmse_*_{val,trn} will print nan\n")
            self.header_done = True
        line = f"{step:7d}"
        for k in keys:
            line += ("   %11.2e %11.2e" % (valid.get(k, math.nan), train[k])) if self.has_valid \
                else ("   %11.2e" % train[k])
        self.fh.write(line + f"   {lr:8.1e}\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class _Progress:
    """A rich progress bar (step, loss, validation force RMSE, ETA) on a terminal; plain
    lines at lcurve steps otherwise (batch jobs)."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.t0, self.start = time.perf_counter(), start
        self.bar = None
        if self.tty:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                TextColumn("ETA"), TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def note(self, train: dict, valid: dict) -> None:
        info = f"loss {train['rmse']:.3g}"
        if "rmse_f" in train:
            info += f"  F {valid.get('rmse_f', train['rmse_f']):.3g} eV/Å"
        if "rmse_e" in train:
            info += f"  E {1000 * valid.get('rmse_e', train['rmse_e']):.3g} meV/atom"
        if self.bar is not None:
            self.bar.update(self.task, info=info)
        elif self.enabled:
            done = self._done_steps()
            eta = ""
            if done:
                rate = (time.perf_counter() - self.t0) / done
                eta = f", ETA {time.strftime('%H:%M:%S', time.gmtime(rate * (self.total - self._step)))}"
            print(f"step {self._step}/{self.total}: {info}{eta}", flush=True)

    _step = 0

    def _done_steps(self) -> int:
        return self._step - self.start

    def advance(self, step: int) -> None:
        self._step = step
        if self.bar is not None:
            self.bar.update(self.task, completed=step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
