r"""Load a PyTorch ``state_dict`` into the equivalent ``px.Parametrized`` Flax model.

A torch model that used ``torch.nn.utils.parametrize.register_parametrization`` or
``torch.nn.utils.parametrizations`` (``orthogonal``, ``spectral_norm``, ``weight_norm``) saves
its raw values under ``<module>.parametrizations.<name>.original`` (``original0``,
``original1`` for weight norm's ``g``, ``v``) and each parametrization's buffers under
``<module>.parametrizations.<name>.<i>.<buffer>`` (spectral norm's ``_u``, ``_v``; the
orthogonal trivialization's ``base``). The deprecated ``torch.nn.utils.weight_norm`` saved
``<module>.<name>_g`` / ``<module>.<name>_v`` instead (PyTorch issue 102999); both are read.

:func:`load_state_dict` turns such a ``state_dict`` into the variables of the Flax model wrapped
with ``px.Parametrized`` and the equivalent spec, in parametrax's layout
(``params/parametrizations/<path>/original``, ``parametrization_state/...``), transposing from
torch's layout to Flax's on the way:

==================  =====================  ==========================  ===========================
``layouts`` kind    torch                  Flax                        names
==================  =====================  ==========================  ===========================
``"linear"``        weight ``(out, in)``   kernel ``(in, out)``        ``weight -> kernel``
``"conv"``          ``(out, in, *k)``      ``(*k, in, out)``           ``weight -> kernel``
``"embed"``         ``(num, features)``    the same                    ``weight -> embedding``
``"norm"``          LayerNorm/BatchNorm    the same                    ``weight -> scale``;
                                                                       ``running_mean`` /
                                                                       ``running_var`` ->
                                                                       ``batch_stats/mean`` /
                                                                       ``var``
``"plain"``         any                    the same                    unchanged
==================  =====================  ==========================  ===========================

``bias`` keeps its name everywhere. The default kind (``"auto"``) is read from the module's
``weight``: 2-D is ``"linear"``, 3-D to 5-D ``"conv"``, 1-D ``"norm"``; a module without a
``weight`` is ``"plain"``. ``nn.Embedding`` has a 2-D weight: name it ``"embed"``.
``ConvTranspose`` is not translated (torch's and Flax's transposed convolutions differ by a
kernel flip; convert it yourself).

How each parametrization is translated (the spec's chain decides; torch's state_dict does not
say which parametrization produced a raw value):

* :class:`~parametrax.WeightNorm`: ``g`` and ``v`` are permuted like the weight (``g`` keeps
  its kept axes), so torch's ``dim=0`` on a Linear is ``WeightNorm(axis=-1)`` on the kernel
  (``g`` of shape ``(1, out)``); a 0-d ``g`` (torch's ``dim=None``) needs ``axis=None``.
* :class:`~parametrax.SpectralNorm`: the raw weight is permuted; ``_u`` is kept and ``_v``
  permuted into the Flax matrix view's column order (a Conv's columns are ``(in, kh, kw)`` in
  torch and ``(kh, kw, in)`` here), so ``sigma = u^T W v`` and the outputs are torch's to
  rounding, lag included.
* :class:`~parametrax.Orthogonal`: a non-square raw value is transposed and the base kept
  (``forward(X^T) = forward(X)^T``). A square one has no such identity (torch reads the lower
  triangle of ``W``): with ``"matrix_exp"`` / ``"cayley"`` the raw value and base are moved
  exactly (``K = W^T = B^T expm(-B A B^T)``: raw ``tril(-B A B^T)``, base ``B^T``; without the
  trivialization, raw ``-X``); with ``"householder"`` the value is computed and registered on
  the kernel (base = the value, raw ``-I``). Only 2-D weights (torch orthogonalises a Conv
  weight's ``(kh, kw)`` slices, parametrax a Flax kernel's ``(in, out)`` taps: not the same
  constraint).
* Elementwise links (:class:`~parametrax.Positive`, :class:`~parametrax.Interval`,
  :class:`~parametrax.RandomPruning`): raw values and link arrays of the weight's shape are
  permuted.
* Any other chain (your own ``register_parametrization`` modules, e.g. torch's tutorial
  ``Skew`` before ``CayleyMap``, mirrored by ``[px.Skew(), px.Cayley()]``): **by value**. The
  spec's chain is evaluated on the torch-layout raw values (so its links must compute on
  torch's arrays what your torch parametrizations computed), the value is moved to the Flax
  layout and registered there (the chain's right inverses). The value is torch's to rounding;
  the raw values are parametrax's own. Links with learnable parameters cannot be moved this
  way (their meaning depends on the layout) and are refused; every link needs a right inverse.

Torch is never imported: values are numpy arrays or anything with ``.detach().cpu().numpy()``.

>>> import numpy as np, parametrax as px
>>> from parametrax.interop import torch as pt
>>> sd = {"fc.parametrizations.weight.original0": np.full((3, 1), 2.0, np.float32),
...       "fc.parametrizations.weight.original1": np.ones((3, 4), np.float32),
...       "fc.bias": np.zeros(3, np.float32)}
>>> v = pt.load_state_dict(sd, {"Dense_0/kernel": px.WeightNorm()}, modules={"fc": "Dense_0"})
>>> v["params"]["parametrizations"]["Dense_0"]["kernel"]["original0"].shape
(1, 3)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from parametrax import tree as _tree
from parametrax._errors import ShapeError, SpecError
from parametrax.catalog import (
    Interval,
    Orthogonal,
    Positive,
    RandomPruning,
    SpectralNorm,
    WeightNorm,
)
from parametrax.tree import Spec
from parametrax.tree.paths import flatten, listing

__all__ = ["load_state_dict", "linen_names", "nnx_state", "LAYOUTS", "TorchLoadError"]

#: The valid values of ``layouts[...]`` (see the module docstring).
LAYOUTS = ("auto", "linear", "conv", "embed", "norm", "plain")

_STATE = "parametrization_state"
_PARAMS = "params"
_ELEMENTWISE = (Positive, Interval, RandomPruning)
#: torch buffer names -> parametrax variable names
_RENAMES = {SpectralNorm: {"_u": "u", "_v": "v"}}


class TorchLoadError(SpecError):
    """A ``state_dict`` that cannot be loaded as asked: unknown or missing keys, a module not
    mapped, shapes that do not match the spec or the template. Names the keys concerned."""


# ------------------------------------------------------------------------------------------------
# Names
# ------------------------------------------------------------------------------------------------
def linen_names(torch_module: str) -> str:
    """The linen path of a torch module name when the Flax modules carry the same names:
    ``"fc1" -> "fc1"``, ``"blocks.0.fc" -> "blocks_0/fc"`` (linen names the modules of a list
    attribute ``blocks_0``, ``blocks_1``, ...). Pass it as ``modules=linen_names``."""
    parts: list[str] = []
    for part in torch_module.split(".") if torch_module else []:
        if part.isdigit() and parts:
            parts[-1] = f"{parts[-1]}_{part}"
        else:
            parts.append(part)
    return "/".join(parts)


def _to_numpy(x: Any, key: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":
            return np.asarray(x.float().numpy()).astype(jnp.bfloat16)
        x = x.numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # pragma: no cover - the message is the point
        raise TorchLoadError(
            f"state_dict entry `{key}`: expected an array (numpy, or a tensor with "
            f"`.detach().cpu().numpy()`); got {type(x).__name__}."
        ) from e


# ------------------------------------------------------------------------------------------------
# Parsing the state_dict
# ------------------------------------------------------------------------------------------------
class _Tensor:
    """One parametrized torch tensor: its originals and its links' buffers/parameters."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name
        self.originals: dict[str, np.ndarray] = {}
        self.links: dict[int, dict[str, np.ndarray]] = {}
        self.keys: list[str] = []
        self.legacy = False

    def torch_key(self, rest: str) -> str:
        pre = f"{self.module}." if self.module else ""
        return (
            f"{pre}{self.name}_{rest[-1]}"
            if self.legacy
            else (f"{pre}parametrizations.{self.name}.{rest}")
        )

    def weight_shape(self) -> tuple[int, ...]:
        if "original" in self.originals:
            return self.originals["original"].shape
        if "original1" in self.originals and len(self.originals) == 2:
            return self.originals["original1"].shape  # weight norm's v
        return self.originals[min(self.originals)].shape


