"""Streaming reader of AMBER NetCDF trajectories (ours or any other program's).

The AMBER convention (ambermd.org/netcdf/nctraj.xhtml) stores ``coordinates`` [frame, atom,
3] Å, optional ``cell_lengths`` (a, b, c) Å and ``cell_angles`` (α = ∠(b, c), β = ∠(a, c),
γ = ∠(a, b)) degree, ``velocities`` Å/ps and ``time`` ps; a ``scale_factor`` attribute,
where present, is applied. The cell is rebuilt in the standard orientation (rows a, b, c;
a along x, b in the xy plane)::

    a = (a, 0, 0)
    b = (b cos γ, b sin γ, 0)
    c = (c cos β, c (cos α − cos β cos γ) / sin γ, c √(1 − cos²β − c_y²/c²))

which is how the writers of the convention store coordinates, so positions and cell agree.

:class:`Trajectory` reads frames in chunks (``frames_per_chunk`` at a time), so memory
stays bounded whatever the trajectory length; :meth:`Trajectory.chunks` yields
:class:`Chunk` objects for a frame selection ``skip``/``stride``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["Trajectory", "Chunk", "box_from_lengths_angles", "perpendicular_widths",
           "progress"]


def box_from_lengths_angles(lengths, angles) -> np.ndarray:
    """Cell rows [..., 3, 3] (Å) in the standard orientation from lengths [..., 3] (Å) and
    angles [..., 3] (α, β, γ in degree); see the module docstring for the formula."""
    lengths = np.asarray(lengths, dtype=np.float64)
    a, b, c = lengths[..., 0], lengths[..., 1], lengths[..., 2]
    al, be, ga = np.moveaxis(np.radians(np.asarray(angles, dtype=np.float64)), -1, 0)
    cos_a, cos_b, cos_g, sin_g = np.cos(al), np.cos(be), np.cos(ga), np.sin(ga)
    # exact zeros for right angles (cos(π/2) = 6e-17 would tilt an orthorhombic cell)
    cos_a, cos_b, cos_g = (np.where(np.abs(v) < 1e-12, 0.0, v) for v in (cos_a, cos_b, cos_g))
    cy = (cos_a - cos_b * cos_g) / sin_g
    cz = np.sqrt(np.clip(1.0 - cos_b ** 2 - cy ** 2, 0.0, None))
    h = np.zeros(lengths.shape[:-1] + (3, 3))
    h[..., 0, 0] = a
    h[..., 1, 0], h[..., 1, 1] = b * cos_g, b * sin_g
    h[..., 2, 0], h[..., 2, 1], h[..., 2, 2] = c * cos_b, c * cy, c * cz
    return h


def perpendicular_widths(boxes) -> np.ndarray:
    """Distances between opposite faces w_d = V / |h_e × h_f| = 1 / |(H⁻¹)[:, d]| (Å),
    [..., 3] for cells [..., 3, 3] (rows = cell vectors)."""
    inv = np.linalg.inv(np.asarray(boxes, dtype=np.float64))
    return 1.0 / np.linalg.norm(inv, axis=-2)


@dataclass
class Chunk:
    """Consecutive selected frames of a trajectory.

    index      int [F]              frame numbers in the file (0-based)
    time       float64 [F]          ps
    positions  float64 [F, N, 3]    Å (as stored: wrapped or not)
    boxes      float64 [F, 3, 3]    cell rows, Å; None for open boundaries
    velocities float64 [F, N, 3]    Å/ps; None unless requested
    """

    index: np.ndarray
    time: np.ndarray
    positions: np.ndarray
    boxes: np.ndarray | None
    velocities: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)


class Trajectory:
    """An AMBER NetCDF trajectory opened for streaming reads.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for
    one that is not NetCDF, not an AMBER trajectory (no ``coordinates``) or has no frames.
    Attributes: ``path``, ``n_frames``, ``n_atoms``, ``periodic``, ``has_velocities``,
    ``program`` (the writer's name, if recorded). Use as a context manager or :meth:`close`.
    """

    def __init__(self, path, frames_per_chunk: int = 64):
        import netCDF4

        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"trajectory {self.path} does not exist")
        if os.path.isdir(self.path):
            raise ValueError(f"{self.path}: is a folder, not a NetCDF trajectory")
        try:
            self._ds = netCDF4.Dataset(self.path, "r")
        except OSError as exc:
            raise ValueError(f"{self.path}: not a NetCDF file ({exc.strerror or exc})") from None
        self._ds.set_auto_mask(False)   # plain arrays; scale_factor is still applied
        v = self._ds.variables
        if "coordinates" not in v or v["coordinates"].ndim != 3 or v["coordinates"].shape[2] != 3:
            self.close()
            raise ValueError(f"{self.path}: not an AMBER NetCDF trajectory (no coordinates "
                             "[frame, atom, 3] variable)")
        self.n_frames, self.n_atoms = int(v["coordinates"].shape[0]), int(v["coordinates"].shape[1])
        self.periodic = "cell_lengths" in v and "cell_angles" in v
        self.has_velocities = "velocities" in v
        self.has_time = "time" in v
        self.program = str(getattr(self._ds, "program", "unknown"))
        self.frames_per_chunk = max(1, int(frames_per_chunk))
        if self.n_frames == 0:
            self.close()
            raise ValueError(f"{self.path}: trajectory has no frames")

    def close(self) -> None:
        if getattr(self, "_ds", None) is not None:
            self._ds.close()
            self._ds = None

    def __enter__(self) -> "Trajectory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ selection
    def select(self, skip: int = 0, stride: int = 1, stop: int | None = None) -> np.ndarray:
        """Frame numbers ``skip, skip + stride, ...`` below ``stop`` (default: all frames).

        ``ValueError`` when skip < 0, stride < 1, or nothing is left (e.g. ``skip`` at or past
        the end), naming the file and its frame count."""
        if skip < 0 or stride < 1:
            raise ValueError(f"--skip must be >= 0 and --stride >= 1, got {skip} and {stride}")
        stop = self.n_frames if stop is None else min(int(stop), self.n_frames)
        frames = np.arange(int(skip), stop, int(stride))
        if frames.size == 0:
            raise ValueError(f"{self.path}: --skip {skip} leaves no frames (the trajectory has "
                             f"{self.n_frames} frame{'s' * (self.n_frames != 1)})")
        return frames

    def times(self, frames=None) -> np.ndarray:
        """Times of ``frames`` (default all), ps; the frame number when there is no time."""
        frames = np.arange(self.n_frames) if frames is None else np.asarray(frames, np.int64)
        if not self.has_time:
            return frames.astype(np.float64)
        return self._read("time", frames)

    def frame_spacing(self, frames) -> float:
        """Time between consecutive selected frames (ps); ``ValueError`` if not uniform
        (relative deviation > 1e-3; the time is stored as float32 by most writers)."""
        t = self.times(frames)
        if t.size < 2:
            raise ValueError(f"{self.path}: need at least 2 frames, the selection has {t.size}")
        dt = np.diff(t)
        step = float(np.median(dt))
        if not step > 0 or np.max(np.abs(dt - step)) > 1e-3 * step + 1e-6:
            raise ValueError(f"{self.path}: frames are not evenly spaced in time (spacings "
                             f"{dt.min():.6g} to {dt.max():.6g} ps); select an evenly spaced part")
        return step

    # ------------------------------------------------------------------ reading
    def boxes(self, frames) -> np.ndarray | None:
        """Cell rows [F, 3, 3] (Å) of ``frames``; None for open boundaries."""
        if not self.periodic:
            return None
        frames = np.asarray(frames, dtype=np.int64)
        lengths, angles = self._read("cell_lengths", frames), self._read("cell_angles", frames)
        bad = ~(np.all(lengths > 0, axis=1) & np.all((angles > 0) & (angles < 180), axis=1))
        if np.any(bad):
            raise ValueError(f"{self.path}: frame {int(np.asarray(frames)[bad][0])} has an invalid "
                             "cell (non-positive length or angle outside (0, 180) degree)")
        return box_from_lengths_angles(lengths, angles)

    def _read(self, name: str, frames: np.ndarray) -> np.ndarray:
        """Variable ``name`` at ``frames`` (sorted, unique) as float64: one contiguous read
        when the frames are dense, else one read per frame."""
        var = self._ds.variables[name]
        lo, hi = int(frames[0]), int(frames[-1]) + 1
        if hi - lo <= 4 * len(frames):
            return np.asarray(var[lo:hi], dtype=np.float64)[frames - lo]
        return np.stack([np.asarray(var[int(k)], dtype=np.float64) for k in frames])

    def chunks(self, frames, velocities: bool = False, positions: bool = True):
        """Yield :class:`Chunk` objects covering ``frames`` in order (``frames_per_chunk``
        frames each). ``velocities=True`` needs a ``velocities`` variable (``ValueError``)."""
        frames = np.asarray(frames, dtype=np.int64)
        if velocities and not self.has_velocities:
            raise ValueError(f"{self.path}: trajectory has no velocities (dpengine run: set "
                             "[output] velocities = true)")
        for lo in range(0, len(frames), self.frames_per_chunk):
            sel = frames[lo:lo + self.frames_per_chunk]
            yield Chunk(index=sel, time=self.times(sel),
                        positions=self._read("coordinates", sel) if positions else None,
                        boxes=self.boxes(sel),
                        velocities=self._read("velocities", sel) if velocities else None)


def progress(iterable, total: int, label: str, enabled: bool = True):
    """Wrap ``iterable`` (yielding chunks) in a rich progress bar counting ``total`` frames;
    shown only when ``enabled`` and stderr is a terminal."""
    import sys

    if not enabled or not sys.stderr.isatty():
        yield from iterable
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)
    from rich.console import Console

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("frames"), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        for item in iterable:
            yield item
            bar.advance(task, len(item))
