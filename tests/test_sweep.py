"""The optimizer-and-init sweep of issue 16: the constraint holds after every optimizer step.

For every catalog entry (each map and option) x optimizer x initial value x dtype x shape: the
initial value is registered with ``px.tree.register`` (init = right_inverse), then ``STEPS``
optax steps run toward a target the set cannot reach. The constrained value must be finite and
on the set at registration and after EVERY step, or the registration must raise a parametrax
error (``px.ParametrizationError``) -- an entry may refuse e.g. a zero vector.

Membership is computed here, in numpy (float64, on the values the library returned), by the
functions of ``MEMBERSHIP``; the library's ``in_manifold`` is never called. Tolerances are per
dtype (``TOL``) and documented where they are used.

Cost: one jitted function per (entry, optimizer, shape, dtype) runs all initial values at once
(``vmap`` over the inits, ``lax.scan`` over the steps). The default run takes ``FAST_CASES``, a
fixed covering selection (every entry, every optimizer, both dtypes and all three shapes appear);
the full matrix is marked ``sweep`` and deselected by default::

    python -m pytest -m sweep tests/test_sweep.py

Failures of today's code are listed in ``KNOWN_FAILURES`` (case id -> root-cause tag, tags
explained in ``CAUSES``). A known failure that passes fails the test (strict), so each fix must
remove its lines; a new failure fails the test too.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import parametrax as px
from parametrax import tree as ptree

from _helpers import standard_promotion

STEPS = 30
DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}
SHAPES = {"tall": (6, 3), "square": (4, 4), "wide": (3, 6)}
ALL_SHAPES = ("tall", "square", "wide")
SQUARE = ("square",)
ONE_SHAPE = ("square",)  # elementwise entries: the shape does not matter

# Per-dtype tolerances of the membership checks, relative to the value's scale where it has one.
# float32: 1e-4 is ~1000 ulps, room for an n x n product and an SVD / eigh of the result.
# bfloat16: eps is 2^-8 = 3.9e-3 and the library computes in bf16 where it can; an n x n
# product of rounded entries is off by ~n * eps, so 6e-2 (about 16 ulps, n <= 6).
TOL = {"f32": 1e-4, "bf16": 6e-2}
# SpectralNorm's sigma is a power-iteration estimate (one iteration per step, state carried):
# |sigma_max(W / sigma) - 1| is the estimate's error, not rounding. 5e-2 allows 15 warm-up
# iterations on a matrix with a modest spectral gap.
SPECTRAL_TOL = 5e-2


# ------------------------------------------------------------------------------------------------
# Independent membership (numpy, float64). Each returns (ok, how far off) for one matrix.
# ------------------------------------------------------------------------------------------------
def _tall(y):
    return y.T if y.shape[0] < y.shape[1] else y


def _orth_err(y):
    q = _tall(y)
    return float(np.max(np.abs(q.T @ q - np.eye(q.shape[1]))))


def m_orthonormal(y, tol):
    e = _orth_err(y)
    return e <= tol, e


def m_special_orthogonal(y, tol):
    e = _orth_err(y)
    return e <= tol and np.linalg.det(y) > 0, e


def m_unit_rows(y, tol):
    e = float(np.max(np.abs(np.linalg.norm(y, axis=-1) - 1)))
    return e <= tol, e


def _sym_eigs(y):
    scale = max(1.0, float(np.max(np.abs(y))))
    sym = float(np.max(np.abs(y - y.T))) / scale
    return sym, np.linalg.eigvalsh(0.5 * (y + y.T)), scale


def m_positive_definite(y, tol):
    # Strict positivity cannot be seen through rounding; eigenvalues >= -tol * scale.
    sym, w, scale = _sym_eigs(y)
    return sym <= tol and w[0] >= -tol * scale, max(sym, -w[0] / scale)


m_pssd = m_positive_definite


def _pssd_rank(y, tol, r, exact):
    sym, w, scale = _sym_eigs(y)
    n = len(w)
    small = float(np.max(np.abs(w[: n - r]))) / scale if n > r else 0.0
    ok = sym <= tol and w[0] >= -tol * scale and small <= tol
    if exact:
        ok = ok and w[n - r] > tol * scale
    return ok, max(sym, small)


def _svals(y):
    s = np.linalg.svd(y, compute_uv=False)
    return s, max(1.0, float(s[0]))


def m_low_rank(y, tol, r=2):
    s, scale = _svals(y)
    e = float(np.max(s[r:], initial=0.0)) / scale
    return e <= tol, e


def m_fixed_rank(y, tol, r=2):
    s, scale = _svals(y)
    e = float(np.max(s[r:], initial=0.0)) / scale
    return e <= tol and s[r - 1] > tol * scale, e


def m_invertible(y, tol):
    sign, _ = np.linalg.slogdet(y)
    return sign > 0, float(sign)


def m_special_linear(y, tol):
    sign, logdet = np.linalg.slogdet(y)
    e = abs(np.expm1(logdet))
    return sign > 0 and e <= y.shape[0] * tol, e


def m_almost_orthogonal(y, tol, lam=0.5):
    s, _ = _svals(y)
    e = float(max(np.max(s) - (1 + lam), (1 - lam) - np.min(s), 0.0))
    return e <= tol, e


def m_positive(y, tol):
    return bool(np.all(y > 0)), float(np.min(y))


def m_interval(y, tol, lo=-1.0, hi=3.0):
    return bool(np.all((y > lo) & (y < hi))), float(max(np.max(y) - hi, lo - np.min(y)))


def m_simplex(y, tol):
    e = float(np.max(np.abs(y.sum(-1) - 1)))
    return bool(np.all(y > 0)) and e <= tol, e


def m_ordered(y, tol):
    d = np.diff(y, axis=-1)
    return bool(np.all(d > 0)), float(np.min(d))


def m_lower_triangular(y, tol):
    e = float(np.max(np.abs(np.triu(y, 1))))
    return e == 0.0, e


def m_cholesky(y, tol):
    e = float(np.max(np.abs(np.triu(y, 1))))
    return e == 0.0 and bool(np.all(np.diag(y) > 0)), e


def m_spectral(y, tol):
    e = abs(float(np.linalg.svd(y, compute_uv=False)[0]) - 1)
    return e <= SPECTRAL_TOL, e


def m_product_stiefel_positive(y, tol):
    # ProductManifold((Stiefel(), Positive()), sizes=(2, 2)) on (4, 4): columns 0-1
    # orthonormal, columns 2-3 positive.
    ok_orth, e = m_orthonormal(y[:, :2], tol)
    return ok_orth and bool(np.all(y[:, 2:] > 0)), e


def m_any(y, tol):  # WeightNorm constrains nothing: only finiteness is checked
    return True, 0.0


# ------------------------------------------------------------------------------------------------
# The catalog: name -> (chain, shapes it applies to, membership, stateful forward)
# ------------------------------------------------------------------------------------------------
def _entries():
    e = {}
    for m in ("matrix_exp", "cayley", "householder"):
        for t in (True, False):
            e[f"Orthogonal-{m}-{'triv' if t else 'notriv'}"] = (
                px.Orthogonal(map=m, use_trivialization=t),
                ALL_SHAPES,
                m_orthonormal,
            )
    for triv in ("expm", "cayley"):
        e[f"Stiefel-{triv}"] = (px.Stiefel(triv=triv), ALL_SHAPES, m_orthonormal)
        e[f"Grassmannian-{triv}"] = (px.Grassmannian(triv=triv), ALL_SHAPES, m_orthonormal)
        e[f"SO-{triv}"] = (px.SO(triv=triv), SQUARE, m_special_orthogonal)
    e["Sphere"] = (px.Sphere(), ALL_SHAPES, m_unit_rows)
    e["SphereEmbedded"] = (px.SphereEmbedded(), ALL_SHAPES, m_unit_rows)
    e["PositiveDefinite"] = (px.PositiveDefinite(), SQUARE, m_positive_definite)
    e["PSSD"] = (px.PSSD(), SQUARE, m_pssd)
    e["PSSDLowRank"] = (px.PSSDLowRank(2), SQUARE, functools.partial(_pssd_rank, r=2, exact=False))
    e["PSSDFixedRank"] = (
        px.PSSDFixedRank(2),
        SQUARE,
        functools.partial(_pssd_rank, r=2, exact=True),
    )
    e["LowRank"] = (px.LowRank(2), ALL_SHAPES, m_low_rank)
    e["FixedRank"] = (px.FixedRank(2), ALL_SHAPES, m_fixed_rank)
    e["Invertible"] = (px.Invertible(), SQUARE, m_invertible)
    e["SL"] = (px.SL(), SQUARE, m_special_linear)
    e["AlmostOrthogonal"] = (px.AlmostOrthogonal(0.5), ALL_SHAPES, m_almost_orthogonal)
    e["Positive"] = (px.Positive(), ONE_SHAPE, m_positive)
    e["Interval"] = (px.Interval(-1.0, 3.0), ONE_SHAPE, m_interval)
    e["Simplex"] = (px.Simplex(), ONE_SHAPE, m_simplex)
    e["Ordered"] = (px.Ordered(), ONE_SHAPE, m_ordered)
    e["LowerTriangular"] = (px.LowerTriangular(), ALL_SHAPES, m_lower_triangular)
    e["Cholesky"] = (px.Cholesky(), SQUARE, m_cholesky)
    e["SpectralNorm"] = (px.SpectralNorm(), ALL_SHAPES, m_spectral)
    e["WeightNorm"] = (px.WeightNorm(), ALL_SHAPES, m_any)
    e["skew-cayley"] = ([px.skew, px.cayley], SQUARE, m_special_orthogonal)
    e["skew-matrix_exp"] = ([px.skew, px.matrix_exp], SQUARE, m_special_orthogonal)
    e["symmetric-matrix_exp"] = ([px.symmetric, px.matrix_exp], SQUARE, m_positive_definite)
    # issue 14: Skew on the lower triangle; ProductManifold (Stiefel block | positive block)
    e["skew_lower-cayley"] = ([px.Skew(lower=True), px.cayley], SQUARE, m_special_orthogonal)
    e["ProductManifold"] = (
        px.ProductManifold((px.Stiefel(), px.Positive()), sizes=(2, 2)),
        SQUARE,
        m_product_stiefel_positive,
    )
    return e


ENTRIES = _entries()
STATEFUL = {"SpectralNorm"}  # forward advances state (power iteration) in training
# issue 14: sigmaReparam reaches every matrix (|gamma| is its spectral norm): finiteness only
ENTRIES["SpectralNorm-learnable"] = (px.SpectralNorm(learnable_scale=True), ALL_SHAPES, m_any)
STATEFUL |= {"SpectralNorm-learnable"}


# issue 14: ConvSpectralNorm. The sweep's values are matrices: the chain reads an (r, c) matrix as
# a 1-D conv kernel (k, r / k, c) (k = 2 for even r, else 3), normalises the convolution's
# operator norm on inputs of length CONV_LEN, and reads it back as a matrix. Membership: the
# operator materialised in numpy (float64, independent of lax) has largest singular value 1.
CONV_LEN = 5


def _taps(r):
    return 2 if r % 2 == 0 else 3


class _ToKernel(px.Parametrization):
    def forward(self, x):
        r, c = x.shape
        return x.reshape(_taps(r), r // _taps(r), c)

    def right_inverse(self, k):
        return k.reshape(-1, k.shape[-1])


class _ToMatrix(px.Parametrization):
    def forward(self, k):
        return k.reshape(-1, k.shape[-1])

    def right_inverse(self, x):
        r, c = x.shape
        return x.reshape(_taps(r), r // _taps(r), c)


def _conv1d_dense(k, n, circular):
    """nn.Conv's 1-D operator on inputs (n, c_in), stride 1, 'SAME' (zeros) or 'CIRCULAR', as
    an (n c_out, n c_in) matrix: out[i] = sum_t K[t]^T x[i + t - (taps - 1) // 2]."""
    taps, cin, cout = k.shape
    m = np.zeros((n, cout, n, cin))
    for i in range(n):
        for t in range(taps):
            j = i + t - (taps - 1) // 2
            if circular:
                j %= n
            elif not 0 <= j < n:
                continue
            m[i, :, j, :] += k[t].T
    return m.reshape(n * cout, n * cin)


def m_conv_spectral(y, tol, circular=False):
    r, c = y.shape
    k = y.reshape(_taps(r), r // _taps(r), c)
    e = abs(float(np.linalg.svd(_conv1d_dense(k, CONV_LEN, circular), compute_uv=False)[0]) - 1)
    return e <= SPECTRAL_TOL, e


ENTRIES["ConvSpectralNorm"] = (
    [_ToKernel(), px.ConvSpectralNorm((CONV_LEN,)), _ToMatrix()],
    ALL_SHAPES,
    m_conv_spectral,
)
ENTRIES["ConvSpectralNorm-exact"] = (
    [_ToKernel(), px.ConvSpectralNorm((CONV_LEN,), padding="CIRCULAR", exact=True), _ToMatrix()],
    ALL_SHAPES,
    functools.partial(m_conv_spectral, circular=True),
)
STATEFUL |= {"ConvSpectralNorm"}


# issue 14: Hurwitz (stable matrices, eigenvalues' real parts < -alpha) and CorrelationCholesky
# (the LKJ support). Membership from numpy: float64 eigenvalues of the returned value, strict
# (an open set; the map keeps a documented rounding margin, so no tolerance is given); unit rows
# within TOL, an exactly zero upper triangle and a positive diagonal.
HURWITZ_ALPHA = 0.1


def m_hurwitz(y, tol, alpha=HURWITZ_ALPHA):
    top = float(np.max(np.linalg.eigvals(y).real))
    return top < -alpha, top + alpha


def m_correlation_cholesky(y, tol):
    upper = float(np.max(np.abs(np.triu(y, 1))))
    e = float(np.max(np.abs(np.linalg.norm(y, axis=-1) - 1)))
    return upper == 0.0 and bool(np.all(np.diag(y) > 0)) and e <= tol, max(e, upper)


ENTRIES["Hurwitz"] = (px.Hurwitz(alpha=HURWITZ_ALPHA), SQUARE, m_hurwitz)
ENTRIES["CorrelationCholesky"] = (px.CorrelationCholesky(), SQUARE, m_correlation_cholesky)

OPTIMIZERS = {
    "sgd": lambda: optax.sgd(1e-2),
    "momentum": lambda: optax.sgd(1e-2, momentum=0.9),
    "adam": lambda: standard_promotion(optax.adam(1e-2)),
    "adamw": lambda: standard_promotion(optax.adamw(1e-2, weight_decay=1e-2)),
    "lion": lambda: optax.lion(1e-3, weight_decay=1e-2),
    "adafactor": lambda: standard_promotion(optax.adafactor(1e-2)),
    "clip": lambda: optax.chain(
        optax.clip_by_global_norm(1.0), standard_promotion(optax.adam(1e-2))
    ),
    # A huge learning rate with a bounded step (Adam's steps are ~lr): the raw values reach
    # |x| ~ 300 but stay finite; every finite raw value must map onto the set.
    "huge_lr": lambda: standard_promotion(optax.adam(10.0)),
}


# ------------------------------------------------------------------------------------------------
# Initial values (numpy float64, cast to the case's dtype)
# ------------------------------------------------------------------------------------------------
def _orth_det_minus_one(shape, rng):
    n = max(shape)
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) > 0:
        q[:, 0] *= -1
    q = q[:, : min(shape)]
    return q.T if shape[0] < shape[1] else q


def _init(name, shape, seed):
    rng = np.random.default_rng(seed)
    if name == "default":  # flax's default kernel init: lecun normal, fan_in = shape[-2]
        key = jax.random.key(seed)
        return np.asarray(jax.nn.initializers.lecun_normal()(key, shape, jnp.float32), np.float64)
    if name == "zeros":
        return np.zeros(shape)
    if name == "orth_det_minus_one":
        return _orth_det_minus_one(shape, rng)
    if name == "rank_deficient":
        return np.outer(rng.standard_normal(shape[0]), rng.standard_normal(shape[1])) / 2
    if name == "huge":
        return 1e4 * rng.standard_normal(shape)
    if name == "tiny":
        return 1e-6 * rng.standard_normal(shape)
    raise ValueError(name)


INITS = ("default", "zeros", "orth_det_minus_one", "rank_deficient", "huge", "tiny")


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------
def _target(shape):
    """Unreachable for every entry: large, positive, increasing, not symmetric, full rank."""
    n = int(np.prod(shape))
    return jnp.asarray(3.0 + np.arange(n).reshape(shape) / n + 5 * np.eye(*shape), jnp.float32)


@functools.cache
def _runner(entry: str, opt: str):
    """One jitted function per (entry, optimizer); jax.jit adds one compilation per (shape,
    dtype, number of inits). Returns the constrained values at registration and after each
    step, ``(n_inits, STEPS + 1, *shape)``."""
    chain = ENTRIES[entry][0]
    spec = {"w": chain}
    stateful = entry in STATEFUL
    tx = OPTIMIZERS[opt]()

    def loss(raw, state, target):
        out, new_state = ptree.forward(spec, raw, state, update_state=stateful)
        y = out["w"]
        return jnp.sum((y.astype(jnp.float32) - target) ** 2), (y, new_state)

    def run(raw, state, target):
        def body(carry, _):
            raw, state, opt_state = carry
            grads, (y, new_state) = jax.grad(loss, has_aux=True)(raw, state, target)
            updates, opt_state = tx.update(grads, opt_state, raw)
            raw = optax.apply_updates(raw, updates)
            return (raw, new_state, opt_state), y

        (raw, state, _), ys = jax.lax.scan(body, (raw, state, tx.init(raw)), None, length=STEPS)
        last = ptree.forward(spec, raw, state, update_state=False)[0]["w"]
        return jnp.concatenate([ys, last[None]], axis=0)

    jitted = jax.jit(jax.vmap(run, in_axes=(0, 0, None)))

    def call(*args):
        # Compiled with XLA's default options. A low optimisation level
        # (`xla_backend_optimization_level=0`, `xla_llvm_disable_expensive_passes`) halved compile
        # time but crashed XLA's CPU compiler (segfault / abort inside backend_compile_and_load)
        # after many cases in one process, on jaxlib 0.10.2 with the scaling-and-squaring expm's
        # while_loop; the default pipeline is the one every other test (and user) compiles with.
        return jitted(*args)

    return call


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


def run_case(entry: str, opt: str, shape_name: str, dtype_name: str) -> dict[str, str]:
    """``{init: outcome}``; outcome is "ok", "refused" (a clear parametrax error at
    registration) or a description of the failure."""
    chain, _, member = ENTRIES[entry]
    shape, dtype, tol = SHAPES[shape_name], DTYPES[dtype_name], TOL[dtype_name]
    spec = {"w": chain}
    out: dict[str, str] = {}
    registered = []
    for i, name in enumerate(INITS):
        value = jnp.asarray(_init(name, shape, seed=i), dtype)
        try:
            raw, state = ptree.register(spec, {"w": value}, key=jax.random.key(i))
        except px.ParametrizationError:
            out[name] = "refused"
            continue
        except Exception as e:  # noqa: BLE001 -- any other error is a finding
            out[name] = f"registration raised {_short(e)}"
            continue
        registered.append((name, raw, state))
    if not registered:
        return out
    raws = jax.tree.map(lambda *x: jnp.stack(x), *[r for _, r, _ in registered])
    states = jax.tree.map(lambda *x: jnp.stack(x), *[s for _, _, s in registered])
    try:
        ys = np.asarray(_runner(entry, opt)(raws, states, _target(shape)), np.float64)
    except Exception as e:  # noqa: BLE001
        for name, _, _ in registered:
            out[name] = f"steps raised {_short(e)}"
        return out
    for (name, _, _), traj in zip(registered, ys):
        out[name] = "ok"
        for step, y in enumerate(traj):
            if not np.all(np.isfinite(y)):
                out[name] = f"non-finite at step {step}"
                break
            ok, err = member(y, tol)
            if not ok:
                out[name] = f"off the set at step {step} (off by {err:.3g})"
                break
    return out


def case_id(entry, opt, shape, dtype, init=None):
    base = f"{entry}|{opt}|{shape}|{dtype}"
    return base if init is None else f"{base}|{init}"


ALL_CASES = [
    (entry, opt, shape, dtype)
    for entry, (_, shapes, _) in ENTRIES.items()
    for opt in OPTIMIZERS
    for shape in shapes
    for dtype in DTYPES
]


def _fast_cases():
    """A fixed covering selection: every entry once, cycling through optimizers, shapes and
    dtypes so that each optimizer, each shape and both dtypes meet several entries."""
    opts, dtypes = list(OPTIMIZERS), list(DTYPES)
    out = []
    for i, (entry, (_, shapes, _)) in enumerate(ENTRIES.items()):
        out.append(
            (entry, opts[i % len(opts)], shapes[i % len(shapes)], dtypes[(i // 2) % len(dtypes)])
        )
    return out


# issue 14's entries in the fast subset: one case each, chosen for the root causes the sweep found
# (tests/test_hurwitz.py and the KNOWN_FAILURES note below): Hurwitz with SGD in bfloat16 (the
# huge init went non-finite after one step; bfloat16 rounding took values off the set) and
# CorrelationCholesky with Adafactor in bfloat16 (optax's own float32/bfloat16 mix under strict
# promotion). The cheapest Hurwitz case: every Hurwitz case compiles the scaling-and-squaring expm.
FAST_OVERRIDES = {
    "Hurwitz": ("Hurwitz", "sgd", "square", "bf16"),
    "CorrelationCholesky": ("CorrelationCholesky", "adafactor", "square", "bf16"),
}
FAST_CASES = [FAST_OVERRIDES.get(c[0], c) for c in _fast_cases()]


# ------------------------------------------------------------------------------------------------
# Today's failures: case id -> root-cause tag (see CAUSES). Remove lines as fixes land.
# ------------------------------------------------------------------------------------------------
CAUSES: dict[str, str] = {
    "expm-overflow": "[symmetric, matrix_exp]: expm clamps exp of a symmetric matrix to the "
    "dtype's range (finite and positive definite for every finite raw value, _numerics.expm), "
    "but momentum toward the unreachable target pushes the eigenvalues past log(max) = 88: the "
    "squared-error loss of entries ~1e38 overflows, its gradient is inf and the raw value "
    "becomes NaN (a diverging run, not the map). The same with plain SGD and Adam, and with "
    "the huge init (raw 1e4 N: exp of its eigenvalues is clamped to the dtype's max) under every "
    "optimizer at step 1",
    "sn-lag": "norms.py:SpectralNorm: one power iteration per step lags behind a weight that "
    "changes by much relative to its own norm (tiny init, or SGD / momentum / Adam steps toward "
    "the sweep's unreachable target), sigma is underestimated (torch's spectral_norm, one "
    "iteration per step by default, lags the same way; raise n_power_iterations)",
}

# Generated by `python tests/test_sweep.py fast` and classified by hand-written rules; the
# comment is the outcome observed on the day it was written.
KNOWN_FAILURES: dict[str, str] = {
    "SpectralNorm|adafactor|wide|f32|tiny": "sn-lag",  # off the set at step 1 (off by 0.176)
    "symmetric-matrix_exp|momentum|square|f32|default": "expm-overflow",  # non-finite at step 4
    "symmetric-matrix_exp|momentum|square|f32|zeros": "expm-overflow",  # non-finite at step 5
    "symmetric-matrix_exp|momentum|square|f32|orth_det_minus_one": "expm-overflow",  # non-finite a
    "symmetric-matrix_exp|momentum|square|f32|rank_deficient": "expm-overflow",  # non-finite at st
    "symmetric-matrix_exp|momentum|square|f32|huge": "expm-overflow",  # non-finite at step 1
    "symmetric-matrix_exp|momentum|square|f32|tiny": "expm-overflow",  # non-finite at step 5
}
assert set(KNOWN_FAILURES.values()) <= set(CAUSES), set(KNOWN_FAILURES.values()) - set(CAUSES)


# issue 14: ConvSpectralNorm's power iteration (one iteration per step) lags like SpectralNorm's,
# by more: a conv operator has close top singular values (one per nearby frequency), so a step
# that moves the kernel leaves u, v far from converged (checked: the same raw values with 100
# more iterations are on the set to 1e-5). The exact (FFT) variant has no failure.
CAUSES["conv-lag"] = (
    "conv_norm.py:ConvSpectralNorm: one power iteration per step tracks the operator norm slowly "
    "(a spectral gap of ~1% between the top singular values of a conv operator); sigma is "
    "underestimated until u, v catch up (raise n_power_iterations, or exact=True)"
)
KNOWN_FAILURES.update(
    {
        "ConvSpectralNorm|adafactor|square|bf16|default": "conv-lag",  # off the set at step 21 (off by
        "ConvSpectralNorm|adafactor|square|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.8
        "ConvSpectralNorm|adafactor|square|f32|default": "conv-lag",  # off the set at step 21 (off by
        "ConvSpectralNorm|adafactor|square|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.80
        "ConvSpectralNorm|adafactor|tall|bf16|orth_det_minus_one": "conv-lag",  # off the set at step 1
        "ConvSpectralNorm|adafactor|tall|bf16|rank_deficient": "conv-lag",  # off the set at step 24 (o
        "ConvSpectralNorm|adafactor|tall|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.5)
        "ConvSpectralNorm|adafactor|tall|f32|orth_det_minus_one": "conv-lag",  # off the set at step 15
        "ConvSpectralNorm|adafactor|tall|f32|rank_deficient": "conv-lag",  # off the set at step 19 (of
        "ConvSpectralNorm|adafactor|tall|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.478)
        "ConvSpectralNorm|adafactor|wide|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.365
        "ConvSpectralNorm|adafactor|wide|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.363)
        "ConvSpectralNorm|adamw|square|bf16|default": "conv-lag",  # off the set at step 14 (off by 0.0
        "ConvSpectralNorm|adamw|square|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 1.01)
        "ConvSpectralNorm|adamw|square|f32|default": "conv-lag",  # off the set at step 14 (off by 0.06
        "ConvSpectralNorm|adamw|square|f32|tiny": "conv-lag",  # off the set at step 1 (off by 1)
        "ConvSpectralNorm|adamw|tall|bf16|rank_deficient": "conv-lag",  # off the set at step 19 (off b
        "ConvSpectralNorm|adamw|tall|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.367)
        "ConvSpectralNorm|adamw|tall|f32|rank_deficient": "conv-lag",  # off the set at step 18 (off by
        "ConvSpectralNorm|adamw|tall|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.36)
        "ConvSpectralNorm|adamw|wide|bf16|orth_det_minus_one": "conv-lag",  # off the set at step 6 (of
        "ConvSpectralNorm|adamw|wide|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.367)
        "ConvSpectralNorm|adamw|wide|f32|orth_det_minus_one": "conv-lag",  # off the set at step 6 (off
        "ConvSpectralNorm|adamw|wide|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.366)
        "ConvSpectralNorm|adam|square|bf16|default": "conv-lag",  # off the set at step 14 (off by 0.06
        "ConvSpectralNorm|adam|square|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 1.01)
        "ConvSpectralNorm|adam|square|f32|default": "conv-lag",  # off the set at step 14 (off by 0.064
        "ConvSpectralNorm|adam|square|f32|tiny": "conv-lag",  # off the set at step 1 (off by 1)
        "ConvSpectralNorm|adam|tall|bf16|orth_det_minus_one": "conv-lag",  # off the set at step 7 (off
        "ConvSpectralNorm|adam|tall|bf16|rank_deficient": "conv-lag",  # off the set at step 17 (off by
        "ConvSpectralNorm|adam|tall|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.367)
        "ConvSpectralNorm|adam|tall|f32|rank_deficient": "conv-lag",  # off the set at step 18 (off by
        "ConvSpectralNorm|adam|tall|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.36)
        "ConvSpectralNorm|adam|wide|bf16|orth_det_minus_one": "conv-lag",  # off the set at step 5 (off
        "ConvSpectralNorm|adam|wide|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.367)
        "ConvSpectralNorm|adam|wide|f32|orth_det_minus_one": "conv-lag",  # off the set at step 6 (off
        "ConvSpectralNorm|adam|wide|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.366)
        "ConvSpectralNorm|clip|square|bf16|default": "conv-lag",  # off the set at step 14 (off by 0.06
        "ConvSpectralNorm|clip|square|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 1.01)
        "ConvSpectralNorm|clip|square|f32|default": "conv-lag",  # off the set at step 14 (off by 0.062
        "ConvSpectralNorm|clip|square|f32|tiny": "conv-lag",  # off the set at step 1 (off by 1)
        "ConvSpectralNorm|clip|tall|bf16|rank_deficient": "conv-lag",  # off the set at step 17 (off by
        "ConvSpectralNorm|clip|tall|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.383)
        "ConvSpectralNorm|clip|tall|f32|rank_deficient": "conv-lag",  # off the set at step 18 (off by
        "ConvSpectralNorm|clip|tall|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.36)
        "ConvSpectralNorm|clip|wide|bf16|orth_det_minus_one": "conv-lag",  # off the set at step 5 (off
        "ConvSpectralNorm|clip|wide|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.368)
        "ConvSpectralNorm|clip|wide|f32|orth_det_minus_one": "conv-lag",  # off the set at step 6 (off
        "ConvSpectralNorm|clip|wide|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.366)
        "ConvSpectralNorm|huge_lr|square|bf16|default": "conv-lag",  # off the set at step 1 (off by 1.
        "ConvSpectralNorm|huge_lr|square|bf16|orth_det_minus_one": "conv-lag",  # off the set at step 1
        "ConvSpectralNorm|huge_lr|square|bf16|rank_deficient": "conv-lag",  # off the set at step 1 (of
        "ConvSpectralNorm|huge_lr|square|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 1.01)
        "ConvSpectralNorm|huge_lr|square|f32|default": "conv-lag",  # off the set at step 1 (off by 1.1
        "ConvSpectralNorm|huge_lr|square|f32|orth_det_minus_one": "conv-lag",  # off the set at step 1
        "ConvSpectralNorm|huge_lr|square|f32|tiny": "conv-lag",  # off the set at step 1 (off by 1)
        "ConvSpectralNorm|huge_lr|tall|bf16|default": "conv-lag",  # off the set at step 1 (off by 0.22
        "ConvSpectralNorm|huge_lr|tall|bf16|rank_deficient": "conv-lag",  # off the set at step 1 (off
        "ConvSpectralNorm|huge_lr|tall|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.373)
        "ConvSpectralNorm|huge_lr|tall|f32|default": "conv-lag",  # off the set at step 1 (off by 0.233
        "ConvSpectralNorm|huge_lr|tall|f32|rank_deficient": "conv-lag",  # off the set at step 1 (off b
        "ConvSpectralNorm|huge_lr|tall|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.36)
        "ConvSpectralNorm|huge_lr|wide|bf16|orth_det_minus_one": "conv-lag",  # off the set at step 1 (
        "ConvSpectralNorm|huge_lr|wide|bf16|rank_deficient": "conv-lag",  # off the set at step 1 (off
        "ConvSpectralNorm|huge_lr|wide|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.367)
        "ConvSpectralNorm|huge_lr|wide|f32|orth_det_minus_one": "conv-lag",  # off the set at step 1 (o
        "ConvSpectralNorm|huge_lr|wide|f32|rank_deficient": "conv-lag",  # off the set at step 1 (off b
        "ConvSpectralNorm|huge_lr|wide|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.366)
        "ConvSpectralNorm|lion|square|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 1.02)
        "ConvSpectralNorm|lion|square|f32|tiny": "conv-lag",  # off the set at step 1 (off by 1)
        "ConvSpectralNorm|lion|tall|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.366)
        "ConvSpectralNorm|lion|tall|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.36)
        "ConvSpectralNorm|lion|wide|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.359)
        "ConvSpectralNorm|lion|wide|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.366)
        "ConvSpectralNorm|momentum|square|bf16|default": "conv-lag",  # off the set at step 2 (off by 0
        "ConvSpectralNorm|momentum|square|bf16|orth_det_minus_one": "conv-lag",  # off the set at step
        "ConvSpectralNorm|momentum|square|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 1.06
        "ConvSpectralNorm|momentum|square|f32|default": "conv-lag",  # off the set at step 2 (off by 0.
        "ConvSpectralNorm|momentum|square|f32|orth_det_minus_one": "conv-lag",  # off the set at step 1
        "ConvSpectralNorm|momentum|square|f32|tiny": "conv-lag",  # off the set at step 1 (off by 1.05)
        "ConvSpectralNorm|momentum|tall|bf16|default": "conv-lag",  # off the set at step 17 (off by 0.
        "ConvSpectralNorm|momentum|tall|bf16|orth_det_minus_one": "conv-lag",  # off the set at step 1
        "ConvSpectralNorm|momentum|tall|bf16|rank_deficient": "conv-lag",  # off the set at step 4 (off
        "ConvSpectralNorm|momentum|tall|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 1.96)
        "ConvSpectralNorm|momentum|tall|f32|default": "conv-lag",  # off the set at step 17 (off by 0.0
        "ConvSpectralNorm|momentum|tall|f32|orth_det_minus_one": "conv-lag",  # off the set at step 1 (
        "ConvSpectralNorm|momentum|tall|f32|rank_deficient": "conv-lag",  # off the set at step 4 (off
        "ConvSpectralNorm|momentum|tall|f32|tiny": "conv-lag",  # off the set at step 1 (off by 1.87)
        "ConvSpectralNorm|momentum|wide|bf16|default": "conv-lag",  # off the set at step 16 (off by 0.
        "ConvSpectralNorm|momentum|wide|bf16|orth_det_minus_one": "conv-lag",  # off the set at step 2
        "ConvSpectralNorm|momentum|wide|bf16|rank_deficient": "conv-lag",  # off the set at step 10 (of
        "ConvSpectralNorm|momentum|wide|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.368)
        "ConvSpectralNorm|momentum|wide|f32|default": "conv-lag",  # off the set at step 16 (off by 0.0
        "ConvSpectralNorm|momentum|wide|f32|orth_det_minus_one": "conv-lag",  # off the set at step 2 (
        "ConvSpectralNorm|momentum|wide|f32|rank_deficient": "conv-lag",  # off the set at step 10 (off
        "ConvSpectralNorm|momentum|wide|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.367)
        "ConvSpectralNorm|sgd|square|bf16|default": "conv-lag",  # off the set at step 3 (off by 0.163)
        "ConvSpectralNorm|sgd|square|bf16|orth_det_minus_one": "conv-lag",  # off the set at step 1 (of
        "ConvSpectralNorm|sgd|square|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 1.06)
        "ConvSpectralNorm|sgd|square|f32|default": "conv-lag",  # off the set at step 3 (off by 0.161)
        "ConvSpectralNorm|sgd|square|f32|orth_det_minus_one": "conv-lag",  # off the set at step 1 (off
        "ConvSpectralNorm|sgd|square|f32|tiny": "conv-lag",  # off the set at step 1 (off by 1.05)
        "ConvSpectralNorm|sgd|tall|bf16|default": "conv-lag",  # off the set at step 12 (off by 0.089)
        "ConvSpectralNorm|sgd|tall|bf16|orth_det_minus_one": "conv-lag",  # off the set at step 1 (off
        "ConvSpectralNorm|sgd|tall|bf16|rank_deficient": "conv-lag",  # off the set at step 8 (off by 0
        "ConvSpectralNorm|sgd|tall|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 1.96)
        "ConvSpectralNorm|sgd|tall|f32|default": "conv-lag",  # off the set at step 12 (off by 0.0832)
        "ConvSpectralNorm|sgd|tall|f32|orth_det_minus_one": "conv-lag",  # off the set at step 1 (off b
        "ConvSpectralNorm|sgd|tall|f32|rank_deficient": "conv-lag",  # off the set at step 7 (off by 0.
        "ConvSpectralNorm|sgd|tall|f32|tiny": "conv-lag",  # off the set at step 1 (off by 1.87)
        "ConvSpectralNorm|sgd|wide|bf16|orth_det_minus_one": "conv-lag",  # off the set at step 2 (off
        "ConvSpectralNorm|sgd|wide|bf16|rank_deficient": "conv-lag",  # off the set at step 28 (off by
        "ConvSpectralNorm|sgd|wide|bf16|tiny": "conv-lag",  # off the set at step 1 (off by 0.368)
        "ConvSpectralNorm|sgd|wide|f32|orth_det_minus_one": "conv-lag",  # off the set at step 2 (off b
        "ConvSpectralNorm|sgd|wide|f32|rank_deficient": "conv-lag",  # off the set at step 28 (off by 0
        "ConvSpectralNorm|sgd|wide|f32|tiny": "conv-lag",  # off the set at step 1 (off by 0.367)
    }
)
# The first full run of every case (2026-12-06, commit d663417, 12 processes of ~111 cases):
# SpectralNorm lags and the symmetric-exponential loss overflows beyond the fast subset too.
KNOWN_FAILURES.update(
    {
        "SpectralNorm|adafactor|square|bf16|default": "sn-lag",  # off the set at step 21 (off by 0.0659)
        "SpectralNorm|adafactor|square|bf16|tiny": "sn-lag",  # off the set at step 8 (off by 2.18)
        "SpectralNorm|adafactor|square|f32|default": "sn-lag",  # off the set at step 22 (off by 0.0599)
        "SpectralNorm|adafactor|square|f32|tiny": "sn-lag",  # off the set at step 8 (off by 2.18)
        "SpectralNorm|adafactor|tall|bf16|tiny": "sn-lag",  # off the set at step 1 (off by 0.0645)
        "SpectralNorm|adafactor|tall|f32|tiny": "sn-lag",  # off the set at step 1 (off by 0.0608)
        "SpectralNorm|adafactor|wide|bf16|orth_det_minus_one": "sn-lag",  # off the set at step 5 (off by 0.0517)
        "SpectralNorm|adafactor|wide|bf16|tiny": "sn-lag",  # off the set at step 1 (off by 0.172)
        "SpectralNorm|adamw|square|bf16|default": "sn-lag",  # off the set at step 14 (off by 0.0534)
        "SpectralNorm|adamw|square|f32|default": "sn-lag",  # off the set at step 15 (off by 0.0729)
        "SpectralNorm|adamw|tall|f32|orth_det_minus_one": "sn-lag",  # off the set at step 3 (off by 0.0557)
        "SpectralNorm|adamw|wide|bf16|orth_det_minus_one": "sn-lag",  # off the set at step 2 (off by 0.0568)
        "SpectralNorm|adam|square|bf16|default": "sn-lag",  # off the set at step 14 (off by 0.0579)
        "SpectralNorm|adam|square|f32|default": "sn-lag",  # off the set at step 15 (off by 0.0725)
        "SpectralNorm|adam|tall|f32|orth_det_minus_one": "sn-lag",  # off the set at step 3 (off by 0.0557)
        "SpectralNorm|adam|wide|bf16|orth_det_minus_one": "sn-lag",  # off the set at step 2 (off by 0.0568)
        "SpectralNorm|clip|square|bf16|default": "sn-lag",  # off the set at step 14 (off by 0.0526)
        "SpectralNorm|clip|square|bf16|tiny": "sn-lag",  # off the set at step 4 (off by 0.197)
        "SpectralNorm|clip|square|f32|default": "sn-lag",  # off the set at step 15 (off by 0.0687)
        "SpectralNorm|clip|square|f32|tiny": "sn-lag",  # off the set at step 4 (off by 0.209)
        "SpectralNorm|clip|tall|bf16|tiny": "sn-lag",  # off the set at step 5 (off by 0.681)
        "SpectralNorm|clip|tall|f32|orth_det_minus_one": "sn-lag",  # off the set at step 3 (off by 0.0557)
        "SpectralNorm|clip|tall|f32|tiny": "sn-lag",  # off the set at step 5 (off by 0.732)
        "SpectralNorm|clip|wide|bf16|orth_det_minus_one": "sn-lag",  # off the set at step 2 (off by 0.0569)
        "SpectralNorm|clip|wide|bf16|tiny": "sn-lag",  # off the set at step 5 (off by 0.571)
        "SpectralNorm|clip|wide|f32|tiny": "sn-lag",  # off the set at step 5 (off by 0.534)
        "SpectralNorm|huge_lr|square|bf16|rank_deficient": "sn-lag",  # off the set at step 1 (off by 0.075)
        "SpectralNorm|huge_lr|square|f32|rank_deficient": "sn-lag",  # off the set at step 1 (off by 0.0695)
        "SpectralNorm|huge_lr|tall|bf16|default": "sn-lag",  # off the set at step 1 (off by 0.259)
        "SpectralNorm|huge_lr|tall|bf16|orth_det_minus_one": "sn-lag",  # off the set at step 1 (off by 0.16)
        "SpectralNorm|huge_lr|tall|f32|default": "sn-lag",  # off the set at step 1 (off by 0.264)
        "SpectralNorm|huge_lr|wide|bf16|orth_det_minus_one": "sn-lag",  # off the set at step 1 (off by 0.181)
        "SpectralNorm|huge_lr|wide|bf16|rank_deficient": "sn-lag",  # off the set at step 1 (off by 0.226)
        "SpectralNorm|huge_lr|wide|f32|orth_det_minus_one": "sn-lag",  # off the set at step 1 (off by 0.0673)
        "SpectralNorm|huge_lr|wide|f32|rank_deficient": "sn-lag",  # off the set at step 1 (off by 0.207)
        "SpectralNorm|momentum|square|bf16|default": "sn-lag",  # off the set at step 2 (off by 0.388)
        "SpectralNorm|momentum|square|bf16|orth_det_minus_one": "sn-lag",  # off the set at step 24 (off by 0.122)
        "SpectralNorm|momentum|square|bf16|tiny": "sn-lag",  # off the set at step 1 (off by 0.0511)
        "SpectralNorm|momentum|square|f32|default": "sn-lag",  # off the set at step 2 (off by 0.391)
        "SpectralNorm|momentum|square|f32|orth_det_minus_one": "sn-lag",  # off the set at step 22 (off by 0.0539)
        "SpectralNorm|momentum|tall|bf16|default": "sn-lag",  # off the set at step 2 (off by 0.184)
        "SpectralNorm|momentum|tall|bf16|orth_det_minus_one": "sn-lag",  # off the set at step 1 (off by 0.057)
        "SpectralNorm|momentum|tall|bf16|tiny": "sn-lag",  # off the set at step 1 (off by 0.683)
        "SpectralNorm|momentum|tall|f32|default": "sn-lag",  # off the set at step 2 (off by 0.189)
        "SpectralNorm|momentum|tall|f32|orth_det_minus_one": "sn-lag",  # off the set at step 1 (off by 0.156)
        "SpectralNorm|momentum|tall|f32|tiny": "sn-lag",  # off the set at step 1 (off by 0.668)
        "SpectralNorm|momentum|wide|bf16|default": "sn-lag",  # off the set at step 2 (off by 0.0668)
        "SpectralNorm|momentum|wide|bf16|orth_det_minus_one": "sn-lag",  # off the set at step 1 (off by 0.226)
        "SpectralNorm|momentum|wide|bf16|tiny": "sn-lag",  # off the set at step 1 (off by 1.43)
        "SpectralNorm|momentum|wide|f32|default": "sn-lag",  # off the set at step 2 (off by 0.0632)
        "SpectralNorm|momentum|wide|f32|orth_det_minus_one": "sn-lag",  # off the set at step 1 (off by 0.0927)
        "SpectralNorm|momentum|wide|f32|tiny": "sn-lag",  # off the set at step 1 (off by 1.47)
        "SpectralNorm|sgd|square|bf16|default": "sn-lag",  # off the set at step 2 (off by 0.175)
        "SpectralNorm|sgd|square|bf16|orth_det_minus_one": "sn-lag",  # off the set at step 4 (off by 0.0842)
        "SpectralNorm|sgd|square|bf16|tiny": "sn-lag",  # off the set at step 1 (off by 0.0511)
        "SpectralNorm|sgd|square|f32|default": "sn-lag",  # off the set at step 2 (off by 0.175)
        "SpectralNorm|sgd|square|f32|orth_det_minus_one": "sn-lag",  # off the set at step 4 (off by 0.103)
        "SpectralNorm|sgd|tall|bf16|default": "sn-lag",  # off the set at step 2 (off by 0.154)
        "SpectralNorm|sgd|tall|bf16|orth_det_minus_one": "sn-lag",  # off the set at step 1 (off by 0.057)
        "SpectralNorm|sgd|tall|bf16|tiny": "sn-lag",  # off the set at step 1 (off by 0.683)
        "SpectralNorm|sgd|tall|f32|default": "sn-lag",  # off the set at step 2 (off by 0.155)
        "SpectralNorm|sgd|tall|f32|orth_det_minus_one": "sn-lag",  # off the set at step 1 (off by 0.156)
        "SpectralNorm|sgd|tall|f32|tiny": "sn-lag",  # off the set at step 1 (off by 0.668)
        "SpectralNorm|sgd|wide|bf16|default": "sn-lag",  # off the set at step 3 (off by 0.0589)
        "SpectralNorm|sgd|wide|bf16|orth_det_minus_one": "sn-lag",  # off the set at step 1 (off by 0.226)
        "SpectralNorm|sgd|wide|bf16|tiny": "sn-lag",  # off the set at step 1 (off by 1.43)
        "SpectralNorm|sgd|wide|f32|default": "sn-lag",  # off the set at step 3 (off by 0.0558)
        "SpectralNorm|sgd|wide|f32|orth_det_minus_one": "sn-lag",  # off the set at step 1 (off by 0.0927)
        "SpectralNorm|sgd|wide|f32|tiny": "sn-lag",  # off the set at step 1 (off by 1.47)
        "symmetric-matrix_exp|adafactor|square|bf16|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|adafactor|square|f32|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|adamw|square|bf16|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|adamw|square|f32|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|adam|square|bf16|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|adam|square|f32|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|clip|square|bf16|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|clip|square|f32|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|huge_lr|square|bf16|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|huge_lr|square|f32|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|lion|square|bf16|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|lion|square|f32|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|momentum|square|bf16|default": "expm-overflow",  # non-finite at step 4
        "symmetric-matrix_exp|momentum|square|bf16|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|momentum|square|bf16|orth_det_minus_one": "expm-overflow",  # non-finite at step 9
        "symmetric-matrix_exp|momentum|square|bf16|rank_deficient": "expm-overflow",  # non-finite at step 4
        "symmetric-matrix_exp|momentum|square|bf16|tiny": "expm-overflow",  # non-finite at step 5
        "symmetric-matrix_exp|momentum|square|bf16|zeros": "expm-overflow",  # non-finite at step 5
        "symmetric-matrix_exp|sgd|square|bf16|default": "expm-overflow",  # non-finite at step 5
        "symmetric-matrix_exp|sgd|square|bf16|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|sgd|square|bf16|orth_det_minus_one": "expm-overflow",  # non-finite at step 8
        "symmetric-matrix_exp|sgd|square|bf16|tiny": "expm-overflow",  # non-finite at step 6
        "symmetric-matrix_exp|sgd|square|bf16|zeros": "expm-overflow",  # non-finite at step 6
        "symmetric-matrix_exp|sgd|square|f32|default": "expm-overflow",  # non-finite at step 5
        "symmetric-matrix_exp|sgd|square|f32|huge": "expm-overflow",  # non-finite at step 1
        "symmetric-matrix_exp|sgd|square|f32|orth_det_minus_one": "expm-overflow",  # non-finite at step 8
        "symmetric-matrix_exp|sgd|square|f32|tiny": "expm-overflow",  # non-finite at step 6
        "symmetric-matrix_exp|sgd|square|f32|zeros": "expm-overflow",  # non-finite at step 6
    }
)
assert set(KNOWN_FAILURES.values()) <= set(CAUSES), set(KNOWN_FAILURES.values()) - set(CAUSES)


def _check(entry, opt, shape, dtype):
    outcomes = run_case(entry, opt, shape, dtype)
    new, fixed = [], []
    for init, outcome in outcomes.items():
        cid = case_id(entry, opt, shape, dtype, init)
        failed = outcome not in ("ok", "refused")
        known = cid in KNOWN_FAILURES
        if failed and not known:
            new.append(f"{cid}: {outcome}")
        if known and not failed:
            fixed.append(
                f"{cid} ({KNOWN_FAILURES[cid]}) now gives {outcome!r}: remove it from "
                "KNOWN_FAILURES"
            )
    assert not new and not fixed, "\n".join(
        ["new failures (off the set, non-finite, or an unclear error):"]
        + new
        + ["known failures that no longer fail:"]
        + fixed
    )


def _params(cases, marks=()):
    return [pytest.param(*c, id=case_id(*c), marks=list(marks)) for c in cases]


@pytest.mark.parametrize("entry,opt,shape,dtype", _params(FAST_CASES))
def test_sweep_fast(entry, opt, shape, dtype):
    _check(entry, opt, shape, dtype)


@pytest.mark.parametrize("entry,opt,shape,dtype", _params(ALL_CASES, [pytest.mark.sweep]))
def test_sweep_full(entry, opt, shape, dtype):
    _check(entry, opt, shape, dtype)


if __name__ == "__main__":  # regenerate the failure list: python tests/test_sweep.py [fast]
    import sys

    cases = FAST_CASES if "fast" in sys.argv[1:] else ALL_CASES
    for c in cases:
        for init, outcome in run_case(*c).items():
            if outcome not in ("ok", "refused"):
                print(f"{case_id(*c, init)}\t{outcome}", flush=True)
