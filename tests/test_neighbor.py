"""Tests of dpengine.neighbor.NeighborList against a brute-force numpy reference.

Comparison is tolerance-aware: with ``r = cutoff + skin`` the list must contain every
pair of the brute-force set at ``r - TOL`` and nothing outside the set at ``r + TOL``,
so pairs within TOL of the list radius (where rounding may decide) are not judged.
"""
from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dpengine.neighbor import NeighborList

TOL = 1e-9
WATER = Path(os.environ.get("DPENGINE_WATER_SET", "/work/shared/data/water/data_0/set.000"))


# ----------------------------------------------------------------------------- reference
def brute_force_neighbors(positions, box, cutoff) -> set[tuple[int, int, tuple[int, int, int]]]:
    """Every (i, j, n) with |x_j - x_i + n @ box| < cutoff, j == i allowed for n != 0.

    positions : [N, 3] Å (unwrapped allowed); box : [3, 3] rows = cell vectors, or None.
    For each pair the fractional difference ds = (x_j - x_i) @ inv(box) is computed and all
    n with |ds_d + n_d| <= cutoff / w_d (w_d the perpendicular width) are enumerated.
    """
    x = np.asarray(positions, dtype=np.float64)
    n_atoms = len(x)
    out: set[tuple[int, int, tuple[int, int, int]]] = set()
    if box is None:
        d = np.linalg.norm(x[None, :, :] - x[:, None, :], axis=-1)
        for i, j in zip(*np.nonzero(d < cutoff)):
            if i != j:
                out.add((int(i), int(j), (0, 0, 0)))
        return out
    h = np.asarray(box, dtype=np.float64)
    inv = np.linalg.inv(h)
    reach = cutoff * np.linalg.norm(inv, axis=0)               # cutoff / w_d
    s = x @ inv
    for i in range(n_atoms):
        ds = s - s[i]                                          # [N, 3]
        lo = np.ceil(-ds - reach).astype(int)
        hi = np.floor(-ds + reach).astype(int)
        k = int(np.max(hi - lo)) + 1
        for off in itertools.product(range(k), repeat=3):
            n = lo + np.array(off)                             # [N, 3] candidate images
            ok = np.all(n <= hi, axis=1)
            r = x - x[i] + n @ h
            dist = np.linalg.norm(r, axis=1)
            for j in np.nonzero(ok & (dist < cutoff))[0]:
                nj = tuple(int(v) for v in n[j])
                if j != i or nj != (0, 0, 0):
                    out.add((i, int(j), nj))
    return out


def list_as_set(nl: NeighborList) -> set[tuple[int, int, tuple[int, int, int]]]:
    """The list as a set; also checks rows have no duplicates and padding is -1."""
    nbr = nl.neighbors.cpu().numpy()
    img = nl.images.cpu().numpy()
    cnt = nl.counts.cpu().numpy()
    assert nbr.shape[1] == nl.capacity and img.shape == nbr.shape + (3,)
    out = set()
    total = 0
    for i in range(len(cnt)):
        c = int(cnt[i])
        assert np.all(nbr[i, c:] == -1) and np.all(img[i, c:] == 0)
        assert np.all(nbr[i, :c] >= 0)
        for q in range(c):
            out.add((i, int(nbr[i, q]), tuple(int(v) for v in img[i, q])))
        total += c
    assert total == len(out), "duplicate entries"
    return out


def assert_matches(nl, positions, box, radius):
    got = list_as_set(nl)
    inner = brute_force_neighbors(positions, box, radius - TOL)
    outer = brute_force_neighbors(positions, box, radius + TOL)
    missing = inner - got
    extra = got - outer
    assert not missing, f"{len(missing)} missing, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} extra, e.g. {sorted(extra)[:5]}"
    return got


