"""dpengine: molecular dynamics with Deep Potential models (Taichi kernels, TorchScript networks).

``load_model(path, device="cpu", precision="float64")`` returns a model whose
``evaluate(positions, box, types)`` gives energy, forces, virial and atomic energies.
Heavy modules (torch, taichi) load on first use, so ``dpengine --version`` stays fast.
"""
import os

# Taichi's kernels and torch's OpenMP regions alternate within every force call. OpenMP
# threads that spin without limit between regions (OMP_WAIT_POLICY=ACTIVE) steal the cores
# Taichi needs; threads that sleep at once (PASSIVE) pay a wake-up per torch op. A bounded
# spin (GNU OpenMP, torch's runtime: 10⁵ iterations, well under a Taichi kernel) keeps both
# fast — 2 cores, 1,536 water atoms, float64 MD step: 160 µs/atom vs 210 with PASSIVE, the
# compressed model's unchanged. Chosen before the OpenMP runtime loads (before torch is
# imported); an explicit user setting of either variable wins (``dpengine train``, which
# runs no Taichi kernel per step, chooses active waiting).
OMP_WAIT_POLICY_FROM_USER = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
if not OMP_WAIT_POLICY_FROM_USER:
    os.environ["GOMP_SPINCOUNT"] = "100000"
# Taichi prints a banner to standard output on import; keep stdout for data (`--json`
# analyses, piped tables). ENABLE_TAICHI_HEADER_PRINT=1 brings it back.
os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "False")

# MKL (torch's BLAS) runs its AVX-512 kernels on AMD CPUs that have AVX-512 only if told the
# CPU is Intel's; done here, before torch is imported (dpengine/mkl_dispatch.py;
# DPENGINE_MKL_AVX512=0 keeps MKL's own choice).
from dpengine import mkl_dispatch as _mkl_dispatch  # noqa: E402

MKL_AVX512_ON_AMD = _mkl_dispatch.enable()

__version__ = "0.1.0"
__all__ = ["load_model", "__version__"]


def __getattr__(name):
    if name == "load_model":
        from dpengine.api import load_model
        return load_model
    raise AttributeError(f"module 'dpengine' has no attribute {name!r}")
