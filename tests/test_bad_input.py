"""A catalog of bad inputs across the API: each raises the documented error class with a message
that names the parametrization (or spec key), the variable path, what was received and what was
expected; and every call that takes existing variables leaves them exactly as they were (same
structure, same leaf objects, same values).

Complements the error tests of ``test_tree.py`` and ``test_linen.py``, which are not repeated.
"""

import contextlib
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import parametrax as px
from parametrax import Parametrized, cayley, skew
from parametrax import tree as ptree

from _helpers import MLP, RankOne

KEY = jax.random.key(0)
X3 = jnp.ones((2, 3))
X4 = jnp.ones((1, 4))


# --- helpers -------------------------------------------------------------------------------------
def _snapshot(tree):
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, [(id(x), np.array(x, copy=True) if hasattr(x, "shape") else x) for x in leaves]


@contextlib.contextmanager
def unchanged(*trees):
    """Asserts that the mappings given are structurally and numerically untouched by the body."""
    before = [_snapshot(t) for t in trees]
    yield
    for t, (treedef, leaves) in zip(trees, before):
        now_def, now = _snapshot(t)
        assert now_def == treedef, "the tree structure was changed in place"
        for (i0, v0), (i1, v1) in zip(leaves, now):
            assert i0 == i1, "a leaf was replaced in place"
            np.testing.assert_array_equal(v0, v1)


@dataclasses.dataclass(frozen=True)
class Halves(px.Parametrization):
    """forward(a, b) = a + b, right_inverse(v) = (v/2, v/2)."""

    def forward(self, a, b):
        return a + b

    def right_inverse(self, v):
        return v / 2, v / 2


@dataclasses.dataclass(frozen=True)
class Thirds(Halves):
    """The same forward, but a right_inverse returning three arrays."""

    def right_inverse(self, v):
        return v / 3, v / 3, v / 3


@dataclasses.dataclass(frozen=True)
class OneOfTwo(Halves):
    """The same forward, but a right_inverse returning one array."""

    def right_inverse(self, v):
        return v


@dataclasses.dataclass(frozen=True)
class Identity(px.Parametrization):
    def forward(self, x):
        return x

    def right_inverse(self, y):
        return y


@dataclasses.dataclass(frozen=True)
class RowsInverse(Identity):
    """A right_inverse that drops a row: wrong shape."""

    def right_inverse(self, y):
        return y[:-1]


@dataclasses.dataclass(frozen=True)
class HalfInverse(Identity):
    """A right_inverse that changes the dtype."""

    def right_inverse(self, y):
        return y.astype(jnp.float16)


@dataclasses.dataclass(frozen=True)
class ReturnsNone(px.Parametrization):
    """A forward that returns no array."""

    def forward(self, x):
        return None


@dataclasses.dataclass(frozen=True)
class DictInverse(Identity):
    """A right_inverse returning a dict."""

    def right_inverse(self, y):
        return {"a": y}


@dataclasses.dataclass(frozen=True)
class EmptyInverse(Identity):
    """A right_inverse returning an empty tuple."""

    def right_inverse(self, y):
        return ()


@dataclasses.dataclass  # not frozen: unhashable, would re-trace or fail under jit
class Mutable(px.Parametrization):
    scale: float = 2.0

    def forward(self, x):
        return self.scale * x


@dataclasses.dataclass(frozen=True)
class WithArray(px.Parametrization):
    weights: object = None

    def forward(self, x):
        return x


def _tree_setup(chain, value=None):
    spec = {"w": chain}
    raw, state = ptree.register(
        spec, {"w": jnp.eye(3) if value is None else value, "b": jnp.ones(3)}
    )
    return spec, raw, state


