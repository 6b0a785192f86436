"""The Deep Potential against DeePMD-kit's own numbers, through both paths."""
import warnings

import numpy as np
import pytest
import torch

import dpengine
from dpengine.model.io import load_network, read_metadata
from dpengine.model.reference import evaluate_reference


def _rel(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-300)


def _assert_matches_deepmd(model, reference, frame):
    """Energy, forces, virial and atomic energies of fixture frame ``frame`` within 1e-10."""
    out = model.evaluate(reference["coord"][frame].reshape(-1, 3),
                         reference["box"][frame].reshape(3, 3), reference["atype"])
    assert abs(out["energy"] - reference["energy"][frame]) / abs(reference["energy"][frame]) < 1e-10
    assert _rel(out["forces"], reference["force"][frame]) < 1e-10
    assert _rel(out["virial"].reshape(9), reference["virial"][frame]) < 1e-10
    assert _rel(out["atom_energy"], reference["atom_energy"][frame]) < 1e-10


def test_import_metadata(water_model):
    meta = read_metadata(water_model)
    assert meta["type_map"] == ["O", "H"]
    assert meta["sel"] == [46, 92] and meta["rcut"] == 6.0 and meta["rcut_smth"] == 0.5
    assert meta["neuron"] == [25, 50, 100] and meta["axis_neuron"] == 16


@pytest.mark.parametrize("frame", range(5))
def test_taichi_path_matches_deepmd(water_model, reference, frame, device):
    _assert_matches_deepmd(dpengine.load_model(water_model, device=device), reference, frame)


@pytest.mark.parametrize("frame", [0, 4])
def test_reference_path_matches_deepmd(water_model, reference, frame):
    net, _ = load_network(water_model)
    out = evaluate_reference(net, reference["coord"][frame].reshape(-1, 3),
                             reference["box"][frame].reshape(3, 3), reference["atype"])
    assert abs(out["energy"].item() - reference["energy"][frame]) / abs(reference["energy"][frame]) < 1e-10
    assert _rel(out["forces"].detach(), reference["force"][frame]) < 1e-10
    assert _rel(out["virial"].detach().reshape(9), reference["virial"][frame]) < 1e-10
    assert _rel(out["atom_energy"].detach(), reference["atom_energy"][frame]) < 1e-10



@pytest.mark.parametrize("variant", ["variant_a", "variant_b"])
def test_other_deepmd_models_match_deepmd(tmp_path, device, variant):
    """DeePMD-kit models with other settings (tests/data/deepmd_variants/README.md: per-type
    embeddings, SiLU/ReLU6/GELU/softplus, separate embedding and fitting activations, three
    types, set_davg_zero, a sel far below the neighbour count) imported and evaluated by both
    paths give DeePMD-kit 3.2's own energies, forces, virials and atomic energies (1e-10)."""
    from pathlib import Path
    from dpengine.model.import_deepmd import import_deepmd
    folder = Path(__file__).parent / "data" / "deepmd_variants" / variant
    path = import_deepmd(folder / "frozen_model.pth", tmp_path / "m.pt")
    reference = dict(np.load(folder / "reference.npz"))
    net, _ = load_network(path)
    model = dpengine.load_model(path, device=device)
    for frame in range(len(reference["energy"])):
        pos, box = reference["coord"][frame].reshape(-1, 3), reference["box"][frame].reshape(3, 3)
        types = reference["atype"][frame]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*atoms have more neighbours", RuntimeWarning)
            out = model.evaluate(pos, box, types)
        ref = evaluate_reference(net, pos, box, types)
        for got in (out, {k: v.detach().numpy() for k, v in ref.items()}):
            assert abs(got["energy"] - reference["energy"][frame]) < 1e-10 * abs(reference["energy"][frame])
            assert _rel(got["forces"], reference["force"][frame].reshape(-1, 3)) < 1e-10
            assert _rel(got["virial"].reshape(9), reference["virial"][frame]) < 1e-10
            assert _rel(got["atom_energy"], reference["atom_energy"][frame]) < 1e-10


def test_fitting_activation_differs_from_embedding(tmp_path):
    """A model whose fitting nets use another activation than its embedding nets (GELU after
    tanh, as ``dpengine train`` and DeePMD-kit allow) is rebuilt layer by layer when
    loaded: the fast path equals the scripted network of the file."""
    from dpengine.model.io import save_model
    from dpengine.model.network import DeepPotSE
    torch.manual_seed(2)
    net = DeepPotSE(["O", "H"], [20, 40], 4.0, 1.0, [4, 8], 3, [10, 10], activation="tanh",
                    fitting_activation="gelu")
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.5)
    path = save_model(net, tmp_path / "m.pt")
    rng = np.random.default_rng(3)
    box = np.diag([7.0, 7.5, 8.0])
    pos, types = rng.uniform(0, 1, (30, 3)) @ box, rng.integers(0, 2, 30)
    out = dpengine.load_model(path).evaluate(pos, box, types)
    ref = evaluate_reference(load_network(path)[0], pos, box, types)
    assert abs(out["energy"] - ref["energy"].item()) < 1e-10
    assert np.abs(out["forces"] - ref["forces"].detach().numpy()).max() < 1e-10

