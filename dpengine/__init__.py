"""dpengine: molecular dynamics with Deep Potential models (Taichi kernels, TorchScript networks).

``load_model(path, device="cpu", precision="float64")`` returns a model whose
``evaluate(positions, box, types)`` gives energy, forces, virial and atomic energies.
Heavy modules (torch, taichi) load on first use, so ``dpengine --version`` stays fast.
"""
__version__ = "0.1.0"
__all__ = ["load_model", "__version__"]


def __getattr__(name):
    if name == "load_model":
        from dpengine.api import load_model
        return load_model
    raise AttributeError(f"module 'dpengine' has no attribute {name!r}")
