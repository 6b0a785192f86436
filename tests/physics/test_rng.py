"""The counter-based random stream: Philox-4x32-10 known answers, kernel = host, and the
properties the integrators rely on (keyed by seed, step, atom, stream; no state)."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from dpengine import rng

# Random123 known-answer vectors for philox4x32_10: counter (4 words), key (2), output (4)
KAT = [
    ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
    ([0xffffffff] * 4, [0xffffffff] * 2, [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
    ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0],
     [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]),
]


def test_known_answers_host_and_kernel():
    from taichi_kernels.rng import philox_words
    counters = torch.tensor([c + k for c, k, _ in KAT], dtype=torch.int64)
    out = torch.zeros((len(KAT), 4), dtype=torch.int64)
    philox_words(counters, out)
    for (c, k, expect), got in zip(KAT, out.tolist()):
        assert got == expect
        assert list(rng.philox4x32(*c, *k)) == expect
        assert list(rng._philox_scalar(*c, *k)) == expect


def test_kernel_normals_equal_host_normals():
    from taichi_kernels.rng import atom_normals
    seed, step, stream = 2 ** 40 + 17, 2 ** 33 + 5, rng.STREAMS["langevin"]
    out = torch.zeros((500, 4), dtype=torch.float64)
    atom_normals(rng.key_tensor(seed, step), stream, out)
    host = rng.atom_normals(seed, step, stream, 500)
    # identical uniforms; log/cos may differ by an ulp between numpy and LLVM's libm
    np.testing.assert_allclose(out.numpy(), host, rtol=0, atol=1e-13)
    stream_host = rng.HostStream(seed, step, stream)
    seq = [stream_host.normal() for _ in range(8)]
    np.testing.assert_allclose(seq, host[:2].reshape(-1), atol=1e-13)


def test_streams_are_distinct_and_normal():
    a = rng.atom_normals(7, 100, rng.STREAMS["langevin"], 4000)
    b = rng.atom_normals(7, 101, rng.STREAMS["langevin"], 4000)
    c = rng.atom_normals(7, 100, rng.STREAMS["langevin_first"], 4000)
    d = rng.atom_normals(8, 100, rng.STREAMS["langevin"], 4000)
    for other in (b, c, d):
        assert abs(np.corrcoef(a.ravel(), other.ravel())[0, 1]) < 0.02  # 16000 pairs: 5σ ≈ 0.04
    x = a.ravel()
    # 16000 standard normals: KS against N(0, 1); p > 1e-3 fails by chance 0.1% of seeds
    assert stats.kstest(x, "norm").pvalue > 1e-3
    assert abs(x.mean()) < 5 / math.sqrt(len(x)) and abs(x.var() - 1) < 5 * math.sqrt(2 / len(x))


def test_gamma_and_chi_squared():
    s = rng.HostStream(3, 5, rng.STREAMS["csvr_first"])
    for shape in (0.4, 1.0, 383.5):
        g = np.array([s.gamma(shape) for _ in range(4000)])
        assert stats.kstest(g, stats.gamma(shape).cdf).pvalue > 1e-3
    assert rng.HostStream(1, 1, 1).chi_squared(0) == 0.0


def test_same_key_same_numbers():
    a = rng.HostStream(11, 12, rng.STREAMS["crescale"])
    b = rng.HostStream(11, 12, rng.STREAMS["crescale"])
    assert [a.normal() for _ in range(9)] == [b.normal() for _ in range(9)]


THREADS_SCRIPT = """
import sys, torch
sys.path.insert(0, {helpers!r})
from dpengine.backend import init_taichi
init_taichi("cpu")
import md_helpers as h
pos, box = h.fcc_at_density(3, 0.8)
st = h.make_state(pos, box, h.temperature_K(2.0), seed=5)
ff = h.lj_forcefield(2.5, "tail")
integ = h.integrator("c-rescale", 5.0, temperature=h.temperature_K(2.0), pressure=h.pressure_bar(5.29),
                     tau_p=500.0, compressibility=1e-4, thermostat="langevin", friction=5.0)
h.run(integ, st, ff, 60)
integ2 = h.integrator("c-rescale", 5.0, temperature=h.temperature_K(2.0), pressure=h.pressure_bar(5.29),
                      tau_p=500.0, compressibility=1e-4, thermostat="csvr", tau_t=100.0)
h.run(integ2, st, ff, 60)
torch.save({{"x": st.positions, "v": st.velocities, "box": st.box}}, sys.argv[1])
"""


@pytest.mark.slow
def test_independent_of_thread_count(tmp_path):
    """The same stochastic NPT run with 1 and 2 Taichi threads: bit-identical."""
    script = tmp_path / "run.py"
    script.write_text(THREADS_SCRIPT.format(helpers=str(Path(__file__).parent)))
    outs = []
    for threads in (1, 2):
        out = tmp_path / f"t{threads}.pt"
        env = dict(os.environ, DPENGINE_THREADS=str(threads))
        done = subprocess.run([sys.executable, str(script), str(out)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        outs.append(torch.load(out))
    for key in ("x", "v", "box"):
        assert torch.equal(outs[0][key], outs[1][key]), key
