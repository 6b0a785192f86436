"""dpengine: molecular dynamics with Deep Potential models (Taichi kernels, TorchScript networks).

``load_model(path, device="cpu", precision="float64")`` returns a model whose
``evaluate(positions, box, types)`` gives energy, forces, virial and atomic energies.
Heavy modules (torch, taichi) load on first use, so ``dpengine --version`` stays fast.
"""
import os

# Taichi's kernels and torch's OpenMP regions alternate within every force call; OpenMP
# threads that spin-wait between regions steal the cores Taichi needs (measured: a 192-atom
# force call 6× slower on a busy 2-core machine). Passive waiting must be chosen before the
# OpenMP runtime loads, i.e. before torch is imported; an explicit user setting wins
# (``dpengine train``, which runs no Taichi kernel per step, chooses active waiting).
OMP_WAIT_POLICY_FROM_USER = "OMP_WAIT_POLICY" in os.environ
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Taichi prints a banner to standard output on import; keep stdout for data (`--json`
# analyses, piped tables). ENABLE_TAICHI_HEADER_PRINT=1 brings it back.
os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "False")

__version__ = "0.1.0"
__all__ = ["load_model", "__version__"]


def __getattr__(name):
    if name == "load_model":
        from dpengine.api import load_model
        return load_model
    raise AttributeError(f"module 'dpengine' has no attribute {name!r}")
