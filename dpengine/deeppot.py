"""The Deep Potential (se_e2_a) on the fast path: Taichi geometry, TorchScript networks.

One force call:
  1. ``build_env`` (Taichi): Verlet list → slots, r_ij and the raw environment matrix R.
  2. networks (torch, float64 or float32): atomic energies e_i(R) and g = ∂E/∂R. Tanh
     networks with DeePMD-kit-style statistics take the pair path (each same-type pair's
     embedding input evaluated once, in tangent mode, into a store of rows [G; G']); a
     compressed model evaluates G from its tables instead; either way Taichi kernels
     (taichi_kernels.tabulate) take R to T = R̂ᵀG and ∂E/∂T back to g, around the fitting
     nets (explicit sweeps: no autograd). Other models go through torch autograd.
  3. ``assemble_forces`` (Taichi): F = −Σ gᵀ ∂R/∂r, W = −Σ r ⊗ gᵀ ∂R/∂r.
Geometry and force assembly stay in float64 whatever the network precision.
"""
import warnings

import torch

from dpengine.backend import init_taichi, keep_freed_memory, taichi_real as _real
from dpengine.model.embedding_tangent import embedding_tangent_passes
from dpengine.model.fitting_sweep import (fitting_kinds, layer_params, fitting_sweeps,
                                          tanh_layer_kinds)
from dpengine.model.io import eager_copy, load_network
from dpengine.model.network import DeepPotSE, axis_product, symmetric_descriptor
from dpengine.potential import PotentialResult

PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
CPU_CHUNK_ROWS = 32768   # neighbour rows per pass through the uncompressed networks (CPU)
FIT_CHUNK_ATOMS = 2048   # atoms per pass through the fitting nets (CPU)
#: What happens to an atom with more neighbours than sel (build_env; training says it too).
SEL_CAP_RULE = ("as in DeePMD-kit v3, of the nearest sum(sel) neighbours the nearest sel[t] "
                "of each type are kept")


