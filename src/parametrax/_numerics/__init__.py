"""The numerics the catalog shares, each piece once (a parametrization module imports from here,
never from another catalog module):

* :mod:`~parametrax._numerics.checks`: the one dtype rule (bfloat16 / float16 computed in
  float32), ``require_*`` shape checks, the one axis rule (:class:`AxisError`), the one
  tolerance table :func:`default_atol`;
* :mod:`~parametrax._numerics.linalg`: the one matrix exponential :func:`expm`, the one Cayley
  map :func:`cayley_map` (custom derivative; :func:`cayley_half` is it at ``A/2``), polar and QR
  projections, Newton–Schulz, safe norms;
* :mod:`~parametrax._numerics.power`: power iteration for an operator given with its adjoint;
* :mod:`~parametrax._numerics.sampling`: Haar and torus sampling, the checked draw from a
  user's initializer;
* :mod:`~parametrax._numerics.scalar`: scalar maps (softplus and its stable inverse, ...) named
  from one closed table.
"""

from parametrax._numerics.checks import (
    check_axis_field,
    check_positive_int,
    default_atol,
    normalize_axes,
    on_manifold_tol,
    real_axis,
    require_inexact,
    require_matrix,
    require_matrix_shape,
    require_rank,
    require_shape,
    require_square,
    wide_dtype,
    widen,
    widened,
)
from parametrax._numerics.linalg import (
    cayley_half,
    cayley_map,
    complete,
    expm,
    eye_batch,
    eye_like,
    flip_last_col,
    keep_or_project,
    max_abs,
    mH,
    mT,
    newton_schulz,
    orthonormality_error,
    polar,
    qr_positive,
    safe_norm,
    sign_or_one,
    solve,
    special_polar,
)
from parametrax._numerics.power import normalize, power_iteration
from parametrax._numerics.sampling import draw_init, haar, haar_special, torus
from parametrax._numerics.scalar import (
    POSITIVE_MAPS,
    SCALAR_MAPS,
    ScalarMap,
    check_scalar_map,
    clip_to_image,
    floor_ratio,
    floor_tiny,
    has_inverse,
    interior_margin,
    inv_softplus,
    inverse_or_raise,
    log_positive,
    positive_image,
    raise_into,
    raise_small,
    rank_floor,
    resolve_scalar_map,
    strictly_increasing,
)
from parametrax._numerics.tall import (
    apply_frame,
    eye_frame,
    gram,
    skew_blocks,
    skew_dense,
    skew_map_columns,
)
