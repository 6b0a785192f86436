"""Per-frame geometry of the training data, computed once by the engine's Taichi kernels.

For every frame the engine's own path gives the slots and the raw environment matrix
(``DeepPotential.environment`` → Taichi ``build_env``) and ∂R/∂r
(``taichi_kernels.se_a.env_derivative``). These never change during training, so
:class:`GeometryCache` keeps them per system:

* raw R of the filled part of each type block: columns [sec_t, sec_t + W_t) where W_t is
  the largest number of neighbours of type t of any atom of any frame of the system;
  columns beyond are empty (R = 0) for every atom and are represented by one virtual
  slot per type (see :mod:`.fastpath`);
* r_ij (Å), neighbour index j, and ∂R/∂r (Å⁻²) of those slots.

Once the statistics are known, :meth:`GeometryCache.finalize` turns them into the
normalised tensors of :class:`~.fastpath.Batch` (r̂ = (R − davg)/dstd, J = (∂R/∂r)/dstd).
If davg/dstd differ between the slots of one block (models not made by DeePMD-kit-style
statistics), pass ``full_width``: nothing is truncated (W_t = sel_t) and every slot keeps
its own statistics.
Memory: about (4 + 1 + 12 + 3 + 1)·8 bytes per kept slot.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from .fastpath import Batch


class EnvironmentProvider:
    """Slots, raw environment rows and ∂R/∂r of single frames, from the Taichi kernels.

    Wraps a ``DeepPotential`` built on a temporary copy of ``net`` (only its type map,
    cutoffs, sel and — for the slot order — statistics matter) and an engine
    ``NeighborList``.
    """

    def __init__(self, net, device: str = "cpu"):
        from dpengine.deeppot import DeepPotential
        from dpengine.model.io import save_model
        from dpengine.neighbor import NeighborList

        with tempfile.TemporaryDirectory() as tmp:
            path = save_model(net, Path(tmp) / "geometry.pt")
            self.potential = DeepPotential(path, device=device, precision="float64")
        self.device = torch.device(device)
        self.nlist = NeighborList(self.potential.cutoff, skin=0.0, device=device)
        self.rcut, self.rcut_smth = float(net.rcut), float(net.rcut_smth)

    def frame(self, coords: np.ndarray, box: np.ndarray | None, types: torch.Tensor) -> dict:
        """The slots of one frame, per neighbour type (copies).

        Returns ``blocks``: for each type t, (slot_j int32 [N, w_t] (−1 empty, filled slots
        first), slot_rij float64 [N, w_t, 3] Å, env float64 [N, w_t, 4]), w_t ≤ sel[t] being
        the engine's block width (``DeepPotential.widths`` when it keeps compact blocks,
        else sel); and ``max_neighbors`` (per-type largest count, may exceed sel).
        """
        pos = torch.as_tensor(coords, dtype=torch.float64, device=self.device)
        box_t = None if box is None else torch.as_tensor(box, dtype=torch.float64,
                                                         device=self.device)
        self.nlist.update(pos, box_t, force=True)
        out = self.potential.environment(pos, box_t, types, self.nlist)
        widths = list(getattr(self.potential, "widths", self.potential.sel))
        if sum(widths) != out["slot_j"].shape[1]:
            raise RuntimeError(f"environment returned {out['slot_j'].shape[1]} slots per atom, "
                               f"expected blocks of {widths}")
        blocks, start = [], 0
        for w in widths:
            sl = slice(start, start + w)
            blocks.append((out["slot_j"][:, sl].clone(), out["slot_rij"][:, sl].clone(),
                           out["env"][:, sl].clone()))
            start += w
        return dict(blocks=blocks, max_neighbors=list(self.potential.max_neighbors))

    def derivative(self, slot_j: torch.Tensor, slot_rij: torch.Tensor) -> torch.Tensor:
        """∂R/∂r float64 [..., S, 4, 3] of slots (Taichi ``env_derivative``)."""
        from taichi_kernels.se_a import env_derivative

        shape = slot_j.shape
        sj = slot_j.reshape(-1, shape[-1]).contiguous()
        rij = slot_rij.reshape(-1, shape[-1], 3).contiguous()
        out = torch.empty(sj.shape[0], shape[-1], 4, 3, dtype=torch.float64, device=sj.device)
        env_derivative(sj, rij, self.rcut, self.rcut_smth, out)
        return out.view(*shape, 4, 3)


class GeometryCache:
    """The fixed geometry of all frames of one system (see the module docstring)."""

    def __init__(self, system, provider: EnvironmentProvider, sel: list[int],
                 full_width: bool = False):
        self.system = system
        self.sel = [int(s) for s in sel]
        self.sec = np.concatenate([[0], np.cumsum(self.sel)]).astype(int)
        n, f = system.n_atoms, system.n_frames
        dev = provider.device
        self.types = torch.as_tensor(system.types, dtype=torch.int64, device=dev)
        types32 = self.types.to(torch.int32)
        frames = [provider.frame(system.coords[k], None if system.boxes is None else
                                 system.boxes[k], types32) for k in range(f)]
        self.max_neighbors = np.max([fr["max_neighbors"] for fr in frames], axis=0)
        ntypes = len(self.sel)
        filled = [max(int((fr["blocks"][t][0] >= 0).sum(1).max()) if n else 0 for fr in frames)
                  for t in range(ntypes)]
        self.widths = list(self.sel) if full_width else filled
        self.cols = torch.cat([torch.arange(self.sec[t], self.sec[t] + w)
                               for t, w in enumerate(self.widths)]).to(dev)
        slot_j, rij, env = [], [], []
        for fr in frames:
            parts = [_fit_width(block, w) for block, w in zip(fr["blocks"], self.widths)]
            slot_j.append(torch.cat([p[0] for p in parts], 1))
            rij.append(torch.cat([p[1] for p in parts], 1))
            env.append(torch.cat([p[2] for p in parts], 1))
        self.slot_j = torch.stack(slot_j)                                        # [F, N, S]
        self.rij = torch.stack(rij)                                              # [F, N, S, 3]
        self.env = torch.stack(env)                                              # [F, N, S, 4]
        self.deriv = provider.derivative(self.slot_j, self.rij)                   # [F, N, S, 4, 3]
        filled = self.slot_j >= 0
        # closest neighbour distance (Å) of all frames: compression tabulates down to it
        self.min_distance = (float(self.rij.norm(dim=-1)[filled].min()) if bool(filled.any())
                             else float("inf"))
        self.n_frames, self.n_atoms = f, n
        self.tensors: dict | None = None

    def add_stats(self, stat, frames) -> None:
        """Accumulate the raw environment of ``frames`` into ``stat`` (an ``EnvStat``)."""
        nnei = int(self.sec[-1])
        for k in frames:
            stat.add(self.env[k].cpu().numpy(), self.system.types, nnei)

    def finalize(self, davg: torch.Tensor, dstd: torch.Tensor, dtype: torch.dtype,
                 virial: bool, type_one_side: bool = True) -> None:
        """Build the normalised tensors (``rhat, jac, nbr, rij`` and the embedding inputs)
        for :meth:`batch`.

        davg, dstd [ntypes, nnei, 4] (the network's buffers); ``type_one_side`` as the
        network (which slots each embedding net sees). Frees the raw arrays.
        """
        dev = self.env.device
        davg = davg.to(device=dev, dtype=torch.float64)
        dstd = dstd.to(device=dev, dtype=torch.float64)
        f, n = self.n_frames, self.n_atoms
        avg_i = davg[self.types][:, self.cols]                                 # [N, S, 4]
        std_i = dstd[self.types][:, self.cols]
        rhat = (self.env - avg_i) / std_i
        jac = self.deriv / std_i.unsqueeze(-1)
        raw_j = self.slot_j.to(torch.int64)
        own = torch.arange(n, device=dev).view(1, n, 1).expand_as(raw_j)
        parts_s, parts_r, parts_j, parts_n, parts_x, blocks = [], [], [], [], [], []
        start, col = 0, 0
        for t, w in enumerate(self.widths):
            sl = slice(col, col + w)
            col += w
            s_t, r_t, j_t, n_t, x_t = rhat[:, :, sl, 0], rhat[:, :, sl], jac[:, :, sl], \
                raw_j[:, :, sl], self.rij[:, :, sl]
            n_pad = self.sel[t] - w
            if n_pad:                       # the virtual slot: n_pad copies of the empty row
                pad = -davg[self.types, self.sec[t]] / dstd[self.types, self.sec[t]]   # [N, 4]
                s_t = torch.cat([s_t, pad[:, 0].view(1, n, 1).expand(f, n, 1)], 2)
                r_t = torch.cat([r_t, (n_pad * pad).view(1, n, 1, 4).expand(f, n, 1, 4)], 2)
                j_t = torch.cat([j_t, torch.zeros(f, n, 1, 4, 3, dtype=jac.dtype, device=dev)], 2)
                n_t = torch.cat([n_t, torch.full((f, n, 1), -1, dtype=n_t.dtype, device=dev)], 2)
                x_t = torch.cat([x_t, torch.zeros(f, n, 1, 3, dtype=x_t.dtype, device=dev)], 2)
            parts_s.append(s_t), parts_r.append(r_t), parts_j.append(j_t)
            parts_n.append(n_t), parts_x.append(x_t)
            blocks.append((start, start + s_t.shape[2]))
            start += s_t.shape[2]
        self.blocks = blocks
        self._embedding_inputs(parts_s, parts_n, parts_x, dtype, type_one_side)
        self.tensors = dict(
            rhat=torch.cat(parts_r, 2).to(dtype).contiguous(),
            jac=torch.cat(parts_j, 2).to(dtype).contiguous(),
            nbr=torch.where(torch.cat(parts_n, 2) >= 0, torch.cat(parts_n, 2),
                            own[:, :, :1]).contiguous(),
            rij=torch.cat(parts_x, 2).to(dtype).contiguous() if virial else None)
        sysm = self.system
        self.labels = dict(
            energy=torch.as_tensor(sysm.energy, dtype=dtype, device=dev),
            force=torch.as_tensor(sysm.forces, dtype=dtype, device=dev),
            virial=None if sysm.virial is None else torch.as_tensor(sysm.virial, dtype=dtype,
                                                                    device=dev))
        self._type_index: dict[int, tuple] = {}
        self._single: dict[int, Batch] = {}
        del self.env, self.deriv, self.slot_j
        if not virial:
            del self.rij

    def _embedding_inputs(self, parts_s, parts_j, parts_x, dtype, type_one_side: bool) -> None:
        """Distinct embedding inputs per net and frame, and the row of each slot.

        Net k sees block t_j of the atoms C_k (all atoms, or those of its centre type). Two
        slots share a row when they hold the same pair seen from both ends — (i → j, r) and
        (j → i, −r), both in C_k, same ŝ since i and j have the same type — or are both
        empty (or virtual) slots of the same centre type. Rows are numbered by first
        occurrence (so the gather stays local). ``emb_s[k]`` [F, U_k] (padded with the
        frame's first input), ``emb_index[k]`` [F, |C_k|, W_t].
        """
        types = self.system.types
        ntypes = len(self.sel)
        nets = [(k, None) for k in range(ntypes)] if type_one_side else \
            [(k // ntypes, k % ntypes) for k in range(ntypes * ntypes)]
        self.emb_s, self.emb_index, self.emb_rows = [], [], []
        for t_j, t_i in nets:
            centres = np.arange(self.n_atoms) if t_i is None else np.nonzero(types == t_i)[0]
            s_blk = parts_s[t_j].cpu().numpy()[:, centres]
            j_blk = parts_j[t_j].cpu().numpy()[:, centres]
            x_blk = parts_x[t_j].cpu().numpy()[:, centres]
            rows, index = [], []
            for f in range(self.n_frames):
                s_u, idx = _distinct_rows(s_blk[f], j_blk[f], x_blk[f], centres, types)
                rows.append(s_u)
                index.append(idx)
            u_max = max(len(r) for r in rows)
            s_pad = np.stack([np.concatenate([r, np.full(u_max - len(r), r[0])]) for r in rows])
            dev = parts_s[t_j].device
            self.emb_s.append(torch.as_tensor(s_pad, dtype=dtype, device=dev))
            self.emb_index.append(torch.as_tensor(np.stack(index), dtype=torch.int64, device=dev))
            self.emb_rows.append(torch.as_tensor(centres, dtype=torch.int64, device=dev))

    def to(self, device) -> None:
        """Move the finalized tensors to ``device``."""
        self.tensors = {k: None if v is None else v.to(device) for k, v in self.tensors.items()}
        self.labels = {k: None if v is None else v.to(device) for k, v in self.labels.items()}
        self.types = self.types.to(device)
        self.emb_s = [x.to(device) for x in self.emb_s]
        self.emb_index = [x.to(device) for x in self.emb_index]
        self._type_index = {}
        self._single = {}          # frame -> its one-frame Batch (views; built once)

    def batch(self, frames) -> Batch:
        """A :class:`~.fastpath.Batch` of the frames ``frames`` (list of indices)."""
        if len(frames) == 1:
            k = int(frames[0])
            if k not in self._single:
                self._single[k] = self._batch(frames)
            return self._single[k]
        return self._batch(frames)

    def _batch(self, frames) -> Batch:
        tens = self.tensors
        b, n = len(frames), self.n_atoms
        dev = tens["rhat"].device
        if b == 1:
            k = int(frames[0])
            pick = lambda x: x[k:k + 1]                      # noqa: E731  (a view, no copy)
        else:
            idx = torch.as_tensor(list(frames), dtype=torch.int64, device=dev)
            pick = lambda x: x.index_select(0, idx)          # noqa: E731
        w = tens["rhat"].shape[2]
        nbr = pick(tens["nbr"])
        if b > 1:
            nbr = nbr + (torch.arange(b, device=dev) * n).view(b, 1, 1)
        if b not in self._type_index:
            types = self.types.repeat(b)
            index = [torch.nonzero(types == t).squeeze(1) for t in range(len(self.sel))]
            ranges = None
            if bool((types[1:] >= types[:-1]).all()):           # sorted by type
                ranges = [(int(ix[0]), int(ix[-1]) + 1) if ix.numel() else (0, 0)
                          for ix in index]
            self._type_index[b] = index, ranges
        emb_s, emb_index = [], []
        for s_k, i_k in zip(self.emb_s, self.emb_index):
            u = s_k.shape[1]
            index = pick(i_k)
            if b > 1:
                index = index + (torch.arange(b, device=dev) * u).view(b, 1, 1)
            emb_s.append(pick(s_k).reshape(-1))
            emb_index.append(index.reshape(-1, i_k.shape[2]))
        lab = self.labels
        return Batch(emb_s=emb_s, emb_index=emb_index, rhat=pick(tens["rhat"]).reshape(b * n, w, 4),
                     jac=pick(tens["jac"]).reshape(b * n, w, 4, 3), nbr=nbr.reshape(-1),
                     rij=None if tens["rij"] is None else pick(tens["rij"]).reshape(b * n, w, 3),
                     types=self.types.repeat(b), blocks=self.blocks,
                     type_index=self._type_index[b][0], type_ranges=self._type_index[b][1],
                     n_frames=b, n_atoms=n,
                     energy=pick(lab["energy"]), force=pick(lab["force"]),
                     virial=None if lab["virial"] is None else pick(lab["virial"]))

def _fit_width(block, width: int):
    """(slot_j, rij, env) of one type block cut or padded (empty slots) to ``width`` columns."""
    sj, rij, env = block
    w = sj.shape[1]
    if w >= width:
        return sj[:, :width], rij[:, :width], env[:, :width]
    n = sj.shape[0]
    pad = width - w
    return (torch.cat([sj, sj.new_full((n, pad), -1)], 1),
            torch.cat([rij, rij.new_zeros((n, pad, 3))], 1),
            torch.cat([env, env.new_zeros((n, pad, 4))], 1))


def _distinct_rows(s: np.ndarray, j: np.ndarray, rij: np.ndarray, centres: np.ndarray,
                   types: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct embedding inputs of one frame's block and the row of each slot.

    s, j, rij: [C, W] ŝ, neighbour index (−1 empty or virtual) and r_ij (Å) of the slots of
    the centre atoms ``centres`` [C]. A pair is keyed by (min(i, j), max(i, j), r oriented
    from the lower to the higher index, in 10⁻⁶ Å); the mirror slot (j → i, −r) exactly
    negates r, so both get the same key. Empty slots are keyed by the centre's type.
    Returns (ŝ of each row [U], row of each slot [C, W] int64).
    """
    c, w = j.shape
    i = np.broadcast_to(centres[:, None], (c, w))
    q = np.rint(rij * 1e6).astype(np.int64)
    first = np.where(q[..., 0] != 0, q[..., 0], np.where(q[..., 1] != 0, q[..., 1], q[..., 2]))
    flip = (i > j) | ((i == j) & (first < 0))
    q = np.where(flip[..., None], -q, q)
    empty = j < 0
    keys = np.stack([np.where(empty, -1 - types[i], np.minimum(i, j)),
                     np.where(empty, -1, np.maximum(i, j)),
                     *[np.where(empty, 0, q[..., a]) for a in range(3)]], -1).reshape(-1, 5)
    _, first_at, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first_at)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    index = rank[inverse.reshape(-1)].reshape(c, w)
    rows = s.reshape(-1)[first_at[order]]
    if not np.allclose(rows[index], s, rtol=0, atol=1e-12):
        raise RuntimeError("slots sharing an embedding input have different inputs")
    return rows, index
