"""taichi_kernels.launch: the direct launch gives what Taichi's own launch gives, and falls
back to it where it does not apply."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import taichi as ti
import torch

from taichi_kernels.launch import _Launcher, fast_launch

REPO = Path(__file__).resolve().parents[1]


@fast_launch
@ti.kernel
def _scaled_sum(x: ti.types.ndarray(ndim=2), w: ti.types.ndarray(ndim=1), scale: ti.f64,
                offset: ti.i32, square: ti.template(), out: ti.types.ndarray(ndim=1)):
    for i in range(x.shape[0]):
        acc = 0.0
        for j in range(x.shape[1]):
            v = x[i, j] * w[j]
            if ti.static(square):
                v = v * v
            acc += v
        out[i] = scale * acc + offset


@fast_launch
@ti.kernel
def _paired_sum(x: ti.types.ndarray(dtype=ti.types.vector(2, ti.f64), ndim=2),
                out: ti.types.ndarray(dtype=ti.types.vector(2, ti.f64), ndim=1)):
    for i in range(x.shape[0]):            # x [rows, k] of 2-vectors: its shape without the 2
        acc = ti.Vector.zero(ti.f64, 2)
        for j in range(x.shape[1]):
            acc += x[i, j] * (j + 1)
        out[i] = acc


def _expected(x, w, scale, offset, square):
    v = x * w
    return scale * (v * v if square else v).sum(1) + offset


def test_direct_launch_equals_taichi_launch():
    assert isinstance(_scaled_sum, _Launcher)
    rng = np.random.default_rng(3)
    for rows, square in ((5, False), (7, True), (5, False), (11, True)):
        x = torch.tensor(rng.normal(size=(rows, 4)))
        w = torch.tensor(rng.normal(size=4))
        out, plain = torch.zeros(rows, dtype=torch.float64), torch.zeros(rows, dtype=torch.float64)
        _scaled_sum(x, w, 0.5, 3, square, out)        # first call of a signature: Taichi's
        _scaled_sum._kernel(x, w, 0.5, 3, square, plain)
        assert torch.equal(out, plain)
        out.zero_()
        _scaled_sum(x, w, 1.5, -2, square, out)       # then the direct launch
        assert torch.equal(out, torch.tensor(_expected(x.numpy(), w.numpy(), 1.5, -2, square)))
    # one plan per signature (the template value is part of it), reused for new shapes
    assert len(_scaled_sum._plans) == 2
    assert all(plan is not None for plan in _scaled_sum._plans.values())


def test_other_arguments_take_taichis_path():
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(6, 3)), rng.normal(size=3)
    out = np.zeros(6)
    _scaled_sum(x, w, 2.0, 1, False, out)              # numpy arrays
    assert np.allclose(out, _expected(x, w, 2.0, 1, False))
    xt = torch.tensor(rng.normal(size=(3, 6))).t()     # a non-contiguous tensor: Taichi's error
    with pytest.raises(ValueError, match="contiguous"):
        _scaled_sum(xt, torch.tensor(w), 2.0, 1, False, torch.zeros(6, dtype=torch.float64))


def test_a_new_taichi_runtime_drops_the_cached_launch(tmp_path):
    """ti.reset + ti.init recompiles the kernels; the launcher must not reuse old ones."""
    script = textwrap.dedent("""
        import taichi as ti, torch
        from taichi_kernels.launch import fast_launch

        @fast_launch
        @ti.kernel
        def add(x: ti.types.ndarray(ndim=1), a: ti.f64):
            for i in range(x.shape[0]):
                x[i] += a

        for run in range(2):
            ti.init(arch=ti.cpu, default_fp=ti.f64, log_level=ti.ERROR, offline_cache=False)
            x = torch.zeros(4, dtype=torch.float64)
            add(x, 1.0)
            add(x, 2.0)
            add(x, 3.0)
            assert torch.equal(x, torch.full((4,), 6.0, dtype=torch.float64)), x
            ti.reset()
        print("ok")
    """)
    path = tmp_path / "reinit.py"          # Taichi reads a kernel's source from its file
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def test_vector_element_arrays():
    """Arrays of 2-vectors: the kernel sees the tensor's shape without its last dimension, by
    either launch; a tensor whose last dimension is not 2 gets Taichi's own error."""
    assert isinstance(_paired_sum, _Launcher)
    rng = np.random.default_rng(5)
    for rows, k in ((4, 3), (6, 5)):
        x = torch.tensor(rng.normal(size=(rows, k, 2)))
        out = torch.zeros(rows, 2, dtype=torch.float64)
        _paired_sum(x, out)                              # Taichi's launch, then the direct one
        _paired_sum(x, out)
        expected = (x * torch.arange(1, k + 1, dtype=torch.float64)[:, None]).sum(1)
        torch.testing.assert_close(out, expected, rtol=1e-15, atol=0)
    assert len(_paired_sum._plans) == 1 and None not in _paired_sum._plans.values()
    with pytest.raises(Exception):
        _paired_sum(torch.zeros(4, 3, 3, dtype=torch.float64),
                    torch.zeros(4, 3, dtype=torch.float64))