_PZ = re.compile(r"^(?:(?P<mod>.*?)\.)??parametrizations\.(?P<name>[^.]+)\.(?P<rest>.+)$")


def _parse(sd: Mapping[str, np.ndarray]):
    """Splits the keys into parametrized tensors and plain ``(module, name) -> array``."""
    tensors: dict[tuple[str, str], _Tensor] = {}
    plain: dict[tuple[str, str], tuple[str, np.ndarray]] = {}
    for key, arr in sd.items():
        m = _PZ.match(key)
        if m:
            mod, name, rest = m.group("mod") or "", m.group("name"), m.group("rest")
            t = tensors.setdefault((mod, name), _Tensor(mod, name))
            t.keys.append(key)
            if re.fullmatch(r"original\d*", rest):
                t.originals[rest] = arr
                continue
            link, _, attr = rest.partition(".")
            if not link.isdigit() or not attr or "." in attr:
                raise TorchLoadError(
                    f"state_dict key `{key}`: expected `parametrizations.{name}.original[k]` or "
                    f"`parametrizations.{name}.<i>.<buffer>`; nested parametrizations (a "
                    "parametrized `original`) and submodules inside a parametrization are not "
                    "translated."
                )
            t.links.setdefault(int(link), {})[attr] = arr
            continue
        mod, _, name = key.rpartition(".")
        plain[(mod, name)] = (key, arr)
    for t in tensors.values():
        if not t.originals:
            raise TorchLoadError(
                f"state_dict: `{t.torch_key('original')}` is missing (the raw value of "
                f"the parametrized tensor `{t.name}`); found only {sorted(t.keys)}."
            )
    # The legacy torch.nn.utils.weight_norm keys: <name>_g and <name>_v, both present.
    for mod, name in list(plain):
        if name.endswith("_g") and (mod, name[:-2] + "_v") in plain:
            base = name[:-2]
            (kg, g), (kv, v) = plain.pop((mod, name)), plain.pop((mod, base + "_v"))
            if (mod, base) in tensors:
                raise TorchLoadError(
                    f"state_dict has both the legacy `{kg}` / `{kv}` and "
                    f"`parametrizations.{base}` keys for module `{mod}`."
                )
            t = _Tensor(mod, base)
            t.legacy, t.originals, t.keys = (
                True,
                {"original0": g, "original1": v},
                [kg, kv],
            )
            tensors[(mod, base)] = t
    return tensors, plain


