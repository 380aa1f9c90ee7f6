r"""Maps onto the orthogonal group: the tutorial's :class:`Cayley` and :class:`MatrixExp`, and
:class:`Orthogonal` (orthogonal and unitary matrices, PyTorch's
``torch.nn.utils.parametrizations.orthogonal``).

:class:`Orthogonal` reproduces torch's ``_Orthogonal`` on the **last two axes as given**: the
same three maps (``"matrix_exp"``, ``"cayley"``, ``"householder"``), the same default rule, the
same treatment of tall, wide, batched, real and complex arrays, and the same dynamic
trivialization (a non-trainable base point moved by assignment). Given the same raw array and
base point, ``Orthogonal(...)`` computes the same numbers as torch's forward.

Layouts: which axes form the matrix
-----------------------------------

The matrix is always the last two axes; leading axes are batch axes. For Flax kernels:

============================  ===========================  =====================================
layer                         kernel shape                 the matrix ``Orthogonal`` constrains
============================  ===========================  =====================================
``nn.Dense(out)``             ``(in, out)``                the kernel itself: orthonormal
                                                           columns if ``in >= out`` (``K^T K =
                                                           I``), orthonormal rows otherwise
                                                           (``K K^T = I``: ``x -> x @ K`` is an
                                                           isometry)
``nn.DenseGeneral``           ``(*in_axes, *features)``    the last two axes; a 2-D kernel
                                                           (one input axis, ``features`` an
                                                           int) is exactly the Dense case
``nn.Conv(out, (kh, kw))``    ``(kh, kw, in, out)``        each spatial tap ``K[i, j]`` is an
                                                           ``(in, out)`` matrix (a batch of
                                                           ``kh * kw`` matrices)
``nn.Embed(num, features)``   ``(num, features)``          the table itself: orthonormal
                                                           columns if ``num >= features``
============================  ===========================  =====================================

So ``Parametrized(nn.Dense, {"kernel": Orthogonal()})`` needs no transpose: torch's Linear
weight is ``W = K^T`` and ``W`` has orthonormal rows/columns exactly when ``K`` does. The
constraint sets are the same; the numbers are the same for non-square kernels given the same
raw values and base (``forward(X^T) == forward(X)^T`` there). For **square** matrices torch
reads the lower triangle of ``W``, which is not the transpose of the lower triangle of ``K``:
feed ``Orthogonal`` the torch-layout array (``forward(raw_W)``) to get torch's numbers
(spec §18.1). ``torch.nn.Embedding``'s weight has Flax's ``nn.Embed`` layout, so there the
arrays coincide.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from parametrax._core import Parametrization, Variables
from parametrax._errors import (
    ParametrizationError,
    ParametrizationTypeError,
    RightInverseError,
    ShapeError,
)
from parametrax._numerics import (
    apply_frame,
    cayley_half,
    cayley_map,
    expm,
    eye_frame,
    eye_like,
    gram,
    mH,
    mT,
    qr_positive,
    require_matrix,
    require_square,
    sign_or_one,
    skew_blocks,
    skew_map_columns,
    solve,
    wide_dtype,
    widen,
    widened,
)
from parametrax.catalog._broadcasts import ExactClassBroadcasts
from parametrax.catalog.linear import SQUARE_HINT

__all__ = ["Cayley", "MatrixExp", "Orthogonal", "ORTHOGONAL_MAPS", "cayley", "matrix_exp"]

Array = jax.Array

#: The valid values of ``Orthogonal(map=...)`` (``None`` picks one from the shape and dtype).
ORTHOGONAL_MAPS = ("matrix_exp", "cayley", "householder")

_HIGHEST = lax.Precision.HIGHEST

NOT_ASSIGNABLE = (
    "It is not possible to assign to the matrix exponential or the Cayley parametrizations when "
    "use_trivialization=False."
)


# ------------------------------------------------------------------------------------------------
# The maths, batch-generic on the last two axes. Helpers with loops are jitted at module level so
# that eager calls (registration, assignment outside jit) compile once per shape, not per call.
# ------------------------------------------------------------------------------------------------
def _tall(x: Array) -> tuple[Array, bool]:
    """The tall view: ``x`` if rows >= cols, else ``x^T`` (a plain transpose, as torch's ``mT``)."""
    if x.shape[-2] < x.shape[-1]:
        return mT(x), True
    return x, False


def _rect_eye(rows: int, cols: int, dtype) -> Array:
    return jnp.eye(rows, cols, dtype=dtype)


@jax.jit
def _householder_product(x: Array) -> Array:
    """The first ``k`` columns of ``H_1 H_2 ... H_k``, ``H_j = I - tau_j v_j v_j^T``.

    ``v_j = e_j + tril(x, -1)[:, j]`` and ``tau_j = 2 / ||v_j||^2``, so every ``H_j`` is an exact
    reflector. Built in ``jnp`` (``lax.linalg.householder_product`` has no JVP) so that it is
    differentiable; ``x`` is tall ``(..., n, k)`` and real.

    Computed in compact WY form, ``H_1 ... H_k = I - V T V^T`` with ``T`` upper triangular and
    ``T^{-1} = striu(V^T V) + diag(V^T V) / 2`` (the UT transform: Joffrain, Low, Quintana-Orti,
    van de Geijn and Van Zee, "Accumulating Householder transformations, revisited", ACM TOMS
    32(2), 2006). With ``E`` the first ``k`` columns of ``I``, ``V^T E = V_1^T`` (``V``'s top
    ``k x k`` block), so ``Q = E - V solve(T^{-1}, V_1^T)``: two products and one triangular
    solve, all level 3, differentiated by JAX with O(nk) memory. (Applying the ``k`` reflectors
    one at a time, as LAPACK's unblocked ``org2r`` does, keeps an ``n x k`` matrix per reflector
    for the backward pass: O(nk^2) memory, 0.5 GB at n = k = 512.)
    """
    n, k = x.shape[-2:]
    a = jnp.tril(x, -1)  # the tails: v_j = e_j + a[:, j]
    eye = _rect_eye(n, k, x.dtype)
    # V^T V = I + A_1 + A_1^T + A^T A (A_1: A's top k x k block, strictly lower). Formed from
    # A^T A rather than from V, so that the small squares are summed before 1 is added: summing
    # them into 1 one by one costs ~k roundings (3x the error at n = 128, tails ~0.01).
    ata = gram(a)  # one product in the reverse pass (a custom derivative), not two
    a1t = mT(a[..., :k, :])
    t_inv = a1t + jnp.triu(ata, 1) + 0.5 * (1 + ata) * jnp.eye(k, dtype=x.dtype)
    y = lax.linalg.triangular_solve(
        t_inv, a1t + jnp.eye(k, dtype=x.dtype), left_side=True, lower=False
    )  # T V_1^T, V_1^T = I + A_1^T
    return eye - jnp.matmul(a + eye, y, precision=_HIGHEST)


@jax.jit
def _householder_reflectors(q: Array) -> Array:
    """Torch's householder ``right_inverse`` for a tall real ``q``: ``geqrf`` + sign fix, in jnp.

    Runs a Householder QR column by column with LAPACK's reflector choice (``dlarfg``: ``v_j``
    maps column ``j`` onto ``beta_j e_j``, ``beta_j = -sign(alpha_j) ||x_j||``), stores the
    reflector tails below the diagonal and ``sign(beta_j)`` (the sign of ``R_jj``) on it, and
    keeps ``R``'s strict upper part above it (forward ignores it). Then ``forward(result)`` is
    the Q factor of ``q = QR`` with ``diag(R) > 0``, as torch's ``geqrf`` path gives. Where
    LAPACK would use no reflection (``tau = 0``: nothing below the diagonal), torch flips the
    stored diagonal; here the reflector is always proper, which yields that same flipped sign
    without a special case (the ``R`` entries to the right of such a column then have the
    opposite sign to LAPACK's; forward never reads them).
    """
    n, k = q.shape[-2:]
    rows = jnp.arange(n)

    def body(j, carry):
        r, out = carry
        col = lax.dynamic_index_in_dim(r, j, axis=-1, keepdims=False)  # (..., n)
        below = rows > j
        alpha = jnp.take(col, j, axis=-1)  # (...,)
        tail = jnp.where(below, col, 0)
        xnorm = jnp.sqrt(jnp.sum(tail * tail, axis=-1))
        norm = jnp.sqrt(alpha * alpha + xnorm * xnorm)
        beta = -jnp.where(alpha >= 0, 1.0, -1.0).astype(q.dtype) * norm
        nonzero = norm > 0
        denom = jnp.where(nonzero, alpha - beta, 1.0)
        vtail = jnp.where(nonzero[..., None], tail / denom[..., None], 0)
        v = vtail + (rows == j).astype(q.dtype)
        tau = 2.0 / jnp.sum(v * v, axis=-1)
        # apply H_j to the trailing columns of r (columns < j are finished)
        w = jnp.einsum("...n,...nk->...k", v, r, precision=_HIGHEST)
        upd = r - (tau[..., None, None] * v[..., :, None]) * w[..., None, :]
        r = jnp.where(jnp.arange(k) >= j, upd, r)
        # column j of the result: R's entries above the diagonal, sign(R_jj) on it, v below
        # (+1 for a zero column, where torch stores sign(0) = 0 and loses the column).
        newcol = (
            jnp.where(rows < j, col, vtail)
            + (rows == j).astype(q.dtype) * sign_or_one(beta)[..., None]
        )
        out = lax.dynamic_update_index_in_dim(out, newcol[..., :, None], j, axis=-1)
        return r, out

    _, out = lax.fori_loop(0, k, body, (q, jnp.zeros_like(q)))
    return out


@jax.jit
def _is_orthogonal(q: Array) -> Array:
    """Torch's ``_is_orthogonal``: ``allclose(Q^H Q, I, rtol=1e-5, atol=10 n eps)`` over the
    whole batch at once (one boolean, as ``torch.allclose`` gives), without Python branching."""
    n, k = q.shape[-2:]
    eps = 10.0 * n * float(jnp.finfo(q.dtype).eps)
    gram = jnp.matmul(mH(q), q, precision=_HIGHEST)
    eye = jnp.eye(k, dtype=q.dtype)
    return jnp.all(jnp.abs(gram - eye) <= eps + 1e-5 * jnp.abs(eye))


@functools.partial(jax.jit, static_argnames=("m",))
def _forward(x: Array, base: Array | None, *, m: str) -> Array:
    """Torch's forward (``m`` resolved, inputs checked). Jitted at module level: eager calls
    compile once per shape and map; inside an outer jit it is traced inline."""
    x, transposed = _tall(x)
    if m == "householder":
        q = _householder_product(x)
        # The column signs: sign(diag) with sign(0) = +1, never torch's trunc (see the class
        # docstring): every finite raw diagonal gives +-1, so the columns stay orthonormal.
        d = lax.stop_gradient(sign_or_one(jnp.diagonal(x, axis1=-2, axis2=-1)))
        q = q * d[..., None, :]
    else:
        # f(A)[:, :k] for A = Y - Y^H, Y = [tril(x), 0]: S from the top block (diagonal
        # included: its real part cancels), C = the bottom rows; 2k x 2k work when n > 2k
        s, c = skew_blocks(x, diagonal=True)
        q = skew_map_columns(s, c, expm if m == "matrix_exp" else cayley_half)
    if base is not None:
        q = apply_frame(base, q)  # B @ q with B kept as its n x k frame (or given n x n)
    return mT(q) if transposed else q


def cayley_raw_bound(dtype) -> float:
    """The largest raw value (Frobenius norm of one matrix) :meth:`Cayley.right_inverse` returns:
    ``1 / sqrt(eps)`` of the dtype the maths runs in (float32 for half dtypes: ``2896``;
    float64: ``6.7e7``).

    Why there: an eigenvalue ``e^{i(pi - d)}`` of the value gives the raw value an eigenvalue
    of modulus ``cot(d / 2) ~ 2 / d``, and the Cayley map's derivative along that eigenpair is
    ``2 / (1 + mu^2)``: at ``|mu| = 1 / sqrt(eps)`` it is ``2 eps``, below rounding, so a raw
    value past the bound can never be trained back (and at ``d = 0`` the solve is singular)."""
    return 1.0 / math.sqrt(float(jnp.finfo(wide_dtype(dtype)).eps))


@widened
def _inverse_cayley(value: Array) -> tuple[Array, Array]:
    """``(A + I)^{-1}(A - I)`` and, per matrix, its Frobenius norm (``inf`` if not finite)."""
    eye = eye_like(value)
    x = solve(value + eye, value - eye)
    norm = jnp.sqrt(jnp.sum(jnp.abs(x) ** 2, axis=(-2, -1)))
    return x, jnp.where(jnp.isfinite(norm), norm, jnp.inf)


def _refuse_eigenvalue_minus_one(p, value: Array, x: Array, norm: Array) -> Array:
    """``x`` where the value is representable; otherwise an error (concrete values) or NaN
    (traced values, which cannot raise: a NaN raw value is loud, a huge one would be silent)."""
    bad = ~(norm <= cayley_raw_bound(value.dtype))
    if isinstance(bad, jax.core.Tracer):
        return jnp.where(bad[..., None, None], jnp.asarray(jnp.nan, x.dtype), x)
    bad_np = np.asarray(bad)
    if not bad_np.any():
        return x
    where = ""
    if bad_np.ndim:
        idx = [tuple(int(i) for i in ix) for ix in zip(*np.nonzero(bad_np))]
        where = f" (batch index {idx[0]}" + (f" and {len(idx) - 1} more" if len(idx) > 1 else "")
        where += ")"
    worst = float(np.max(np.where(bad_np, np.asarray(norm), 0)))
    raise RightInverseError(
        f"`{p!r}`: the value of shape {tuple(value.shape)}{where} has an eigenvalue at (or "
        f"within rounding of) -1: its inverse Cayley transform has norm {worst:.3g}, above the "
        f"bound {cayley_raw_bound(value.dtype):.3g} (1/sqrt(eps)) where the map's gradient is "
        "below rounding. The Cayley map never reaches an eigenvalue -1: no orthogonal matrix "
        "with det -1 (half of what `nn.initializers.orthogonal()` draws), no rotation by pi, "
        'not -I. Use `Orthogonal(map="cayley")`, which reaches every orthogonal matrix '
        "through its base point, or assign a matrix without eigenvalue -1."
    )


# ------------------------------------------------------------------------------------------------
# The tutorial's maps
# ------------------------------------------------------------------------------------------------
class Cayley(Parametrization):
    r"""The Cayley map ``X -> (I + X)(I - X)^{-1}``, computed as the solve ``(I - X)^{-1}(I + X)``.

    The two factors commute, so both forms are equal. Fed a skew-symmetric ``X`` (chain it after
    :class:`Skew`) it returns an orthogonal matrix with determinant +1 and no eigenvalue -1; this
    is the tutorial's ``CayleyMap`` (no factor 1/2, unlike ``Orthogonal(map="cayley")``).
    Defined when ``X`` has no eigenvalue 1 (always true for skew-symmetric ``X``).

    Cost: the forward pass is one LU factorization and its two triangular solves; the
    derivative needs no second factorization and no solve at all (see :func:`parametrax._numerics.cayley_map`:
    ``(I - X)^{-1} = (I + Q)/2``, so the gradient is two matrix products).

    ``right_inverse(A) = (A + I)^{-1}(A - I)``, the inverse Cayley map, exact when ``A`` has no
    eigenvalue -1 (an orthogonal matrix with det +1 in general position). The tutorial's version
    reads a global variable instead of its argument; this one does not.

    The Cayley map never reaches an eigenvalue -1: not an orthogonal matrix with det -1 (half of
    what ``flax.linen.initializers.orthogonal()`` draws), not a rotation by pi, not ``-I``.
    Near one the raw value explodes (``~2/d`` for an eigenvalue ``e^{i(pi - d)}``) and its
    gradient vanishes (``~d^2/2``). So ``right_inverse`` refuses a value whose raw value would
    exceed :func:`cayley_raw_bound` (``1/sqrt(eps)``, 2896 in float32: an eigenvalue within
    about ``7e-4`` rad of -1) with a :class:`~parametrax.RightInverseError` that names the fix,
    ``Orthogonal(map="cayley")``, which reaches every orthogonal matrix through its base point.
    Under a JAX transformation (a traced value) it cannot raise: the refused matrices get a NaN
    raw value instead, never a silent huge one (the NaN/Inf checks of registration and
    assignment then refuse it wherever the result is concrete).

    >>> import jax, jax.numpy as jnp
    >>> from parametrax import skew, cayley
    >>> Q = cayley(skew(jax.random.normal(jax.random.key(0), (4, 4))))
    >>> bool(jnp.allclose(Q.T @ Q, jnp.eye(4), atol=1e-5))
    True
    """

    broadcasts = ExactClassBroadcasts()

    def forward(self, x: Array) -> Array:
        require_square(self, x, SQUARE_HINT)
        return cayley_map(x)

    def right_inverse(self, value: Array) -> Array:
        require_square(self, value, SQUARE_HINT)
        x, norm = _inverse_cayley(value)
        return _refuse_eigenvalue_minus_one(self, value, x, norm)


class MatrixExp(Parametrization):
    r"""The matrix exponential ``X -> expm(X)`` (:func:`parametrax._numerics.expm`: scaling and
    squaring, batched natively, at least as accurate as ``jax.scipy.linalg.expm``).

    Chained after :class:`Skew` it gives orthogonal matrices with det +1, orthogonal to
    rounding at any finite norm (Newton–Schulz steps after the squarings of a skew input; beyond
    a 1-norm of ``3.1e9`` in float32 the squarings are capped and the result is ``exp(2^{31-s}
    X)``, still orthogonal but not ``exp(X)``); after :class:`Symmetric`, symmetric
    positive-definite ones (where the largest entry of ``exp(X)`` would exceed ``2^55``
    in float32, from largest eigenvalue 38.1, the result is clamped: ``exp(X)`` scaled down so
    that its largest entry is ``2^55``, so that gradients of the value stay finite). See
    :func:`parametrax._numerics.expm`. Like the tutorial's ``MatrixExponential`` it has no
    right inverse, so assigning through a chain that contains it is an error (use
    ``Orthogonal(map="matrix_exp")``, whose trivialization can be assigned).

    >>> import jax, jax.numpy as jnp
    >>> from parametrax import symmetric, matrix_exp
    >>> P = matrix_exp(symmetric(jax.random.normal(jax.random.key(0), (3, 3))))
    >>> bool(jnp.all(jnp.linalg.eigvalsh(P) > 0))
    True
    """

    broadcasts = ExactClassBroadcasts()

    def batching_pays(self, shape: tuple) -> bool:
        """A batched matrix exponential was measured faster than a loop (``tree._grouping``)."""
        del shape
        return True

    def forward(self, x: Array) -> Array:
        require_square(self, x, SQUARE_HINT)
        return expm(x)


# ------------------------------------------------------------------------------------------------
# The parametrization
# ------------------------------------------------------------------------------------------------
class Orthogonal(Parametrization):
    r"""Orthogonal (real) or unitary (complex) matrices on the last two axes, as torch's
    ``orthogonal``.

    For ``X`` of shape ``(..., n, k)`` the result ``Q`` has orthonormal columns when ``n >= k``
    (``Q^H Q = I_k``) and orthonormal rows when ``n < k`` (``Q Q^H = I_n``); leading axes are
    batch axes. A wide ``X`` is handled in its transposed (tall) view and transposed back.
    In the tall view ``(n, k)``, ``n >= k``:

    * ``"matrix_exp"``: ``Q = expm(A)[:, :k]``, ``A = Y - Y^H``, ``Y = [tril(X), 0]`` padded to
      ``n x n`` (the strict upper part of ``X`` is ignored; a real diagonal cancels).
      Where the map runs on the dense skew matrix (square matrices, and ``n <= 2k``) the
      columns are orthonormal to rounding at any raw size (the exponential of a skew matrix
      keeps orthogonality through Newton–Schulz steps after its squarings; beyond a 1-norm of
      ``3.1e9`` in float32 it is ``exp(2^{31-s} A)``, orthogonal but not ``exp(A)``:
      :func:`parametrax._numerics.expm`). For ``n > 2k`` it runs on a ``2k x 2k`` matrix that
      is skew only up to rounding, and orthogonality degrades with the raw size (float32,
      measured at n = 64 and 200: ``max |Q^T Q - I|`` about ``1e-5`` for raw entries of size
      10, ``1e-4`` at 100 to 1000, ``1e-2`` at 1e4). With the trivialization (default)
      assignments move the base, not the raw value, which stays small.
    * ``"cayley"``: ``Q = ((I - A/2)^{-1} (I + A/2))[:, :k]`` (note the ``1/2``, unlike the
      tutorial's :class:`~parametrax.Cayley`).
    * ``"householder"`` (real only): ``Q`` is the first ``k`` columns of ``H_1 ... H_k`` with
      ``H_j = I - tau_j v_j v_j^T``, ``v_j = e_j + tril(X, -1)[:, j]``, ``tau_j = 2/||v_j||^2``,
      then column ``j`` is scaled by ``sign(X[j, j])`` (``+1`` where ``X[j, j] == 0``) with no
      gradient. **Deviation from torch**, which scales by ``X[j, j].int()`` (truncation): torch
      stores +-1 there and its gradient is zero, but weight decay (``optax.adamw``, Lion) still
      moves -1 to -0.9999999, whose truncation is 0, and the column vanishes (torch has this
      defect). ``sign`` equals ``trunc`` on the +-1 torch stores, so the numbers are torch's on
      every raw value torch produces, and every finite raw value maps onto the set. Computed
      in compact WY form (two products and a ``k x k`` triangular solve; O(nk) memory in the
      backward pass, where applying the reflectors one by one would hold O(nk^2)).
    * ``map=None`` resolves when the array is first seen: ``"matrix_exp"`` for square or complex
      matrices, ``"householder"`` otherwise (torch's rule).

    ``use_trivialization=True`` (default; Lezcano-Casado 2019, "Trivializations for
    gradient-based optimization on manifolds") keeps a base point ``B`` as non-trainable
    **state** and returns ``B @ Q`` (transposed back if wide). The base is set by the right
    inverse, at registration and on every assignment (torch's "dynamic trivialization":
    assigning the current value moves the base there and resets the raw value): for a square
    orthogonal value (torch's ``_is_orthogonal`` tolerance) ``B`` is the value itself, kept
    exactly; otherwise the Q factor of its QR decomposition with ``diag(R) >= 0``: orthogonal
    for every finite value, rank-deficient or zero included (a zero ``R_jj`` keeps the
    Householder Q's column: ``sign(0) = +1``, where torch's ``sign(0) = 0`` zeroes it; a zero
    kernel gives the base ``I``). The raw value returned is torch's ``-I``-like array (zeros
    with ``-1`` on the diagonal), on which all three maps give ``eye(n, k)``, so the
    constrained value is the first ``k`` columns of ``B``.

    **Tall and wide matrices** (issue 12; :mod:`parametrax._numerics.tall`): the state holds
    the base as its **frame**, the ``(..., n, k)`` first columns ``Y`` (tall view), never
    ``n x n``; ``B = [Y, Y_perp]`` with ``Y_perp`` the Householder completion of ``Y`` (the
    columns ``jnp.linalg.qr(Y, mode="complete")`` appends), applied in O(n k²). The value at
    the registered raw ``-I`` is ``Y`` bit for bit. Torch completes ``Y`` with random columns
    from its global RNG (this class did too, from the key, before issue 12): the completion
    only sets which raw coordinates name which point away from ``-I``, not the set reached
    (``B`` is orthogonal either way, so ``x -> B Q(x)`` is onto the same set), and given the
    same ``n x n`` base the numbers are torch's: an ``(..., n, n)`` base in the state (torch's
    layout) is still read, and assignment keeps it ``n x n`` (completed with Gaussian
    columns from the key, which it then requires). The ``"matrix_exp"`` and ``"cayley"`` maps
    run on ``2k x 2k`` matrices when ``n > 2k`` (the exact map and its exact gradient, not a
    retraction; :func:`parametrax._numerics.skew_map_columns`), so a step costs O(n k²) time
    and O(n k) memory.

    ``use_trivialization=False``: no state. For ``"householder"`` the right inverse is a
    Householder QR (torch's ``geqrf`` path): ``forward(right_inverse(V))`` is the QR Q factor of
    ``V`` with ``diag(R) >= 0`` (a zero or dependent column of ``V`` still gives an
    orthonormal column, where torch gives zeros). ``"matrix_exp"`` and ``"cayley"`` have no
    right inverse: at
    registration the initial value is kept as the raw value (the weight becomes
    ``forward(W)``, as in torch) and assigning raises ``NotImplementedError``.

    Layouts (see the module docstring): with a Flax ``nn.Dense`` kernel ``(in, out)``,
    ``Parametrized(nn.Dense, {"kernel": Orthogonal()})`` constrains the kernel itself, with no
    transpose. :meth:`forward` on a bare array computes torch's forward on that same array.

    Args:
      map: ``"matrix_exp"``, ``"cayley"``, ``"householder"`` or ``None`` (torch's
        ``orthogonal_map``).
      use_trivialization: keep a base point as state (torch's default).

    >>> import jax, jax.numpy as jnp
    >>> from parametrax import tree
    >>> from parametrax.catalog.orthogonal import Orthogonal
    >>> w = jax.random.normal(jax.random.key(0), (5, 3))
    >>> raw, state = tree.register({"w": Orthogonal()}, {"w": w}, key=jax.random.key(1))
    >>> q = tree.constrain({"w": Orthogonal()}, raw, state)["w"]
    >>> bool(jnp.allclose(q.T @ q, jnp.eye(3), atol=1e-5))
    True
    >>> q0 = Orthogonal(map="cayley", use_trivialization=False)(w)  # plain function
    >>> bool(jnp.allclose(q0.T @ q0, jnp.eye(3), atol=1e-5))
    True
    """

    map: str | None = None
    use_trivialization: bool = True

    def __post_init__(self):
        if self.map is not None and self.map not in ORTHOGONAL_MAPS:
            raise ParametrizationError(
                "`Orthogonal`: `map` has to be one of "
                + ", ".join(f'"{m}"' for m in ORTHOGONAL_MAPS)
                + f" or None; got {self.map!r}."
            )
        if not isinstance(self.use_trivialization, bool):
            raise ParametrizationTypeError(
                "`Orthogonal`: `use_trivialization` must be a bool; got "
                f"{self.use_trivialization!r}."
            )

    def __repr__(self) -> str:
        return f"Orthogonal(map={self.map!r}, use_trivialization={self.use_trivialization})"

    broadcasts = ExactClassBroadcasts()

    def batching_pays(self, shape: tuple) -> bool:
        """With the matrix exponential (``map="matrix_exp"``, or ``None`` on a square shape):
        batched, it was measured faster than a loop; the Cayley and Householder maps were not."""
        square = len(shape) >= 2 and shape[-1] == shape[-2]
        return self.map == "matrix_exp" or (self.map is None and square)

    # --- which map, and input checks -------------------------------------------------------
    def resolved_map(self, x: Array) -> str:
        """The map used for ``x``: ``map``, or torch's default rule when ``map`` is None."""
        if self.map is not None:
            return self.map
        square = x.shape[-1] == x.shape[-2]
        return "matrix_exp" if square or jnp.iscomplexobj(x) else "householder"

    def _check(self, x: Array) -> str:
        require_matrix(self, x)
        m = self.resolved_map(x)
        if m == "householder" and jnp.iscomplexobj(x):
            raise ShapeError(
                f"`{self!r}`: The householder parametrization does not support complex tensors "
                f"(got dtype {jnp.dtype(x.dtype).name}, shape {tuple(x.shape)}); use "
                "map='matrix_exp' or map='cayley' for unitary matrices."
            )
        return m

    @property
    def has_variables(self) -> bool:  # the base point exists only with the trivialization
        return self.use_trivialization

    @property
    def has_right_inverse(self) -> bool:
        """True with the trivialization (the base moves to the value) and for householder;
        ``"matrix_exp"`` and ``"cayley"`` without it have none. ``map=None`` resolves to
        householder for the non-square real matrices that default to it; on a square or complex
        matrix (which resolve to ``"matrix_exp"``) assigning raises ``NotImplementedError``."""
        return self.use_trivialization or self.map in (None, "householder")

    # --- the maps ----------------------------------------------------------------------------
    def forward(self, x: Array, *, base: Array | None = None) -> Array:
        """Torch's ``_Orthogonal.forward`` on ``x`` with base point ``base``: its frame
        ``(..., n, k)`` or the whole ``(..., n, n)`` base, in the tall view (``n = max``,
        ``k = min`` of the last two sizes). Without ``base`` no base is
        applied (the map with ``use_trivialization=False``, or equivalently ``base = I``).
        ``base`` is keyword-only: a second positional array is reserved by the contract for a
        second raw array. bfloat16 / float16 are computed in float32 and cast back."""
        x = jnp.asarray(x)
        m = self._check(x)
        if base is not None:
            base = jnp.asarray(base)
            self._check_base(base, _tall(x)[0])
        return widened(_forward)(x, base, m=m)

    def _check_base(self, base: Array, tall: Array) -> None:
        n, k = tall.shape[-2:]
        frame, full = tall.shape[:-2] + (n, k), tall.shape[:-2] + (n, n)
        if tuple(base.shape) not in (frame, full) or base.dtype != tall.dtype:
            also = "" if n == k else f" (or a whole base of shape {full})"
            raise ShapeError(
                f"`{self!r}`: the base point has shape {tuple(base.shape)} and dtype "
                f"{jnp.dtype(base.dtype).name}; a value whose tall view is "
                f"{tuple(tall.shape)} needs a base of shape {frame}{also} and dtype "
                f"{jnp.dtype(tall.dtype).name}."
            )

    # --- right inverse without trivialization -----------------------------------------------
    def right_inverse(self, value: Array) -> Array:
        """The right inverse without trivialization (see the class docstring)."""
        value = jnp.asarray(value)
        m = self._check(value)
        if self.use_trivialization:
            raise ParametrizationTypeError(
                f"`{self!r}` keeps its base point as state; use "
                "`apply_inverse(variables, value, key=key)` (or parametrax.assign)."
            )
        if m != "householder":
            raise NotImplementedError(f"`{self!r}`: {NOT_ASSIGNABLE}")
        q, transposed = _tall(lax.stop_gradient(value))
        a = widened(_householder_reflectors)(q)
        return mT(a) if transposed else a

    # --- the variables protocol (trivialization) ---------------------------------------------
    def init_variables(self, key: Array, value: Array) -> Variables:
        """The canonical base point, as its frame ``eye(n, k)`` of shape ``(..., n, k)`` (tall
        view); the right inverse sets the real one."""
        del key
        if not self.use_trivialization:
            return {"params": {}, "state": {}}
        value = jnp.asarray(value)
        self._check(value)
        tall, _ = _tall(value)
        n, k = tall.shape[-2:]
        return {"params": {}, "state": {"base": eye_frame(tall.shape[:-2], n, k, value.dtype)}}

    def apply(self, variables: Variables, x: Array, *, update_state: bool = False):
        del update_state  # the base only moves through the right inverse
        state = variables["state"]
        if not self.use_trivialization:
            return self.forward(x), state
        if "base" not in state:
            raise ParametrizationError(
                f"`{self!r}` needs its state `base` (made by `init_variables` and set by the "
                f"right inverse); got state keys {sorted(state)}."
            )
        return self.forward(x, base=state["base"]), state

    def apply_inverse(self, variables: Variables, value: Array, *, key: Array | None = None):
        if not self.use_trivialization:
            return self.right_inverse(value), variables["state"]
        value = jnp.asarray(value)
        self._check(value)
        q, _ = _tall(lax.stop_gradient(value))
        n, k = q.shape[-2:]
        old = variables["state"].get("base")
        if old is not None:
            self._check_base(old, q)
        full = old is not None and n != k and old.shape[-1] == n  # a whole n x n base
        base = self._new_base(widen(q), key, value.shape, full).astype(q.dtype)
        rows, cols = value.shape[-2:]
        neg_eye = jnp.broadcast_to(-_rect_eye(rows, cols, value.dtype), value.shape)
        return neg_eye, {**variables["state"], "base": base}

    def _new_base(self, q: Array, key: Array | None, shape: tuple, full: bool) -> Array:
        """The base point for the tall value ``q`` (see the class docstring): its frame, or a
        whole ``n x n`` base where the state holds one (completed with random columns)."""
        n, k = q.shape[-2:]
        if n == k:
            return jnp.where(_is_orthogonal(q), q, qr_positive(q))
        if not full:
            return qr_positive(q)
        if key is None:
            raise ParametrizationError(
                f"`{self!r}`: setting a whole n x n base point for a non-square "
                f"{tuple(shape)} matrix completes it with random columns and needs a "
                "PRNG key; pass `key=` (e.g. `parametrax.assign(model, variables, values, "
                "key=key)`), or keep the base as its n x k frame (what registration makes)."
            )
        noise = jax.random.normal(key, q.shape[:-2] + (n, n - k), q.dtype)
        return qr_positive(jnp.concatenate([q, noise], axis=-1))


cayley = Cayley()
matrix_exp = MatrixExp()
