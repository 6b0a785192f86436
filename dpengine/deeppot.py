"""The Deep Potential (se_e2_a) on the fast path: Taichi geometry, TorchScript networks.

One force call:
  1. ``build_env`` (Taichi): Verlet list → slots, r_ij and the raw environment matrix R.
  2. networks (TorchScript, float64 or float32): atomic energies e_i(R), and
     g = ∂E/∂R by torch autograd.
  3. ``assemble_forces`` (Taichi): F = −Σ gᵀ ∂R/∂r, W = −Σ r ⊗ gᵀ ∂R/∂r.
Geometry and force assembly stay in float64 whatever the network precision.
"""
import warnings

import torch

from dpengine.backend import init_taichi
from dpengine.model.io import eager_copy, load_network
from dpengine.model.network import symmetric_descriptor
from dpengine.potential import PotentialResult

PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
CPU_CHUNK_ROWS = 32768   # neighbour rows per pass through the uncompressed networks (CPU)


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
        self.dtype = PRECISIONS[precision]
        self.path = str(path)
        scripted, self.metadata = load_network(path, str(self.device), self.dtype)
        self.net = eager_copy(scripted, self.metadata) or scripted
        self.table = self.metadata.pop("compression", None)  # compressed embedding nets
        if self.table is not None:
            self.metadata["compression"] = {k: v for k, v in self.table.items() if k != "coeffs"}
            # file layout [net, interval, channel, power] → the kernels' [net, interval, power,
            # channel] (channels contiguous: taichi_kernels.tabulate), in the model's precision
            # (the kernels evaluate G and sum T in it)
            self.table["coeffs"] = (self.table["coeffs"].permute(0, 1, 3, 2)
                                    .to(self.dtype).contiguous())
            self._empty_terms = self.net.empty_slot_terms().detach()
        self.table_misses = 0
        self._warned_table = False
        self._one_side = bool(self.metadata["type_one_side"])
        if self.table is not None:
            self.table["_outside"] = torch.zeros(1, dtype=torch.int32, device=self.device)
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
        self.sel_overflow = 0
        self.max_neighbors = [0] * len(self.sel)
        self._warned_overflow = False
        self._buffers: dict[str, torch.Tensor] = {}

    def _block_uniform(self, stat: torch.Tensor) -> bool:
        for t in range(len(self.sel)):
            block = stat[:, int(self._sec[t]):int(self._sec[t + 1])]
            if block.numel() and not torch.equal(block, block[:, :1].expand_as(block)):
                return False
        return True

    def _buffer(self, name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        buf = self._buffers.get(name)
        if buf is None or tuple(buf.shape) != shape:
            buf = torch.empty(shape, dtype=dtype, device=self.device)
            self._buffers[name] = buf
        return buf

    def environment(self, positions, box, types, nlist) -> dict:
        """Slots and raw environment matrix of every atom (Taichi ``build_env``).

        Returns views of internal buffers (valid until the next call): ``slot_j``
        int32 [N, nnei] (−1 empty), ``slot_rij`` float64 [N, nnei, 3] Å, ``env`` float64
        [N, nnei, 4], in DeePMD-kit's layout (blocks of sel[t] slots per neighbour type),
        and ``type_counts`` int32 [N, ntypes]. Updates ``sel_overflow``/``max_neighbors``.
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
        return dict(slot_j=slot_j, slot_rij=slot_rij, env=env, type_counts=type_counts)

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
        width = slot_j.shape[1]
        forces = self._buffer("forces", (n, 3), torch.float64)
        pair_grad = self._buffer("pair_grad", (n, width, 3), torch.float64)
        atom_virial = self._buffer("atom_virial", (n, 3, 3), torch.float64)
        types64 = types.to(torch.int64)
        # The networks of atom i see only its own rows, so atoms can go through them in
        # chunks: on the CPU the uncompressed embedding nets' activations of ≤ 32k rows stay
        # in cache (one 12,288-atom block would stream GBs through memory), which keeps the
        # cost per atom flat. Same arithmetic per atom. (The compressed path stores no
        # activations per row; chunks only cost it parallelism: measured 1.5× slower.)
        chunk = n
        if self.table is None and self.device.type == "cpu":
            n_chunks = -(-(n * width) // CPU_CHUNK_ROWS)
            chunk = max(1, -(-n // max(n_chunks, 1)))           # balanced chunks
        e_parts, grad = [], None
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            env_in = env[lo:hi].detach().to(self.dtype).requires_grad_(True)
            with torch.enable_grad():
                e_chunk = self._atom_energies(env_in, types64[lo:hi], widths,
                                              geometry["type_counts"][lo:hi])
                (g,) = torch.autograd.grad(e_chunk.sum(), env_in)
            if hi - lo == n:
                grad = g
            else:
                if grad is None:
                    grad = self._buffer("env_grad", (n, width, 4), self.dtype)
                grad[lo:hi] = g
            e_parts.append(e_chunk.detach())
        e_atom = e_parts[0] if len(e_parts) == 1 else torch.cat(e_parts)
        assemble_forces(slot_j, slot_rij, grad.contiguous(), self.cutoff, self.rcut_smth,
                        pair_grad, forces, atom_virial, self.device.type == "cpu")
        return PotentialResult(e_atom.sum().to(torch.float64), forces.clone(),
                               atom_virial.sum(dim=0),
                               e_atom.to(torch.float64) if atom_energy else None)

    def _atom_energies(self, env, types, widths, type_counts):
        """Atomic energies [n] (model precision) of rows env [n, Σ widths, 4], differentiable
        in env; type_counts [n, ntypes] int32: neighbours of each type inside r_c."""
        if self.table is not None:
            e_atom = self._compressed_energy(env, types, widths, type_counts)
            if e_atom is not None:
                return e_atom
        if self._has_compact:
            return self.net.forward_compact(env, types, widths)
        return self.net(env, types)

    def _compressed_energy(self, env, types, widths, type_counts):
        """Atomic energies with the tabulated embedding (None if an input is off the table).

        The kernels visit only the filled slots (min(type_counts, sel) per block, stored
        first); every empty slot of net k adds the same r̂ᵀG(r̂₀), added here as a constant.
        """
        key = ("blocks",) + tuple(widths)
        if key not in self._compact_cache:
            blocks = [t for t, w in enumerate(widths) for _ in range(w)]
            ranks = [r for w in widths for r in range(w)]
            self._compact_cache[key] = (
                torch.tensor(blocks, dtype=torch.int32, device=self.device),
                torch.tensor(ranks, dtype=torch.int32, device=self.device))
        slot_block, slot_rank = self._compact_cache[key]
        if self.compact:
            filled = torch.minimum(type_counts, self._sel)                   # [n, ntypes]
        else:   # per-slot statistics: empty slots differ, the kernels visit every slot
            filled = self._sel.expand(type_counts.shape[0], -1)
        index = self._compact_index(widths)
        davg, dstd = self.net.davg, self.net.dstd
        if index is not None:
            davg, dstd = davg.index_select(1, index), dstd.index_select(1, index)
        env_hat = (env - davg[types]) / dstd[types]
        types32 = types.to(torch.int32)
        t_mat = _Tabulated.apply(env_hat, types32, slot_block, slot_rank, filled.contiguous(),
                                 self.table, self._one_side)
        outside = int(self.table["_outside"][0])
        if outside:
            self.table_misses += 1
            if not self._warned_table:
                self._warned_table = True
                warnings.warn(f"{self.path}: {outside} inputs lie outside the compression table "
                              f"[{self.table['lo']:.3f}, {self.table['hi']:.3f}]; such force calls "
                              "use the uncompressed network", RuntimeWarning, stacklevel=3)
            return None
        # the empty slots, in the compact blocks or left out of them: a constant per slot
        ntypes = len(self.sel)
        empty = (self._sel - filled).to(env.dtype)                           # [n, ntypes]
        for k in range(self._empty_terms.shape[0]):
            t_j = k if self._one_side else k // ntypes
            term = self._empty_terms[k].to(env.dtype)                         # [ntypes, 4, M]
            if self._one_side:
                t_mat = t_mat + empty[:, t_j, None, None] * term[types]
            else:
                mask = (types == k % ntypes).to(env.dtype)
                t_mat = t_mat + (empty[:, t_j] * mask)[:, None, None] * term[k % ntypes]
        d = symmetric_descriptor(t_mat / self.nnei, self.net.axis_neuron)
        return self.net.fitting_energy(d, types)

    def _check_overflow(self, type_counts: torch.Tensor) -> None:
        over = type_counts > self._sel
        self.sel_overflow = int(over.any(dim=1).sum())
        self.max_neighbors = type_counts.max(dim=0).values.tolist() if len(type_counts) else []
        if self.sel_overflow and not self._warned_overflow:
            self._warned_overflow = True
            detail = ", ".join(f"{name}: {m} > sel {s}" for name, m, s in
                               zip(self.type_map, self.max_neighbors, self.sel) if m > s)
            warnings.warn(f"{self.path}: {self.sel_overflow} atoms have more neighbours than the "
                          f"model's sel ({detail}); the nearest are kept, as DeePMD-kit does. "
                          "The thermo log counts such atoms in its sel_overflow column.",
                          RuntimeWarning, stacklevel=2)


class _Tabulated(torch.autograd.Function):
    """T = Σ_s R̂ᵀ G(R̂₀) with tabulated G (Taichi forward and backward kernels)."""

    @staticmethod
    def forward(ctx, env_hat, types, slot_block, slot_rank, filled, table, one_side):
        from taichi_kernels.tabulate import tabulated_forward
        coeffs = table["coeffs"]
        env_hat = env_hat.detach().contiguous()
        n_channels = coeffs.shape[3]
        t_mat = torch.empty(env_hat.shape[0], 4, n_channels, dtype=env_hat.dtype,
                            device=env_hat.device)
        outside = table["_outside"]
        outside.zero_()
        tabulated_forward(env_hat, types, slot_block, slot_rank, filled, coeffs, table["lo"],
                          table["step"], ntypes_of(coeffs, one_side), int(one_side), t_mat,
                          outside, n_channels if env_hat.device.type == "cpu" else 0,
                          _real(env_hat.dtype))
        ctx.save_for_backward(env_hat, types, slot_block, slot_rank, filled)
        ctx.table, ctx.one_side = table, one_side
        return t_mat

    @staticmethod
    def backward(ctx, grad_t):
        from taichi_kernels.tabulate import tabulated_backward
        env_hat, types, slot_block, slot_rank, filled = ctx.saved_tensors
        coeffs = ctx.table["coeffs"]
        grad_env = torch.empty_like(env_hat)
        tabulated_backward(env_hat, types, slot_block, slot_rank, filled, coeffs,
                           ctx.table["lo"], ctx.table["step"], ntypes_of(coeffs, ctx.one_side),
                           int(ctx.one_side), grad_t.contiguous(), grad_env, _real(env_hat.dtype))
        return grad_env, None, None, None, None, None, None


def _real(dtype: torch.dtype):
    """The Taichi float type of a torch dtype (the tabulated kernels compute in it)."""
    import taichi as ti
    return ti.f32 if dtype == torch.float32 else ti.f64


def ntypes_of(coeffs: torch.Tensor, one_side: bool) -> int:
    """Number of atom types from the number of tabulated nets (ntypes or ntypes²)."""
    n = coeffs.shape[0]
    return n if one_side else int(round(n ** 0.5))