def build(positions, box, cutoff, skin, capacity=None, cells=2):
    nl = NeighborList(cutoff, skin, capacity=capacity, cells_per_radius=cells)
    pos = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
    b = None if box is None else torch.as_tensor(np.asarray(box), dtype=torch.float64)
    assert nl.update(pos, b) is True
    return nl


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def water():
    if not (WATER / "coord.npy").exists():
        pytest.skip(f"water data not found at {WATER}")
    coord = np.load(WATER / "coord.npy").reshape(-1, 192, 3).astype(np.float64)
    box = np.load(WATER / "box.npy").reshape(-1, 3, 3).astype(np.float64)
    return coord, box


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("cells", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_orthorhombic_random(seed, cells):
    rng = np.random.default_rng(seed)
    lengths = rng.uniform(9.0, 26.0, size=3)
    box = np.diag(lengths)
    n = int(rng.integers(40, 160))
    x = rng.uniform(0, 1, size=(n, 3)) @ box
    cutoff, skin = rng.uniform(2.5, 5.0), rng.uniform(0.0, 1.5)
    nl = build(x, box, cutoff, skin, cells=cells)
    assert_matches(nl, x, box, cutoff + skin)


@pytest.mark.parametrize("cells", [1, 2, 3])
def test_orthorhombic_multicell(cells):
    """A box wide enough for several cells in every direction (k_d = 1 for one cell per r_list)."""
    rng = np.random.default_rng(11)
    box = np.diag([21.0, 17.5, 30.0])
    x = rng.uniform(0, 1, size=(1000, 3)) @ box
    nl = build(x, box, 3.0, 0.5, cells=cells)
    assert min(nl.grid) >= 4 and (nl.reach == (1, 1, 1)) == (cells == 1)
    assert_matches(nl, x, box, 3.5)


@pytest.mark.parametrize("cells", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_triclinic_lower_triangular(seed, cells):
    rng = np.random.default_rng(100 + seed)
    a, b, c = rng.uniform(10.0, 20.0, size=3)
    box = np.array([[a, 0, 0],
                    [rng.uniform(-0.9, 0.9) * a, b, 0],
                    [rng.uniform(-0.9, 0.9) * a, rng.uniform(-0.9, 0.9) * b, c]])
    n = int(rng.integers(50, 150))
    x = rng.uniform(0, 1, size=(n, 3)) @ box
    nl = build(x, box, 4.0, 1.0, cells=cells)
    assert_matches(nl, x, box, 5.0)


@pytest.mark.parametrize("cells", [1, 2])
@pytest.mark.parametrize("seed", range(3))
def test_triclinic_rotated_general(seed, cells):
    """Box = (tilted cell) @ R^T: a general 3x3 matrix, not lower-triangular."""
    rng = np.random.default_rng(200 + seed)
    base = np.array([[13.0, 0, 0], [5.5, 12.0, 0], [-4.0, 3.5, 14.0]])
    box = base @ random_rotation(rng).T
    assert abs(box[0, 1]) > 1e-3 and abs(box[0, 2]) > 1e-3 and abs(box[1, 2]) > 1e-3
    x = rng.uniform(0, 1, size=(120, 3)) @ box
    nl = build(x, box, 4.5, 1.0, cells=cells)
    assert_matches(nl, x, box, 5.5)
    # rotation invariance: the same fractional coordinates in the unrotated cell
    x0 = rng.uniform(0, 1, size=(120, 3))
    nl_a = build(x0 @ base, base, 4.5, 1.0)
    nl_b = build(x0 @ box, box, 4.5, 1.0)
    assert list_as_set(nl_a) == list_as_set(nl_b)


@pytest.mark.parametrize("box", [
    np.diag([3.1, 4.2, 5.3]),
    np.array([[3.0, 0, 0], [2.5, 3.5, 0], [-1.0, 1.5, 4.0]]),
    np.diag([20.0, 3.0, 20.0]),          # only one direction narrower than the cutoff
])
@pytest.mark.parametrize("cells", [1, 2])
def test_tiny_box_many_images(box, cells):
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, size=(4, 3)) @ box
    nl = build(x, box, 6.0, 1.0, cells=cells)
    got = assert_matches(nl, x, box, 7.0)
    assert any(i == j for i, j, _ in got), "self-images must be listed"
    assert max(nl.reach) >= 2


def test_single_atom_self_images():
    box = np.diag([2.0, 2.0, 2.0])
    nl = build(np.array([[0.3, 0.4, 0.5]]), box, 3.0, 0.9)
    got = assert_matches(nl, [[0.3, 0.4, 0.5]], box, 3.9)
    # images n with 2|n| < 3.9: |n|^2 < 3.8025 -> |n|^2 in {1, 2, 3}: 6 + 12 + 8 = 26
    assert len(got) == 26 and all(i == 0 and j == 0 for i, j, _ in got)


@pytest.mark.parametrize("cells", [1, 2])
@pytest.mark.parametrize("seed", range(3))
def test_open_boundaries(seed, cells):
    rng = np.random.default_rng(300 + seed)
    x = rng.normal(scale=6.0, size=(150, 3))
    nl = build(x, None, 3.5, 1.0, cells=cells)
    got = assert_matches(nl, x, None, 4.5)
    assert all(n == (0, 0, 0) for _, _, n in got)


def test_open_boundaries_flat_and_sparse():
    rng = np.random.default_rng(7)
    flat = np.c_[rng.uniform(0, 30, size=(80, 2)), np.zeros(80)]     # zero extent in z
    nl = build(flat, None, 4.0, 0.5)
    assert_matches(nl, flat, None, 4.5)
    sparse = rng.uniform(0, 2000.0, size=(30, 3))                     # dilute: cell cap
    sparse[:5] = sparse[0] + rng.normal(scale=1.0, size=(5, 3))
    nl = build(sparse, None, 4.0, 0.5)
    assert math.prod(nl.grid) <= 64
    assert_matches(nl, sparse, None, 4.5)


def test_unwrapped_positions():
    """Atoms several box lengths outside: same neighbours, images absorb the wraps."""
    rng = np.random.default_rng(9)
    box = np.array([[11.0, 0, 0], [3.0, 12.0, 0], [-2.0, 2.5, 10.5]])
    frac = rng.uniform(0, 1, size=(90, 3))
    x = frac @ box
    shifts = rng.integers(-5, 6, size=(90, 3))
    xu = x + shifts @ box
    nl_u = build(xu, box, 4.0, 1.0)
    got_u = assert_matches(nl_u, xu, box, 5.0)
    nl_w = build(x, box, 4.0, 1.0)
    got_w = list_as_set(nl_w)
    # the same pair vectors: (i, j, n_w) wrapped <-> (i, j, n_w + s_i - s_j) unwrapped
    mapped = {(i, j, tuple(np.array(n) + shifts[i] - shifts[j])) for i, j, n in got_w}
    assert {(i, j, tuple(np.array(n))) for i, j, n in got_u} == mapped
    r = nl_u.displacements(torch.tensor(xu), torch.tensor(box))
    d = r.norm(dim=-1)[nl_u.neighbors >= 0]
    assert d.max() < 5.0 + TOL and d.min() > 0


@pytest.mark.parametrize("cells", [1, 2])
@pytest.mark.parametrize("frame", [0, 37, 79])
def test_water(frame, cells):
    coord, box = water()
    x, h = coord[frame], box[frame]
    nl = build(x, h, 6.0, 2.0, cells=cells)
    assert nl.grid == ((1, 1, 1) if cells == 1 else (3, 3, 3))
    assert nl.reach == ((1, 1, 1) if cells == 1 else (2, 2, 2))
    assert nl.n_grows == 0                                 # density estimate suffices for a liquid
    got = assert_matches(nl, x, h, 8.0)
    assert not any(i == j for i, j, _ in got)              # 12.44 Å > 8 Å: no self-image
    # box < 2 (cutoff + skin): several images of one atom j are neighbours of the same i
    pairs = {}
    for i, j, _ in got:
        pairs[(i, j)] = pairs.get((i, j), 0) + 1
    assert max(pairs.values()) >= 2


def test_water_replicated_counts():
    """4x4x4 replica (12,288 atoms, 6^3 cells): each copy sees the original environment."""
    coord, box = water()
    x, h = coord[0], box[0]
    nl0 = build(x, h, 6.0, 2.0)
    reps = np.array(list(itertools.product(range(4), repeat=3)))
    xr = (x[None, :, :] + (reps @ h)[:, None, :]).reshape(-1, 3)
    nl = build(xr, 4 * h, 6.0, 2.0)
    assert nl.grid == (12, 12, 12)
    assert torch.equal(nl.counts.view(64, 192), nl0.counts.expand(64, 192))
    d = nl.displacements(torch.tensor(xr), torch.tensor(4 * h)).norm(dim=-1)
    assert d[nl.neighbors >= 0].max() < 8.0


# ----------------------------------------------------------------------------- behaviour
def test_rebuild_criterion():
    coord, box = water()
    x = torch.tensor(coord[0])
    h = torch.tensor(box[0])
    cutoff, skin = 6.0, 2.0
    nl = NeighborList(cutoff, skin)
    assert nl.update(x, h) and nl.n_builds == 1
    assert not nl.update(x, h)
    y = x.clone()
    y[5] += torch.tensor([0.6, -0.5, 0.3])                 # |d| = 0.83 < skin/2
    assert not nl.update(y, h) and nl.n_builds == 1
    y[5] = x[5] + torch.tensor([0.9, 0.5, 0.0])            # |d| = 1.03 > skin/2
    assert nl.update(y, h) and nl.n_builds == 2
    assert nl.update(y, h, force=True) and nl.n_builds == 3
    assert nl.update(y, h * 1.0001) and nl.n_builds == 4   # box changed
    assert nl.update(y[:-3], h * 1.0001)                   # N changed
    assert nl.update(y[:-3], None)                         # periodicity changed


def test_list_valid_between_builds():
    """After moves < skin/2 every pair within cutoff (current positions) is in the list."""
    coord, box = water()
    rng = np.random.default_rng(3)
    h = box[0]
    x0 = coord[0]
    cutoff, skin = 6.0, 2.0
    nl = NeighborList(cutoff, skin)
    nl.update(torch.tensor(x0), torch.tensor(h))
    step = rng.normal(size=x0.shape)
    step *= (0.999 * skin / 2) / np.linalg.norm(step, axis=1, keepdims=True)  # all move ~skin/2
    x1 = x0 + step
    assert not nl.update(torch.tensor(x1), torch.tensor(h))
    got = list_as_set(nl)
    need = brute_force_neighbors(x1, h, cutoff)
    assert need <= got
    # the pair vectors from current positions are within cutoff + skin
    d = nl.displacements(torch.tensor(x1), torch.tensor(h)).norm(dim=-1)
    assert d[nl.neighbors >= 0].max() < cutoff + 2 * skin


def test_capacity_growth():
    coord, box = water()
    x, h = coord[0], box[0]
    nl = build(x, h, 6.0, 2.0, capacity=3)
    assert nl.n_grows == 1 and nl.n_builds == 1
    true_max = int(nl.counts.max())
    assert nl.capacity == math.ceil(true_max * 1.2)
    assert_matches(nl, x, h, 8.0)
    ref = build(x, h, 6.0, 2.0)
    assert list_as_set(ref) == list_as_set(nl)


def test_capacity_estimate_and_growth_on_compression():
    rng = np.random.default_rng(4)
    box = np.diag([15.0, 15.0, 15.0])
    x = rng.uniform(0, 1, size=(300, 3)) @ box
    nl = NeighborList(3.0, 0.5)
    nl.update(torch.tensor(x), torch.tensor(box))
    grows, cap = nl.n_grows, nl.capacity
    assert cap >= int(nl.counts.max())
    xs, bs = 0.6 * x, 0.6 * box                            # compress: ~4.6x denser
    nl.update(torch.tensor(xs), torch.tensor(bs))
    assert nl.n_grows == grows + 1 and nl.capacity > cap
    assert_matches(nl, xs, bs, 3.5)


def test_deterministic_order():
    coord, box = water()
    x, h = torch.tensor(coord[1]), torch.tensor(box[1])
    a, b = NeighborList(6.0, 2.0), NeighborList(6.0, 2.0)
    a.update(x, h)
    b.update(x, h)
    a.update(x, h, force=True)
    assert torch.equal(a.neighbors, b.neighbors) and torch.equal(a.images, b.images)


def test_empty_and_input_checks():
    nl = NeighborList(3.0, 1.0)
    box = torch.eye(3, dtype=torch.float64) * 5
    assert nl.update(torch.zeros((0, 3), dtype=torch.float64), box)
    assert nl.neighbors.shape[0] == 0 and nl.counts.shape == (0,)
    with pytest.raises(ValueError):
        nl.update(torch.zeros((4, 3), dtype=torch.float32), None)
    bad = torch.zeros((4, 3), dtype=torch.float64)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError):
        nl.update(bad, box)
    with pytest.raises(ValueError):
        NeighborList(-1.0, 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    coord, box = water()
    x, h = torch.tensor(coord[2]), torch.tensor(box[2])
    cpu = NeighborList(6.0, 2.0)
    cpu.update(x, h)
    gpu = NeighborList(6.0, 2.0, device="cuda")
    gpu.update(x.cuda(), h.cuda())
    gpu.neighbors, gpu.images, gpu.counts = gpu.neighbors.cpu(), gpu.images.cpu(), gpu.counts.cpu()
    assert list_as_set(cpu) == list_as_set(gpu)
    y = x.cuda() + 0.1
    assert not gpu.update(y, h.cuda())
    assert gpu.update(y + 1.1, h.cuda())


def test_rebuild_reuses_buffers():
    """Rebuilds on the same arrays: every slot is rewritten, shrinking rows re-padded."""
    coord, box = water()
    nl = NeighborList(6.0, 2.0)
    for frame, scale in ((0, 1.0), (40, 1.0), (40, 1.08), (79, 1.0)):
        x, h = coord[frame] * scale, box[frame] * scale
        nl.neighbors.fill_(5)                  # a consumer may scribble on the outputs
        nl.images.fill_(9)
        nl.update(torch.tensor(x), torch.tensor(h), force=True)
        assert_matches(nl, x, h, 8.0)
    assert nl.n_grows == 0 and nl.n_builds == 4