# ------------------------------------------------------------------------------------------------
# Layouts
# ------------------------------------------------------------------------------------------------
def _kind(module: str, layouts: Mapping[str, str], weight_ndim: int | None) -> str:
    kind = layouts.get(module, "auto")
    if kind not in LAYOUTS:
        raise TorchLoadError(
            f"layouts[{module!r}] = {kind!r}; expected one of {', '.join(map(repr, LAYOUTS))}."
        )
    if kind != "auto":
        return kind
    if weight_ndim is None:
        return "plain"
    return {1: "norm", 2: "linear"}.get(weight_ndim, "conv" if 3 <= weight_ndim <= 5 else "plain")


def _perm(kind: str, name: str, ndim: int) -> tuple[int, ...]:
    """The axes of the Flax array in torch's order: ``flax = torch.transpose(perm)``."""
    if name == "weight" and kind == "linear" and ndim == 2:
        return (1, 0)
    if name == "weight" and kind == "conv":
        return tuple(range(2, ndim)) + (1, 0)
    return tuple(range(ndim))


def _flax_name(kind: str, name: str) -> tuple[str, str]:
    """``(collection, name)`` of a torch parameter/buffer ``name`` in a module of ``kind``."""
    if name == "weight":
        return _PARAMS, {
            "linear": "kernel",
            "conv": "kernel",
            "embed": "embedding",
            "norm": "scale",
        }.get(kind, name)
    if kind == "norm" and name in ("running_mean", "running_var"):
        return "batch_stats", {"running_mean": "mean", "running_var": "var"}[name]
    return _PARAMS, name


def _check_kind(kind: str, t_shape: tuple, key: str) -> None:
    if kind == "linear" and len(t_shape) != 2:
        raise TorchLoadError(f"`{key}` has shape {t_shape}; layout 'linear' needs (out, in).")
    if kind == "conv" and not 3 <= len(t_shape) <= 5:
        raise TorchLoadError(
            f"`{key}` has shape {t_shape}; layout 'conv' needs (out, in, *kernel_size)."
        )


