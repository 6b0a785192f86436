"""``dpengine run``: TOML → config → State → Potential + neighbour list → integrator → outputs.

The potential is a Deep Potential, a reference potential (Lennard-Jones, harmonic
springs) or their sum (``[potential] type``); the integrator is chosen by ``[md]``
(ensemble, thermostat, barostat, or a minimiser), see ``dpengine.integrators``.

Everything that can fail on bad input (config, structure, model, type map, restart file)
is checked before the first output file is opened, so a rejected run writes nothing.
A run stops cleanly on SIGINT/SIGTERM: the current step finishes, the restart file is
written and the trajectory and logs are closed; the process exits with 128 + signal.
"""
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dpengine import units
from dpengine.config import load_config
from dpengine.integrators import from_config, kinetic_energy, pressure, temperature
from dpengine.state import State
from dpengine.structure import StructureError, masses_for, maxwell_boltzmann, read_structure

THERMO_COLUMNS = [("step", None), ("time", "ps"), ("pe", "eV"), ("ke", "eV"), ("etotal", "eV"),
                  ("temp", "K"), ("press", "bar"), ("vol", "A^3"), ("conserved", "eV"),
                  ("sel_overflow", None)]


class InputError(Exception):
    """Bad input found before the run starts: reported in one line, exit code 2."""


@dataclass
class Simulation:
    """The pieces of one MD run, each the single owner of its data."""

    config: object
    state: State
    potential: object
    committee: list
    forcefield: object
    integrator: object
    restart_extra: dict

    @property
    def nlist(self):
        """The engine neighbour list the potentials read (None without pair terms)."""
        return self.forcefield.nlist

    def compute(self, state: State):
        return self.forcefield(state)

    @property
    def sel_overflow(self) -> int:
        """Atoms beyond the DP model's sel at the last call (0 without a DP term)."""
        return sum(getattr(t, "sel_overflow", 0) for t in getattr(self.potential, "terms",
                                                                   [self.potential]))


def _types_from_symbols(symbols, type_map, source) -> np.ndarray:
    unknown = sorted(set(symbols) - set(type_map))
    if unknown:
        raise InputError(f"{source}: elements {unknown} are not in the model's type map "
                         f"{type_map}")
    index = {name: k for k, name in enumerate(type_map)}
    return np.array([index[s] for s in symbols], dtype=np.int32)


def _load_deep(config, path, device, precision):
    from dpengine.deeppot import DeepPotential
    try:
        return DeepPotential(path, device=device, precision=precision)
    except (ValueError, FileNotFoundError) as exc:
        raise InputError(f"{config.source}: [potential] model: {exc}") from None


def _reference_terms(config, type_map, structure, types, device) -> list:
    """The Lennard-Jones and springs terms of ``[potential] type``."""
    from dpengine.potentials import HarmonicSprings, LennardJones
    pot = config.potential
    terms = []
    present = sorted(set(types.tolist()))
    try:
        if "lj" in pot.type:
            terms.append(LennardJones(type_map, pot.epsilon, pot.sigma, pot.cutoff,
                                      pot.truncation, types_present=present, device=device))
        if "springs" in pot.type:
            reference, ref_box = structure.positions, structure.box
            if pot.spring_sites is not None:
                try:
                    sites = read_structure(pot.spring_sites, type_map=type_map)
                except StructureError as exc:
                    raise InputError(f"{config.source}: [potential] spring_sites: {exc}") from None
                if sites.n_atoms != structure.n_atoms or sites.symbols != structure.symbols:
                    raise InputError(f"{config.source}: [potential] spring_sites: "
                                     f"{pot.spring_sites} must hold the same atoms in the same "
                                     f"order as {config.system.structure}")
                reference, ref_box = sites.positions, sites.box
            springs = HarmonicSprings(type_map, pot.spring_constant, reference,
                                      ref_box if structure.box is not None else None, device)
            springs.check_types(types)
            terms.append(springs)
    except ValueError as exc:
        raise InputError(f"{config.source}: [potential] {exc}") from None
    return terms