def test_float32_close_to_float64(water_model, reference, device):
    pos, box, types = reference["coord"][0].reshape(-1, 3), reference["box"][0].reshape(3, 3), reference["atype"]
    e64 = dpengine.load_model(water_model, device=device).evaluate(pos, box, types)
    e32 = dpengine.load_model(water_model, device=device, precision="float32").evaluate(pos, box, types)
    # float32 network on float64 geometry: relative error of a few ulp(float32) per atom
    assert abs(e32["energy"] - e64["energy"]) / len(types) < 1e-4
    assert np.abs(e32["forces"] - e64["forces"]).max() < 1e-3
    assert _rel(e32["virial"], e64["virial"]) < 1e-3


@pytest.mark.parametrize("rows", [4000, 1000])
def test_cpu_atom_chunks_match_deepmd(water_model, reference, monkeypatch, rows):
    """The CPU runs the networks over atoms in chunks of ≤ CPU_CHUNK_ROWS neighbour rows
    (here forced to 6 or 26 chunks of the 192-atom frame): the same numbers as DeePMD-kit."""
    import dpengine.deeppot as deeppot
    monkeypatch.setattr(deeppot, "CPU_CHUNK_ROWS", rows)
    model = dpengine.load_model(water_model, device="cpu")
    for frame in (0, 3):
        _assert_matches_deepmd(model, reference, frame)


@pytest.mark.parametrize("type_one_side, slot_stats", [(False, "uniform"), (True, "per-slot")])
def test_random_model_matches_reference(tmp_path, device, type_one_side, slot_stats):
    """Taichi path == reference path for per-(centre, neighbour)-type embeddings, and for
    statistics that differ slot by slot (then slots are ordered by distance, DeePMD-kit's
    order, and the compact layout is off)."""
    from conftest import random_se_a_model
    per_slot = slot_stats == "per-slot"
    path = random_se_a_model(tmp_path / "m.pt", 0, type_one_side, davg_ramp=0.2 * per_slot,
                             dstd_ramp=0.3 * per_slot)
    rng = np.random.default_rng(1)
    box = np.diag([7.0, 7.5, 8.0]) + np.array([[0, 0, 0], [0.8, 0, 0], [-0.5, 0.6, 0]])
    pos = rng.uniform(0, 1, (40, 3)) @ box
    types = rng.integers(0, 2, 40)
    fast = dpengine.load_model(path, device=device).evaluate(pos, box, types)
    ref = evaluate_reference(load_network(path)[0], pos, box, types)
    assert abs(fast["energy"] - ref["energy"].item()) < 1e-10
    assert np.abs(fast["forces"] - ref["forces"].detach().numpy()).max() < 1e-10
    assert np.abs(fast["virial"] - ref["virial"].detach().numpy()).max() < 1e-10


@pytest.mark.parametrize("type_one_side", [False, True])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_pair_path_matches_autograd_path(tmp_path, monkeypatch, type_one_side, precision):
    """The pair path (each same-type pair's embedding input evaluated once, in tangent mode)
    == autograd through the nets on every slot. The box is shorter than 2 r_c, so atoms see
    their own images and two images of one neighbour; types are shuffled (the owners of a
    net's inputs are not a range); tiny sweeps put the two nets' rows in several chunks."""
    import dpengine.deeppot as deeppot
    import dpengine.model.embedding_tangent as sweep
    from conftest import random_se_a_model
    monkeypatch.setattr(sweep, "CPU_PASS_ROWS", 37)
    path = random_se_a_model(tmp_path / "m.pt", 3, type_one_side)
    rng = np.random.default_rng(5)
    box = np.diag([7.0, 7.5, 6.5]) + np.array([[0, 0, 0], [0.8, 0, 0], [-0.5, 0.6, 0]])
    pos = rng.uniform(0, 1, (48, 3)) @ box
    types = rng.integers(0, 2, 48)
    pair = dpengine.load_model(path, precision=precision)
    inputs = []
    passes = deeppot.embedding_tangent_passes
    monkeypatch.setattr(deeppot, "embedding_tangent_passes",
                        lambda x, *a, **k: inputs.append(x.numel()) or passes(x, *a, **k))
    out = pair.evaluate(pos, box, types)
    plain = dpengine.load_model(path, precision=precision)
    plain.potential._emb_kinds = None
    ref = plain.evaluate(pos, box, types)
    filled = sum(min(m, s) for m, s in zip(pair.potential.max_neighbors, pair.potential.sel))
    assert inputs and 0 < sum(inputs) < len(pos) * filled       # fewer inputs than slots
    tol = 1e-10 if precision == "float64" else 1e-4
    scale = max(1.0, np.abs(ref["forces"]).max())
    assert abs(out["energy"] - ref["energy"]) < tol * max(1.0, abs(ref["energy"]))
    assert np.abs(out["forces"] - ref["forces"]).max() < tol * scale
    assert np.abs(out["virial"] - ref["virial"]).max() < tol * max(1.0, np.abs(ref["virial"]).max())


