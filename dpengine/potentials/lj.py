"""Lennard-Jones pair potential, per type pair, on the engine's Taichi neighbour list.

u_ab(r) = 4 ε_ab [(σ_ab/r)¹² − (σ_ab/r)⁶] for r < r_c,ab, and one of three truncations:

* ``"cut"``   — plain truncation (energy jumps at r_c; forces are those of ``shift``);
* ``"shift"`` — u − u(r_c), continuous energy: forces, energy and virial are exactly
  consistent, so NVE and the extended-system invariants are conserved;
* ``"tail"``  — plain truncation plus the standard mean-field tail corrections for a
  homogeneous fluid (g(r) = 1 beyond r_c; Allen & Tildesley eq. 2.144):

      E_tail = (2π/V) Σ_ab N_a N_b ∫_{r_c}^∞ u(r) r² dr
             = (2π/V) Σ_ab N_a N_b · 4 ε σ³ [ (σ/r_c)⁹/9 − (σ/r_c)³/3 ]
      P_tail = (2π/(3V²)) Σ_ab N_a N_b ∫_{r_c}^∞ (−r u'(r)) r² dr
             = (2π/(3V²)) Σ_ab N_a N_b · 4 ε σ³ [ 4 (σ/r_c)⁹/3 − 2 (σ/r_c)³ ]

  added to the energy and, as W_tail = P_tail V · I, to the virial (so the pressure
  (2K + tr W)/3V and every barostat see it). For one component these are the familiar
  E_tail = (8/3)π N ρ ε σ³[(σ/r_c)⁹/3 − (σ/r_c)³] and
  P_tail = (16/3)π ρ² ε σ³[(2/3)(σ/r_c)⁹ − (σ/r_c)³]. (P_tail ≠ −dE_tail/dV: the
  virial route is the one that corrects the pressure of the truncated system.)

Parameters are given per element pair, ``{"Ar-Ar": 0.0104}`` or ``{"Ar": ...}`` for a like
pair; unlike pairs missing from the table follow Lorentz–Berthelot mixing
(ε_ab = √(ε_aa ε_bb), σ_ab = (σ_aa + σ_bb)/2, r_c,ab = (r_c,aa + r_c,bb)/2).
Units: ε eV, σ and r_c Å.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from dpengine.backend import init_taichi
from dpengine.potential import PotentialResult

TRUNCATIONS = ("cut", "shift", "tail")


def pair_matrix(type_map, values, name: str, mix: str, required: set[int] | None = None,
                scalar_ok: bool = False) -> np.ndarray:
    """[n_types, n_types] table from ``{"A-B": x, "A": x}`` (or a float when ``scalar_ok``).

    ``mix``: "geometric" or "arithmetic" rule for unlike pairs that are not given.
    ``required``: type indices whose like pair must be present (types in the system);
    entries that cannot be determined are NaN. Raises ValueError on unknown elements.
    """
    nt = len(type_map)
    table = np.full((nt, nt), np.nan)
    if isinstance(values, (int, float)):
        if not scalar_ok:
            raise ValueError(f"{name} must be a table of element pairs")
        table[:] = float(values)
        return table
    index = {t: k for k, t in enumerate(type_map)}
    for label, value in dict(values).items():
        parts = str(label).split("-")
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{name}: key {label!r} must name an element pair as \"A-B\" or one "
                             "element \"A\" (like pair)")
        unknown = [p for p in parts if p not in index]
        if unknown:
            raise ValueError(f"{name}: element {unknown[0]!r} of {label!r} is not in the type map "
                             f"{list(type_map)}")
        a, b = index[parts[0]], index[parts[1]]
        table[a, b] = table[b, a] = float(value)
    for a in range(nt):
        for b in range(nt):
            if math.isnan(table[a, b]) and not (math.isnan(table[a, a]) or math.isnan(table[b, b])):
                table[a, b] = (math.sqrt(table[a, a] * table[b, b]) if mix == "geometric"
                               else 0.5 * (table[a, a] + table[b, b]))
    for a in sorted(required or ()):
        if math.isnan(table[a, a]):
            raise ValueError(f"{name}: no value for the pair {type_map[a]}-{type_map[a]} "
                             f"(element {type_map[a]} is in the system)")
    return table


class LennardJones:
    """Lennard-Jones ``Potential`` (see module docstring).

    Parameters: ``type_map`` (element per type index), ``epsilon`` / ``sigma`` (pair
    tables, eV / Å), ``cutoff`` (Å, a float or a pair table), ``truncation`` ("cut",
    "shift", "tail"), ``types_present`` (type indices that must be parametrised),
    ``device``. Attributes: ``cutoff`` (largest r_c, Å) and the [n_types, n_types] tables
    ``epsilon``, ``sigma``, ``rcut``.
    """

    conserves_momentum = True

    def __init__(self, type_map, epsilon, sigma, cutoff, truncation: str = "shift",
                 types_present=None, device="cpu"):
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        self.type_map = list(type_map)
        self.truncation = truncation
        self.device = torch.device(device)
        req = set(range(len(self.type_map))) if types_present is None else set(types_present)
        self.epsilon = pair_matrix(self.type_map, epsilon, "epsilon", "geometric", req)
        self.sigma = pair_matrix(self.type_map, sigma, "sigma", "arithmetic", req)
        self.rcut = pair_matrix(self.type_map, cutoff, "cutoff", "arithmetic", req, scalar_ok=True)
        nt = len(self.type_map)
        defined = ~(np.isnan(self.epsilon) | np.isnan(self.sigma) | np.isnan(self.rcut))
        for name, t in (("epsilon", self.epsilon), ("sigma", self.sigma), ("cutoff", self.rcut)):
            if np.any(t[defined] < 0) or (name != "epsilon" and np.any(t[defined] <= 0)):
                raise ValueError(f"{name} must be {'>= 0' if name == 'epsilon' else '> 0'}")
        eps = np.where(defined, self.epsilon, 0.0)
        sig = np.where(defined, self.sigma, 1.0)
        rc = np.where(defined, self.rcut, 0.0)
        self.cutoff = float(rc.max()) if rc.size else 0.0
        if self.cutoff <= 0:
            raise ValueError("Lennard-Jones needs a positive cutoff")
        c12 = 4.0 * eps * sig ** 12
        c6 = 4.0 * eps * sig ** 6
        with np.errstate(divide="ignore", invalid="ignore"):
            x6 = np.where(rc > 0, (sig / np.where(rc > 0, rc, 1.0)) ** 6, 0.0)
        shift = 4.0 * eps * (x6 * x6 - x6) if truncation == "shift" else np.zeros_like(eps)
        pairs = np.stack([c12, c6, rc ** 2, shift], axis=-1).reshape(-1)
        from taichi_kernels.pair import LJ_NTYPES, LJ_PAIRS
        table = np.zeros(LJ_PAIRS + pairs.size)
        table[LJ_NTYPES] = nt
        table[LJ_PAIRS:] = pairs
        self._table = torch.tensor(table, dtype=torch.float64, device=self.device)
        # tail integrals per pair: I_E = 4εσ³[x⁹/9 − x³/3], I_P = 4εσ³[4x⁹/3 − 2x³], x = σ/r_c
        with np.errstate(divide="ignore", invalid="ignore"):
            x3 = np.where(rc > 0, (sig / np.where(rc > 0, rc, 1.0)) ** 3, 0.0)
        self._tail_e = 4.0 * eps * sig ** 3 * (x3 ** 3 / 9.0 - x3 / 3.0)
        self._tail_p = 4.0 * eps * sig ** 3 * (4.0 * x3 ** 3 / 3.0 - 2.0 * x3)
        self._counts_key = None
        self._counts = None
        self._out = None
        self._order = None
        self._order_key = None

    def tail(self, types: torch.Tensor, volume: float) -> tuple[float, float]:
        """(E_tail in eV, P_tail in eV/Å³) for the atoms ``types`` in ``volume`` Å³ (zero
        unless ``truncation == "tail"``)."""
        if self.truncation != "tail":
            return 0.0, 0.0
        key = (types.data_ptr(), types.shape[0])
        if key != self._counts_key:
            self._counts = np.bincount(types.cpu().numpy(), minlength=len(self.type_map)).astype(float)
            self._counts_key = key
        nn = np.outer(self._counts, self._counts)
        e = 2.0 * math.pi / volume * float((nn * self._tail_e).sum())
        p = 2.0 * math.pi / (3.0 * volume ** 2) * float((nn * self._tail_p).sum())
        return e, p

    def compute(self, positions, box, types, nlist, atom_energy: bool = False) -> PotentialResult:
        from taichi_kernels.pair import LJ_BOX, LJ_PERIODIC, lj_compute, out_rows, pair_order
        init_taichi(self.device.type)
        n = positions.shape[0]
        # canonical summation order of each row, recomputed when the list was rebuilt
        # (strong references: the list and its tensor cannot be freed and their ids reused)
        key = (nlist, nlist.n_builds, nlist.neighbors)
        old = self._order_key
        if old is None or old[0] is not nlist or old[1] != key[1] or old[2] is not key[2]:
            if self._order is None or self._order.shape != nlist.neighbors.shape:
                self._order = torch.zeros(tuple(nlist.neighbors.shape), dtype=torch.int32,
                                          device=self.device)
            pair_order(nlist.neighbors, nlist.images, nlist.counts, self._order)
            self._order_key = key
        if self._out is None or self._out.shape[0] != out_rows(n):
            self._out = torch.zeros((out_rows(n), 10), dtype=torch.float64, device=self.device)
        if box is not None:
            self._table[LJ_BOX:LJ_BOX + 9].copy_(box.reshape(9))
            self._table[LJ_PERIODIC] = 1.0
        else:
            self._table[LJ_PERIODIC] = 0.0
        lj_compute(positions, types, nlist.neighbors, nlist.images, nlist.counts, self._order,
                   self._table, self._out)
        sums = self._out[-1].tolist()
        w = sums[4:10]
        virial = [[w[0], w[3], w[4]], [w[3], w[1], w[5]], [w[4], w[5], w[2]]]
        energy = sums[3]
        atoms = self._out[:n, 3].clone() if atom_energy else None
        if box is not None and self.truncation == "tail":
            volume = abs(float(np.linalg.det(np.array(box.tolist()))))
            e_tail, p_tail = self.tail(types, volume)
            energy += e_tail
            for a in range(3):
                virial[a][a] += p_tail * volume
            if atoms is not None:
                atoms += e_tail / n
        f64 = dict(dtype=torch.float64, device=self.device)
        return PotentialResult(torch.tensor(energy, **f64), self._out[:n, 0:3].clone(),
                               torch.tensor(virial, **f64), atoms)