class DeepPotential:
    """A dpengine model file as a ``Potential``.

    Attributes: ``type_map`` (element names), ``cutoff`` (r_c, Å), ``sel``,
    ``metadata`` (the model file's JSON), ``sel_overflow`` (atoms that had more
    neighbours of some type than ``sel`` at the last call) and ``max_neighbors``
    (largest per-type count seen at the last call).
    """

    def __init__(self, path, device: str = "cpu", precision: str = "float64"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        init_taichi(self.device.type)
        if self.device.type == "cpu":
            keep_freed_memory()      # the force call's temporaries: no fresh pages per call
        self.dtype = PRECISIONS[precision]
        self.path = str(path)
        scripted, self.metadata = load_network(path, str(self.device), self.dtype)
        self.net = eager_copy(scripted, self.metadata) or scripted
        # per fitting net: its tanh layers' kinds for the explicit sweeps, or None (autograd)
        self._fit_kinds = [fitting_kinds(f) if isinstance(self.net, DeepPotSE) else None
                           for f in self.net.fittings]
        self._fit_sweeps = all(k is not None for k in self._fit_kinds)
        # per embedding net: its tanh layers' kinds for the tangent sweep, or None (autograd)
        emb_kinds = [tanh_layer_kinds(e.layers) if isinstance(self.net, DeepPotSE) else None
                     for e in self.net.embeddings]
        self._emb_kinds = emb_kinds if all(k is not None for k in emb_kinds) else None
        self.table = self.metadata.pop("compression", None)  # compressed embedding nets
        # r̂ᵀG(r̂₀) of an empty slot [n_emb, ntypes, 4, M], for the paths that add them apart
        self._empty_terms = (self.net.empty_slot_terms().detach()
                             if self.table is not None or self._emb_kinds is not None else None)
        self.table_misses = 0
        self._warned_table = False
        self._one_side = bool(self.metadata["type_one_side"])
        self.type_map = list(self.metadata["type_map"])
        self.sel = [int(s) for s in self.metadata["sel"]]
        self.cutoff = float(self.metadata["rcut"])
        self.rcut_smth = float(self.metadata["rcut_smth"])
        sec = [0]
        for s in self.sel:
            sec.append(sec[-1] + s)
        self.nnei = sec[-1]
        self._sec = torch.tensor(sec, dtype=torch.int32, device=self.device)
        self._sel = torch.tensor(self.sel, dtype=torch.int32, device=self.device)
        # Slot order inside a type block only matters if the statistics differ between
        # slots of one block; then sort by distance exactly as DeePMD-kit does.
        self.sort_by_distance = int(not self._block_uniform(self.net.davg)
                              or not self._block_uniform(self.net.dstd))
        # files written before forward_compact existed run with the full DeePMD layout
        self._has_compact = hasattr(self.net, "forward_compact")
        self.compact = not self.sort_by_distance and self._has_compact
        self._compact_cache: dict[tuple, torch.Tensor] = {}
        if self.table is not None:
            self.metadata["compression"] = {k: v for k, v in self.table.items() if k != "coeffs"}
            # file layout [net, interval, channel, power] → the kernels' [net, interval, power,
            # channel] (channels contiguous: taichi_kernels.tabulate), in the model's precision
            # (the kernels evaluate G and sum T in it)
            self.table["coeffs"] = (self.table["coeffs"].permute(0, 1, 3, 2)
                                    .to(self.dtype).contiguous())
        if self.table is not None or self._pair_path:   # statics of the slot-sum kernels
            self._empty_flat = self._empty_terms.to(self.dtype).contiguous().reshape(-1)
            self._davg = self.net.davg.detach().contiguous()
            self._inv_dstd = (1.0 / self.net.dstd.detach()).contiguous()
            self._slot_block = torch.tensor([t for t, w in enumerate(self.sel) for _ in range(w)],
                                            dtype=torch.int32, device=self.device)
            self._slot_rank = torch.tensor([r for w in self.sel for r in range(w)],
                                           dtype=torch.int32, device=self.device)
        self.sel_overflow = 0
        self.max_neighbors = [0] * len(self.sel)
        self._warned_overflow = False
        self._buffers: dict[str, torch.Tensor] = {}

    @property
    def _pair_path(self) -> bool:
        """Tanh embedding nets and block-uniform statistics (the two slots of a pair share
        ŝ): :meth:`_pair_networks` applies."""
        return self.compact and self._emb_kinds is not None

    def _block_uniform(self, stat: torch.Tensor) -> bool:
        for t in range(len(self.sel)):
            block = stat[:, int(self._sec[t]):int(self._sec[t + 1])]
            if block.numel() and not torch.equal(block, block[:, :1].expand_as(block)):
                return False
        return True

    def _buffer(self, name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        """A contiguous tensor of ``shape``, a view of storage kept under ``name`` between
        calls (grown by a quarter when too small): sizes that change from step to step do
        not allocate, and large ones (the pair path's G/G' store: ~100 MB for 1,536 water
        atoms) do not page-fault fresh memory on every step."""
        numel = 1
        for size in shape:
            numel *= int(size)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = torch.empty(numel + numel // 4, dtype=dtype, device=self.device)
            self._buffers[name] = buf
        return buf[:numel].view(shape)

    def environment(self, positions, box, types, nlist) -> dict:
        """Slots and raw environment matrix of every atom (Taichi ``build_env``).

        Returns views of internal buffers (valid until the next call): ``slot_j``
        int32 [N, nnei] (−1 empty), ``slot_rij`` float64 [N, nnei, 3] Å, ``env`` float64
        [N, nnei, 4], in DeePMD-kit's layout (blocks of sel[t] slots per neighbour type),
        ``slot_key`` int64 [N, nnei] (the (j, image) key of filled slots) and ``type_counts``
        int32 [N, ntypes]. Updates ``sel_overflow``/``max_neighbors``.
        """
        from taichi_kernels.se_a import build_env

        n = positions.shape[0]
        ntypes = len(self.sel)
        slot_j = self._buffer("slot_j", (n, self.nnei), torch.int32)
        slot_rij = self._buffer("slot_rij", (n, self.nnei, 3), torch.float64)
        slot_key = self._buffer("slot_key", (n, self.nnei), torch.int64)
        env = self._buffer("env", (n, self.nnei, 4), torch.float64)
        type_counts = self._buffer("type_counts", (n, ntypes), torch.int32)
        box_arg = box if box is not None else self._buffer("nobox", (3, 3), torch.float64).zero_()
        build_env(positions, box_arg, nlist.neighbors, nlist.images, nlist.counts, types,
                  self._sec, self.cutoff, self.rcut_smth, int(box is not None),
                  self.sort_by_distance, slot_j, slot_rij, slot_key, env, type_counts)
        self._check_overflow(type_counts)
        return dict(slot_j=slot_j, slot_rij=slot_rij, slot_key=slot_key, env=env,
                    type_counts=type_counts)

    def _compact_index(self, widths: list[int]) -> torch.Tensor | None:
        """Slot indices that keep the first widths[t] slots of each block (None: keep all)."""
        if widths == self.sel:
            return None
        key = tuple(widths)
        if key not in self._compact_cache:
            index = [s for t, w in enumerate(widths)
                     for s in range(int(self._sec[t]), int(self._sec[t]) + w)]
            self._compact_cache[key] = torch.tensor(index, dtype=torch.long, device=self.device)
        return self._compact_cache[key]

    def compute(self, positions, box, types, nlist, atom_energy: bool = False) -> PotentialResult:
        from taichi_kernels.se_a import assemble_forces

        n = positions.shape[0]
        geometry = self.environment(positions, box, types, nlist)
        types64 = types.to(torch.int64)
        e_atom = None
        if self.table is not None:
            e_atom, grad = self._tabulated(geometry, types, types64)
        if e_atom is None and self._pair_path:
            e_atom, grad = self._pair_networks(geometry, types, types64)
        slot_j, slot_rij = geometry["slot_j"], geometry["slot_rij"]
        if e_atom is None:
            slot_j, slot_rij, e_atom, grad = self._networks(geometry, types64)
        forces = self._buffer("forces", (n, 3), torch.float64)
        pair_grad = self._buffer("pair_grad", (n, slot_j.shape[1], 3), torch.float64)
        atom_virial = self._buffer("atom_virial", (n, 3, 3), torch.float64)
        assemble_forces(slot_j, slot_rij, grad.contiguous(), self.cutoff, self.rcut_smth,
                        pair_grad, forces, atom_virial, self.device.type == "cpu")
        return PotentialResult(e_atom.sum().to(torch.float64), forces.clone(),
                               atom_virial.sum(dim=0),
                               e_atom.to(torch.float64) if atom_energy else None)

    def _networks(self, geometry: dict, types64: torch.Tensor):
        """Atomic energies e [n] and g = ∂E/∂R through the embedding and fitting nets.

        Returns (slot_j, slot_rij, e, g) on the slots used (compact widths)."""
        slot_j, slot_rij, env = geometry["slot_j"], geometry["slot_rij"], geometry["env"]
        # Compact slots: keep per block only as many slots as this frame's largest count
        # (rounded up to 8); the always-empty rest enters the network as a constant
        # (DeepPotSE.descriptor). A pure function of the current frame, so restarts stay
        # bit-exact. Exact only for block-uniform statistics (checked at load).
        widths = self.sel
        if self.compact:
            widths = [min(s, -(-m // 8) * 8) for s, m in zip(self.sel, self.max_neighbors)]
        index = self._compact_index(widths)
        if index is not None:
            slot_j, slot_rij, env = (slot_j.index_select(1, index), slot_rij.index_select(1, index),
                                     env.index_select(1, index))
        n = env.shape[0]
        width = slot_j.shape[1]
        # The networks of atom i see only its own rows, so atoms can go through them in
        # chunks: on the CPU the embedding nets' activations of ≤ 32k rows stay in cache
        # (one 12,288-atom block would stream GBs through memory), which keeps the cost per
        # atom flat. Same arithmetic per atom.
        chunk = n
        if self.device.type == "cpu":
            n_chunks = -(-(n * width) // CPU_CHUNK_ROWS)
            chunk = max(1, -(-n // max(n_chunks, 1)))           # balanced chunks
        e_parts, grad = [], None
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            env_in = env[lo:hi].detach().to(self.dtype).requires_grad_(True)
            with torch.enable_grad():
                if self._fit_sweeps:    # autograd through the embedding nets only
                    t_mat = self.net.embedded_sum(env_in, types64[lo:hi], widths)
                    e_chunk, grad_t = self._fitting_gradient(t_mat.detach(), types64[lo:hi])
                    (g,) = torch.autograd.grad(t_mat, env_in, grad_outputs=grad_t)
                else:
                    if self._has_compact:
                        e_chunk = self.net.forward_compact(env_in, types64[lo:hi], widths)
                    else:
                        e_chunk = self.net(env_in, types64[lo:hi])
                    (g,) = torch.autograd.grad(e_chunk.sum(), env_in)
            if hi - lo == n:
                grad = g
            else:
                if grad is None:
                    grad = self._buffer("env_grad", (n, width, 4), self.dtype)
                grad[lo:hi] = g
            e_parts.append(e_chunk.detach())
        e_atom = e_parts[0] if len(e_parts) == 1 else torch.cat(e_parts)
        return slot_j, slot_rij, e_atom, grad

    @torch.no_grad()
    def _pair_networks(self, geometry: dict, types: torch.Tensor, types64: torch.Tensor):
        """(e [n], g = ∂E/∂R [n, nnei, 4]) with each embedding input evaluated once.

        The two slots of a pair of same-type atoms, (i → j, r) and (j → i, −r), have the same
        input ŝ (Taichi ``pair_partners`` finds the second); the slot with the smaller flat
        index owns it. Taichi ``count_owned`` and ``store_rows`` number the owned inputs net by
        net and give every filled slot its row. The embedding nets run on the owned inputs
        only (about half the filled slots for water), in tangent mode
        (:func:`embedding_tangent_passes`), into a store of rows G and G' [U, M]; the slot-sum
        kernels give T = Σ_s R̂ᵀG, and after the fitting nets ∂E/∂R from ∂E/∂T, G and G'
        (see :meth:`_slot_sums`). No autograd.
        """
        from taichi_kernels.se_a import pair_partners
        from taichi_kernels.tabulate import count_owned, store_rows

        env, slot_j, type_counts = geometry["env"], geometry["slot_j"], geometry["type_counts"]
        n, nnei = slot_j.shape
        n_nets = len(self.net.embeddings)
        partner = self._buffer("partner", (n, nnei), torch.int32)
        pair_partners(slot_j, geometry["slot_key"], types, type_counts, self._sec, partner)
        owned = self._buffer("owned", (n_nets, n), torch.int32).zero_()
        count_owned(partner, types, type_counts, self._sec, int(self._one_side), owned)
        flat_owned = owned.view(-1)
        first_row = torch.cumsum(flat_owned, 0, dtype=torch.int32).sub_(flat_owned)
        counts = owned.sum(dim=1).tolist()                   # rows per net, in net order
        rows = self._buffer("rows", (n, nnei), torch.int32)
        inputs = self._buffer("inputs", (sum(counts),), self.dtype)
        store_rows(env, self._davg, self._inv_dstd, partner, types, type_counts, self._sec,
                   int(self._one_side), first_row.view(n_nets, n), rows, inputs,
                   _real(self.dtype))
        store = self._buffer("store", (2, inputs.shape[0], self._empty_terms.shape[-1]),
                             self.dtype)                                # G, G' [2, U, M]
        lo = 0
        for k, emb in enumerate(self.net.embeddings):
            hi = lo + counts[k]
            if counts[k]:
                embedding_tangent_passes(inputs[lo:hi], self._emb_kinds[k],
                                         layer_params(emb), store[:, lo:hi],
                                         workspace=self._buffer)
            lo = hi
        return self._slot_sums(geometry, types, types64, store[0].reshape(-1), rows,
                               tangents=store[1].reshape(-1))

    def _tabulated(self, geometry: dict, types: torch.Tensor, types64: torch.Tensor):
        """(e [n], g = ∂E/∂R [n, nnei, 4] float64) with the tabulated embedding nets, or
        (None, None) if an input lies off the table (the caller then runs the networks)."""
        no_rows = self._buffer("no_rows", (1, 1), torch.int32)
        return self._slot_sums(geometry, types, types64, self.table["coeffs"].reshape(-1),
                               no_rows, self.table)

    def _slot_sums(self, geometry: dict, types: torch.Tensor, types64: torch.Tensor,
                   values: torch.Tensor, rows: torch.Tensor, table: dict | None = None,
                   tangents: torch.Tensor | None = None):
        """(e [n], g = ∂E/∂R [n, nnei, 4] float64) by the slot-sum kernels around the fitting
        nets, G from ``table`` (flat coefficients ``values``; (None, None) if an input lies
        off it) or, without a table, from the stores ``values`` of G and ``tangents`` of G'
        (flat [U, M]) read at rows ``rows`` [n, nnei].

        T is summed by a Taichi kernel straight from the raw R of the filled slots
        (min(type_counts, sel) per block, stored first); every empty slot of net k adds the
        same r̂ᵀG(r̂₀), a constant the kernel adds per block. The fitting part runs in chunks
        of atoms (its temporaries stay small); the backward kernel then turns ∂E/∂T into ∂E/∂R.
        """
        from taichi_kernels.tabulate import embedded_backward, embedded_forward
        env, type_counts = geometry["env"], geometry["type_counts"]
        n, ntypes = env.shape[0], len(self.sel)
        if self.compact:
            filled = torch.minimum(type_counts, self._sel).contiguous()      # [n, ntypes]
        else:   # per-slot statistics: empty slots differ, the kernels visit every slot
            filled = self._sel.expand(n, -1).contiguous()
        n_channels = self._empty_terms.shape[-1]
        real = _real(self.dtype)
        on_cpu = self.device.type == "cpu"
        stored = table is None
        grid = (0, 0.0, 0.0) if stored else (table["coeffs"].shape[1], table["lo"], table["step"])
        kernel_args = (env, self._davg, self._inv_dstd, types, self._slot_block, self._slot_rank,
                       filled, values, rows, *grid, ntypes, int(self._one_side))
        t_mat = self._buffer("t_mat", (n, 4, n_channels), self.dtype)
        outside = self._buffer("outside", (1,), torch.int32).zero_()
        embedded_forward(*kernel_args, self._sel, self._empty_flat, t_mat, outside,
                         n_channels if on_cpu else 0, real, stored)
        n_outside = int(outside[0])
        if n_outside:
            self.table_misses += 1
            if not self._warned_table:
                self._warned_table = True
                warnings.warn(f"{self.path}: {n_outside} inputs lie outside the compression "
                              f"table [{table['lo']:.3f}, {table['hi']:.3f}]; such "
                              "force calls use the uncompressed network", RuntimeWarning,
                              stacklevel=3)
            return None, None
        e_atom, grad_t = self._fitting_in_chunks(t_mat, types64)
        grad = self._buffer("env_grad_kernel", tuple(env.shape), torch.float64)
        embedded_backward(*kernel_args, values if tangents is None else tangents, grad_t, grad,
                          real, stored)
        return e_atom, grad

    def _fitting_in_chunks(self, t_mat: torch.Tensor, types64: torch.Tensor):
        """:meth:`_fitting_gradient` over chunks of ≤ FIT_CHUNK_ATOMS atoms on the CPU (the
        sweeps' temporaries stay small; 12,288 atoms in one piece ran 3× slower per atom)."""
        n = t_mat.shape[0]
        grad_t = self._buffer("grad_t", tuple(t_mat.shape), t_mat.dtype)
        e_parts = []
        chunk = FIT_CHUNK_ATOMS if self.device.type == "cpu" else n
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            e_chunk, grad_t[lo:hi] = self._fitting_gradient(t_mat[lo:hi], types64[lo:hi])
            e_parts.append(e_chunk)
        return (e_parts[0] if len(e_parts) == 1 else torch.cat(e_parts)), grad_t

    def _fitting_gradient(self, t_mat: torch.Tensor, types64: torch.Tensor):
        """(e [n] eV, ∂E/∂T [n, 4, M]) from T = Σ_slots R̂ᵀG [n, 4, M] (not yet divided by K).

        With S = T/K, D = SᵀS< and A = ∂e/∂D [M, M2] per atom, ∂E/∂S = S<Aᵀ + [SA | 0] and
        ∂E/∂T = (∂E/∂S)/K. Per centre type the atoms' S are gathered (not D, 4× larger), and
        (e, A) of its tanh fitting net come from its forward and reverse sweeps
        (:mod:`dpengine.model.fitting_sweep`, no autograd graph: ~10% of a compressed force
        call saved); other fitting nets go through autograd."""
        n, m2, k = t_mat.shape[0], self.net.axis_neuron, float(self.nnei)
        s = t_mat / k
        energy = torch.empty(n, dtype=s.dtype, device=s.device)
        grad_s = torch.empty_like(s)
        for t, fit in enumerate(self.net.fittings):
            idx = torch.nonzero(types64 == t).squeeze(1)
            if idx.numel() == 0:
                continue
            s_t = s.index_select(0, idx)
            d_t = symmetric_descriptor(s_t, m2)
            kinds = self._fit_kinds[t]
            if kinds is not None:
                with torch.no_grad():
                    e_t, a_t, _ = fitting_sweeps(d_t, kinds, *layer_params(fit))
            else:
                d_t.requires_grad_(True)
                with torch.enable_grad():
                    e_t = fit(d_t).squeeze(1)
                    (a_t,) = torch.autograd.grad(e_t.sum(), d_t)
            g_t = axis_product(s_t, a_t.view(-1, s.shape[2], m2))
            energy[idx] = e_t.detach() + self.net.energy_bias[t]
            grad_s.index_copy_(0, idx, g_t)
        return energy, grad_s.div_(k)

    def _check_overflow(self, type_counts: torch.Tensor) -> None:
        over = type_counts > self._sel
        self.sel_overflow = int(over.any(dim=1).sum())
        self.max_neighbors = type_counts.amax(dim=0).tolist() if len(type_counts) else []
        if self.sel_overflow and not self._warned_overflow:
            self._warned_overflow = True
            detail = ", ".join(f"{name}: {m} > sel {s}" for name, m, s in
                               zip(self.type_map, self.max_neighbors, self.sel) if m > s)
            warnings.warn(f"{self.path}: {self.sel_overflow} atoms have more neighbours than the "
                          f"model's sel ({detail}); {SEL_CAP_RULE}. "
                          "The thermo log counts such atoms in its sel_overflow column.",
                          RuntimeWarning, stacklevel=2)