# ------------------------------------------------------------------------------------------------
# Translating one parametrized tensor
# ------------------------------------------------------------------------------------------------
def _link_vars(t: _Tensor, i: int, link, template: dict, key_for: Callable[[str], str]) -> dict:
    """Link ``i``'s torch buffers, in the structure of its ``init_variables`` template."""
    got = dict(t.links.get(i, {}))
    renames = next((r for c, r in _RENAMES.items() if isinstance(link, c)), {})
    got = {renames.get(k, k): v for k, v in got.items()}
    out: dict = {"params": {}, "state": {}}
    for col in ("params", "state"):
        for name in template.get(col, {}):
            back = {v: k for k, v in renames.items()}.get(name, name)
            if name not in got:
                raise TorchLoadError(
                    f"state_dict: `{key_for(f'{i}.{back}')}` is missing: `{link!r}` (link {i} "
                    f"of the spec's chain) needs its {col} `{name}`; the state_dict has "
                    f"{sorted(t.keys)}."
                )
            out[col][name] = got.pop(name)
    if got:
        raise TorchLoadError(
            f"state_dict: {sorted(key_for(f'{i}.{k}') for k in got)} not expected: `{link!r}` "
            f"(link {i} of the spec's chain) has no such variables (it has "
            f"{sorted(template.get('params', {})) + sorted(template.get('state', {}))})."
        )
    return out


def _norm_axis(axis: int, ndim: int, what: str) -> int:
    if not -ndim <= axis < ndim:
        raise TorchLoadError(f"{what}: axis {axis} is out of range for {ndim} dimensions.")
    return axis % ndim


def _weight_norm(link: WeightNorm, t: _Tensor, perm, flax_path: str):
    if set(t.originals) != {"original0", "original1"}:
        raise TorchLoadError(
            f"`{flax_path}` is parametrized by `{link!r}` in the spec, which needs torch's "
            f"`original0` (g) and `original1` (v); the state_dict has {sorted(t.keys)}."
        )
    g, v = t.originals["original0"], t.originals["original1"]
    v_f = v.transpose(perm)
    g_f = g if g.ndim == 0 else g.reshape(g.shape + (1,) * (v.ndim - g.ndim)).transpose(perm)
    want = tuple(link.right_inverse(jnp.asarray(v_f))[0].shape)
    if tuple(g_f.shape) != want:
        kept = [a for a in range(v_f.ndim) if g_f.ndim and g_f.shape[a] != 1]
        hint = "axis=None" if g.ndim == 0 else f"axis={tuple(kept) if len(kept) != 1 else kept[0]}"
        raise TorchLoadError(
            f"`{flax_path}`: torch's g `{t.torch_key('original0')}` has shape {g.shape}, which "
            f"is {tuple(g_f.shape)} on the Flax array {tuple(v_f.shape)}; the spec's `{link!r}` "
            f"needs g of shape {want}. Use WeightNorm({hint})."
        )
    return {"original0": g_f, "original1": v_f}, [{}], [{}]


def _spectral_norm(link: SpectralNorm, t: _Tensor, perm, flax_path: str):
    w = t.originals.get("original")
    if w is None:
        raise TorchLoadError(f"`{flax_path}`: `{t.torch_key('original')}` is missing.")
    k = w.transpose(perm)
    if w.ndim == 1:
        _link_vars(t, 0, link, {"params": {}, "state": {}}, t.torch_key)
        return {"original": k}, [{}], [{}]
    if isinstance(link.axis, tuple) and len(link.axis) != 1:
        raise TorchLoadError(
            f"`{flax_path}`: `{link!r}` has several output axes; torch's spectral_norm has one "
            "`dim`, so it cannot be the source."
        )
    a = _norm_axis(link.axis[0] if isinstance(link.axis, tuple) else link.axis, k.ndim, flax_path)
    d = perm[a]  # the torch dim the spec's axis corresponds to
    got = _link_vars(t, 0, link, {"params": {}, "state": {"u": None, "v": None}}, t.torch_key)[
        "state"
    ]
    others = [i for i in range(w.ndim) if i != d]
    rows, cols = w.shape[d], math.prod(w.shape[i] for i in others)
    if got["u"].shape != (rows,) or got["v"].shape != (cols,):
        raise TorchLoadError(
            f"`{flax_path}`: `{t.torch_key('0._u')}`, `{t.torch_key('0._v')}` have shapes "
            f"{got['u'].shape}, {got['v'].shape}; the spec's `{link!r}` on the Flax array "
            f"{k.shape} is torch's dim={d} on {w.shape}, which needs ({rows},), ({cols},). "
            "Choose `axis` as the Flax position of torch's `dim` (torch's default dim=0 is "
            "axis=-1 on Dense and Conv kernels)."
        )
    idx = np.arange(cols).reshape([w.shape[i] for i in others])
    order = [others.index(perm[j]) for j in range(k.ndim) if j != a]
    v = got["v"][idx.transpose(order).reshape(-1)]
    return {"original": k}, [{}], [{"u": got["u"], "v": v}]


