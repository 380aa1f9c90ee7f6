r"""The spectral norm of a convolution: the operator norm, not the reshaped kernel's.

:class:`~parametrax.catalog.norms.SpectralNorm` of a conv kernel divides by the largest singular
value of the kernel reshaped into a matrix, ``(out, kh*kw*in)``. That is **not** the norm of the
convolution: the map ``x -> conv(x, K)`` on images of a given size is a linear operator ``A_K``
whose largest singular value

.. math:: \|A_K\|_2 = \max_{x \neq 0} \frac{\|\mathrm{conv}(x, K)\|_2}{\|x\|_2}

depends on the input's spatial size, the strides, the padding and the dilation, and can exceed
the reshaped matrix's by up to a factor ``sqrt(kh*kw)`` (an all-ones ``3 x 3`` kernel with one
channel: the matrix norm is 3, the operator's 9, the gain on a constant image). This module
offers the operator norm (equinox issue 810; Miyato et al. 2018, appendix; Gouk et al. 2021):

* :class:`ConvSpectralNorm`: ``K -> K / ||A_K||_2``, the norm estimated by power iteration
  through the convolution and its exact adjoint (``jax.linear_transpose`` of the convolution),
  with ``u``, ``v`` kept as state like ``SpectralNorm``'s; or, for periodic padding
  (``padding="CIRCULAR"``, stride 1), with ``exact=True``, computed exactly by the FFT.
* :func:`conv_singular_values`: every singular value of a periodic convolution (Sedghi, Gupta
  & Long 2019, "The Singular Values of Convolutional Layers"): the operator is block-circulant,
  so the 2-D (n-D) DFT of the kernel, zero-padded to the input's size, block-diagonalises it;
  the singular values are those of the ``c_in x c_out`` matrices
  ``Khat(f) = sum_t K[t] exp(-2 pi i <f, t> / n)``, one per frequency ``f``.

Layout: Flax's. The kernel is ``(*kernel_size, c_in / groups, c_out)`` (``nn.Conv``'s
``kernel``, 1-D, 2-D or 3-D) and inputs are channels-last, ``(*input_shape, c_in)`` for one
example (a batch changes nothing: the operator acts on each example alone). The convolution is
the one ``nn.Conv`` computes, padding included (``"SAME"``, ``"VALID"``, ``"CIRCULAR"``,
``"REFLECT"``, ``"CAUSAL"``, an int, or ``(low, high)`` pairs), so ``strides``, ``padding``,
``dilation`` (``kernel_dilation``) and ``feature_group_count`` must be the layer's.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from parametrax._core import Parametrization, Variables
from parametrax._errors import (
    ParametrizationError,
    ParametrizationTypeError,
    ShapeError,
)
from parametrax._numerics import normalize, power_iteration, require_inexact, wide_dtype

__all__ = ["ConvSpectralNorm", "conv_singular_values"]

Array = jax.Array
_HIGHEST = lax.Precision.HIGHEST
_PADDINGS = ("SAME", "SAME_LOWER", "VALID", "CIRCULAR", "REFLECT", "CAUSAL")


def _is_int(a) -> bool:
    return isinstance(a, (int, np.integer)) and not isinstance(a, bool)


def _per_axis(owner: str, name: str, value, nd: int) -> tuple[int, ...]:
    """An int or a tuple of ``nd`` ints (``nn.Conv``'s ``strides`` / ``kernel_dilation``)."""
    out = (value,) * nd if _is_int(value) else tuple(value)
    if len(out) != nd:
        raise ShapeError(
            f"`{owner}`: `{name}` has {len(out)} entries, {value!r}, but the kernel has {nd} "
            f"spatial axes."
        )
    return tuple(int(v) for v in out)


def _check_ints(owner: str, name: str, value) -> object:
    """A positive int or a non-empty tuple of positive ints (a list becomes a tuple)."""
    if isinstance(value, list):
        value = tuple(value)
    items = (value,) if not isinstance(value, tuple) else value
    if not items or not all(_is_int(v) and v >= 1 for v in items):
        raise ParametrizationTypeError(
            f"`{owner}`: `{name}` must be a positive int or a tuple of positive ints; got "
            f"{value!r}."
        )
    return value


def _check_padding(owner: str, padding) -> object:
    """Flax's padding forms, made hashable: a string, an int, or a tuple of ints / pairs."""
    if isinstance(padding, str):
        if padding.upper() not in _PADDINGS:
            raise ParametrizationError(
                f"`{owner}`: unknown `padding` {padding!r}; expected one of {list(_PADDINGS)}, "
                "an int, or a sequence of ints or (low, high) pairs (nn.Conv's forms)."
            )
        return padding.upper()
    if _is_int(padding):
        return int(padding)
    if isinstance(padding, (list, tuple)) and padding:
        out: list[int | tuple[int, int]] = []
        for p in padding:
            if _is_int(p):
                out.append(int(p))
            elif isinstance(p, (list, tuple)) and len(p) == 2 and all(map(_is_int, p)):
                out.append((int(p[0]), int(p[1])))
            else:
                break
        else:
            return tuple(out)
    raise ParametrizationTypeError(
        f"`{owner}`: `padding` must be a string, an int, or a sequence of ints or (low, high) "
        f"pairs; got {padding!r}."
    )


# ------------------------------------------------------------------------------------------------
# Exact singular values of a periodic convolution (Sedghi, Gupta & Long 2019)
# ------------------------------------------------------------------------------------------------
def _dilate(kernel: Array, dilation: tuple[int, ...]) -> Array:
    """The kernel with ``d - 1`` zeros between taps along each spatial axis."""
    nd = len(dilation)
    if all(d == 1 for d in dilation):
        return kernel
    shape = tuple((k - 1) * d + 1 for k, d in zip(kernel.shape[:nd], dilation))
    out = jnp.zeros(shape + kernel.shape[nd:], kernel.dtype)
    return out.at[tuple(slice(None, None, d) for d in dilation)].set(kernel)


def _fold(kernel: Array, input_shape: tuple[int, ...]) -> Array:
    """The taps summed modulo the input's size along each spatial axis (a periodic convolution
    with a kernel longer than the input wraps around), zero-padded to ``input_shape``."""
    for ax, n in enumerate(input_shape):
        k = kernel.shape[ax]
        m = -(-k // n)  # ceil(k / n)
        pad = [(0, 0)] * kernel.ndim
        pad[ax] = (0, m * n - k)
        kernel = jnp.pad(kernel, pad)
        shape = kernel.shape[:ax] + (m, n) + kernel.shape[ax + 1 :]
        kernel = kernel.reshape(shape).sum(axis=ax)
    return kernel


def conv_singular_values(
    kernel: Array,
    input_shape,
    *,
    dilation=1,
    feature_group_count: int = 1,
) -> Array:
    r"""Every singular value of the periodic (``padding="CIRCULAR"``, stride 1) convolution.

    The convolution ``A_K`` maps images ``(*input_shape, c_in)`` to ``(*input_shape, c_out)``
    with periodic boundaries; its matrix is block-circulant, diagonalised by the DFT (Sedghi,
    Gupta & Long 2019, Theorem 6): its singular values are, over the frequencies ``f`` of the
    input grid, those of the ``c_in x c_out`` matrices

    .. math:: \hat K(f) = \sum_t K[t]\, e^{-2\pi i \langle f, t / n\rangle},

    the DFT of the kernel zero-padded to ``input_shape`` (taps beyond the input wrap around;
    a dilated kernel has zeros between its taps). A grouped convolution
    (``feature_group_count = g``) is block-diagonal over the groups: the values of each group's
    ``(c_in/g) x (c_out/g)`` matrices are all listed. The circular shift ``nn.Conv`` applies
    (its padding splits ``(k - 1)`` between the two sides) changes no singular value.

    Args:
      kernel: a Flax conv kernel ``(*kernel_size, c_in / g, c_out)``, real.
      input_shape: the spatial shape of the inputs, one int per spatial axis of the kernel.
      dilation: ``nn.Conv``'s ``kernel_dilation`` (an int or one per spatial axis).
      feature_group_count: ``nn.Conv``'s ``feature_group_count``.

    Returns:
      ``(*input_shape, g * min(c_in / g, c_out / g))`` singular values, in at least float32,
      sorted in decreasing order along the last axis: ``out[f]`` are those of frequency ``f``.
      The operator norm is ``out.max()``; all ``prod(input_shape) * min(...)`` values together
      are the operator's singular values.

    >>> import jax.numpy as jnp
    >>> from parametrax.catalog.conv_norm import conv_singular_values
    >>> k = jnp.ones((3, 3, 1, 1))           # a 3 x 3 box filter, one channel
    >>> s = conv_singular_values(k, (8, 8))
    >>> s.shape, float(s.max())              # the gain on a constant image: 9
    ((8, 8, 1), 9.0)
    >>> round(float(jnp.linalg.norm(k.reshape(9, 1), 2)), 5)   # the reshaped kernel's norm: 3
    3.0
    """
    kernel = jnp.asarray(kernel)
    name = "conv_singular_values"
    if not jnp.issubdtype(kernel.dtype, jnp.floating):
        raise ShapeError(
            f"`{name}` needs a real floating-point kernel; got dtype "
            f"{jnp.dtype(kernel.dtype).name}."
        )
    if kernel.ndim < 3:
        raise ShapeError(
            f"`{name}` needs a conv kernel (*kernel_size, c_in, c_out) with at least one spatial "
            f"axis; got shape {tuple(kernel.shape)}."
        )
    nd = kernel.ndim - 2
    input_shape = _input_shape(name, input_shape, nd)
    dil = _per_axis(name, "dilation", dilation, nd)
    g = int(feature_group_count)
    cout = kernel.shape[-1]
    if g < 1 or cout % g:
        raise ShapeError(
            f"`{name}`: `feature_group_count={feature_group_count!r}` must be a positive "
            f"divisor of the kernel's c_out = {cout}."
        )
    wide = kernel.astype(wide_dtype(kernel.dtype))
    folded = _fold(_dilate(wide, dil), input_shape)
    khat = jnp.fft.fftn(folded, axes=tuple(range(nd)))  # (*input_shape, c_in/g, c_out)
    cin_g = kernel.shape[-2]
    # group j: input channels j*cin_g.., output channels j*(cout/g)..: (*S, g, cin_g, cout/g)
    blocks = khat.reshape(khat.shape[:-1] + (g, cout // g))
    blocks = jnp.moveaxis(blocks, -2, -3)
    s = jnp.linalg.svd(blocks, compute_uv=False)  # (*S, g, min)
    s = s.reshape(s.shape[:-2] + (g * min(cin_g, cout // g),))
    return -jnp.sort(-s, axis=-1)


def _input_shape(owner: str, input_shape, nd: int) -> tuple[int, ...]:
    shape = (input_shape,) if _is_int(input_shape) else tuple(input_shape)
    if len(shape) != nd or not all(_is_int(n) and n >= 1 for n in shape):
        raise ShapeError(
            f"`{owner}`: `input_shape` is the spatial shape of the inputs (no batch, no channel "
            f"axis), one positive int per spatial axis of the kernel; the kernel has {nd} "
            f"spatial axis(es) and `input_shape` is {input_shape!r}."
        )
    return tuple(int(n) for n in shape)


# ------------------------------------------------------------------------------------------------
# The parametrization
# ------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("p", "n"))
def _power_iteration(p: ConvSpectralNorm, kernel: Array, u: Array, v: Array, *, n: int):
    """``n`` iterations of ``u <- normalize(A v)``, ``v <- normalize(A^T u)``, ``A^T`` the exact
    transpose of the convolution (callers pass ``stop_gradient(kernel)``)."""

    def op(x):
        return p.conv(x, kernel)

    op_t = jax.linear_transpose(op, v)
    return power_iteration(op, lambda x: op_t(x)[0], u, v, n=n, eps=p.eps)


class ConvSpectralNorm(Parametrization):
    r"""``K -> K / ||A_K||_2``: a conv kernel divided by the norm of its convolution operator.

    ``A_K`` is the linear map ``x -> conv(x, K)`` that ``nn.Conv`` computes on one input of
    spatial shape ``input_shape`` (channels last; its ``strides``, ``padding``, ``dilation`` and
    ``feature_group_count`` are given here and must be the layer's). Its largest singular value

    .. math:: \sigma(K) = \|A_K\|_2 = \max_{x\neq0} \|\mathrm{conv}(x, K)\|_2 / \|x\|_2

    is what bounds the layer's gain, hence its Lipschitz constant: after this map
    ``||conv(x, K)|| <= ||x||`` for every ``x`` of that shape (to the estimate's accuracy). The
    reshaped-matrix norm that :class:`~parametrax.catalog.norms.SpectralNorm` divides by does
    not bound it (it can be smaller by up to ``sqrt(prod(kernel_size))``).

    **Power iteration** (the default, every padding, stride and dilation). ``v`` has the input's
    shape ``(*input_shape, c_in)`` and ``u`` the output's, both non-trainable **state**,
    exactly as in ``SpectralNorm``: ``u <- normalize(A_K v)``, ``v <- normalize(A_K^T u)``, the
    adjoint ``A_K^T`` being ``jax.linear_transpose`` of the convolution (the transposed
    convolution, exact, padding included), and ``sigma = <u, A_K v>`` with ``u``, ``v``
    constants for the gradient (``stop_gradient``), so the gradient is that of
    ``K / <u, A_K v>``, linear in ``K`` in the denominator.

    * ``init_variables(key, K)`` draws ``u``, ``v`` (normal, normalised) and runs
      ``n_warmup_iterations`` power iterations (conv operators have close top singular values,
      one per nearby frequency, so more than ``SpectralNorm``'s 15).
    * ``apply(..., update_state=True)`` (linen: ``parametrization_state`` mutable) runs
      ``n_power_iterations`` iterations first and returns the new ``u``, ``v``; with
      ``update_state=False`` the stored ones are used and nothing changes.
    * The right inverse (registration, assignment) is the identity on ``K`` and runs
      ``n_warmup_iterations`` iterations from the stored ``u``, ``v``, unless they already read
      ``K`` back as itself (``<u, A_K v> = 1`` to rounding: re-assigning the value read back is
      a no-op).

    **The lag.** The default is torch's estimator, as ``SpectralNorm``'s: ``<u, A_K v>`` with
    unit ``u``, ``v`` never exceeds ``||A_K||_2``, so ``||A_{value}||_2 >= 1`` always (to
    rounding), and ``= 1`` once the kernel settles (with the kernel held fixed the training
    applies converge ``u``, ``v``). While the kernel moves fast the gain exceeds 1 by the
    estimate's error, more than for a dense matrix: a conv operator has close top singular
    values (one per nearby frequency), so the power iteration converges slowly. Raise
    ``n_power_iterations``, or use ``exact=True`` (circular padding, stride 1) for a bound that
    holds at every step, at the cost of an FFT and per-frequency SVDs per step.

    **Exact** (``exact=True``: ``padding="CIRCULAR"``, stride 1 only). ``sigma`` is the largest
    of :func:`conv_singular_values` (the FFT of the kernel on the input grid; Sedghi et al.
    2019), exact and differentiated exactly (no state, no lag); costs an SVD of a
    ``c_in x c_out`` matrix per frequency per apply.

    The norm is that of the operator on inputs of ``input_shape``: on other sizes it differs
    (with zero padding it grows with the input towards the periodic value of a large grid). A
    concrete all-zero kernel is refused at registration and assignment (``sigma = 0``); where
    ``sigma`` is 0 in the forward the kernel is returned unchanged (finite gradients).

    Args:
      input_shape: the spatial shape of the layer's inputs (no batch, no channel axis), one int
        per spatial axis of the kernel, e.g. ``(32, 32)`` for ``nn.Conv(..., (3, 3))`` on
        ``(batch, 32, 32, c)`` images.
      strides, padding, dilation, feature_group_count: ``nn.Conv``'s ``strides``, ``padding``,
        ``kernel_dilation`` and ``feature_group_count``.
      n_power_iterations: iterations per apply with ``update_state=True`` (positive).
      n_warmup_iterations: iterations at registration and assignment (positive).
      eps: the floor of the norms in ``normalize``.
      exact: use the FFT's exact value (``padding="CIRCULAR"``, stride 1).

    >>> import jax, jax.numpy as jnp
    >>> from parametrax.catalog.conv_norm import ConvSpectralNorm
    >>> k = jnp.ones((3, 3, 1, 1))                  # a box filter: operator norm 9 (circular)
    >>> p = ConvSpectralNorm((8, 8), padding="CIRCULAR", exact=True)
    >>> k_sn, _ = p.apply(p.init_variables(jax.random.key(0), k), k)
    >>> float(k_sn[0, 0, 0, 0])                     # 1/9: the gain is now 1
    0.1111111...
    >>> x = jnp.ones((8, 8, 1))                     # a constant image: the worst case
    >>> float(jnp.linalg.norm(p.conv(x, k_sn)) / jnp.linalg.norm(x))
    1.0...
    """

    input_shape: tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str | int | tuple = "SAME"
    dilation: int | tuple[int, ...] = 1
    feature_group_count: int = 1
    n_power_iterations: int = 1
    n_warmup_iterations: int = 100
    eps: float = 1e-12
    exact: bool = False

    def __post_init__(self):
        owner = "ConvSpectralNorm"
        shape: Any = self.input_shape  # as given: validated below
        if isinstance(shape, list) or _is_int(shape):
            shape = tuple(shape) if isinstance(shape, list) else (int(shape),)
        if (
            not isinstance(shape, tuple)
            or not shape
            or not all(_is_int(n) and n >= 1 for n in shape)
        ):
            raise ParametrizationTypeError(
                f"`{owner}`: `input_shape` must be the spatial shape of the inputs, a non-empty "
                f"tuple of positive ints (no batch, no channel axis); got {self.input_shape!r}."
            )
        object.__setattr__(self, "input_shape", tuple(int(n) for n in shape))
        object.__setattr__(self, "strides", _check_ints(owner, "strides", self.strides))
        object.__setattr__(self, "dilation", _check_ints(owner, "dilation", self.dilation))
        object.__setattr__(self, "padding", _check_padding(owner, self.padding))
        for name in ("feature_group_count", "n_power_iterations", "n_warmup_iterations"):
            value = getattr(self, name)
            if not _is_int(value):
                raise ParametrizationTypeError(
                    f"`{owner}`: `{name}` must be an int; got {value!r}."
                )
            if value < 1:
                raise ParametrizationError(
                    f"`{owner}`: `{name}` must be positive; got {name}={value}."
                )
        if not isinstance(self.eps, (int, float)) or isinstance(self.eps, bool) or self.eps < 0:
            raise ParametrizationError(
                f"`{owner}`: `eps` must be a non-negative float; got {self.eps!r}."
            )
        if not isinstance(self.exact, bool):
            raise ParametrizationTypeError(
                f"`{owner}`: `exact` must be a bool; got {self.exact!r}."
            )
        if self.exact:
            strides = self.strides if isinstance(self.strides, tuple) else (self.strides,)
            if self.padding != "CIRCULAR" or any(s != 1 for s in strides):
                raise ParametrizationError(
                    f"`{owner}`: `exact=True` is the FFT's value for a periodic convolution with "
                    f"stride 1 (Sedghi et al. 2019): it needs padding='CIRCULAR' and strides=1; "
                    f"got padding={self.padding!r}, strides={self.strides!r}. Use the power "
                    "iteration (exact=False) for the others."
                )

    # --- the operator ------------------------------------------------------------------------
    def _spatial(self, kernel: Array) -> int:
        return kernel.ndim - 2

    def conv(self, x: Array, kernel: Array) -> Array:
        """``conv(x, kernel)`` as ``nn.Conv`` computes it (no bias) on one input ``x`` of shape
        ``(*input_shape, c_in)`` (channels last; leading batch axes are allowed): the operator
        ``A_K`` whose norm this parametrization divides by."""
        nd = self._spatial(kernel)
        batch = x.shape[: x.ndim - nd - 1]
        x = x.reshape((-1,) + x.shape[x.ndim - nd - 1 :])
        strides = _per_axis(repr(self), "strides", self.strides, nd)
        dil = _per_axis(repr(self), "dilation", self.dilation, nd)
        pad: Any = self.padding  # made the form lax.conv_general_dilated takes below
        if pad in ("CIRCULAR", "REFLECT"):
            ks = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:nd], dil)]
            pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in ks] + [(0, 0)]
            x = jnp.pad(x, pads, mode="wrap" if pad == "CIRCULAR" else "reflect")
            pad = "VALID"
        elif pad == "CAUSAL":
            if nd != 1:
                raise ShapeError(f"`{self!r}`: 'CAUSAL' padding is for 1-D convolutions only.")
            x = jnp.pad(x, [(0, 0), (dil[0] * (kernel.shape[0] - 1), 0), (0, 0)])
            pad = "VALID"
        elif _is_int(pad):
            pad = [(pad, pad)] * nd
        elif isinstance(pad, tuple):
            if len(pad) != nd:
                raise ShapeError(
                    f"`{self!r}`: `padding` has {len(pad)} entries but the kernel has {nd} "
                    "spatial axes."
                )
            pad = [(q, q) if _is_int(q) else q for q in pad]
        lhs = (0, nd + 1) + tuple(range(1, nd + 1))
        rhs = (nd + 1, nd) + tuple(range(nd))
        y = lax.conv_general_dilated(
            x,
            kernel.astype(x.dtype),
            window_strides=strides,
            padding=pad,
            rhs_dilation=dil,
            dimension_numbers=lax.ConvDimensionNumbers(lhs, rhs, lhs),
            feature_group_count=self.feature_group_count,
            precision=_HIGHEST,
        )
        return y.reshape(batch + y.shape[1:])

    def _check(self, kernel: Array) -> None:
        require_inexact(self, kernel, real=True)
        nd = kernel.ndim - 2
        if nd < 1:
            raise ShapeError(
                f"`{self!r}` acts on a conv kernel (*kernel_size, c_in / groups, c_out) with at "
                f"least one spatial axis; got shape {tuple(kernel.shape)}."
            )
        if nd != len(self.input_shape):
            raise ShapeError(
                f"`{self!r}`: the kernel of shape {tuple(kernel.shape)} has {nd} spatial axis(es) "
                f"but `input_shape` = {self.input_shape} has {len(self.input_shape)} (it is the "
                "inputs' spatial shape: no batch, no channel axis)."
            )
        if kernel.shape[-1] % self.feature_group_count:
            raise ShapeError(
                f"`{self!r}`: c_out = {kernel.shape[-1]} (the kernel's last axis) is not a "
                f"multiple of feature_group_count = {self.feature_group_count}."
            )

    def _shapes(self, kernel: Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(u.shape, v.shape)``: the output's and the input's shapes for one example."""
        v_shape = self.input_shape + (kernel.shape[-2] * self.feature_group_count,)
        try:
            out = jax.eval_shape(
                lambda x, k: self.conv(x, k),
                jax.ShapeDtypeStruct(v_shape, kernel.dtype),
                jax.ShapeDtypeStruct(kernel.shape, kernel.dtype),
            )
        except (TypeError, ValueError) as e:
            raise ShapeError(
                f"`{self!r}`: the convolution of an input {v_shape} with a kernel "
                f"{tuple(kernel.shape)} is not defined: {e}"
            ) from None
        if 0 in out.shape:
            raise ShapeError(
                f"`{self!r}`: the convolution of an input {v_shape} with a kernel "
                f"{tuple(kernel.shape)} has an empty output {tuple(out.shape)}."
            )
        return tuple(out.shape), v_shape

    def sigma(self, kernel: Array, u: Array | None = None, v: Array | None = None) -> Array:
        """``sigma``: ``<u, A_K v>`` (power iteration) or, with ``exact=True``, the FFT's value."""
        if self.exact:
            s = conv_singular_values(
                kernel,
                self.input_shape,
                dilation=self.dilation,
                feature_group_count=self.feature_group_count,
            )
            return jnp.max(s).astype(kernel.dtype)
        if u is None or v is None:
            raise ParametrizationTypeError(
                f"`{self!r}`.sigma: the power-iteration estimate needs the state's `u` and `v` "
                "(`sigma(kernel, u, v)`); only `exact=True` computes sigma from the kernel alone."
            )
        return jnp.vdot(u, self.conv(v, kernel), precision=_HIGHEST)

    # --- the variables protocol ----------------------------------------------------------------
    def init_variables(self, key: Array, value: Array) -> Variables:
        kernel = jnp.asarray(value)
        self._check(kernel)
        if self.exact:
            return {"params": {}, "state": {}}
        u_shape, v_shape = self._shapes(kernel)
        ku, kv = jax.random.split(key)
        u = normalize(jax.random.normal(ku, u_shape, kernel.dtype), self.eps)
        v = normalize(jax.random.normal(kv, v_shape, kernel.dtype), self.eps)
        u, v = self._power(lax.stop_gradient(kernel), u, v, self.n_warmup_iterations)
        return {"params": {}, "state": {"u": u, "v": v}}

    def _power(self, kernel: Array, u: Array, v: Array, n: int) -> tuple[Array, Array]:
        return _power_iteration(self, kernel, u, v, n=n)

    def _stored(self, state, kernel: Array) -> tuple[Array, Array]:
        if "u" not in state or "v" not in state:
            raise ParametrizationError(
                f"`{self!r}` needs its state `u`, `v` (made by `init_variables`); got state keys "
                f"{sorted(state)}."
            )
        u, v = state["u"], state["v"]
        u_shape, v_shape = self._shapes(kernel)
        if tuple(u.shape) != u_shape or tuple(v.shape) != v_shape:
            raise ShapeError(
                f"`{self!r}`: the stored u, v have shapes {tuple(u.shape)}, {tuple(v.shape)}; "
                f"for a kernel {tuple(kernel.shape)} they must be the output's {u_shape} and the "
                f"input's {v_shape}."
            )
        return u, v

    def apply(self, variables: Variables, kernel: Array, *, update_state: bool = False):
        kernel = jnp.asarray(kernel)
        self._check(kernel)
        state = variables["state"]
        if self.exact:
            sigma = self.sigma(kernel)
            new_state = state
        else:
            u, v = self._stored(state, kernel)
            if update_state:
                u, v = self._power(lax.stop_gradient(kernel), u, v, self.n_power_iterations)
            u, v = lax.stop_gradient(u), lax.stop_gradient(v)
            sigma = self.sigma(kernel, u, v)
            new_state = {**state, "u": u, "v": v} if update_state else state
        safe_sigma = jnp.where(sigma == 0, jnp.ones_like(sigma), sigma)
        return kernel / safe_sigma, new_state

    def apply_inverse(self, variables: Variables, value: Array, *, key: Array | None = None):
        """The identity on ``K``; ``u``, ``v`` advanced by ``n_warmup_iterations`` iterations
        unless they already read ``K`` back as itself (``<u, A_K v> = 1`` to rounding: 32 ulps
        of float32 plus 4 of the value's dtype). A concrete all-zero kernel is refused."""
        del key
        kernel = jnp.asarray(value)
        self._check(kernel)
        _refuse_zero(self, kernel)
        state = variables["state"]
        if self.exact:
            return kernel, state
        k = lax.stop_gradient(kernel)
        u0, v0 = self._stored(state, k)
        wide = wide_dtype(k.dtype)
        current = self.sigma(k.astype(wide), u0.astype(wide), v0.astype(wide))
        tol = 32 * float(jnp.finfo(wide).eps) + 4 * float(jnp.finfo(k.dtype).eps)
        keep = jnp.abs(current - 1) <= tol
        u, v = self._power(k, u0, v0, self.n_warmup_iterations)
        u, v = jnp.where(keep, u0, u), jnp.where(keep, v0, v)
        return kernel, {**state, "u": u, "v": v}


def _refuse_zero(p: ConvSpectralNorm, value: Array) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    a = np.asarray(value)
    if a.size and not np.any(a != 0):
        raise ParametrizationError(
            f"`{p!r}`: the kernel is all zero, so the norm of its convolution is 0 and "
            "K / ||A_K|| is undefined (the forward would return it unchanged, off the set of "
            "unit operator norm). Register or assign a non-zero kernel (e.g. the layer's default "
            "initializer instead of `zeros`)."
        )