def build_simulation(config, restart: str | Path | None = None) -> Simulation:
    """Load the potential and structure and assemble a ready-to-run simulation (no output)."""
    from dpengine.potential import SumPotential
    from dpengine.potentials import ForceField, conserves_momentum
    device, precision = config.potential.device, config.potential.precision
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{config.source}: [potential] device = \"cuda\" but no CUDA device "
                         "is available to torch")
    deep = None
    if "deep" in config.potential.type:
        deep = _load_deep(config, config.potential.model, device, precision)
    committee = []
    if config.model_deviation is not None:
        committee = [_load_deep(config, p, device, precision) for p in config.model_deviation.models]
    sys_cfg = config.system
    model_map = deep.type_map if deep is not None else None
    for member in committee:
        expect = model_map or list(sys_cfg.type_map or member.type_map)
        if member.type_map != expect:
            raise InputError(f"{config.source}: [model_deviation] {member.path} has type map "
                             f"{member.type_map}, the driving model has {expect}")
    read_map = list(sys_cfg.type_map) if sys_cfg.type_map else model_map
    try:
        structure = read_structure(sys_cfg.structure, format=sys_cfg.format, frame=sys_cfg.frame,
                                   type_map=read_map)
        masses = (structure.masses if structure.masses is not None and not sys_cfg.masses
                  else masses_for(structure.symbols, sys_cfg.masses))
    except (StructureError, ValueError) as exc:
        raise InputError(f"{config.source}: [system] structure: {exc}") from None
    if model_map is not None:
        type_map = list(model_map)
    elif sys_cfg.type_map:
        type_map = list(sys_cfg.type_map)
    else:  # elements in order of first appearance
        type_map = list(dict.fromkeys(structure.symbols))
    types = _types_from_symbols(structure.symbols, type_map, sys_cfg.structure)
    terms = ([deep] if deep is not None else []) + _reference_terms(config, type_map, structure,
                                                                    types, device)
    potential = terms[0] if len(terms) == 1 else SumPotential(*terms)
    if structure.velocities is not None:
        velocities = structure.velocities
    else:
        velocities = maxwell_boltzmann(masses, config.md.temperature, config.md.seed)
    f64 = dict(dtype=torch.float64, device=device)
    state = State(positions=torch.tensor(structure.positions, **f64),
                  velocities=torch.tensor(velocities, **f64),
                  box=None if structure.box is None else torch.tensor(structure.box, **f64),
                  types=torch.tensor(types, dtype=torch.int32, device=device),
                  masses=torch.tensor(masses, **f64), type_map=type_map,
                  seed=config.md.seed)
    extra = {}
    if restart is not None:
        extra = _apply_restart(state, restart, config)
    forcefield = ForceField(potential, config.neighbor.skin, device=device,
                            cutoff=max([m.cutoff for m in committee], default=0.0))
    try:
        integrator = from_config(config.md, fix_com=conserves_momentum(potential))
        integrator.prepare(state)
    except ValueError as exc:
        where = (f"--restart {restart}:" if restart is not None and "restart" in str(exc)
                 else f"{config.source}: [md]")
        raise InputError(f"{where} {exc}") from None
    return Simulation(config, state, potential, committee, forcefield, integrator, extra)


def _apply_restart(state: State, path, config) -> dict:
    from dpengine.io.netcdf import read_restart
    try:
        saved = read_restart(path)
    except (ValueError, OSError) as exc:
        raise InputError(f"--restart {path}: {exc}") from None
    if saved["positions"].shape[0] != state.n_atoms:
        raise InputError(f"--restart {path}: {saved['positions'].shape[0]} atoms, but "
                         f"{config.system.structure} has {state.n_atoms}")
    if (saved["box"] is None) != (state.box is None):
        raise InputError(f"--restart {path}: periodicity differs from {config.system.structure}")
    f64 = dict(dtype=torch.float64, device=state.device)
    state.positions = torch.tensor(saved["positions"], **f64)
    state.velocities = torch.tensor(saved["velocities"], **f64)
    state.box = None if saved["box"] is None else torch.tensor(saved["box"], **f64)
    state.step = int(saved["step"])
    extra = dict(saved.get("extra") or {})
    state.seed = int(extra.pop("seed", state.seed))
    state.ensemble = {k[len("ensemble_"):]: torch.tensor(v, **f64)
                      for k, v in extra.items() if k.startswith("ensemble_")}
    return extra


