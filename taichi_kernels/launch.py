"""A cheaper launch of Taichi kernels whose array arguments are torch tensors.

Taichi 1.7's Python launcher inspects every argument on every call (about 17 µs per torch
tensor here, 380 µs for a kernel with 16 tensors against 130 µs with one): a 192-atom force
call spent ~1.5 ms of its ~30 ms there. :func:`fast_launch` wraps a ``@ti.kernel``: the first
call with a given argument signature (each tensor's dtype, ndim and device, each template
argument's value) goes through Taichi as usual, which compiles the kernel; later calls with
that signature set the arguments on the compiled kernel directly (pointer, byte size and
shape of each tensor; the scalars) and launch it. Same kernel, same arguments, same results.

Arrays of vector elements (``ti.types.ndarray(dtype=ti.types.vector(n, real))``) take a
tensor whose last dimension is n, as Taichi's launch does; the kernel then sees the shape
without it.

Taichi's own path is taken whenever this one does not apply: a keyword argument, a
non-tensor array (numpy, Taichi ndarray), a non-contiguous tensor or one that requires grad,
a tensor on another device than Taichi's architecture or whose trailing dimensions are not
its array's element shape, a kernel that returns a value or prints, an argument type other
than scalars, templates, scalar- and vector-element ndarrays, or a Taichi without these
internals. A new Taichi runtime (``ti.init`` again) drops what was cached.
"""
from __future__ import annotations

import functools

import torch
from taichi.lang import impl
from taichi.lang.matrix import VectorType
from taichi.types import ndarray_type, primitive_types
from taichi.types.annotations import template

_TEMPLATE, _ARRAY, _FLOAT, _INT, _UINT = range(5)


def _argument_kinds(kernel) -> tuple[tuple[int, ...], tuple[tuple, ...]] | None:
    """(the launch kind of each argument of a ``@ti.kernel``, the element shape of each, ()
    but for arrays of vectors), or None where the direct launch does not apply to the kernel
    at all."""
    primal = getattr(kernel, "_primal", None)
    if primal is None or primal.return_type is not None:
        return None
    kinds, element_shapes = [], []
    for argument in primal.arguments:
        ann = argument.annotation
        element_shape = ()
        if isinstance(ann, template):
            kinds.append(_TEMPLATE)
        elif isinstance(ann, ndarray_type.NdarrayType):
            if isinstance(ann.dtype, VectorType) and id(ann.dtype.dtype) in \
                    primitive_types.type_ids:
                element_shape = tuple(ann.dtype.get_shape())
            elif ann.dtype is not None and id(ann.dtype) not in primitive_types.type_ids:
                return None                      # matrix or struct elements
            kinds.append(_ARRAY)
        elif id(ann) in primitive_types.real_type_ids:
            kinds.append(_FLOAT)
        elif id(ann) in primitive_types.integer_type_ids:
            kinds.append(_UINT if ann in (primitive_types.u8, primitive_types.u16,
                                          primitive_types.u32, primitive_types.u64) else _INT)
        else:
            return None
        element_shapes.append(element_shape)
    return tuple(kinds), tuple(element_shapes)


class _Launcher:
    """Callable in place of a ``@ti.kernel`` (see the module docstring)."""

    def __init__(self, kernel, kinds: tuple[int, ...], element_shapes: tuple[tuple, ...]):
        self._kernel = kernel
        self._primal = kernel._primal
        self._kinds = kinds
        self._element_shapes = element_shapes
        self._runtime_token = None
        self._plans: dict[tuple, tuple | None] = {}
        functools.update_wrapper(self, kernel)

    def __call__(self, *args, **kwargs):
        if kwargs or len(args) != len(self._kinds):
            return self._kernel(*args, **kwargs)
        runtime = impl.get_runtime()
        token = runtime.__dict__.setdefault("_dpengine_launch_token", object())
        if token is not self._runtime_token:        # a new ti.init: recompiled kernels
            self._plans.clear()
            self._runtime_token = token
        signature = []
        for kind, element_shape, value in zip(self._kinds, self._element_shapes, args):
            if kind == _ARRAY:
                if (not isinstance(value, torch.Tensor) or value.requires_grad
                        or not value.is_contiguous() or (element_shape and tuple(
                            value.shape[value.dim() - len(element_shape):]) != element_shape)):
                    return self._kernel(*args)
                signature.append((value.dtype, value.dim(), value.device))
            elif kind == _TEMPLATE:
                signature.append(value)
        signature = tuple(signature)
        try:
            plan = self._plans.get(signature, False)
        except TypeError:                             # an unhashable template argument
            return self._kernel(*args)
        if plan is False:                             # first call: Taichi compiles and runs it
            self._kernel(*args)
            self._plans[signature] = self._plan(runtime, args)
            return None
        if plan is None:
            return self._kernel(*args)
        t_kernel, compiled = plan
        ctx = t_kernel.make_launch_context()
        index = 0
        for kind, element_shape, value in zip(self._kinds, self._element_shapes, args):
            if kind == _ARRAY:      # the shape without the element's dimensions, as Taichi's
                shape = tuple(value.shape[:value.dim() - len(element_shape)])
                ctx.set_arg_external_array_with_shape((index,), value.data_ptr(),
                                                      value.element_size() * value.numel(),
                                                      shape, 0)
            elif kind == _FLOAT:
                ctx.set_arg_float((index,), float(value))
            elif kind == _INT:
                ctx.set_arg_int((index,), int(value))
            elif kind == _UINT:
                ctx.set_arg_uint((index,), int(value))
            else:
                continue
            index += 1
        runtime.prog.launch_kernel(compiled, ctx)
        return None

    def _plan(self, runtime, args) -> tuple | None:
        """(Taichi kernel, compiled kernel) for the direct launch with these arguments'
        signature, or None (Taichi's path for good)."""
        prog = runtime.prog
        cuda = prog.config().arch == impl._ti_core.Arch.cuda
        for kind, value in zip(self._kinds, args):
            if kind == _ARRAY and value.device.type != ("cuda" if cuda else "cpu"):
                return None                 # Taichi copies such a tensor to its device
        try:
            key = self._primal.ensure_compiled(*args)
            t_kernel = self._primal.compiled_kernels[key]
            compiled = prog.compile_kernel(prog.config(), prog.get_device_caps(), t_kernel)
        except Exception:                   # noqa: BLE001  (another Taichi: its own path)
            return None
        if getattr(self._primal, "has_print", True):      # known once compiled
            return None
        return t_kernel, compiled


def fast_launch(kernel):
    """Wrap a ``@ti.kernel`` (put ``@fast_launch`` above it) for the direct launch; the
    kernel itself is returned where that cannot apply."""
    kinds = _argument_kinds(kernel)
    return kernel if kinds is None else _Launcher(kernel, *kinds)