def _orthogonal(link: Orthogonal, t: _Tensor, perm, flax_path: str, key):
    x = t.originals.get("original")
    if x is None or x.ndim != 2:
        raise TorchLoadError(
            f"`{flax_path}`: `{link!r}` is translated for 2-D weights (Linear, Embedding) only; "
            f"the state_dict has {sorted(t.keys)} "
            f"{'with shape ' + str(x.shape) if x is not None else ''}. (torch orthogonalises a "
            "Conv weight's (kh, kw) slices, parametrax a Flax kernel's (in, out) taps.)"
        )
    tmpl = link.init_variables(jax.random.key(0), jnp.asarray(x)) if link.use_trivialization else {}
    base = _link_vars(t, 0, link, tmpl, t.torch_key)["state"].get("base")
    if perm == (0, 1):
        return {"original": x}, [{}], [{"base": base} if tmpl else {}]
    n, k = x.shape
    m = link.resolved_map(jnp.asarray(x))
    if n != k:
        return {"original": x.T}, [{}], [{"base": base} if tmpl else {}]
    real = not np.iscomplexobj(x)
    if real and m in ("matrix_exp", "cayley"):
        if not tmpl:
            return {"original": -x}, [{}], [{}]  # expm(A)^T = expm(-A)
        lo = np.tril(x)
        a = lo - lo.T
        a2 = -(base @ a @ base.T)
        return (
            {"original": np.tril(a2, -1).astype(x.dtype)},
            [{}],
            [{"base": base.T.copy()}],
        )
    # by value: torch's value in torch's layout, registered on the Flax kernel
    value = link.apply(
        {"params": {}, "state": {"base": jnp.asarray(base)} if tmpl else {}},
        jnp.asarray(x),
    )[0]
    return _register_value((link,), np.asarray(value).T, key)


def _register_value(chain, value, key):
    """Registers ``chain`` on the Flax-layout ``value``: ``(originals, params, state)``."""
    raw, state = _tree.register({"w": chain}, {"w": jnp.asarray(value)}, key=key)
    slot = dict(raw["parametrizations"]["w"])
    originals = {k: v for k, v in slot.items() if k.startswith("original")}
    params = [slot.get(str(i), {}) for i in range(len(chain))]
    lstate = state.get("parametrizations", {}).get("w", {})
    return originals, params, [lstate.get(str(i), {}) for i in range(len(chain))]


def _elementwise(chain, t: _Tensor, perm, flax_path: str):
    shape = t.weight_shape()
    if set(t.originals) != {"original"}:
        raise TorchLoadError(f"`{flax_path}`: expected `{t.torch_key('original')}` only.")
    params, lstate = [], []
    x = jnp.asarray(t.originals["original"])
    for i, link in enumerate(chain):
        tmpl = link.init_variables(jax.random.key(0), x) if link.has_variables else {}
        got = _link_vars(t, i, link, tmpl, t.torch_key)
        params.append({k: _moved(v, shape, perm) for k, v in got["params"].items()})
        lstate.append({k: _moved(v, shape, perm) for k, v in got["state"].items()})
    return {"original": t.originals["original"].transpose(perm)}, params, lstate


def _moved(a: np.ndarray, shape: tuple, perm: tuple) -> np.ndarray:
    """A link array of the weight's (torch) shape is permuted like it; others are kept."""
    return a.transpose(perm) if a.shape == shape else a


