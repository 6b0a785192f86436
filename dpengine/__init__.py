"""dpengine: molecular dynamics with Deep Potential models (Taichi kernels, TorchScript networks)."""
__version__ = "0.1.0"
