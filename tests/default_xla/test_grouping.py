"""Grouped evaluation (issue 15.2): equal chains on equal shapes evaluated as one batched map.

The oracle is per-variable evaluation (``group=False``, what parametrax did before grouping):
values and gradients must be identical. They are compared with ``jnp.array_equal`` for the
``Orthogonal`` family (measured bit-identical: a batched LU, batched matrix product or batched
scaling-and-squaring runs the same per-matrix arithmetic there, per-matrix squaring counts
included), and to a few units in the last place for the eager ``[Skew, MatrixExp]`` /
``[Symmetric, MatrixExp]`` chains: the same maths, but XLA's CPU backend may pick a different
kernel for a batched ``(L, n, n)`` product than for a single ``(n, n)`` one, which rounds the
sums in another order (1 ulp observed). Whether a group was formed at all is
observed through a spy on ``_grouping.forward_group`` (so a test of "identical" cannot pass
because nothing was grouped).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import parametrax as px
from parametrax import tree as pt
from parametrax._errors import ParametrizationError, ParametrizationTypeError
from parametrax.tree import _grouping

EXPM = px.Orthogonal(map="matrix_exp")


@pytest.fixture
def spy(monkeypatch):
    """Records the size of every group evaluated as one batched map."""
    sizes: list[int] = []
    real = _grouping.forward_group

    def recording(members, **kw):
        sizes.append(len(members))
        return real(members, **kw)

    monkeypatch.setattr(_grouping, "forward_group", recording)
    return sizes


@pytest.fixture
def force(monkeypatch):
    """Groups any two or more equal variables (the default rule groups only expm chains)."""
    monkeypatch.setattr(_grouping, "worth_grouping", lambda chain, count, shape: count >= 2)


def _params(count, shape, dtype=jnp.float32, seed=0, prefix="k"):
    keys = jax.random.split(jax.random.key(seed), count)
    out = {}
    for i, k in enumerate(keys):
        x = jax.random.normal(k, shape, jnp.float32 if dtype == jnp.bfloat16 else dtype)
        out[f"{prefix}{i}"] = x.astype(dtype)
    return out


def _perturb(raw, seed=7):
    """Moves the raw values off registration's special point (-I), so the maps do real work."""
    leaves, treedef = jax.tree.flatten(raw)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    out = [
        (x + 0.3 * jax.random.normal(k, x.shape, jnp.float32).astype(x.dtype))
        if jnp.issubdtype(x.dtype, jnp.floating)
        else x
        for x, k in zip(leaves, keys)
    ]
    return jax.tree.unflatten(treedef, out)


def _loss(spec, state, group):
    def f(raw):
        vals = pt.constrain(spec, raw, state, group=group)
        # bfloat16 leaves are weighed in float32 (what standard promotion did; the main suite
        # runs without x64, so no leaf is wider)
        return sum(
            jnp.sum(
                jnp.real(v).astype(jnp.float32)
                * jnp.cos(jnp.arange(v.size, dtype=jnp.float32).reshape(v.shape))
            )
            for v in jax.tree.leaves(vals)
        )

    return f


def _assert_identical(a, b, ulps=0):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        if not ulps:
            assert bool(jnp.array_equal(x, y)), float(jnp.max(jnp.abs(x - y)))
            continue
        eps = float(jnp.finfo(x.dtype).eps)
        scale = max(1.0, float(jnp.max(jnp.abs(y))))
        err = float(jnp.max(jnp.abs(x - y)))
        assert err <= ulps * eps * scale, (err, ulps * eps * scale)


def _check_tree(spec, params, ulps=0):
    raw, state = pt.register(spec, params, key=jax.random.key(1))
    raw = _perturb(raw)
    grouped = pt.constrain(spec, raw, state)
    alone = pt.constrain(spec, raw, state, group=False)
    _assert_identical(grouped, alone, ulps)
    g1 = jax.grad(_loss(spec, state, True))(raw)
    g2 = jax.grad(_loss(spec, state, False))(raw)
    _assert_identical(g1, g2, ulps)
    assert any(bool(jnp.any(x != 0)) for x in jax.tree.leaves(g1))


# ------------------------------------------------------------------------------------------------
# Tree API
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.complex64])
def test_tree_expm_stack_is_grouped_and_identical(spy, dtype):
    _check_tree({"*": EXPM}, _params(5, (6, 6), dtype))
    assert 5 in spy


