"""Taichi kernels of dpengine. Nothing here calls ti.init; callers do (dpengine.backend)."""