@pytest.mark.parametrize("type_one_side", [True, False])
def test_pair_path_with_sel_overflow(tmp_path, type_one_side):
    """More neighbours than sel in every block (DeePMD-kit v3's cap applies): some pairs
    keep only one of their two slots; the pair path still equals autograd on every slot."""
    from conftest import random_se_a_model
    path = random_se_a_model(tmp_path / "m.pt", 3, type_one_side)
    rng = np.random.default_rng(7)
    box = np.diag([7.0, 7.5, 6.5])
    pos = rng.uniform(0, 1, (110, 3)) @ box
    types = rng.integers(0, 2, 110)
    pair = dpengine.load_model(path)
    with pytest.warns(RuntimeWarning, match="more neighbours than"):
        out = pair.evaluate(pos, box, types)
    assert pair.potential.sel_overflow > 0
    plain = dpengine.load_model(path)
    plain.potential._emb_kinds = None
    with pytest.warns(RuntimeWarning, match="more neighbours than"):
        ref = plain.evaluate(pos, box, types)
    assert abs(out["energy"] - ref["energy"]) < 1e-10 * abs(ref["energy"])
    assert np.abs(out["forces"] - ref["forces"]).max() < 1e-10 * np.abs(ref["forces"]).max()
    assert np.abs(out["virial"] - ref["virial"]).max() < 1e-10 * np.abs(ref["virial"]).max()



def _cluster_for_sel_cap():
    """Atom 0 (O) at the origin; O neighbours at 1.0, 1.1, 1.2 Å and H at 1.15, 1.6 Å along
    spread-out directions (indices 1-3 and 4-5)."""
    dirs = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
    dist = np.array([1.0, 1.1, 1.2, 1.15, 1.6])
    return np.vstack([np.zeros(3), dirs * dist[:, None]]), np.array([0, 0, 0, 0, 1, 1])


def test_sel_cap_is_deepmd_kit_v3_rule():
    """More neighbours than Σ sel: of the nearest Σ sel neighbours of all types, the nearest
    sel[t] of each type are kept (DeePMD-kit v3's build_neighbor_list; dpengine matched
    DeePMD-kit 3.2's eval to 1e-11 eV on a model with sel [12, 24] in water), not the nearest
    sel[t] of each type. sel [2, 2]: the 4 nearest are O 1.0, O 1.1, H 1.15, O 1.2, so O
    keeps 1.0 and 1.1 and H keeps 1.15 only (the per-type rule would keep H 1.6 too)."""
    from dpengine.model.reference import neighbor_slots
    pos, types = _cluster_for_sel_cap()
    slot_j, _, counts = neighbor_slots(pos, None, types, 4.0, [2, 2])
    assert slot_j[0].tolist() == [1, 2, 4, -1]
    assert counts[0].tolist() == [3, 2]


@pytest.mark.parametrize("type_one_side", [True, False])
def test_sel_cap_taichi_matches_reference(tmp_path, device, type_one_side):
    """The Taichi kernels apply the same cap as the reference path: the hand-made cluster
    (atom 0's slots checked), and a dense periodic box where most atoms overflow, through
    the pair path, the autograd path and a compressed table."""
    from conftest import random_se_a_model
    from dpengine.model.compress import compress_model
    path = random_se_a_model(tmp_path / "m.pt", 3, type_one_side, sel=(2, 2))
    model = dpengine.load_model(path, device=device)
    pos, types = _cluster_for_sel_cap()
    with pytest.warns(RuntimeWarning, match="more neighbours than"):
        model.evaluate(pos, None, types)
    pot = model.potential
    geometry = pot.environment(torch.as_tensor(pos, device=device), None,
                               torch.as_tensor(types, dtype=torch.int32, device=device),
                               model._nlist)
    assert geometry["slot_j"][0].tolist() == [1, 2, 4, -1]
    net = load_network(path)[0]
    rng = np.random.default_rng(5)
    box = np.diag([6.0, 6.5, 5.5])
    cases = [(pos, None, types), (rng.uniform(0, 1, (70, 3)) @ box, box, rng.integers(0, 2, 70))]
    compressed = compress_model(path, tmp_path / "c.pt", step=0.002, min_distance=0.2)
    for positions, cell, kinds in cases:
        ref = evaluate_reference(net, positions, cell, kinds)
        for variant in ("pair", "autograd", "compressed"):
            m = dpengine.load_model(compressed if variant == "compressed" else path, device=device)
            if variant == "autograd":
                m.potential._emb_kinds = None
            with pytest.warns(RuntimeWarning, match="more neighbours than"):
                out = m.evaluate(positions, cell, kinds)
            assert m.potential.table_misses == 0
            tol = 1e-7 if variant == "compressed" else 1e-10
            assert abs(out["energy"] - ref["energy"].item()) < tol, variant
            assert np.abs(out["forces"] - ref["forces"].detach().numpy()).max() < tol, variant