# --- constructing and initialising a Parametrized module -------------------------------------------
@pytest.mark.parametrize(
    "make,error,match",
    [
        (
            lambda: Parametrized(nn.Dense, {0: skew}),
            px.ParametrizationTypeError,
            r"spec keys must be non-empty path strings like 'kernel' or '\*/kernel'; got 0",
        ),
        (
            lambda: Parametrized(nn.Dense(3), {"kernel": nn.Dense}),
            px.ParametrizationTypeError,
            r"spec key `kernel`: got the class `Dense` where a parametrization was expected \(a "
            r"Parametrization instance such as `Skew\(\)`, or a function of arrays\)",
        ),
        (
            lambda: Parametrized(nn.Dense, {"kernel": skew}, unsafe="yes"),
            px.ParametrizationTypeError,
            r"`unsafe` must be a bool; got 'yes'",
        ),
        (
            lambda: px.linen.is_parametrized(Parametrized(nn.Dense(3), {"kernel": skew}), 3),
            px.ParametrizationTypeError,
            r"is_parametrized: `name` must be a variable path string like 'kernel'; got int 3",
        ),
    ],
    ids=[
        "spec-key-not-a-string",
        "module-class-as-parametrization",
        "unsafe-not-bool",
        "is-parametrized-name-not-a-string",
    ],
)
def test_bad_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "base,spec,x,error,match",
    [
        (
            MLP(),
            {"Dense_0/kernal": skew},
            X4,
            px.SpecError,
            r"`ParametrizedMLP`: spec key `Dense_0/kernal` matches no variable of the tree; the "
            r"variables are: `Dense_0/bias`, `Dense_0/kernel`, `Dense_1/bias`, `Dense_1/kernel`",
        ),
        (
            MLP(),
            {"*/kernel": skew, "Dense_1/kernel": px.symmetric},
            X4,
            px.SpecError,
            r"`ParametrizedMLP`: spec keys `\*/kernel` and `Dense_1/kernel` both claim the "
            r"variable `Dense_1/kernel`; give each variable one chain",
        ),
        (
            MLP(),
            {"Dense_1": skew},
            X4,
            px.SpecError,
            r"spec key `Dense_1` names a subtree, not a variable; name a leaf such as "
            r"`Dense_1/bias`, `Dense_1/kernel` \(or use a glob like `Dense_1/\*`\)",
        ),
        (
            nn.Dense(3),
            {":kernel": skew},
            X3,
            px.SpecError,
            r"spec key `:kernel`: expected `<path>` \(in params\) or `<collection>:<path>`",
        ),
        (
            nn.Dense(3),
            {"bias": px.symmetric},
            X3,
            px.ShapeError,
            r"`ParametrizedDense`: parametrizing `bias` with \[Symmetric\]: `Symmetric` acts on "
            r"matrices \(the last two axes, leading axes are batch axes\); got an array of shape "
            r"\(3,\) with 1 dimension",
        ),
        (
            nn.Embed(3, 3, param_dtype=jnp.int32, embedding_init=nn.initializers.zeros),
            {"embedding": skew},
            jnp.array([0]),
            px.ShapeError,
            r"`ParametrizedEmbed`: parametrizing `embedding` with \[Skew\]: `Skew` needs a "
            r"floating-point or complex array; got dtype int32 \(shape \(3, 3\)\)",
        ),
        (
            nn.Dense(3),
            {"kernel": ReturnsNone()},
            X3,
            px.ShapeError,
            r"parametrizing `kernel` with \[ReturnsNone\]: a parametrization must return an "
            r"array; the chain returned NoneType",
        ),
        (
            nn.Dense(3),
            {"kernel": DictInverse()},
            X3,
            px.RightInverseError,
            r"parametrizing `kernel` with \[DictInverse\]: `DictInverse`.right_inverse must return "
            r"an array or a sequence of arrays \(list, tuple\); got dict",
        ),
    ],
    ids=[
        "typo-in-nested-path-lists-every-variable",
        "two-keys-claim-one-kernel",
        "key-names-a-submodule",
        "empty-collection-prefix",
        "matrix-map-on-a-bias-vector",
        "integer-embedding-through-a-matrix-map",
        "forward-returns-a-non-array",
        "right-inverse-returns-a-dict",
    ],
)
def test_bad_linen_init(base, spec, x, error, match):
    with pytest.raises(error, match=match):
        Parametrized(base, spec).init(KEY, x)


@pytest.mark.parametrize(
    "chain,first",
    [([skew], "Skew"), ([px.symmetric, px.matrix_exp], "Symmetric")],
    ids=["skew", "sym-expm"],
)
def test_square_map_on_a_wide_kernel(chain, first):
    names = ", ".join(type(p).__name__ for p in chain)
    with pytest.raises(
        px.ShapeError,
        match=rf"parametrizing `kernel` with \[{names}\]: `{first}` acts on square matrices \(the "
        r"last two axes\); got shape \(3, 5\), whose last two axes are 3x5",
    ):
        Parametrized(nn.Dense(5), {"kernel": chain}).init(KEY, X3)