@pytest.mark.parametrize(
    "chain, shape, ulps",
    [
        (px.Orthogonal(map="cayley"), (5, 5), 0),
        (px.Orthogonal(map="householder"), (6, 4), 0),
        (px.Orthogonal(map="matrix_exp", use_trivialization=False), (4, 6), 0),
        ([px.Skew(), px.Cayley()], (4, 4), 0),
        ([px.Skew(), px.MatrixExp()], (4, 4), 4),
        ([px.Symmetric(), px.MatrixExp()], (3, 3), 4),
        (px.Stiefel(), (6, 3), 4),
        (px.SO(), (4, 4), 4),
        (px.Grassmannian(), (5, 2), 4),
        (px.Stiefel(triv="cayley"), (5, 2), 4),
    ],
    ids=repr,
)
def test_tree_every_broadcasting_entry_identical_when_grouped(spy, force, chain, shape, ulps):
    _check_tree({"**": chain}, _params(4, shape, seed=3), ulps)
    assert spy and set(spy) == {4}


def test_default_rule_groups_only_expm_and_small_n(spy):
    spec = {"c*": px.Orthogonal(map="cayley"), "e*": EXPM, "big*": EXPM}
    params = {
        **_params(3, (4, 4), prefix="c"),
        **_params(3, (4, 4), prefix="e"),
        **_params(2, (130, 130), prefix="big"),
    }
    raw, state = pt.register(spec, params, key=jax.random.key(0))
    pt.constrain(spec, raw, state)
    assert spy == [3]  # the three expm kernels; not the Cayley ones, not n = 130 > 128
    assert not _grouping.worth_grouping((EXPM,), 1, (4, 4))  # L = 1: nothing to group


def test_mixed_chains_shapes_and_dtypes_only_group_equal_ones(spy, force):
    params = {
        **_params(3, (4, 4), prefix="a"),  # expm, (4, 4) f32: one group of 3
        **_params(2, (5, 5), prefix="b"),  # expm, (5, 5): a group of 2
        **_params(2, (4, 4), jnp.bfloat16, prefix="h"),  # expm, bf16: a group of 2
        **_params(2, (4, 4), prefix="c"),  # cayley: a group of 2
        "d0": jnp.eye(4),  # expm without trivialization: a different chain, alone
        "w0": jnp.ones((4, 3)),  # WeightNorm: a map of the whole tensor, never grouped
        "w1": jnp.ones((4, 3)) * 2,
    }
    spec = {
        "[abh]*": EXPM,
        "c*": px.Orthogonal(map="cayley"),
        "d0": px.Orthogonal(map="matrix_exp", use_trivialization=False),
        "w*": px.WeightNorm(),
    }
    raw, state = pt.register(spec, params, key=jax.random.key(2))
    raw = _perturb(raw)
    grouped = pt.constrain(spec, raw, state)
    _assert_identical(grouped, pt.constrain(spec, raw, state, group=False))
    assert sorted(spy) == [2, 2, 2, 3]
    items = {}
    view = pt._ops._RawTree(raw)
    for path, (slot, chain) in view.resolve(pt.Spec.of(spec)).items():
        originals, lparams = pt._ops._slot_parts(slot, len(chain))
        items[path] = (chain, originals, lparams, pt._ops._state_parts(state, path, len(chain)))
    groups = sorted(sorted(g) for g in _grouping.group_paths(items))
    assert groups == [
        ["a0", "a1", "a2"],
        ["b0", "b1"],
        ["c0", "c1"],
        ["d0"],
        ["h0", "h1"],
        ["w0"],
        ["w1"],
    ]


def test_whole_tensor_maps_never_grouped(force):
    for p in (px.SpectralNorm(), px.WeightNorm(), px.Sphere(axis=None), px.Simplex(axis=0)):
        assert not _grouping.broadcasts(p), p
    assert not _grouping.broadcasts(px.Stiefel(triv=lambda a: a))  # a user map: unknown


def test_a_link_may_declare_broadcasts():
    class Twice(px.Parametrization):
        broadcasts = True

        def forward(self, x):
            return 2 * x

    class Whole(Twice):
        broadcasts = False

    assert _grouping.broadcasts(Twice()) and not _grouping.broadcasts(Whole())


def test_state_is_stacked_and_returned_per_variable(spy):
    spec = {"*": EXPM}
    raw, state = pt.register(spec, _params(3, (4, 4)), key=jax.random.key(0))
    # Move the bases away from each other (torch's dynamic trivialization), then compare.
    targets = {
        k: jnp.linalg.qr(jax.random.normal(jax.random.key(10 + i), (4, 4)))[0]
        for i, k in enumerate(["k0", "k1", "k2"])
    }
    raw, state = pt.assign(spec, raw, state, targets, key=jax.random.key(3))
    raw = _perturb(raw)
    spy.clear()
    out, new_state = pt.forward(spec, raw, state, update_state=True)
    alone, alone_state = pt.forward(spec, raw, state, update_state=True, group=False)
    _assert_identical(out, alone)
    _assert_identical(new_state, alone_state)
    # Orthogonal's apply returns its base unchanged: each variable gets its own array back.
    for k in targets:
        got = new_state["parametrizations"][k]["0"]["base"]
        assert got is state["parametrizations"][k]["0"]["base"]
    assert spy == [3]


