"""Bridges to other frameworks' checkpoints.

* :mod:`parametrax.interop.torch`: a PyTorch ``state_dict`` of a model that used
  ``torch.nn.utils.parametrize`` / ``parametrizations`` (or the legacy ``weight_norm``) turned
  into the variables of the equivalent ``px.Parametrized`` Flax model. Torch stays optional:
  the module never imports it; it reads numpy arrays or anything with
  ``.detach().cpu().numpy()``.
"""

from parametrax.interop import torch

__all__ = ["torch"]
