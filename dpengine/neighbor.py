"""Verlet neighbour list with a skin, built on a cell list by Taichi kernels.

The list holds, for every atom ``i``, every pair ``(j, n)`` with

    |x_j - x_i + n @ box| < r_list,        r_list = cutoff + skin,

where ``x`` are the positions passed at the last build (unwrapped positions are fine),
``n`` is an integer image vector (3,) and ``box`` has the cell vectors as rows. ``j == i``
appears when ``n != 0`` (an atom's own periodic image), and several images of one
atom appear when the cell is narrower than ``2 r_list``. The list is *full*: ``(i, j, n)``
and ``(j, i, -n)`` are both stored.

Cell grid (periodic): with perpendicular widths ``w_d = V / |a_e x a_f| = 1 / |inv(box)[:, d]|``
the grid has ``n_d = max(1, floor(m w_d / r_list))`` cells along each fractional axis
(``m = cells_per_radius``, default 2; m = 1 is the classic one-cell-per-radius grid); two
points closer than ``r_list`` differ in cell index along ``d`` by at most
``k_d = ceil(r_list n_d / w_d)``, so the build scans cell offsets ``-k_d..k_d``; the
unwrapped cell ``u = c_i + o`` is cell ``u mod n_d`` seen through image ``floor(u / n_d)``.
This visits each ``(j, image)`` pair exactly once, for any box shape and size (boxes
narrower than ``r_list`` included: then ``n_d = 1`` and ``k_d >= 2``). Offsets whose slab
(orthogonal cells: whose cell) lies beyond ``r_list`` from the atom are skipped. Dilute
systems get fewer, larger cells (at most ``max(64, 2N)`` cells). Open boundaries use a grid
over the atoms' bounding box with no images.

Costs: a build is one Taichi launch plus three host synchronisations (finite check, box
to host, row overflow check); a step without a rebuild is three small torch ops and one
synchronisation. Measured for the shipped water box replicated R^3 times (r_list = 8 Å,
m = 2, about 213 neighbours per atom):

    ===========================  ===========  ============  ==============
    machine                      N = 192      N = 12,288    no rebuild
    ===========================  ===========  ============  ==============
    2-core CPU (dev machine)     1.5-2 ms     30-35 ms      0.02-0.06 ms
    H100 (CUDA)                  1.2-1.5 ms   1.5-1.9 ms    0.09-0.14 ms
    ===========================  ===========  ============  ==============

(H100: N = 98,304 in 3.6-4.6 ms, N = 331,776 in 8.4 ms.) The first build compiles the
kernel (0.4-0.8 s; Taichi's offline cache shortens later processes).

The list is rebuilt when the box changes (exact comparison), the atom count changes,
``force`` is set, or an atom moved more than ``skin / 2`` since the last build; between
builds every pair now closer than ``cutoff`` is guaranteed to be in the list (each atom
moved at most skin/2, so a pair distance changed by at most ``skin``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from dpengine.backend import init_taichi

__all__ = ["NeighborList"]

#: Growth factor applied to the longest row when the capacity overflows.
GROWTH = 1.2
#: Safety factor on the density estimate of the initial capacity.
ESTIMATE_FACTOR = 1.3
#: Smallest initial capacity.
MIN_CAPACITY = 16


class NeighborList:
    """Full Verlet list (both i→j and j→i) with a skin, built with a cell list.

    Parameters
    ----------
    cutoff : interaction cutoff r_c, Å
    skin : Verlet skin δ, Å; the list radius is r_c + δ
    capacity : initial row length; ``None`` estimates it from the density as
        ``max(16, 1.3 · ρ · 4/3 π (r_c + δ)^3)``. Rows never truncate: an overflow grows
        the capacity to ``ceil(1.2 · longest row)`` and the build is repeated.
    device : "cpu" or "cuda" (any torch device string); all tensors live there.
    cells_per_radius : m in ``n_d = max(1, floor(m · w_d / r_list))``: cells are about
        r_list / m wide. m = 2 scans about 2x fewer candidates than m = 1 (with the cell
        pruning of the build kernel) and is the faster choice on CPU and CUDA alike.

    Attributes (valid after :meth:`update`)
    ----------
    neighbors : int32 [N, capacity], neighbour index j, -1 in unused slots
    images : int32 [N, capacity, 3], image vector n so that r_ij = x_j - x_i + n @ box
        (0 in unused slots and for open boundaries)
    counts : int32 [N], number of valid entries per row
    n_builds : number of builds so far (a capacity regrowth does not count twice)
    capacity : current row length
    """

    def __init__(self, cutoff: float, skin: float, capacity: int | None = None, device="cpu",
                 cells_per_radius: int = 2):
        if cutoff <= 0 or skin < 0 or cells_per_radius < 1:
            raise ValueError(f"need cutoff > 0, skin >= 0, cells_per_radius >= 1; got {cutoff}, "
                             f"{skin}, {cells_per_radius}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.r_list = self.cutoff + self.skin
        self.device = torch.device(device)
        self.capacity = 0 if capacity is None else max(1, int(capacity))   # 0: estimate at build
        self.n_builds = 0
        self.n_grows = 0
        cap, i32, dev = max(self.capacity, 1), torch.int32, self.device
        self.neighbors = torch.empty((0, cap), dtype=i32, device=dev)
        self.images = torch.empty((0, cap, 3), dtype=i32, device=dev)
        self.counts = torch.empty((0,), dtype=i32, device=dev)
        self._ref_pos: torch.Tensor | None = None
        self._ref_box: torch.Tensor | None = None
        self._built = False
        self._scratch: dict[str, torch.Tensor] = {}
        self.cells_per_radius = int(cells_per_radius)
        self.grid: tuple[int, int, int] = (1, 1, 1)
        self.reach: tuple[int, int, int] = (1, 1, 1)

    # ------------------------------------------------------------------ public
    def update(self, positions: torch.Tensor, box: torch.Tensor | None,
               force: bool = False) -> bool:
        """Rebuild the list if needed; return True when it was rebuilt.

        positions : float64 [N, 3], Å, need not be wrapped into the box.
        box : float64 [3, 3], rows = cell vectors a, b, c (any triclinic shape), Å;
            ``None`` for open boundaries.
        """
        pos = self._check(positions)
        if box is not None:
            box = box.detach().to(device=pos.device, dtype=torch.float64).contiguous()
        if force or self.needs_rebuild(pos, box):
            self._build(pos, box)
            return True
        return False

    def needs_rebuild(self, positions: torch.Tensor, box: torch.Tensor | None) -> bool:
        """True if the list built last is not valid for ``positions``/``box``.

        Criteria: never built; atom count changed; periodicity changed; box changed
        (exact comparison); ``max_i |x_i - x_i^build| > skin / 2``. The box test and the
        displacement reduction share one host synchronisation. Torch ops are used here:
        measured cheaper than a Taichi kernel launch (CPU, N = 192: 6 µs vs 65 µs).
        """
        positions = self._check(positions)
        if not self._built or self._ref_pos is None:
            return True
        if positions.shape[0] != self._ref_pos.shape[0]:
            return True
        if (box is None) != (self._ref_box is None):
            return True
        if positions.shape[0] == 0:
            return box is not None and not torch.equal(box, self._ref_box)
        disp = torch.linalg.vector_norm(positions - self._ref_pos, dim=1).amax()
        if box is None:
            return float(disp) > 0.5 * self.skin
        box_change = (box - self._ref_box).abs().amax()
        d, db = torch.stack((disp, box_change)).tolist()
        return db != 0.0 or d > 0.5 * self.skin

    def max_displacement(self, positions: torch.Tensor) -> float:
        """Largest displacement ``max_i |x_i - x_i^build|`` (Å) since the last build."""
        pos = self._check(positions)
        if self._ref_pos is None or pos.shape != self._ref_pos.shape:
            raise ValueError("no build with this atom count yet")
        if pos.shape[0] == 0:
            return 0.0
        return float(torch.linalg.vector_norm(pos - self._ref_pos, dim=1).amax())

    def displacements(self, positions: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
        """Pair vectors r_ij = x_j - x_i + n @ box for every slot, float64 [N, capacity, 3], Å.

        Unused slots hold 0. Uses ``positions`` as given (current, unwrapped), i.e. the
        vectors a force field needs between builds.
        """
        pos = self._check(positions)
        j = self.neighbors.long().clamp_min(0)
        r = pos[j] - pos[:, None, :]
        if box is not None:
            r = r + self.images.to(torch.float64) @ box.to(pos.dtype)
        return r * (self.neighbors >= 0).unsqueeze(-1)

    # ----------------------------------------------------------------- private
    def _check(self, positions: torch.Tensor) -> torch.Tensor:
        if positions.dtype != torch.float64 or positions.dim() != 2 or positions.shape[-1] != 3:
            raise ValueError(f"positions must be float64 [N, 3], got {positions.dtype} "
                             f"{tuple(positions.shape)}")
        if positions.device.type != self.device.type:
            raise ValueError(f"positions on {positions.device}, neighbour list on {self.device}")
        return positions.detach().contiguous()

    def _geometry(self, pos: torch.Tensor, box: torch.Tensor | None):
        """Host-side grid set-up.

        Returns (geom, n, k, volume, ortho): geom float64 [9, 3] on the device (layout in
        ``taichi_kernels.neighbor``); cells n_d; offset reach k_d; volume Å³ (for the
        capacity estimate); whether the cell vectors are mutually orthogonal.
        """
        n_atoms = pos.shape[0]
        rl = self.r_list
        geom = np.zeros((9, 3))
        if box is not None:
            h = box.cpu().numpy().astype(np.float64)
            vol = abs(float(np.linalg.det(h)))
            if not vol > 0:
                raise ValueError("singular box")
            inv = np.linalg.inv(h)
            width = 1.0 / np.linalg.norm(inv, axis=0)        # w_d = V / |a_e x a_f|
            geom[0:3], geom[3:6] = h, inv
            g = h @ h.T                                        # metric tensor
            off = np.abs(g - np.diag(np.diag(g)))
            ortho = bool(np.all(off <= 1e-12 * np.sqrt(np.outer(np.diag(g), np.diag(g)))))
        else:
            ext = torch.stack((pos.min(dim=0).values, pos.max(dim=0).values)).cpu().numpy()
            width = np.maximum(ext[1] - ext[0], rl)
            vol = float(np.prod(width))
            geom[0:3] = np.diag(width)
            geom[3:6] = np.diag(1.0 / width)
            geom[6] = ext[0]
            ortho = True
        n = np.maximum(1, np.floor(width * self.cells_per_radius / rl)).astype(np.int64)
        limit = max(64, 2 * n_atoms)                           # dilute systems: fewer, larger cells
        if n.prod() > limit:
            f = (n.prod() / limit) ** (1.0 / 3.0)
            n = np.maximum(1, np.floor(n / f)).astype(np.int64)
        # |ds_d| <= r_list / w_d  =>  |d(cell index)| <= ceil(r_list n_d / w_d)
        k = np.maximum(1, np.ceil(rl * n / width - 1e-12)).astype(np.int64)
        geom[7] = width / n                                   # cell widths along the normals
        geom[8, 0:2] = rl * rl, rl * rl * (1.0 + 1e-10)        # margin: pruning never drops a pair
        geom_t = torch.as_tensor(geom, dtype=torch.float64).to(pos.device)
        return geom_t, tuple(int(v) for v in n), tuple(int(v) for v in k), vol, ortho

    def _work(self, n_atoms: int, n_cell: int, n_block: int) -> dict[str, torch.Tensor]:
        """Scratch tensors, reallocated only when the atom count changes or cells outgrow them."""
        from taichi_kernels.neighbor import HEADER

        s = self._scratch
        dev = self.device
        if s.get("iwork") is None or s["iwork"].shape[0] != n_atoms:
            s["iwork"] = torch.empty((n_atoms, 9), dtype=torch.int32, device=dev)
            s["fwork"] = torch.empty((n_atoms, 9), dtype=torch.float64, device=dev)
        n_ints = HEADER + 2 * n_cell + 1 + n_block
        if s.get("ints") is None or s["ints"].shape[0] < n_ints:
            s["ints"] = torch.zeros(n_ints, dtype=torch.int32, device=dev)
        return s

    def _alloc_output(self, n_atoms: int) -> None:
        """(Re)allocate the output when its shape changes (the kernel writes every slot)."""
        cap = max(1, self.capacity)
        if self.neighbors.shape != (n_atoms, cap):
            self.neighbors = torch.empty((n_atoms, cap), dtype=torch.int32, device=self.device)
            self.images = torch.empty((n_atoms, cap, 3), dtype=torch.int32, device=self.device)
            self.counts = torch.empty(n_atoms, dtype=torch.int32, device=self.device)

    def _build(self, pos: torch.Tensor, box: torch.Tensor | None) -> None:
        """Cell-list build: one kernel launch (one more per capacity growth), one host sync."""
        n_atoms = pos.shape[0]
        self._ref_pos = pos.clone()
        self._ref_box = None if box is None else box.clone()
        self._built = True
        self.n_builds += 1
        if n_atoms == 0:
            self.capacity = max(self.capacity, 1)
            self._alloc_output(0)
            return
        if not bool(torch.isfinite(pos).all()):
            raise ValueError("non-finite positions: cannot build a neighbour list")
        init_taichi(self.device.type)
        from taichi_kernels.neighbor import HEADER, STAT, build_verlet

        geom, n, k, vol, ortho = self._geometry(pos, box)
        self.grid, self.reach = n, k
        if self.capacity == 0:
            est = n_atoms / vol * 4.0 / 3.0 * math.pi * self.r_list ** 3 * ESTIMATE_FACTOR
            cap = max(MIN_CAPACITY, int(math.ceil(est)))
            if box is None:
                cap = min(cap, max(1, n_atoms - 1))
            self.capacity = cap
        n_cell = n[0] * n[1] * n[2]
        block = max(16, math.isqrt(n_cell) + 1)
        n_block = (n_cell + block - 1) // block
        w = self._work(n_atoms, n_cell, n_block)
        header = [*n, *k, int(box is not None), int(ortho), block, n_cell, n_block, 0]
        header += [0] * (HEADER - len(header))
        w["ints"][:HEADER].copy_(torch.tensor(header, dtype=torch.int32))
        while True:
            self._alloc_output(n_atoms)
            build_verlet(pos, geom, w["ints"], w["iwork"], w["fwork"],
                         self.neighbors, self.images, self.counts)
            longest = int(w["ints"][STAT])
            if longest <= self.capacity:
                return
            self.capacity = int(math.ceil(longest * GROWTH))
            self.n_grows += 1