def test_switch_off_never_groups(spy):
    spec = {"*": EXPM}
    raw, state = pt.register(spec, _params(4, (4, 4)), key=jax.random.key(0))
    pt.constrain(spec, raw, state, group=False)
    pt.forward(spec, raw, state, group=False)
    assert spy == []
    with pytest.raises(ParametrizationTypeError, match="`group` must be a bool"):
        pt.forward(spec, raw, state, group="yes")


def test_jit_and_vmap(spy):
    spec = {"*": EXPM}
    raw, state = pt.register(spec, _params(4, (5, 5)), key=jax.random.key(0))
    raw = _perturb(raw)
    f = jax.jit(lambda r, s: pt.constrain(spec, r, s))
    g = jax.jit(lambda r, s: pt.constrain(spec, r, s, group=False))
    _assert_identical(f(raw, state), g(raw, state))
    # An ensemble: vmap over a leading axis of the raw tree, the state shared.
    ens = jax.tree.map(lambda x: jnp.stack([x, 0.5 * x, -x]), raw)
    a = jax.vmap(lambda r: pt.constrain(spec, r, state))(ens)
    b = jax.vmap(lambda r: pt.constrain(spec, r, state, group=False))(ens)
    _assert_identical(a, b)
    assert spy and set(spy) == {4}


def test_forward_mode_and_second_order_identical_when_grouped(spy):
    """jvp, jacfwd and a Hessian-vector product through a grouped chain, compiled: the stack
    and unstack carry their own derivative rules (``_grouping._stack`` / ``_unstack``), so the
    oracle is the same derivative of the per-variable evaluation."""
    spec = {"*": EXPM}
    raw, state = pt.register(spec, _params(3, (4, 4)), key=jax.random.key(0))
    raw = _perturb(raw)
    tangent = _perturb(jax.tree.map(jnp.zeros_like, raw), seed=11)
    on, off = _loss(spec, state, True), _loss(spec, state, False)
    for f, g in (
        (lambda r: jax.jvp(on, (r,), (tangent,)), lambda r: jax.jvp(off, (r,), (tangent,))),
        (jax.jacfwd(on), jax.jacfwd(off)),
        (
            lambda r: jax.jvp(jax.grad(on), (r,), (tangent,))[1],
            lambda r: jax.jvp(jax.grad(off), (r,), (tangent,))[1],
        ),
    ):
        spy.clear()
        a = jax.jit(f)(raw)
        assert spy == [3]
        b = jax.jit(g)(raw)
        # forward mode may contract in another order than reverse mode: a few ulps
        _assert_identical(a, b, ulps=8)
    # and the tangent of the values themselves, leaf by leaf, exactly
    vals = lambda grp: lambda r: pt.constrain(spec, r, state, group=grp)  # noqa: E731
    _assert_identical(
        jax.jvp(vals(True), (raw,), (tangent,)), jax.jvp(vals(False), (raw,), (tangent,))
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64, jnp.int32])
def test_stack_and_unstack_helpers_match_jnp(dtype):
    """The grouping's stack / unstack: exact copies, with jnp.stack / jnp.unstack's
    derivatives (linear maps: their jvp is themselves, their vjp the other one)."""
    xs = tuple((10 * jax.random.normal(jax.random.key(i), (3, 2))).astype(dtype) for i in range(4))
    stacked = _grouping._stack(*xs)
    _assert_identical(stacked, jnp.stack(xs))
    _assert_identical(_grouping._unstack(stacked), tuple(jnp.unstack(jnp.stack(xs))))
    if not jnp.issubdtype(dtype, jnp.inexact):
        return
    ts = tuple(jnp.full((3, 2), i + 1, dtype) for i in range(4))
    _assert_identical(jax.jvp(lambda *a: _grouping._stack(*a), xs, ts)[1], jnp.stack(ts))
    _assert_identical(jax.jvp(_grouping._unstack, (stacked,), (jnp.stack(ts),))[1], ts)
    _, pull = jax.vjp(lambda *a: _grouping._stack(*a), *xs)
    _assert_identical(pull(jnp.stack(ts)), ts)
    _, pull = jax.vjp(_grouping._unstack, stacked)
    _assert_identical(pull(ts)[0], jnp.stack(ts))
    # under vmap (an ensemble of stacks) too
    batch = jnp.stack([stacked, 2 * stacked])
    _assert_identical(jax.vmap(_grouping._unstack)(batch), tuple(jnp.unstack(batch, axis=1)))


