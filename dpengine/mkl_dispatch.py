"""MKL's AVX-512 kernels on AMD CPUs (float64 GEMM about twice as fast on AMD Zen 5).

torch's CPU wheel computes its matrix products with Intel MKL. MKL chooses its kernels by
instruction set only on CPUs it identifies as Intel's; on an AMD CPU with AVX-512 (Zen 4,
Zen 5) it runs its AVX2 kernels. On the 2-core AMD EPYC (Zen 5) machine this project is
measured on, a float64 [2000×2000]·[2000×2000] product runs at 105 GFLOP/s that way and at
172–228 GFLOP/s with MKL's AVX-512 kernels; the embedding nets' [8000×50]·[50×100] at
31–56 against 96 GFLOP/s. A training step of the water example went from 62 to 48 ms.

dpengine therefore loads a tiny library of its own (``dpengine/_mkl_cpu.c``, built at
install; skipped when no C compiler was there) into the process's global symbol scope
before torch is imported. It answers MKL's vendor question (``mkl_serv_intel_cpu_true``,
``mkl_serv_intel_cpu``) with yes, after which MKL selects its kernels from the CPU's
instruction-set flags (cpuid) alone. MKL then runs code the CPU supports, and the results
are the same BLAS products (they differ from the AVX2 kernels' only by the order of the
floating-point sums: round-off).

It is done only where it matters and can work: Linux on x86-64, an AMD CPU whose flags
include AVX-512 F, CD, BW, DQ and VL, torch not yet imported, the library built. Set
``DPENGINE_MKL_AVX512=0`` to keep MKL's own choice.
"""
from __future__ import annotations

import importlib.machinery
import os
import platform
import sys
from pathlib import Path

ENV = "DPENGINE_MKL_AVX512"
AVX512_FLAGS = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")


def library_path() -> Path | None:
    """The built vendor-check library next to this module, or None (not built)."""
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_mkl_cpu{suffix}"
        if path.is_file():
            return path
    return None


def amd_with_avx512(cpuinfo: str) -> bool:
    """Whether ``cpuinfo`` (the text of /proc/cpuinfo) describes an AMD CPU with the
    AVX-512 subsets MKL's AVX-512 kernels use (its first processor entry is read)."""
    vendor, flags = None, set()
    for line in cpuinfo.splitlines():
        if not line.strip():
            if vendor is not None:
                break
            continue
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id":
            vendor = value.strip()
        elif key == "flags":
            flags = set(value.split())
    return vendor == "AuthenticAMD" and all(f in flags for f in AVX512_FLAGS)


def enable(environ=os.environ) -> bool:
    """Load the vendor-check library before torch where it applies (see the module
    docstring); returns whether MKL will now choose its kernels by instruction set."""
    if environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    if "torch" in sys.modules:           # MKL is loaded and has already chosen
        return False
    path = library_path()
    if path is None:
        return False
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    if not amd_with_avx512(cpuinfo):
        return False
    import ctypes
    try:
        ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL)
    except OSError:
        return False
    return True
