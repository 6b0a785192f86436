"""The plain-torch reference path of the Deep Potential: autograd through the geometry.

Used by the tests (to hold the Taichi path to it in float64) and by training. The
neighbour slots come from a brute-force search (``neighbor_slots``); everything after the
integer slot assignment is differentiable torch:

    r_ij = x_j − x_i + n_ij · box                                   [N, nnei, 3] Å
    s(r) = sw(r)/r,  sw = 1 (r < r_s);  u³(−6u² + 15u − 10) + 1 (r_s ≤ r < r_c);  0 beyond,
           u = (r − r_s)/(r_c − r_s)
    R_ij = (s, s·x/r, s·y/r, s·z/r)                                  [N, nnei, 4]
    F_i = −∂E/∂x_i;   W = −Σ_ij r_ij ⊗ ∂E/∂r_ij                      eV/Å, eV
"""
import itertools

import numpy as np
import torch


def image_range(box: np.ndarray, cutoff: float) -> list[int]:
    """How many periodic images along each cell vector can hold a neighbour within cutoff."""
    volume = abs(np.linalg.det(box))
    widths = [volume / np.linalg.norm(np.cross(box[(d + 1) % 3], box[(d + 2) % 3])) for d in range(3)]
    return [int(np.ceil(cutoff / w)) + 1 for w in widths]


def neighbor_slots(positions: np.ndarray, box: np.ndarray | None, types: np.ndarray,
                   rcut: float, sel: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brute-force se_e2_a slot assignment, DeePMD-kit's rule.

    Every (j, image) within ``rcut`` of atom i, sorted by distance; of the nearest Σ sel
    of them, the nearest ``sel[t]`` of each type are kept (DeePMD-kit v3). Returns slot_j
    int64 [N, nnei] (−1 = empty), slot_images float64 [N, nnei, 3] (integer image vectors
    n) and the count of neighbours found per (atom, type) int64 [N, ntypes] (to detect sel
    overflow).
    """
    positions = np.asarray(positions, dtype=np.float64)
    n = len(positions)
    sec = np.concatenate([[0], np.cumsum(sel)])
    slot_j = -np.ones((n, sec[-1]), dtype=np.int64)
    slot_images = np.zeros((n, sec[-1], 3))
    counts = np.zeros((n, len(sel)), dtype=np.int64)
    if box is None:
        images = np.zeros((1, 3))
        shifts = np.zeros((1, 3))
    else:
        box = np.asarray(box, dtype=np.float64)
        # fold every atom into the cell first; the fold is part of its image vector
        frac = positions @ np.linalg.inv(box)
        fold = np.floor(frac)
        rng = image_range(box, rcut)
        images = np.array(list(itertools.product(*[range(-k, k + 1) for k in rng])), dtype=float)
        shifts = images @ box
    for i in range(n):
        if box is None:
            cand_j = np.arange(n)
            cand_n = np.zeros((n, 3))
            d = positions - positions[i]
        else:
            # r_ij = (x_j − fold_j·box) − (x_i − fold_i·box) + m·box, so n = m − fold_j + fold_i
            base = positions - fold @ box - (positions[i] - fold[i] @ box)
            d = (base[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
            cand_j = np.tile(np.arange(n), len(images))
            cand_n = (images[:, None, :] - fold[None, :, :] + fold[i]).reshape(-1, 3)
        r = np.linalg.norm(d, axis=1)
        keep = (r < rcut) & ~((cand_j == i) & (r == 0.0))
        order = np.argsort(r[keep], kind="stable")
        js, ns = cand_j[keep][order], cand_n[keep][order]
        for t in range(len(sel)):
            counts[i, t] = (types[js] == t).sum()
        js, ns = js[:sec[-1]], ns[:sec[-1]]
        for t in range(len(sel)):
            of_t = types[js] == t
            m = min(of_t.sum(), sel[t])
            slot_j[i, sec[t]:sec[t] + m] = js[of_t][:m]
            slot_images[i, sec[t]:sec[t] + m] = ns[of_t][:m]
    return slot_j, slot_images, counts


def env_matrix(rij: torch.Tensor, mask: torch.Tensor, rcut: float, rcut_smth: float) -> torch.Tensor:
    """Raw se_e2_a environment matrix [.., 4] from displacement vectors rij [.., 3].

    ``mask`` (bool, rij.shape[:-1]) marks real neighbours; empty slots give 0.
    """
    length = torch.linalg.norm(rij, dim=-1, keepdim=True)
    length = torch.where(mask.unsqueeze(-1), length, torch.ones_like(length))
    u = ((length - rcut_smth) / (rcut - rcut_smth)).clamp(0.0, 1.0)
    sw = u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0
    sw = torch.where(length < rcut, sw, torch.zeros_like(sw)) * mask.unsqueeze(-1)
    return torch.cat([sw / length, sw * rij / (length * length)], dim=-1)


def evaluate_reference(net, positions, box, types, create_graph: bool = False,
                       slots: tuple | None = None) -> dict:
    """Energy, forces, virial and atomic energies by autograd through the geometry.

    positions float64 [N, 3] Å (torch or numpy), box [3, 3] (rows = cell vectors) or None,
    types int [N]. ``net`` is a ``DeepPotSE`` (scripted or not). ``slots`` may pass a
    precomputed ``neighbor_slots`` result. Returns torch tensors in the network's dtype
    (energy scalar eV, forces [N, 3] eV/Å, virial [3, 3] eV, atom_energy [N] eV).
    """
    dtype = net.davg.dtype
    device = net.davg.device
    pos = torch.as_tensor(positions, dtype=torch.float64)
    types_t = torch.as_tensor(np.asarray(types), dtype=torch.int64, device=device)
    box_np = None if box is None else np.asarray(torch.as_tensor(box, dtype=torch.float64).cpu())
    if slots is None:
        slots = neighbor_slots(pos.detach().cpu().numpy(), box_np, types_t.cpu().numpy(),
                               float(net.rcut), list(net.sel))
    slot_j, slot_images, _ = slots
    slot_j = torch.as_tensor(slot_j, device=device)
    mask = slot_j >= 0
    j = slot_j.clamp(min=0)
    pos = pos.to(device=device, dtype=dtype)
    shift = torch.zeros(slot_images.shape, dtype=dtype, device=device)
    if box is not None:
        shift = torch.as_tensor(slot_images, dtype=dtype, device=device) @ torch.as_tensor(
            box_np, dtype=dtype, device=device)
    rij = (pos[j] - pos[:, None, :] + shift) * mask.unsqueeze(-1)
    rij = rij.detach().requires_grad_(True)
    env = env_matrix(rij, mask, float(net.rcut), float(net.rcut_smth))
    atom_energy = net(env, types_t)
    energy = atom_energy.sum()
    (grad,) = torch.autograd.grad(energy, rij, create_graph=create_graph)
    grad = grad * mask.unsqueeze(-1)
    # x_i enters every r_ij with −1, x_j with +1: F = −∂E/∂x
    forces = grad.sum(dim=1)
    forces = forces.index_add(0, j.reshape(-1), -grad.reshape(-1, 3))
    virial = -torch.einsum("nka,nkb->ab", rij, grad)
    return dict(energy=energy, forces=forces, virial=virial, atom_energy=atom_energy)
