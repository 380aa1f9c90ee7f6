"""The public API: one name per object, moved names warn once and give the same object."""

import warnings

import pytest

import parametrax as px
from parametrax import _core, _numerics, catalog, linen, tree


def test_every_exported_name_exists_and_names_one_object():
    objects = {}
    for name in px.__all__:
        obj = getattr(px, name)
        # `skew` is the instance `Skew()`: an instance and its class are different objects.
        assert id(obj) not in objects, f"`{name}` and `{objects.get(id(obj))}` are the same object"
        objects[id(obj)] = name


MOVED = [
    ("constrained", linen.constrain),
    ("assign", linen.assign),
    ("remove_parametrizations", linen.remove_parametrizations),
    ("is_parametrized", linen.is_parametrized),
    ("type_before_parametrizations", linen.type_before_parametrizations),
    ("spec_of", linen.spec_of),
    ("STATE_COLLECTION", linen.STATE_COLLECTION),
    ("update_base", tree.update_base),
    ("PSD", catalog.PositiveDefinite),
    ("inv_softplus", _numerics.inv_softplus),
    ("FunctionParametrization", _core.FunctionParametrization),
]


@pytest.mark.parametrize("old,new", MOVED, ids=[m[0] for m in MOVED])
def test_moved_names_warn_and_give_the_object_under_its_one_name(old, new):
    assert old not in px.__all__
    with pytest.warns(DeprecationWarning, match=rf"`px\.{old}` is deprecated .* use `px\."):
        assert getattr(px, old) is new


def test_moved_names_of_the_submodules():
    with pytest.warns(DeprecationWarning, match=r"use `px\.tree\.remove_parametrizations`"):
        assert tree.bake is tree.remove_parametrizations
    with pytest.warns(DeprecationWarning, match=r"use `px\.linen\.constrain`"):
        assert linen.constrained is linen.constrain


def test_unknown_names_are_plain_attribute_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="has no attribute 'nope'"):
            px.nope  # noqa: B018
        with pytest.raises(AttributeError):
            tree.nope  # noqa: B018


def test_the_linen_front_has_its_namespace_and_the_entry_point_stays_at_the_top():
    assert px.Parametrized is linen.Parametrized
    for name in ("constrain", "assign", "remove_parametrizations", "update_base", "spec_of"):
        assert name in linen.__all__


def test_optional_subpackages_load_on_first_use():
    # px.interop never imports torch; px.equinox needs equinox (a test extra).
    import parametrax as px
    from parametrax.interop import torch as interop_torch

    assert px.interop.torch is interop_torch
    assert callable(px.interop.torch.load_state_dict)


def test_conv_spectral_norm_is_exported_once():
    from parametrax.catalog import conv_norm

    assert px.ConvSpectralNorm is catalog.ConvSpectralNorm is conv_norm.ConvSpectralNorm
    assert px.conv_singular_values is catalog.conv_singular_values is conv_norm.conv_singular_values
    assert {"ConvSpectralNorm", "conv_singular_values"} <= set(px.__all__) & set(catalog.__all__)
