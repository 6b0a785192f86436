"""MKL's kernel choice on AMD CPUs with AVX-512 (dpengine/mkl_dispatch.py)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpengine import mkl_dispatch

ZEN5 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2
"""


def test_amd_with_avx512_reads_the_first_entry():
    assert mkl_dispatch.amd_with_avx512(ZEN5)
    assert not mkl_dispatch.amd_with_avx512(ZEN5.replace("AuthenticAMD", "GenuineIntel", 1))
    assert not mkl_dispatch.amd_with_avx512(ZEN5.replace(" avx512bw", "", 1))   # Zen 3: AVX2
    assert not mkl_dispatch.amd_with_avx512("")


def test_enable_respects_the_switch_and_a_loaded_torch():
    assert not mkl_dispatch.enable({mkl_dispatch.ENV: "0"})
    import torch  # noqa: F401  (loaded: MKL has chosen already)
    assert not mkl_dispatch.enable({})


def _mkl_run(env_value: str) -> tuple[str, str]:
    """(MKL's verbose banner, a float64 product's bytes as hex) in a fresh process."""
    code = ("import dpengine, torch\n"
            "g = torch.Generator().manual_seed(5)\n"
            "a = torch.rand(300, 200, dtype=torch.float64, generator=g)\n"
            "b = torch.rand(200, 100, dtype=torch.float64, generator=g)\n"
            "print((a @ b).numpy().tobytes().hex())\n")
    env = dict(os.environ, MKL_VERBOSE="1", **{mkl_dispatch.ENV: env_value})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent).stdout
    banner = next((line for line in out.splitlines()
                   if "oneMKL" in line or "MKL_VERBOSE Intel" in line), "")
    return banner, out.splitlines()[-1]


@pytest.mark.skipif(mkl_dispatch.library_path() is None
                    or not Path("/proc/cpuinfo").is_file()
                    or not mkl_dispatch.amd_with_avx512(Path("/proc/cpuinfo").read_text()),
                    reason="needs an AMD CPU with AVX-512 and the built library")
def test_amd_avx512_kernels_selected_and_products_agree():
    import numpy as np
    banner_on, prod_on = _mkl_run("1")
    banner_off, prod_off = _mkl_run("0")
    if not banner_on:
        pytest.skip("this torch build does not use MKL (no MKL_VERBOSE banner)")
    assert "AVX-512" in banner_on and "AVX-512" not in banner_off
    on = np.frombuffer(bytes.fromhex(prod_on), dtype=np.float64)
    off = np.frombuffer(bytes.fromhex(prod_off), dtype=np.float64)
    np.testing.assert_allclose(on, off, rtol=1e-14, atol=0)