def _by_value(chain, t: _Tensor, perm, flax_path: str, key):
    """Evaluates the chain on torch's arrays (torch-layout twins of the norms), moves the value
    to the Flax layout and registers the chain there."""
    twins = []
    for link in chain:
        if isinstance(link, SpectralNorm) and not isinstance(link.axis, tuple):
            link = SpectralNorm(
                n_power_iterations=link.n_power_iterations,
                eps=link.eps,
                axis=perm[link.axis % len(perm)],
            )
        elif isinstance(link, WeightNorm) and isinstance(link.axis, int):
            link = WeightNorm(axis=perm[link.axis % len(perm)])
        twins.append(link)
    originals = {k: jnp.asarray(v) for k, v in t.originals.items()}
    x = originals.get("original")
    params, lstate = [], []
    cur = None
    for i, link in enumerate(twins):
        args: tuple
        if i == 0:
            args = (
                (x,)
                if x is not None
                else tuple(originals[f"original{j}"] for j in range(len(originals)))
            )
        else:
            args = (cur,)
        if link.has_variables:
            tmpl = link.init_variables(jax.random.key(0), args[-1])
            if tmpl.get("params"):
                raise TorchLoadError(
                    f"`{flax_path}`: `{chain[i]!r}` (link {i}) has learnable parameters "
                    f"{sorted(tmpl['params'])}; the chain {list(chain)} is loaded by value "
                    "(its raw values re-registered on the Flax layout), which cannot carry "
                    "them. Translate this tensor yourself."
                )
            got = _link_vars(t, i, link, tmpl, t.torch_key)
        else:
            got = _link_vars(t, i, link, {}, t.torch_key)
        params.append(got["params"])
        lstate.append(got["state"])
        cur, _ = link.apply({"params": got["params"], "state": got["state"]}, *args)
    for link in chain:
        if not link.has_right_inverse:
            raise TorchLoadError(
                f"`{flax_path}`: the chain {list(chain)} has no translation rule and "
                f"`{link!r}` has no right inverse, so it cannot be loaded by value either."
            )
    return _register_value(chain, np.asarray(cur).transpose(perm), key)


def _translate(chain, t: _Tensor, perm, flax_path: str, key):
    first = chain[0]
    if len(chain) == 1 and isinstance(first, WeightNorm):
        return _weight_norm(first, t, perm, flax_path)
    if t.legacy:
        raise TorchLoadError(
            f"`{flax_path}`: the legacy weight-norm keys {t.keys} need the spec's chain to be "
            f"[WeightNorm(...)]; got {list(chain)}."
        )
    if len(chain) == 1 and isinstance(first, SpectralNorm):
        return _spectral_norm(first, t, perm, flax_path)
    if len(chain) == 1 and isinstance(first, Orthogonal):
        return _orthogonal(first, t, perm, flax_path, key)
    if all(isinstance(link, _ELEMENTWISE) for link in chain):
        return _elementwise(chain, t, perm, flax_path)
    return _by_value(chain, t, perm, flax_path, key)