# --- what a spec maps to -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad,got",
    [
        (None, r"NoneType None"),
        ([[skew]], r"list \[Skew\(\)\]"),
        ({"a": skew}, r"dict \{'a': Skew\(\)\}"),
    ],
    ids=["None", "nested-list", "dict"],
)
def test_non_parametrization_in_a_chain(bad, got):
    with pytest.raises(
        px.ParametrizationTypeError,
        match=rf"spec key `kernel`: expected a Parametrization or a callable, got {got}",
    ):
        Parametrized(nn.Dense, {"kernel": [skew, bad] if bad is None else bad})


def test_undecorated_subclass_is_a_frozen_dataclass_and_traces_once():
    """No decorator: the subclass is still a frozen, hashable dataclass, so equal configurations
    hit jit's cache (equinox#965: an unfrozen subclass re-traces for every instance)."""
    traces = []

    class ScaleBy(px.Parametrization):
        k: float = 2.0

        def forward(self, x):
            traces.append(1)
            return self.k * x

    assert dataclasses.is_dataclass(ScaleBy) and ScaleBy(3.0) == ScaleBy(3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ScaleBy().k = 1.0
    f = jax.jit(lambda p, x: p(x), static_argnums=0)
    x = jnp.ones(3)
    for _ in range(3):
        np.testing.assert_array_equal(f(ScaleBy(3.0), x), 3 * x)
    assert len(traces) == 1
    f(ScaleBy(4.0), x)
    assert len(traces) == 2  # a different configuration is a different trace


# --- registering on a tree: configs, leaves (kind, rank, shape, dtype), right inverses ------------
@pytest.mark.parametrize(
    "spec,params,key,error,match",
    [
        (
            {"w": Mutable()},
            {"w": jnp.eye(2)},
            None,
            px.ParametrizationTypeError,
            r"spec key `w`: `Mutable` is not hashable \(unhashable type: 'Mutable'\); "
            r"parametrizations must be frozen dataclasses",
        ),
        (
            {"w": WithArray(np.ones(3))},
            {"w": jnp.eye(2)},
            None,
            px.ParametrizationTypeError,
            r"`WithArray` is not hashable \(unhashable type: 'numpy.ndarray'\); .*no arrays",
        ),
        (
            {"w": [skew, cayley]},
            {"w": 1.0, "b": jnp.ones(2)},
            None,
            px.ParametrizationTypeError,
            r"parametrizing `w` with \[Skew, Cayley\]: expected an array at `w`, got float",
        ),
        (
            {"w": [skew, cayley]},
            {"w": None, "b": jnp.ones(2)},
            None,
            px.ParametrizationTypeError,
            r"parametrizing `w` with \[Skew, Cayley\]: expected an array at `w`, got NoneType",
        ),
        (
            # Any pytree is accepted (issue 13); a key that is not one of its key paths lists them.
            {"w": skew},
            [jnp.eye(2)],
            None,
            px.SpecError,
            r"spec key `w` matches no variable of the tree; the variables are: `0`",
        ),
        (
            {"w": px.RandomPruning(0.5)},
            {"w": jnp.ones((3, 3), jnp.int32)},
            KEY,
            px.ShapeError,
            r"parametrizing `w` with \[RandomPruning\]: `RandomPruning` needs a floating-point or "
            r"complex array; got dtype int32",
        ),
        (
            {"w": jnp.tanh},
            {"w": jnp.ones((3, 3), jnp.int32)},
            None,
            px.ShapeError,
            r"parametrizing `w` with \[tanh\]: registering a parametrization may not change the "
            r"shape or dtype of the variable unless `unsafe=True`: the variable has shape \(3, 3\) "
            r"and dtype int32, the parametrized value has shape \(3, 3\) and dtype float32",
        ),
        (
            {"w": px.RandomPruning(0.5)},
            {"w": jnp.eye(3)},
            None,
            px.ParametrizationError,
            r"parametrizing `w` with \[RandomPruning\]: `RandomPruning` owns variables and needs "
            r"a PRNG key to initialise them; pass `key=`",
        ),
        (
            {"w": EmptyInverse()},
            {"w": jnp.eye(3)},
            None,
            px.RightInverseError,
            r"parametrizing `w` with \[EmptyInverse\]: `EmptyInverse`.right_inverse returned an "
            r"empty tuple; expected an array or a non-empty sequence of arrays",
        ),
    ],
    ids=[
        "mutable-dataclass-config",
        "array-valued-config",
        "float-leaf",
        "None-leaf",
        "tree-that-is-not-a-mapping",
        "integer-leaf-through-pruning",
        "integer-leaf-through-a-float-function-changes-dtype",
        "stateful-link-without-a-key",
        "right-inverse-returns-an-empty-tuple",
    ],
)
def test_bad_tree_register(spec, params, key, error, match):
    with unchanged(params), pytest.raises(error, match=match):
        ptree.register(spec, params, key=key)


def test_tree_constrain_with_a_spec_missing_a_parametrized_variable():
    spec = {"*/kernel": skew}
    raw, state = ptree.register(spec, {"a": {"kernel": jnp.eye(2)}, "b": {"kernel": jnp.eye(2)}})
    with (
        unchanged(raw, state),
        pytest.raises(
            px.SpecError,
            match=r"the raw tree holds parametrized variables no spec key names: `b/kernel`",
        ),
    ):
        ptree.constrain({"a/kernel": skew}, raw, state)


# --- right_inverse returning the wrong thing at assignment -----------------------------------------
@pytest.mark.parametrize(
    "registered,assigned,match",
    [
        (
            Halves(),
            Thirds(),
            r"parametrizing `w` with \[Thirds\]: right_inverse returned 3 array\(s\) \(original0, "
            r"original1, original2\) but the variable stores 2 \(original0, original1\)",
        ),
        (
            Halves(),
            OneOfTwo(),
            r"parametrizing `w` with \[OneOfTwo\]: right_inverse returned 1 array\(s\) "
            r"\(original\) but the variable stores 2",
        ),
        (
            Identity(),
            RowsInverse(),
            r"parametrizing `w` with \[RowsInverse\]: right_inverse returned shape \(2, 3\) and "
            r"dtype float32 for `original`, which has shape \(3, 3\) and dtype float32",
        ),
        (
            Identity(),
            HalfInverse(),
            r"parametrizing `w` with \[HalfInverse\]: right_inverse returned shape \(3, 3\) and "
            r"dtype float16 for `original`, which has shape \(3, 3\) and dtype float32",
        ),
    ],
    ids=["too-many-arrays", "one-array-for-two-originals", "wrong-shape", "changes-the-dtype"],
)
def test_assign_right_inverse_returns_the_wrong_thing(registered, assigned, match):
    spec, raw, state = _tree_setup(registered)
    with unchanged(raw, state), pytest.raises(px.RightInverseError, match=match):
        ptree.assign({"w": assigned}, raw, state, {"w": jnp.eye(3)})


def test_user_error_inside_right_inverse_keeps_its_type_and_gains_the_path():
    @dataclasses.dataclass(frozen=True)
    class Picky(Identity):
        def right_inverse(self, y):
            raise ValueError("Picky refuses this value")

    params = {"w": jnp.eye(3)}
    with unchanged(params), pytest.raises(ValueError, match="Picky refuses this value") as info:
        ptree.register({"w": Picky()}, params)
    notes = getattr(info.value, "__notes__", None)
    if notes is not None:  # Python >= 3.11
        assert "(parametrax: raised while parametrizing `w` with [Picky])" in notes


# --- assignment ----------------------------------------------------------------------------------
_DENSE_ORTHO = (nn.Dense(3), {"kernel": [skew, cayley]}, X3)
_MLP_SKEW = (MLP(), {"*/kernel": skew}, X4)


@pytest.mark.parametrize(
    "layer,values,error,match",
    [
        (
            _DENSE_ORTHO,
            {"kernel": jnp.ones(3)},
            px.ShapeError,
            r"assign to `ParametrizedDense`: parametrizing `kernel` with \[Skew, Cayley\]: the "
            r"value assigned has shape \(3,\) and dtype float32; expected shape \(3, 3\) and dtype "
            r"float32 \(those of the current value\)",
        ),
        (
            _MLP_SKEW,
            {"Dense_0/kernel": jnp.eye(4, dtype=jnp.complex64)},
            px.ShapeError,
            r"parametrizing `Dense_0/kernel` with \[Skew\]: the value assigned has shape \(4, 4\) "
            r"and dtype complex64; expected shape \(4, 4\) and dtype float32",
        ),
        (
            _MLP_SKEW,
            {"*/kernel": jnp.zeros((4, 4))},
            px.SpecError,
            r"assign to `ParametrizedMLP`: assign takes exact variable paths, not globs or "
            r"non-strings; got '\*/kernel'",
        ),
        (
            (nn.Dense(3), {"kernel": skew}, X3),
            {"batch_stats:mean": jnp.ones(3)},
            px.NotParametrizedError,
            r"assign: `batch_stats:mean` is not parametrized in `ParametrizedDense` \(spec keys: "
            r"`kernel`\)",
        ),
        (
            _DENSE_ORTHO,
            {"kernel": jnp.eye(3).at[0, 1].set(jnp.inf)},
            px.ParametrizationError,
            r"assign to `ParametrizedDense`: parametrizing `kernel` with \[Skew, Cayley\]: the "
            r"value assigned contains 1 Inf among 9 entries; refusing to store it",
        ),
        (
            (nn.Dense(3), {"kernel": [skew, jnp.tanh]}, X3),
            {"kernel": jnp.eye(3)},
            px.RightInverseError,
            r"assign to `ParametrizedDense`: parametrizing `kernel` with \[Skew, tanh\]: cannot "
            r"assign through the chain \[Skew, tanh\]: function `tanh` does not implement "
            r"right_inverse",
        ),
        (
            _MLP_SKEW,
            {"Dense_0/kernel": px.skew(jnp.ones((4, 4))), "Dense_1/kernel": jnp.eye(3)},
            px.ShapeError,
            r"parametrizing `Dense_1/kernel`",  # one bad value among several changes nothing
        ),
    ],
    ids=[
        "vector-to-a-matrix",
        "complex-to-a-real-variable",
        "glob-key",
        "collection-the-spec-does-not-name",
        "inf",
        "through-a-plain-function",
        "several-values-one-bad",
    ],
)
def test_bad_linen_assign(layer, values, error, match):
    base, spec, x = layer
    layer = Parametrized(base, spec)
    v = layer.init(KEY, x)
    with unchanged(v), pytest.raises(error, match=match):
        px.linen.assign(layer, v, values)


@pytest.mark.parametrize("bad,kind", [([[1.0]], "list"), (None, "NoneType")], ids=["list", "None"])
def test_assign_a_non_array(bad, kind):
    spec, raw, state = _tree_setup([skew, cayley])
    with (
        unchanged(raw, state),
        pytest.raises(
            px.ParametrizationTypeError,
            match=rf"parametrizing `w` with \[Skew, Cayley\]: the value assigned must be an array, got {kind}",
        ),
    ):
        ptree.assign(spec, raw, state, {"w": bad})


# --- removal and the variables handed to apply ---------------------------------------------------
def _init_x3(layer):
    """The variables ``layer.init`` makes for inputs like ``X3``."""
    return layer.init(KEY, X3)


def _init_x4(layer):
    """The variables ``layer.init`` makes for inputs like ``X4``."""
    return layer.init(KEY, X4)


def _plain_dense(layer):
    """A plain ``Dense``'s variables (no `parametrizations` entry)."""
    del layer
    return nn.Dense(3).init(KEY, X3)


@pytest.mark.parametrize(
    "layer,variables,args,kwargs,error,match",
    [
        (
            Parametrized(MLP(), {"*/kernel": skew}),
            _init_x4,
            ("*/bias",),
            {},
            px.NotParametrizedError,
            r"remove_parametrizations: `\*/bias` is not parametrized in `ParametrizedMLP`; the "
            r"parametrized variables are `Dense_0/kernel`, `Dense_1/kernel`",
        ),
        (
            Parametrized(MLP(), {"Dense_0/kernel": skew, "Dense_1/kernel": RankOne()}),
            _init_x4,
            (),
            {"leave_parametrized": False},
            px.ParametrizationError,
            r"remove_parametrizations from `ParametrizedMLP`: parametrizing `Dense_1/kernel` with "
            r"\[RankOne\]: cannot leave unparametrized \(`leave_parametrized=False`\) a variable "
            r"parametrized in terms of 2 arrays \(original0..original1\)",
        ),
        (
            Parametrized(nn.Dense(3), {"kernel": skew}),
            _plain_dense,
            (),
            {},
            px.NotParametrizedError,
            r"remove_parametrizations from `ParametrizedDense`: the tree has no "
            r"`parametrizations` entry.*\(top-level keys: `bias`, `kernel`\). These are not the "
            r"variables of a `ParametrizedDense` \(a plain `Dense`'s",
        ),
    ],
    ids=[
        "glob-matching-nothing",
        "leave-parametrized-false-with-a-multi-array-chain",
        "from-plain-variables",
    ],
)
def test_bad_remove(layer, variables, args, kwargs, error, match):
    v = variables(layer)
    with unchanged(v), pytest.raises(error, match=match):
        px.linen.remove_parametrizations(layer, v, *args, **kwargs)


@pytest.mark.parametrize(
    "layer,variables,x,error,match",
    [
        (
            Parametrized(nn.Dense(3), {"kernel": [skew, cayley]}),
            _plain_dense,
            X3,
            px.NotParametrizedError,
            r"`ParametrizedDense.__call__`: the tree has no `parametrizations` entry.*top-level "
            r"keys: `bias`, `kernel`.*pass the variables `ParametrizedDense.init` returned",
        ),
        (
            Parametrized(nn.Dense(4), {"kernel": skew}),
            lambda layer: _init_x4(Parametrized(MLP(), {"*/kernel": skew})),
            X4,
            px.SpecError,
            r"`ParametrizedDense.__call__`: spec key `kernel` matches no variable of the raw "
            r"tree's parametrizations; the variables are: `Dense_0/kernel`, `Dense_1/kernel`",
        ),
        (
            Parametrized(nn.Dense(3), {"kernel": px.RandomPruning(0.5)}),
            lambda layer: {"params": _init_x3(layer)["params"]},
            X3,
            px.ParametrizationError,
            r"`ParametrizedDense.__call__`: parametrizing `kernel` with \[RandomPruning\]: "
            r"`RandomPruning` \(link 0 of the chain\) reads its variable 'mask', which it was not "
            r"given: it received params \[\] and state \[\].*no `parametrization_state` "
            r"collection: pass every collection `init` returned",
        ),
        (
            Parametrized(nn.Dense(3), {"kernel": skew}),
            lambda layer: {"batch_stats": {}},
            X3,
            px.NotParametrizedError,
            r"`ParametrizedDense.__call__`: the variables have no `params` collection; got the "
            r"collections \['batch_stats'\]",
        ),
    ],
    ids=[
        "plain-module-variables",
        "another-models-variables",
        "without-the-state-collection",
        "without-params",
    ],
)
def test_bad_apply(layer, variables, x, error, match):
    v = variables(layer)
    with unchanged(v), pytest.raises(error, match=match):
        layer.apply(v, x)


def test_constrained_and_assign_without_the_state_collection():
    layer = Parametrized(nn.Dense(3), {"kernel": px.RandomPruning(0.5)})
    v = layer.init(KEY, X3)
    params_only = {"params": v["params"]}
    with unchanged(params_only):
        with pytest.raises(
            px.ParametrizationError, match=r"constrain\(`ParametrizedDense`\): .*'mask'"
        ):
            px.linen.constrain(layer, params_only)
        with pytest.raises(
            px.ParametrizationError, match=r"assign to `ParametrizedDense`: .*'mask'"
        ):
            px.linen.assign(layer, params_only, {"kernel": jnp.eye(3)})


def test_tree_forward_without_state():
    spec = {"w": px.RandomPruning(0.5)}
    raw, state = ptree.register(spec, {"w": jnp.eye(3)}, key=KEY)
    with (
        unchanged(raw),
        pytest.raises(
            px.ParametrizationError,
            match=r"parametrizing `w` with \[RandomPruning\]: `RandomPruning` \(link 0 of the chain\) "
            r"reads its variable 'mask', which it was not given.*Pass back the state made at "
            r"registration",
        ),
    ):
        ptree.constrain(spec, raw)


def test_every_error_class_is_a_value_error():
    # callers who do not know parametrax can still `except ValueError` (and TypeError for kinds)
    for cls in (px.ShapeError, px.SpecError, px.RightInverseError, px.NotParametrizedError):
        assert issubclass(cls, ValueError) and issubclass(cls, px.ParametrizationError)
    assert issubclass(px.ParametrizationTypeError, TypeError)