def test_bad_inputs(water_model, tmp_path):
    model = dpengine.load_model(water_model)
    with pytest.raises(ValueError, match="shape"):
        model.evaluate(np.zeros((3, 2)), None, [0, 0, 0])
    with pytest.raises(ValueError, match="type_map"):
        model.evaluate(np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]], None, [0, 2])
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    with pytest.raises(ValueError, match="junk.pt"):
        dpengine.load_model(junk)


def test_ase_calculator(water_model, reference):
    from ase import Atoms
    from dpengine.ase import DPCalculator
    pos, box = reference["coord"][0].reshape(-1, 3), reference["box"][0].reshape(3, 3)
    atoms = Atoms(symbols=["O" if t == 0 else "H" for t in reference["atype"]], positions=pos,
                  cell=box, pbc=True)
    atoms.calc = DPCalculator(water_model)
    assert abs(atoms.get_potential_energy() - reference["energy"][0]) < 1e-8
    assert np.abs(atoms.get_forces() - reference["force"][0]).max() < 1e-10
    stress = atoms.get_stress(voigt=False)
    assert np.abs(-stress * atoms.get_volume() - reference["virial"][0].reshape(3, 3)).max() < 1e-8


def test_repeated_force_calls_reuse_memory(device):
    """A force call's temporaries come from memory the previous call freed: at 1,536 water
    atoms a call page-faulted 12,000–18,000 times (fresh pages, ~35 ms of system time) when
    glibc trimmed its heap between calls, ~1,000 (neighbour list included) with
    dpengine.backend.keep_freed_memory (a CPU setting)."""
    import resource

    from ase.io import read
    from conftest import REPO
    if device != "cpu":
        pytest.skip("host memory settings of the CPU path")
    water = REPO / "inputs" / "water"
    atoms = read(water / "conf.lmp", format="lammps-data", atom_style="atomic").repeat(2)
    model = dpengine.load_model(water / "water.pt")
    args = atoms.get_positions(), np.array(atoms.get_cell()), atoms.get_atomic_numbers() - 1
    for _ in range(2):
        model.evaluate(*args)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        model.evaluate(*args)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
    assert faults < 4000, f"{faults:.0f} page faults per force call"


def test_import_errors_name_the_file_and_the_cause(tmp_path):
    """import-deepmd: a file that is not TorchScript, and a model compressed by DeePMD-kit
    (its TorchScript calls DeePMD-kit's custom operators, absent here)."""
    import subprocess
    import sys
    from dpengine.model.import_deepmd import ImportError_, import_deepmd
    junk = tmp_path / "junk.pth"
    junk.write_text("not a model")
    with pytest.raises(ImportError_, match="junk.pth: not a TorchScript file.*zip archive"):
        import_deepmd(junk, tmp_path / "out.pt")
    compressed = tmp_path / "compressed.pth"
    maker = tmp_path / "make_compressed.py"        # (TorchScript compiles from a source file)
    maker.write_text("""
import sys, torch
lib = torch.library.Library("deepmd", "DEF")
lib.define("tabulate_fusion_se_a(Tensor x) -> Tensor")
lib.impl("tabulate_fusion_se_a", lambda x: x, "CompositeExplicitAutograd")
class Compressed(torch.nn.Module):
    def forward(self, x):
        return torch.ops.deepmd.tabulate_fusion_se_a(x)
torch.jit.save(torch.jit.script(Compressed()), sys.argv[1])
""")
    subprocess.run([sys.executable, str(maker), str(compressed)], check=True)
    with pytest.raises(ImportError_, match="compressed.pth: needs DeePMD-kit's custom operator "
                                           "deepmd::tabulate_fusion_se_a.*dpengine compress"):
        import_deepmd(compressed, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
