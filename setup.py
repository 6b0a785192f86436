"""Builds dpengine's one native piece, the MKL vendor-check library (dpengine/_mkl_cpu.c;
see dpengine/mkl_dispatch.py). Optional: without a C compiler dpengine installs and runs
as before, with MKL's default kernels. Everything else is in pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("dpengine._mkl_cpu", ["dpengine/_mkl_cpu.c"], optional=True)])