class _Signals:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.received = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _Outputs:
    """Trajectory, thermo log, model deviation log and restart files of one run."""

    def __init__(self, sim: Simulation, output_dir: Path, restarted: bool):
        from dpengine.io.netcdf import AmberTrajectoryWriter
        from dpengine.io.thermo import ModelDeviationLog, ThermoLog
        out = sim.config.output
        self.sim = sim
        self.dir = output_dir
        output_dir.mkdir(parents=True, exist_ok=True)
        st = sim.state
        step0 = st.step
        from ase.data import atomic_numbers
        elements = np.array([atomic_numbers.get(name, 0) for name in st.type_map])
        self.traj = AmberTrajectoryWriter(output_dir / out.trajectory, st.n_atoms, st.periodic,
                                          velocities=out.velocities, forces=out.forces,
                                          append=restarted,
                                          atomic_numbers=elements[st.types.cpu().numpy()])
        self.thermo = ThermoLog(output_dir / out.thermo, THERMO_COLUMNS, append=restarted)
        self.devi = None
        if sim.committee:
            self.devi = ModelDeviationLog(output_dir / sim.config.model_deviation.output,
                                          append=restarted)
        if restarted:  # drop what the interrupted run wrote after its restart point
            self.traj.truncate_after(step=step0 - 1)
            self.thermo.truncate_after_step(step0 - 1)
            if self.devi is not None:
                self.devi.truncate_after_step(step0 - 1)

    def time_ps(self) -> float:
        return self.sim.state.step * self.sim.config.md.timestep * units.FS_TO_PS

    def write(self, result, force: bool = False) -> None:
        """Write what is due at this step; ``force`` (the end of a minimisation): also the
        trajectory frame and thermo line that are not due, unless already written."""
        st, out = self.sim.state, self.sim.config.output
        step = st.step
        if force:
            if getattr(self, "_last_frame", None) != step:
                self._frame(result)
            if getattr(self, "_last_thermo", None) != step:
                self._thermo(result)
            return
        if step % out.trajectory_interval == 0:
            self._frame(result)
        if step % out.thermo_interval == 0:
            self._thermo(result)
        if self.devi is not None and step % self.sim.config.model_deviation.interval == 0:
            self.write_model_deviation(result)
        if step % out.restart_interval == 0 and step > 0:
            self.write_restart()

    def _frame(self, result) -> None:
        st, out = self.sim.state, self.sim.config.output
        self._last_frame = st.step
        self.traj.write_frame(self.time_ps(), st.positions.cpu().numpy(),
                              None if st.box is None else st.box.cpu().numpy(),
                              velocities=st.velocities.cpu().numpy() if out.velocities else None,
                              forces=result.forces.cpu().numpy() if out.forces else None,
                              step=st.step)

    def _thermo(self, result) -> None:
        st, integ = self.sim.state, self.sim.integrator
        self._last_thermo = st.step
        ke = float(kinetic_energy(st))
        pe = float(result.energy)
        self.thermo.write([st.step, self.time_ps(), pe, ke, pe + ke,
                           temperature(st, ke, integ.dof(st)), pressure(st, result, ke),
                           st.volume(), integ.invariant(st, result), self.sim.sel_overflow])

    def write_model_deviation(self, result) -> None:
        from dpengine.io.thermo import model_deviation
        st = self.sim.state
        results = [result] + [m.compute(st.positions, st.box, st.types, self.sim.nlist)
                              for m in self.sim.committee]
        devi = model_deviation(np.stack([r.forces.cpu().numpy() for r in results]),
                               np.stack([r.virial.cpu().numpy() for r in results]),
                               np.array([float(r.energy) for r in results]), st.n_atoms)
        self.devi.write(st.step, devi)

    def write_restart(self) -> Path:
        from dpengine.io.netcdf import write_restart
        st = self.sim.state
        extra = dict(seed=st.seed, type_map=" ".join(st.type_map))
        extra.update({f"ensemble_{k}": v.cpu().numpy() for k, v in st.ensemble.items()})
        path = self.dir / self.sim.config.output.restart
        write_restart(path, self.time_ps(), st.positions.cpu().numpy(),
                      st.velocities.cpu().numpy(),
                      None if st.box is None else st.box.cpu().numpy(), extra, step=st.step)
        return path

    def close(self) -> None:
        for f in (self.traj, self.thermo, self.devi):
            if f is not None:
                f.close()


