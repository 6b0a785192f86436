/* Answers MKL's "is this an Intel CPU?" with yes (see dpengine/mkl_dispatch.py).
 *
 * MKL picks its kernels from the CPU's instruction-set flags only when it believes the CPU
 * is Intel's; on other CPUs it keeps to its AVX2 code even where AVX-512 is present (AMD
 * Zen 4 and Zen 5). MKL asks two functions of its own, mkl_serv_intel_cpu_true and
 * mkl_serv_intel_cpu. torch's CPU wheel links MKL into libtorch_cpu.so with these symbols
 * exported and called through the symbol table, so the definitions below take their place
 * when this library is loaded into the global symbol scope before torch is. MKL then
 * dispatches on the instruction-set flags (cpuid), which is correct on any CPU that has
 * them. The file is also a (method-less) Python extension module so that setuptools
 * builds it with the package.
 */
#include <Python.h>

int mkl_serv_intel_cpu_true(void) { return 1; }

int mkl_serv_intel_cpu(void) { return 1; }

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mkl_cpu",
                                    "MKL vendor-check answers (see dpengine.mkl_dispatch)",
                                    -1, NULL};

PyMODINIT_FUNC PyInit__mkl_cpu(void) { return PyModule_Create(&module); }