# ------------------------------------------------------------------------------------------------
# The entry point
# ------------------------------------------------------------------------------------------------
def load_state_dict(
    state_dict: Mapping[str, Any],
    spec: Any,
    *,
    modules: Mapping[str, str] | Callable[[str], str],
    layouts: Mapping[str, str] | None = None,
    template: Mapping | None = None,
    strict: bool = True,
    key: jax.Array | None = None,
) -> dict:
    """A torch ``state_dict`` as the variables of the equivalent ``px.Parametrized`` model.

    Args:
      state_dict: ``{torch key: array}`` (numpy arrays or torch tensors; torch is not imported).
      spec: the spec the Flax model is wrapped with (``{path_or_glob: chain}``, a
        :class:`~parametrax.Spec`, or the ``px.Parametrized`` model itself), in Flax paths
        (``"Dense_0/kernel"``). Every parametrized torch tensor must match a spec key, and every
        spec key a parametrized torch tensor.
      modules: torch module name -> Flax module path (``{"fc1": "Dense_0", "": ""}``), or a
        callable doing it (:func:`linen_names` when the Flax modules have torch's names). A
        module missing from a mapping is an error listing the unmapped names.
      layouts: torch module name -> one of :data:`LAYOUTS` (default ``"auto"``: from the
        weight's number of dimensions; ``nn.Embedding`` needs ``"embed"``).
      template: optional variables of the Flax model (``model.init(...)``): the result is the
        template with every loaded value put in, and each loaded value must exist there with
        the same shape (its dtype is cast to the template's). With ``strict=True`` every array
        of the template must be loaded (missing ones are listed).
      strict: see ``template``.
      key: PRNG key for chains loaded by value whose right inverse draws random numbers.

    Returns:
      ``{"params": ..., "parametrization_state": ..., "batch_stats": ...}`` (collections that
      receive nothing are left out, unless the template has them).

    Raises:
      TorchLoadError: unmapped modules, keys that do not fit the spec (missing buffers,
        unexpected ones, a raw value no spec key matches, a spec key with no torch tensor),
        shapes that do not match the spec's parametrization or the template.
    """
    sd = {str(k): _to_numpy(v, str(k)) for k, v in state_dict.items()}
    if hasattr(spec, "_px_spec"):
        spec = spec._px_spec
    spec = Spec.of(spec)
    layouts = dict(layouts or {})
    tensors, plain = _parse(sd)

    def flax_module(mod: str) -> str:
        if callable(modules):
            out = modules(mod)
        elif mod in modules:
            out = modules[mod]
        else:
            seen = sorted({m for m, _ in tensors} | {m for m, _ in plain})
            missing = [m for m in seen if m not in modules]
            raise TorchLoadError(
                f'`modules` does not map the torch module(s) {missing} (use "" for the top '
                f"level). Mapped: {sorted(modules)}. Torch modules in the state_dict: {seen}."
            )
        if not isinstance(out, str):
            raise TorchLoadError(f"`modules` mapped {mod!r} to {out!r}; expected a path string.")
        return out.strip("/")

    def join(*parts: str) -> str:
        return "/".join(p for p in parts if p)

    weight_ndim: dict[str, int] = {}
    for (mod, name), t in tensors.items():
        if name == "weight":
            weight_ndim[mod] = len(t.weight_shape())
    for (mod, name), (_, arr) in plain.items():
        if name == "weight":
            weight_ndim[mod] = arr.ndim
    for mod in layouts:
        if mod not in weight_ndim and not any(m == mod for m, _ in plain):
            raise TorchLoadError(
                f"layouts names the torch module {mod!r}, which the state_dict does not have; "
                f"its modules: {sorted(set(weight_ndim) | {m for m, _ in plain})}."
            )

    out: dict = {}
    origin: dict[str, str] = {}

    def put(path: str, arr, src: str) -> None:
        if path in origin:
            raise TorchLoadError(
                f"`{src}` and `{origin[path]}` both land on the Flax variable `{path}`; check "
                "`modules`."
            )
        origin[path] = src
        out[path] = jnp.asarray(arr)

    for (mod, name), (tkey, arr) in plain.items():
        if name == "num_batches_tracked":
            continue
        kind = _kind(mod, layouts, weight_ndim.get(mod))
        _check_kind(kind, arr.shape, tkey) if name == "weight" else None
        col, fname = _flax_name(kind, name)
        put(
            join(col, flax_module(mod), fname),
            arr.transpose(_perm(kind, name, arr.ndim)),
            tkey,
        )

    flax_paths = {}
    for (mod, name), t in tensors.items():
        kind = _kind(mod, layouts, weight_ndim.get(mod))
        col, fname = _flax_name(kind, name)
        if col != _PARAMS:
            raise TorchLoadError(
                f"`{t.keys[0]}`: parametrized buffers of kind {kind!r} are not translated."
            )
        flax_paths[join(flax_module(mod), fname)] = t
    plain_param_paths = [p[len(_PARAMS) + 1 :] for p in origin if p.startswith(_PARAMS + "/")]
    try:
        resolved = spec.resolve(list(flax_paths) + plain_param_paths, what="state_dict")
    except SpecError as e:
        raise TorchLoadError(
            f"{e} (Flax paths of the state_dict's parametrized tensors: {sorted(flax_paths)})"
        ) from None
    for path, t in flax_paths.items():
        if path not in resolved:
            raise TorchLoadError(
                f"`{t.keys[0]}` is parametrized in torch (Flax path `{path}`) but no spec key "
                f"matches it; spec keys: {list(spec.keys())}."
            )
    for p in plain_param_paths:
        if p in resolved:
            raise TorchLoadError(
                f"the spec parametrizes `{p}` ({resolved[p][0]!r}) but the state_dict holds it "
                f"unparametrized (`{origin[_PARAMS + '/' + p]}`); torch's model had no "
                "parametrization there."
            )
    keys = (
        dict(zip(sorted(flax_paths), jax.random.split(key, len(flax_paths))))
        if (key is not None and flax_paths)
        else {}
    )
    for path, t in sorted(flax_paths.items()):
        chain = resolved[path][1]
        kind = _kind(t.module, layouts, weight_ndim.get(t.module))
        shape = t.weight_shape()
        if t.name == "weight":
            _check_kind(kind, shape, t.keys[0])
        perm = _perm(kind, t.name, len(shape))
        originals, params, lstate = _translate(chain, t, perm, path, keys.get(path))
        where = t.torch_key("original")
        for k, v in originals.items():
            put(join(_PARAMS, "parametrizations", path, k), np.asarray(v), where)
        for i, p in enumerate(params):
            for k, v in p.items():
                put(
                    join(_PARAMS, "parametrizations", path, str(i), k),
                    np.asarray(v),
                    where,
                )
        for i, s in enumerate(lstate):
            back = {v: k for k, v in _RENAMES.get(type(chain[i]), {}).items()}
            for k, v in s.items():
                src = t.torch_key(f"{i}.{back.get(k, k)}") if i in t.links else where
                put(
                    join(_STATE, "parametrizations", path, str(i), k),
                    np.asarray(v),
                    src,
                )

    if template is not None:
        return _merge(template, out, origin, strict)
    result: dict = {}
    for path, arr in out.items():
        _set(result, path, arr)
    return result


