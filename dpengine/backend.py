"""Taichi start-up, done once per process by whoever first needs a kernel.

Taichi allows a single active runtime per process. ``init_taichi`` starts it on the
requested architecture and remembers which one; asking for another architecture later
re-initialises (which invalidates compiled kernels, so the engine asks once per run).
"""
from __future__ import annotations

import contextlib
import os
import sys

import taichi as ti

_ACTIVE: dict[str, object] = {"arch": None}


def init_taichi(device: str = "cpu", threads: int | None = None) -> str:
    """Start Taichi for ``device`` ("cpu" or "cuda") unless it already runs there.

    On CUDA the device memory Taichi preallocates is kept small (``device_memory_GB``
    = 0.5) so that PyTorch owns the GPU; Taichi kernels read torch tensors in place.
    Returns the architecture name now active.
    """
    want = "cuda" if str(device).startswith("cuda") else "cpu"
    if _ACTIVE["arch"] == want:
        return want
    kwargs: dict[str, object] = dict(default_fp=ti.f64, default_ip=ti.i32, offline_cache=True,
                                     log_level=ti.ERROR, debug=False)
    if want == "cuda":
        kwargs.update(arch=ti.cuda, device_memory_GB=0.5)
    else:
        n = threads or int(os.environ.get("DPENGINE_THREADS", "0")) or (os.cpu_count() or 1)
        kwargs.update(arch=ti.cpu, cpu_max_num_threads=n)
    with contextlib.redirect_stdout(sys.stderr):     # its "Starting on arch" line
        ti.init(**kwargs)
    _ACTIVE["arch"] = want
    return want


def taichi_real(dtype) -> object:
    """The Taichi float type of a torch dtype (kernels that compute in the model's precision)."""
    import torch
    return ti.f32 if dtype == torch.float32 else ti.f64


def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks (up to 32 MB each) in the heap instead of returning
    them to the OS (process-wide; a no-op where there is no glibc).

    A force call or a training step allocates the same large temporaries every time. With
    glibc's adaptive thresholds the heap top was trimmed after some calls and its pages
    faulted in afresh on the next: measured at 1,536 water atoms, 17,600 page faults and
    ~35 ms of system time per uncompressed force call (~13%) in some processes; 50–250
    faults with these settings.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)   # M_MMAP_THRESHOLD: fixed, its largest value
        libc.mallopt(-1, 1 << 30)            # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass
