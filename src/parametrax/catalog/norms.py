r"""Spectral and weight normalisation: PyTorch's ``spectral_norm`` and ``weight_norm``.

* :class:`SpectralNorm`: ``W -> W / sigma(W)``, ``sigma`` estimated by power iteration with
  ``u``, ``v`` kept as non-trainable state (Miyato et al. 2018), or with ``exact=True`` the
  true largest singular value (an SVD per apply, no state); with ``learnable_scale=True``
  ``(gamma, W) -> gamma W / sigma(W)``, a learnable scalar ``gamma`` (sigmaReparam, Zhai et al.
  2023).
* :class:`WeightNorm`: ``(g, v) -> g * v / ||v||``, two raw arrays (``original0 = g``,
  ``original1 = v``) (Salimans & Kingma 2016).

Layouts: which axis is the "output" axis
----------------------------------------

Both take an explicit ``axis``: the **output** axis (or axes). :class:`SpectralNorm` makes it
the rows of the matrix whose largest singular value is ``sigma`` (the other axes are flattened,
in C order, into the columns); :class:`WeightNorm` keeps it in ``g`` (one norm per output
unit, taken over all the other axes). The default ``axis=-1`` is the output axis of Flax
kernels, so the plain wrappers do the natural thing with no transpose:

===========================  ======================  ==========================================
layer                        Flax kernel             output axis (the default ``axis=-1``)
===========================  ======================  ==========================================
``nn.Dense(out)``            ``(in, out)``           ``-1``: SpectralNorm's matrix is
                                                     ``K^T``, ``(out, in)`` (torch's Linear
                                                     weight); WeightNorm's ``g`` is ``(1, out)``
``nn.Conv(out, (kh, kw))``   ``(kh, kw, in, out)``   ``-1``: matrix ``(out, kh*kw*in)``; ``g``
                                                     is ``(1, 1, 1, out)``
``nn.ConvTranspose``         ``(kh, kw, in, out)``   ``-1`` as for ``nn.Conv`` (with
                                                     ``transpose_kernel=True`` the kernel is
                                                     ``(kh, kw, out, in)``: ``axis=-2``)
``nn.DenseGeneral``          ``(*in, *features)``    ``-1`` for one ``features`` axis; a tuple
                                                     ``features=(h, d)`` has output axes
                                                     ``axis=(-2, -1)``
``nn.Embed(num, features)``  ``(num, features)``     the table is not a map from inputs to
                                                     outputs. WeightNorm: ``axis=0``
                                                     normalises each embedding vector
                                                     (torch's default ``dim=0`` on
                                                     ``nn.Embedding``, whose weight has the
                                                     same layout). SpectralNorm: ``axis=0``
                                                     is torch's ``dim=0`` exactly; ``-1``
                                                     gives the same ``sigma`` (the transposed
                                                     matrix) with ``u``, ``v`` swapped
===========================  ======================  ==========================================

Torch's ``dim`` names the output axis **in torch's layout** (Linear ``(out, in)``, Conv
``(out, in, kh, kw)``: ``dim=0``; ConvTranspose ``(in, out, kh, kw)``: ``dim=1``). So:

* On an array in torch's layout, ``SpectralNorm(axis=dim)`` is torch's ``spectral_norm(dim=dim)``
  exactly (same matrix view, same ``u``, ``v``); ``WeightNorm.from_torch(dim)`` is torch's
  ``weight_norm(dim=dim)`` (torch's ``dim=-1`` or ``None`` means the whole tensor, which is
  ``axis=None`` here; every other ``dim`` is an ordinary axis).
* On the corresponding Flax kernel, torch's default (the output axis) is ``axis=-1``. For a
  Dense kernel ``K = W^T`` the spectral norm's ``u``, ``v`` and ``sigma`` are torch's; for a Conv
  kernel torch flattens the columns in ``(in, kh, kw)`` order and Flax in ``(kh, kw, in)``
  order, so ``v`` is that permutation of torch's ``v`` and ``u``, ``sigma`` and the output
  (transposed back) are torch's.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from parametrax._core import Parametrization, Variables
from parametrax._errors import ParametrizationError, ParametrizationTypeError, ShapeError
from parametrax._numerics import (
    check_axis_field,
    normalize,
    normalize_axes,
    power_iteration,
    require_inexact,
    safe_norm,
    wide_dtype,
)

__all__ = ["SpectralNorm", "WeightNorm"]

Array = jax.Array
_HIGHEST = lax.Precision.HIGHEST


# ------------------------------------------------------------------------------------------------
# Spectral norm
# ------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("n", "eps"))
def _power_iteration(mat: Array, u: Array, v: Array, *, n: int, eps: float):
    """The matrix case of :func:`parametrax._numerics.power_iteration`: ``A = W``,
    ``A^H = W^H`` (callers pass ``stop_gradient(W)``). Jitted so eager calls compile once."""
    mat_h = jnp.conj(mat).T
    return power_iteration(
        lambda x: jnp.matmul(mat, x, precision=_HIGHEST),
        lambda x: jnp.matmul(mat_h, x, precision=_HIGHEST),
        u,
        v,
        n=n,
        eps=eps,
    )


class SpectralNorm(Parametrization):
    r"""``W -> W / sigma``, ``sigma = u^H W_mat v`` from power iteration (torch's
    ``spectral_norm``), or with ``exact=True`` the largest singular value of ``W_mat``.

    ``W_mat`` is the matrix view of ``W``: the output ``axis`` (or axes) moved to the front and
    flattened into the rows, every other axis flattened (C order) into the columns; shape
    ``(h, w)``. ``u`` (``(h,)``) and ``v`` (``(w,)``) are non-trainable **state**:

    * ``init_variables(key, W)`` draws ``u``, ``v`` from ``key`` (standard normal, normalised)
      and runs 15 warm-up power iterations on ``W``, as torch's registration does.
    * ``apply(..., update_state=True)`` (linen: ``parametrization_state`` mutable, i.e.
      training) first runs ``n_power_iterations`` iterations ``u <- normalize(W_mat v)``,
      ``v <- normalize(W_mat^H u)`` and returns the new ``u``, ``v``. The iterates carry no
      gradient (``stop_gradient``), so the gradient treats ``u``, ``v`` as constants, as
      torch's does. **The iterations run once per apply**: the linen wrapper evaluates each
      chain once per call of the wrapped module, however often the module reads the kernel
      (torch iterates on every *access* of ``module.weight``, so a forward that reads it twice
      iterates twice; under ``parametrize.cached()`` once per forward, which is what happens
      here). Registering with the state collection mutable (linen's ``init`` always is) runs
      ``n_power_iterations`` iterations after the right inverse's exact ``u``, ``v`` (see
      below).
    * ``apply(..., update_state=False)`` (evaluation) reuses the stored ``u``, ``v`` and changes
      nothing.

    ``sigma = vdot(u, W_mat v)`` conjugates ``u`` (correct for complex ``W``; ``sigma`` is then
    complex with a vanishing imaginary part) and is not passed through ``abs``, as in torch.
    ``normalize(x) = x / max(||x||, eps)``. A 1-D ``W`` is simply normalised,
    ``W / max(||W||, eps)``, with no state.

    The right inverse (registration and assignment) is the identity on ``W`` (torch's) and sets
    ``u``, ``v`` to the exact top singular pair of ``W_mat`` (an SVD, in at least float32), so
    assigning ``W`` reads back ``W / sigma(W)`` with the true ``sigma`` (torch keeps the old
    ``u``, ``v``; re-assigning the value read back, ``u^H W_mat v = 1``, keeps them).
    Registration therefore starts from converged ``u``, ``v`` (the 15 warm-up
    iterations of ``init_variables`` are superseded), and with the state collection mutable runs
    ``n_power_iterations`` more. A concrete all-zero ``W`` is refused at registration and
    assignment (``sigma = 0``: no direction to normalise); where ``sigma`` is exactly 0 in the
    forward (a raw value trained to zero) the value is returned unchanged, with finite
    gradients, instead of torch's NaN.

    **The lag.** The default is torch's estimator. Between assignments only
    ``n_power_iterations`` iterations run per training apply, from the previous ``u``, ``v``,
    so ``sigma`` is the estimate for a recent weight, not the current one. Its promise:

    * ``||value||_2 >= 1`` always (to rounding): ``sigma = u^H W_mat v`` with unit ``u``, ``v``
      never exceeds the largest singular value (a Rayleigh quotient), so the estimate can only
      underestimate it;
    * ``||value||_2 = 1`` once the weight settles: with the weight held fixed, the training
      applies converge ``u``, ``v`` to its top singular pair (at the rate of its spectral gap).

    While the weight moves fast relative to its own norm and its spectral gap (the first steps
    from a tiny initial weight, large learning rates, close top singular values) the output's
    spectral norm exceeds 1 by the estimate's error. Raise ``n_power_iterations`` (each
    iteration is two matrix-vector products), re-assign the weight (``assign``) to re-converge
    ``u``, ``v`` exactly, or use ``exact=True`` for a bound that holds at every step, at the
    cost of an SVD per step.

    **Exact** (``exact=True``). ``sigma`` is the true largest singular value of ``W_mat``: the
    top singular pair ``(u1, v1)`` of an SVD of ``W_mat`` (in at least float32; bfloat16 and
    float16 are widened), taken under ``stop_gradient``, and ``sigma = Re(u1^H W_mat v1)``. The
    gradient is therefore ``d sigma / d W_mat = Re(u1 v1^H)``: the exact derivative where the
    largest singular value is simple, and a valid subgradient where it is repeated (e.g. an
    orthogonal ``W``), where differentiating through the SVD would give NaN. There is **no
    state**: no ``u``, ``v``, nothing to update, train and evaluation give the same value, and
    ``n_power_iterations`` is unused. The output's spectral norm is 1 at every step (to
    rounding); the cost is an SVD of ``W_mat`` per apply (``min(h, w)^2 max(h, w)`` flops
    against the power iteration's ``4 h w``). With ``learnable_scale=True`` the right inverse
    stores ``gamma = sigma(W)`` exactly as the forward computes it.

    Layouts: the default ``axis=-1`` is the output axis of Flax ``Dense``/``Conv``/
    ``ConvTranspose`` kernels, so ``Parametrized(nn.Conv, {"kernel": SpectralNorm()})`` is
    torch's ``spectral_norm(nn.Conv2d(...))``. On an array in torch's layout use
    ``axis=dim`` (torch's default ``dim=0``, ``1`` for ConvTranspose). See the module docstring.

    **A learnable scale** (``learnable_scale=True``: sigmaReparam, Zhai et al. 2023,
    "Stabilizing Transformer Training by Preventing Attention Entropy Collapse"; flax PR 3904):

    .. math:: (\gamma, W) \mapsto \frac{\gamma}{\sigma(W)} W, \qquad
              \|\hat W\|_2 = |\gamma|,

    with ``gamma`` a learnable 0-d array. The raw value is then two arrays, as
    :class:`WeightNorm`'s ``(g, v)``: ``original0 = gamma`` (shape ``()``) and ``original1 = W``
    (so this link must come first in a chain), and ``u``, ``v`` stay state as above. Every
    non-zero ``W`` is reachable, so the right inverse is exact:
    ``right_inverse(W) = (sigma(W), W)`` with ``u``, ``v`` the top singular pair and
    ``gamma = u^H W_mat v`` computed as the forward computes ``sigma``, so that
    ``forward(right_inverse(W)) == W`` (to rounding) and a wrapped layer computes at
    registration what it computed before (as :class:`WeightNorm` keeps ``g = ||v||``). The paper
    initialises ``gamma = 1`` instead, which starts from ``W / sigma(W)`` (a spectral norm of
    1): to start there, assign that value (the right inverse then stores ``gamma = 1`` to
    rounding), or set the raw ``original0`` to 1. The gradient reaches ``gamma``
    (``d/dgamma = W / sigma``) and ``W`` (``u``, ``v`` constants, as above). A 1-D ``W`` gives
    ``gamma W / max(||W||, eps)`` with no state.

    Args:
      n_power_iterations: iterations per apply with ``update_state=True`` (positive).
      eps: the floor of the norms in ``normalize``.
      axis: the output axis, or a tuple of output axes (rows of ``W_mat``, in that order).
      learnable_scale: take a learnable scalar ``gamma`` as a first raw array (sigmaReparam).
      exact: divide by the true largest singular value (an SVD per apply, no state) instead of
        the power-iteration estimate.

    >>> import jax, jax.numpy as jnp
    >>> from parametrax.catalog.norms import SpectralNorm
    >>> w = jnp.diag(jnp.array([3.0, -4.0]))
    >>> sn = SpectralNorm()
    >>> variables = sn.init_variables(jax.random.key(0), w)
    >>> w_sn, state = sn.apply(variables, w, update_state=True)
    >>> bool(jnp.allclose(w_sn, jnp.diag(jnp.array([0.75, -1.0])), atol=1e-5))
    True

    With a learnable scale, registration keeps the value and stores ``gamma = sigma(W)``:

    >>> sr = SpectralNorm(learnable_scale=True)
    >>> variables = sr.init_variables(jax.random.key(0), w)
    >>> (gamma, raw_w), state = sr.apply_inverse(variables, w)
    >>> print(f"{float(gamma):.4f}")
    4.0000
    >>> out, _ = sr.apply({"params": {}, "state": state}, 2 * gamma, raw_w)
    >>> bool(jnp.allclose(out, 2 * w, atol=1e-5))   # spectral norm |gamma| = 8
    True
    """

    n_power_iterations: int = 1
    eps: float = 1e-12
    axis: int | tuple[int, ...] = -1
    learnable_scale: bool = False
    exact: bool = False

    def __post_init__(self):
        n = self.n_power_iterations
        if not isinstance(n, int) or isinstance(n, bool):
            raise ParametrizationTypeError(
                f"`SpectralNorm`: `n_power_iterations` must be an int; got {n!r}."
            )
        if n <= 0:
            raise ParametrizationError(
                "`SpectralNorm`: Expected n_power_iterations to be positive, but got "
                f"n_power_iterations={n}."
            )
        if not isinstance(self.eps, (int, float)) or isinstance(self.eps, bool) or self.eps < 0:
            raise ParametrizationError(
                f"`SpectralNorm`: `eps` must be a non-negative float; got {self.eps!r}."
            )
        check_axis_field(self)
        if not isinstance(self.learnable_scale, bool):
            raise ParametrizationTypeError(
                f"`SpectralNorm`: `learnable_scale` must be a bool; got {self.learnable_scale!r}."
            )
        if not isinstance(self.exact, bool):
            raise ParametrizationTypeError(
                f"`SpectralNorm`: `exact` must be a bool; got {self.exact!r}."
            )

    # --- the matrix view ---------------------------------------------------------------------
    def matrix_view(self, w: Array) -> Array:
        """``W_mat``: output axes to the front, flattened to rows; the rest (C order) to columns."""
        axes = normalize_axes(self, self.axis, w.shape)
        h = math.prod(w.shape[a] for a in axes)
        moved = jnp.moveaxis(w, axes, tuple(range(len(axes))))
        return moved.reshape(h, -1)

    def _power(self, mat: Array, u: Array, v: Array, n: int) -> tuple[Array, Array]:
        return _power_iteration(mat, u, v, n=n, eps=self.eps)

    def _check(self, w: Array) -> None:
        require_inexact(self, w)
        if w.ndim == 0:
            raise ShapeError(f"`{self!r}` needs an array with at least 1 dimension; got a scalar.")
        normalize_axes(self, self.axis, w.shape)

    # --- the variables protocol ----------------------------------------------------------------
    def init_variables(self, key: Array, value: Array) -> Variables:
        value = jnp.asarray(value)
        self._check(value)
        if value.ndim == 1 or self.exact:
            return {"params": {}, "state": {}}
        mat = lax.stop_gradient(self.matrix_view(value))
        ku, kv = jax.random.split(key)
        u = normalize(jax.random.normal(ku, (mat.shape[0],), mat.dtype), self.eps)
        v = normalize(jax.random.normal(kv, (mat.shape[1],), mat.dtype), self.eps)
        u, v = self._power(mat, u, v, 15)
        return {"params": {}, "state": {"u": u, "v": v}}

    def _raws(self, raw: tuple) -> tuple[Array | None, Array]:
        """``(gamma, W)`` (``gamma`` None without a learnable scale), checked."""
        want = 2 if self.learnable_scale else 1
        if len(raw) != want:
            what = "(gamma, W): the learnable scale and the weight" if want == 2 else "W"
            raise ParametrizationTypeError(
                f"`{self!r}` takes {want} raw array{'s' if want == 2 else ''}, {what}; got "
                f"{len(raw)}."
            )
        w = jnp.asarray(raw[-1])
        self._check(w)
        if not self.learnable_scale:
            return None, w
        gamma = jnp.asarray(raw[0])
        if gamma.ndim != 0:
            raise ShapeError(
                f"`{self!r}`: the learnable scale gamma (the first raw array, `original0`) must "
                f"be a 0-d array; got shape {tuple(gamma.shape)}."
            )
        return gamma, w

    def apply(self, variables: Variables, *raw: Array, update_state: bool = False):
        gamma, w = self._raws(raw)
        state = variables["state"]
        if w.ndim == 1:
            out = normalize(w, self.eps)
            return (out if gamma is None else gamma.astype(w.dtype) * out), state
        mat = self.matrix_view(w)
        if self.exact:
            sigma = _exact_sigma(mat)
            new_state = state
        else:
            u, v = self._stored(state, mat)
            if update_state:
                u, v = self._power(lax.stop_gradient(mat), u, v, self.n_power_iterations)
            u, v = lax.stop_gradient(u), lax.stop_gradient(v)
            sigma = self._sigma(mat, u, v)
            new_state = {**state, "u": u, "v": v} if update_state else state
        # sigma is exactly 0 only when W_mat v = 0 (an all-zero W, or u, v orthogonal to its
        # range). torch returns 0/0 = NaN there; we return W unchanged (zeros for a zero W)
        # with finite gradients, so a zero-initialised layer cannot poison a run.
        safe_sigma = jnp.where(sigma == 0, jnp.ones_like(sigma), sigma)
        if gamma is not None:
            return w * (gamma.astype(w.dtype) / safe_sigma), new_state
        return w / safe_sigma, new_state

    def _sigma(self, mat: Array, u: Array, v: Array) -> Array:
        return jnp.vdot(u, jnp.matmul(mat, v, precision=_HIGHEST), precision=_HIGHEST)

    def _stored(self, state, mat: Array) -> tuple[Array, Array]:
        if "u" not in state or "v" not in state:
            raise ParametrizationError(
                f"`{self!r}` needs its state `u`, `v` (made by `init_variables`); got state keys "
                f"{sorted(state)}."
            )
        u, v = state["u"], state["v"]
        h, w = mat.shape
        if tuple(u.shape) != (h,) or tuple(v.shape) != (w,):
            raise ShapeError(
                f"`{self!r}`: the stored u, v have shapes {tuple(u.shape)}, {tuple(v.shape)}; "
                f"the matrix view of this array is {h}x{w}, so they must be ({h},), ({w},)."
            )
        return u, v

    def apply_inverse(self, variables: Variables, value: Array, *, key: Array | None = None):
        """The identity on ``W``, with ``u``, ``v`` set to the top singular pair of ``W_mat``.

        So ``forward`` reads back ``W / sigma(W)`` with the exact largest singular value
        (computed by an SVD in at least float32), at registration and at every assignment;
        keeping the previous ``u``, ``v`` would divide by ``u^H W v`` for the old weight's
        vectors (assigning ``3 I`` read back about ``16 I``). One exception keeps ``u``, ``v``:
        a value the current ``u``, ``v`` already read back as itself (``u^H W_mat v = 1`` to
        rounding: 32 ulps of float32 plus 4 of the value's dtype; e.g. assigning the value
        read back, or a module writing back the kernel it read), for which the assignment is a
        no-op. A concrete all-zero ``W`` is
        refused: it has no direction, ``sigma = 0`` and ``W / sigma`` is undefined (the forward
        would return it unchanged, off the set). Traced values cannot be inspected.
        """
        del key
        value = jnp.asarray(value)
        self._check(value)
        _refuse_zero(self, value)
        if value.ndim == 1:
            if self.learnable_scale:
                gamma = jnp.maximum(safe_norm(value), self.eps).astype(value.dtype)
                return (gamma, value), variables["state"]
            return value, variables["state"]
        mat = lax.stop_gradient(self.matrix_view(value))
        if self.exact:  # no state: gamma is sigma as the forward computes it
            if self.learnable_scale:
                return (_exact_sigma(mat), value), variables["state"]
            return value, variables["state"]
        u0, v0 = self._stored(variables["state"], mat)
        u, v = _top_singular_pair(mat)
        if self.learnable_scale:
            # gamma is sigma as the forward computes it (same u, v, same product), so
            # gamma / sigma = 1 and forward(right_inverse(W)) == W to rounding.
            gamma = self._sigma(mat, u, v)
            return (gamma, value), {**variables["state"], "u": u, "v": v}
        # The value read back now (u0^H W v0 = 1 to rounding: `assign(constrain(...))`, a
        # module writing back the kernel it read) keeps u, v: re-assigning it is a no-op.
        wide = wide_dtype(mat.dtype)
        current = jnp.vdot(
            u0.astype(wide),
            jnp.matmul(mat.astype(wide), v0.astype(wide), precision=_HIGHEST),
            precision=_HIGHEST,
        )
        # rounding of the product (in float32 or wider) and of W itself (in its own dtype)
        tol = 32 * float(jnp.finfo(wide).eps) + 4 * float(jnp.finfo(mat.dtype).eps)
        keep = jnp.abs(current - 1) <= tol
        u, v = jnp.where(keep, u0, u), jnp.where(keep, v0, v)
        return value, {**variables["state"], "u": u, "v": v}


def _refuse_zero(p: SpectralNorm, value: Array) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    a = np.asarray(value)
    if a.size and not np.any(a != 0):
        raise ParametrizationError(
            f"`{p!r}`: the value is all zero, so its largest singular value is 0 and "
            "W / sigma(W) is undefined (a zero weight has no direction to normalise; the forward "
            "would return it unchanged, off the set of unit spectral norm). Register or assign a "
            "non-zero value (e.g. the layer's default initializer instead of `zeros`)."
        )


def _top_singular_pair(mat: Array) -> tuple[Array, Array]:
    """``(u, v)`` with ``u^H mat v = sigma_max``, in ``mat``'s dtype (the SVD runs in at least
    float32: LAPACK has no half precision)."""
    wide = wide_dtype(mat.dtype)
    u, _, vh = jnp.linalg.svd(mat.astype(wide), full_matrices=False)
    return u[:, 0].astype(mat.dtype), jnp.conj(vh[0]).astype(mat.dtype)


def _exact_sigma(mat: Array) -> Array:
    """``Re(u1^H mat v1)`` with ``(u1, v1)`` the top singular pair of ``stop_gradient(mat)``
    (an SVD in at least float32), in ``mat``'s real dtype: the largest singular value, whose
    gradient is ``Re(u1 v1^H)`` (no derivative through the SVD, which is NaN where the largest
    singular value is repeated)."""
    wide = wide_dtype(mat.dtype)
    m = mat.astype(wide)
    u, _, vh = jnp.linalg.svd(lax.stop_gradient(m), full_matrices=False)
    u1, v1 = u[:, 0], jnp.conj(vh[0])
    sigma = jnp.real(jnp.vdot(u1, jnp.matmul(m, v1, precision=_HIGHEST), precision=_HIGHEST))
    return sigma.astype(jnp.finfo(mat.dtype).dtype)


# ------------------------------------------------------------------------------------------------
# Weight norm
# ------------------------------------------------------------------------------------------------
class WeightNorm(Parametrization):
    r"""``(g, v) -> g * v / ||v||`` with the norm over every axis except ``axis`` (torch's
    ``weight_norm``).

    ``right_inverse(W) = (g, v)`` with ``v = W`` and ``g = ||W||`` taken over all axes but
    ``axis``, with kept dimensions (``axis=None``: the whole array, ``g`` is 0-d). Registering
    stores them as ``original0`` (``g``) and ``original1`` (``v``), and
    ``forward(right_inverse(W)) == W`` exactly, so a wrapped layer computes what it computed
    before. Gradients reach both ``g`` and ``v``. A zero slice of ``v`` gives a zero output with
    finite (zero) gradients instead of torch's NaN.

    ``axis`` has Python semantics (``-1`` is the last axis), and the axis is **kept** in ``g``
    (like torch's ``dim``): ``g.shape`` is ``W.shape`` with every other axis set to 1. The
    default ``axis=-1`` is the output axis of Flax kernels: Dense ``(in, out)`` gives ``g`` of
    shape ``(1, out)``, Conv ``(kh, kw, in, out)`` gives ``(1, 1, 1, out)`` (torch's default
    ``dim=0`` on the torch-layout weight). A tuple keeps several axes. **Torch's** ``dim=-1``
    means the whole tensor, not the last axis: use :meth:`from_torch` to translate a torch
    ``dim`` for an array in torch's layout.

    >>> import jax.numpy as jnp
    >>> from parametrax.catalog.norms import WeightNorm
    >>> wn = WeightNorm()
    >>> k = jnp.array([[3.0, 0.0], [4.0, 2.0]])
    >>> g, v = wn.right_inverse(k)
    >>> g
    Array([[5., 2.]], dtype=float32)
    >>> bool(jnp.all(wn(g, v) == k))
    True
    """

    axis: int | tuple[int, ...] | None = -1

    def __post_init__(self):
        check_axis_field(self, allow_none=True)

    @classmethod
    def from_torch(cls, dim: int | None = 0) -> WeightNorm:
        """Torch's ``weight_norm(dim=dim)`` for an array in torch's layout: ``dim=None`` or
        ``-1`` is the whole tensor (``axis=None``), any other ``dim`` the same axis. For the
        matching Flax kernel, torch's default ``dim=0`` (the output axis) is ``axis=-1``."""
        if dim is None or dim == -1:
            return cls(axis=None)
        return cls(axis=dim)

    def _norm(self, x: Array) -> Array:
        if self.axis is None:
            return safe_norm(x)
        keep = normalize_axes(self, self.axis, x.shape)
        others = tuple(a for a in range(x.ndim) if a not in keep)
        return safe_norm(x, axis=others, keepdims=True)

    def right_inverse(self, value: Array) -> tuple[Array, Array]:
        value = jnp.asarray(value)
        require_inexact(self, value)
        return self._norm(value), value

    def forward(self, g: Array, v: Array) -> Array:
        g, v = jnp.asarray(g), jnp.asarray(v)
        require_inexact(self, v)
        n = self._norm(v)
        if tuple(g.shape) != tuple(n.shape):
            raise ShapeError(
                f"`{self!r}`: g has shape {tuple(g.shape)} but v of shape {tuple(v.shape)} needs "
                f"g of shape {tuple(n.shape)} (axis={self.axis!r})."
            )
        scale = g / jnp.where(n > 0, n, jnp.ones_like(n))
        return v * scale.astype(v.dtype)
