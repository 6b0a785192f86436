"""Trajectory analysis for ``dpengine analyze``: RDF, ADF, Steinhardt order parameters,
MSD/diffusion, density, VACF/power spectrum and thermo-log plots.

Modules: :mod:`.trajectory` (streaming AMBER NetCDF reader), :mod:`.atomtypes` (element
names from a run's TOML or a structure/types file), :mod:`.pairs` (RDF, ADF),
:mod:`.steinhardt`, :mod:`.dynamics` (MSD, VACF), :mod:`.scalars` (density, thermo log),
:mod:`.output` (tables and plots), :mod:`.runners` (one function per subcommand: table,
plot, key numbers) and :mod:`.cli` (the argument parser). Histogram kernels:
``taichi_kernels.analysis``; benchmark: ``tools/bench_analysis.py``.
"""