def nnx_state(variables: Mapping) -> Any:
    """The loaded variables in the layout of an NNX module parametrized with the same spec
    (``px.nnx.register_parametrization``): every collection merged into one tree (``bias``,
    ``parametrizations/<attr>/original``, ``parametrizations/<attr>/<i>/u``, ...), as an
    ``nnx.State`` for ``nnx.update(module, nnx_state(variables))``. Load with ``modules``
    mapping torch names to the NNX attribute paths (``{"fc1": "fc1"}``).
    """
    from flax import nnx

    merged: dict = {}
    for path, value in flatten(_plain_dict(variables)).items():
        segs = path.split("/")[1:]  # without the collection
        if segs and segs[0] == "parametrizations":
            # linen: parametrizations/<module path>/<attr>/<entry>; NNX keeps them on the
            # module that owns <attr>: <module path>/parametrizations/<attr>/<entry>
            tail = 1 if segs[-1].startswith("original") else 2
            *mod, attr = segs[1:-tail]
            segs = [*mod, "parametrizations", attr, *segs[-tail:]]
        _set(merged, "/".join(segs), value)
    return nnx.State(merged)


def _set(tree: dict, path: str, value) -> None:
    *parents, last = path.split("/")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def _whole_base_for_frame(path: str, got: tuple, want: tuple) -> bool:
    """torch keeps a non-square orthogonal weight's whole ``n x n`` base; a parametrax template
    holds the ``n x k`` frame (its first ``k`` columns; the rest is completed by Householder).
    Both are read by the orthogonal family, and only the whole base keeps torch's raw
    coordinates exact away from raw = 0, so the loader keeps it."""
    return (
        path.endswith("/base")
        and len(got) == len(want) >= 2
        and got[:-1] == want[:-1]
        and got[-1] == got[-2] > want[-1]
    )


def _merge(template: Mapping, out: dict, origin: dict, strict: bool) -> dict:
    flat = flatten(_plain_dict(template))
    unexpected = sorted(p for p in out if p not in flat)
    if unexpected:
        raise TorchLoadError(
            "state_dict entries with no place in the template: "
            + "; ".join(f"`{origin[p]}` -> `{p}`" for p in unexpected)
            + ". Template variables:\n"
            + listing(sorted(flat))
        )
    bad = [
        f"`{origin[p]}` -> `{p}`: {tuple(out[p].shape)} vs the template's "
        f"{tuple(np.shape(flat[p]))}"
        for p in sorted(out)
        if tuple(out[p].shape) != tuple(np.shape(flat[p]))
        and not _whole_base_for_frame(p, tuple(out[p].shape), tuple(np.shape(flat[p])))
    ]
    if bad:
        raise ShapeError(
            "shape mismatch between the state_dict and the template: " + "; ".join(bad)
        )
    missing = sorted(p for p in flat if p not in out)
    if strict and missing:
        raise TorchLoadError(
            "template variables the state_dict does not provide (strict=True; pass strict=False "
            "to keep the template's values):\n" + listing(missing)
        )
    result: dict = {}
    for path, like in flat.items():
        val = out.get(path, like)
        if path in out and hasattr(like, "dtype"):
            val = jnp.asarray(val, dtype=like.dtype)
        _set(result, path, val)
    return result


def _plain_dict(tree: Mapping) -> dict:
    """Unfreezes and unboxes (``nn.Partitioned`` ...) a variables mapping."""

    def unbox(x):
        return x.unbox() if hasattr(x, "unbox") else x

    tree = jax.tree.map(unbox, tree, is_leaf=lambda x: hasattr(x, "unbox"))
    return {k: _plain_dict(v) if isinstance(v, Mapping) else v for k, v in tree.items()}