def test_grouped_step_has_no_per_member_constant_slices():
    """The cause of the slow grouped compile (docs/benchmarks.md): an ``unstack`` (or a
    transposed ``stack``) lowers to one slice per member at a constant offset, and XLA compiles
    each fused slice as a separate kernel. The grouped gradient must read members through
    dynamic slices only (identical kernels): no ``unstack`` / ``slice`` of the stack remains."""
    count = 6
    spec = {"*": EXPM}
    raw, state = pt.register(spec, _params(count, (5, 5)), key=jax.random.key(0))
    hlo = jax.jit(jax.value_and_grad(_loss(spec, state, True))).lower(raw).as_text()
    per_member = [
        line
        for line in hlo.splitlines()
        if "stablehlo.slice" in line
        and f"tensor<{count}x5x5x" in line.split("->")[0]
        and "tensor<1x5x5x" in line.split("->")[-1]  # one member cut out of the stack
    ]
    assert per_member == [], per_member[:3]
    assert "stablehlo.dynamic_slice" in hlo  # the members are read this way instead


def test_pytree_layout_is_grouped_too(spy):
    spec = {"*": EXPM}
    tree = list(_params(3, (4, 4)).values())  # a list: the RawLeaf layout
    raw, state = pt.register(spec, tree, key=jax.random.key(0))
    raw = _perturb(raw)
    a = pt.constrain(spec, raw, state)
    assert isinstance(a, list)
    _assert_identical(a, pt.constrain(spec, raw, state, group=False))
    assert spy == [3]


def test_failed_batched_evaluation_falls_back_and_errors_name_the_variable(force):
    class OnlyTwoAxes(px.Parametrization):
        broadcasts = True  # a wrong claim: the batched call fails, each variable alone works

        def forward(self, x):
            if x.ndim != 2:
                raise ValueError("expected a matrix")
            return x * 2

    spec = {"*": OnlyTwoAxes()}
    raw, state = pt.register(spec, _params(3, (2, 2)))
    _assert_identical(pt.constrain(spec, raw, state), pt.constrain(spec, raw, state, group=False))

    class Broken(px.Parametrization):
        broadcasts = True

        def forward(self, x):
            raise ParametrizationError("broken link")

    spec = {"*": Broken()}
    # A raw tree written by hand (registering would already run the broken forward).
    raw = {
        "parametrizations": {
            "a": {"original": jnp.ones((2, 2))},
            "b": {"original": jnp.ones((2, 2))},
        }
    }
    with pytest.raises(ParametrizationError, match="parametrizing `a`.*broken link"):
        pt.constrain(spec, raw, {})


# ------------------------------------------------------------------------------------------------
# Linen
# ------------------------------------------------------------------------------------------------
class DeepMLP(nn.Module):
    layers: int = 4
    width: int = 6
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for _ in range(self.layers):
            x = jnp.tanh(nn.Dense(self.width, param_dtype=self.param_dtype)(x))
        return x


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_linen_grouped_equals_alone(spy, dtype):
    spec = {"**/kernel": EXPM}
    on = px.Parametrized(DeepMLP, spec)(param_dtype=dtype)
    off = px.Parametrized(DeepMLP, spec, group=False)(param_dtype=dtype)
    x = jax.random.normal(jax.random.key(0), (3, 6)).astype(dtype)
    variables = on.init(jax.random.key(1), x)
    params = _perturb(variables["params"])
    rest = {k: v for k, v in variables.items() if k != "params"}

    def loss(model):
        return lambda p: jnp.sum(model.apply({"params": p, **rest}, x).astype(jnp.float32) ** 2)

    spy.clear()
    _assert_identical(
        on.apply({"params": params, **rest}, x), off.apply({"params": params, **rest}, x)
    )
    assert spy == [4]
    _assert_identical(jax.grad(loss(on))(params), jax.grad(loss(off))(params))
    _assert_identical(
        px.linen.constrain(on, {"params": params, **rest}),
        px.linen.constrain(off, {"params": params, **rest}),
    )
    spy.clear()
    off.apply({"params": params, **rest}, x)
    jax.grad(loss(off))(params)
    assert spy == []


def test_linen_switch_is_kept_and_checked():
    off = px.Parametrized(nn.Dense, {"kernel": EXPM}, group=False)
    assert off._px_group is False
    assert px.Parametrized(off, {"bias": px.Positive()})._px_group is False
    assert px.Parametrized(nn.Dense(3), {"kernel": EXPM})._px_group is True
    with pytest.raises(ParametrizationTypeError, match="`group` must be a bool"):
        px.Parametrized(nn.Dense, {"kernel": EXPM}, group=1)