class _Progress:
    """A rich progress bar on a terminal; plain periodic lines otherwise (batch jobs)."""

    def __init__(self, first: int, last: int, timestep_fs: float, interval: int, enabled: bool):
        self.first, self.last, self.dt = first, last, timestep_fs
        self.interval = interval
        self.start = time.perf_counter()
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stdout.isatty():
            from rich.progress import (BarColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            self.bar = Progress(TextColumn("step {task.completed:>10.0f}/{task.total:.0f}"),
                                BarColumn(), TextColumn("{task.fields[sim]:>10} ps"),
                                TextColumn("{task.fields[speed]:>9} ns/day"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
            self.bar.start()
            self.task = self.bar.add_task("md", total=last, completed=first, sim="0", speed="-")

    def ns_per_day(self, step: int) -> float:
        elapsed = time.perf_counter() - self.start
        return (step - self.first) * self.dt * 1e-6 / elapsed * 86400 if elapsed > 0 else 0.0

    def update(self, step: int) -> None:
        if not self.enabled:
            return
        speed = self.ns_per_day(step)
        if self.bar is not None:
            self.bar.update(self.task, completed=step, sim=f"{step * self.dt * 1e-3:.3f}",
                            speed=f"{speed:.3f}")
        elif step % self.interval == 0 or step == self.last:
            done = step - self.first
            left = self.last - step
            eta = (time.perf_counter() - self.start) / done * left if done else math.nan
            print(f"step {step}/{self.last}  t = {step * self.dt * 1e-3:.4f} ps  "
                  f"{speed:.3f} ns/day  ETA {_hms(eta)}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _report_minimization(sim: Simulation, verbose: bool) -> None:
    integ, st = sim.integrator, sim.state
    cell = (f", max |P - P0| {integ.max_stress:.4g} bar" if getattr(integ, "cell", False) else "")
    if integ.converged:
        if verbose:
            print(f"minimization converged at step {st.step}: max force "
                  f"{integ.max_force:.4g} eV/A{cell}", flush=True)
    else:
        print(f"dpengine: minimization not converged after {st.step} steps: max force "
              f"{integ.max_force:.4g} eV/A (tolerance {integ.ftol:g}){cell}", file=sys.stderr)


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--:--"
    s = int(seconds)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def run(config_path, steps: int | None = None, output_dir=".", restart=None,
        progress: bool = True, overrides: dict | None = None) -> int:
    """Run the MD described by ``config_path``; returns the process exit code.

    ``steps`` replaces ``[md] steps`` (the total step count: a restarted run continues
    from its saved step up to it). Raises ``InputError``/``ConfigError`` on bad input,
    before any output file exists.
    """
    overrides = dict(overrides or {})
    if steps is not None:
        overrides["md.steps"] = steps
    config = load_config(config_path, overrides)
    sim = build_simulation(config, restart)
    total = config.md.steps
    state = sim.state
    if state.step > total:
        raise InputError(f"--restart {restart}: saved at step {state.step}, past the requested "
                         f"total of {total} steps")
    outputs = _Outputs(sim, Path(output_dir), restarted=restart is not None)
    code = 0
    bar = _Progress(state.step, total, config.md.timestep, config.output.progress_interval, progress)
    try:
        with _Signals() as signals:
            result = sim.compute(state)
            sim.integrator.init(state, result)
            outputs.write(result)  # step 0, or the restart step the truncation dropped
            while (state.step < total and signals.received is None
                   and not sim.integrator.converged):
                result = sim.integrator.step(state, result, sim.compute)
                outputs.write(result)
                bar.update(state.step)
            if signals.received is not None:
                code = 128 + int(signals.received)
            if config.md.ensemble == "minimize":
                outputs.write(result, force=True)  # the final structure
                _report_minimization(sim, progress)
    finally:
        bar.close()
        path = outputs.write_restart()
        outputs.close()
    if code:
        name = signal.Signals(code - 128).name
        print(f"dpengine: stopped by {name} at step {state.step}; restart written to {path}",
              file=sys.stderr)
    return code
