"""conv_impl="matmul" (patches @ matrix, no convolutions) == "xla": forward and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wav2pix_jax.models import conv_impls
from wav2pix_jax.models import layers

from test_layers import ref_conv, ref_conv1d, ref_conv_transpose

RTOL = 1e-5
ATOL = 1e-5


def _rand(rng, *shape):
  return rng.standard_normal(shape).astype(np.float32)


def _conv_primitives(fn, *args):
  """Names of the convolution primitives anywhere in fn's jaxpr (incl. sub-jaxprs)."""
  found = []

  def visit(jp):
    for eqn in jp.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        found.append(eqn.primitive.name)
      for val in eqn.params.values():
        for item in val if isinstance(val, (list, tuple)) else [val]:
          if hasattr(item, "eqns"):
            visit(item)
          elif hasattr(getattr(item, "jaxpr", None), "eqns"):
            visit(item.jaxpr)

  visit(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


# ---- the pure functions against torch semantics and against xla, incl. gradients ----------


def _check_fn_against_xla(f_mat, f_xla, x, kernel, rng, **kw):
  y_mat, y_xla = f_mat(x, kernel, **kw), f_xla(x, kernel, **kw)
  assert y_mat.shape == y_xla.shape
  np.testing.assert_allclose(y_mat, y_xla, rtol=1e-4, atol=1e-4)
  ct = jnp.asarray(_rand(rng, *y_xla.shape))
  g_mat = jax.grad(lambda a, b: jnp.sum(f_mat(a, b, **kw) * ct), argnums=(0, 1))(x, kernel)
  g_xla = jax.grad(lambda a, b: jnp.sum(f_xla(a, b, **kw) * ct), argnums=(0, 1))(x, kernel)
  np.testing.assert_allclose(g_mat[0], g_xla[0], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(g_mat[1], g_xla[1], rtol=1e-4, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize(
    "k,stride,padding,h,w",
    [
        (4, 2, 1, 3, 4),
        (4, 1, 0, 1, 1),
        (4, 2, 1, 1, 1),
        (4, 2, 0, 3, 4),
        (3, 2, 1, 4, 5),
        (4, 2, 2, 4, 5),
        (4, 1, 1, 3, 5),
        (5, 3, 2, 3, 2),
        (4, 2, 1, 4, 4),
        (3, 1, 0, 2, 3),
    ],
)
def test_conv_transpose_matmul(k, stride, padding, h, w):
  rng = np.random.default_rng(0)
  x, kernel = _rand(rng, 2, h, w, 3), _rand(rng, k, k, 3, 5)
  expected = ref_conv_transpose(x, kernel, stride, padding)
  got = conv_impls.conv_transpose_matmul(
      jnp.asarray(x), jnp.asarray(kernel), stride=stride, padding=padding
  )
  np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
  _check_fn_against_xla(
      conv_impls.conv_transpose_matmul,
      conv_impls.conv_transpose_xla,
      jnp.asarray(x),
      jnp.asarray(kernel),
      rng,
      stride=stride,
      padding=padding,
  )


@pytest.mark.slow
@pytest.mark.parametrize(
    "k,stride,padding,h,w",
    [
        (4, 2, 1, 8, 10),
        (4, 2, 1, 7, 9),
        (3, 2, 1, 5, 7),
        (5, 3, 2, 10, 12),
        (4, 2, 1, 4, 4),
        (3, 1, 1, 5, 6),
        (4, 1, 0, 4, 4),
        (4, 2, 0, 9, 8),
    ],
)
def test_conv_matmul(k, stride, padding, h, w):
  rng = np.random.default_rng(1)
  x, kernel = _rand(rng, 2, h, w, 3), _rand(rng, k, k, 3, 5)
  expected = ref_conv(x, kernel, stride, padding)
  got = conv_impls.conv_matmul(jnp.asarray(x), jnp.asarray(kernel), stride=stride, padding=padding)
  np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
  _check_fn_against_xla(
      conv_impls.conv_matmul,
      conv_impls.conv_xla,
      jnp.asarray(x),
      jnp.asarray(kernel),
      rng,
      stride=stride,
      padding=padding,
  )


@pytest.mark.slow
@pytest.mark.parametrize("length", [2, 3, 16, 63, 101, 250])
def test_conv1d_matmul(length):
  rng = np.random.default_rng(2)
  x, kernel = _rand(rng, 2, length, 3), _rand(rng, 15, 3, 4)
  expected = ref_conv1d(x, kernel, 4, (6, 7))
  got = conv_impls.conv1d_matmul(jnp.asarray(x), jnp.asarray(kernel), stride=4, padding=(6, 7))
  np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
  _check_fn_against_xla(
      conv_impls.conv1d_matmul,
      conv_impls.conv1d_xla,
      jnp.asarray(x),
      jnp.asarray(kernel),
      rng,
      stride=4,
      padding=(6, 7),
  )


@pytest.mark.slow
@pytest.mark.parametrize(
    "k,stride,padding", [(15, 4, (6, 7)), (4, 2, (1, 1)), (3, 1, (1, 1)), (5, 2, (0, 3))]
)
def test_conv1d_matmul_other_geometries(k, stride, padding):
  rng = np.random.default_rng(3)
  x, kernel = _rand(rng, 2, 23, 2), _rand(rng, k, 2, 3)
  np.testing.assert_allclose(
      conv_impls.conv1d_matmul(jnp.asarray(x), jnp.asarray(kernel), stride=stride, padding=padding),
      ref_conv1d(x, kernel, stride, padding),
      rtol=RTOL,
      atol=ATOL,
  )


# ---- through the modules (spectral norm included), as the models use them ---------------


def _module_cases():
  cases = [
      ("convT_s2", layers.SNConvTranspose2d, dict(features=5, stride=2, padding=1), (2, 4, 4, 6)),
      (
          "convT_s2_odd",
          layers.SNConvTranspose2d,
          dict(features=3, stride=2, padding=1),
          (3, 3, 5, 4),
      ),
      ("convT_s1", layers.SNConvTranspose2d, dict(features=5, stride=1, padding=0), (2, 1, 1, 6)),
      ("conv_s2", layers.SNConv2d, dict(features=5), (2, 8, 8, 6)),
      ("conv_s2_odd", layers.SNConv2d, dict(features=4), (3, 7, 9, 3)),
      ("conv1d", layers.Conv1d, dict(features=5), (2, 64, 3)),
      ("conv1d_odd", layers.Conv1d, dict(features=4), (3, 63, 1)),
  ]
  return [pytest.param(*case, id=case[0]) for case in cases]


def _apply(module):
  if isinstance(module, layers.Conv1d):
    return lambda variables, x: module.apply(variables, x)
  return lambda variables, x: module.apply(variables, x, update_spectral=False)


@pytest.mark.slow
@pytest.mark.parametrize("name,cls,kwargs,shape", _module_cases())
def test_matmul_equals_xla_forward_and_gradients(name, cls, kwargs, shape):
  rng = np.random.default_rng(4)
  x = jnp.asarray(_rand(rng, *shape))
  xla_mod, mat_mod = cls(conv_impl="xla", **kwargs), cls(conv_impl="matmul", **kwargs)
  init_kwargs = {"update_spectral": False} if "SN" in cls.__name__ else {}
  variables = xla_mod.init(jax.random.key(0), x, **init_kwargs)
  variables = jax.tree_util.tree_map(lambda a: jnp.asarray(_rand(rng, *a.shape)), variables)
  f_xla, f_mat = _apply(xla_mod), _apply(mat_mod)
  y_xla, y_mat = f_xla(variables, x), f_mat(variables, x)
  assert y_xla.shape == y_mat.shape
  np.testing.assert_allclose(y_mat, y_xla, rtol=1e-4, atol=1e-4)

  ct = jnp.asarray(_rand(rng, *y_xla.shape))
  g_xla = jax.grad(lambda p, xx: jnp.sum(f_xla(p, xx) * ct), argnums=(0, 1))(variables, x)
  g_mat = jax.grad(lambda p, xx: jnp.sum(f_mat(p, xx) * ct), argnums=(0, 1))(variables, x)
  np.testing.assert_allclose(g_mat[1], g_xla[1], rtol=1e-4, atol=1e-4)
  for a, b in zip(
      jax.tree_util.tree_leaves(g_mat[0]["params"]), jax.tree_util.tree_leaves(g_xla[0]["params"])
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)

  # No convolution anywhere, forward or backward.
  assert not _conv_primitives(
      jax.grad(lambda p, xx: jnp.sum(f_mat(p, xx) ** 2), argnums=(0, 1)), variables, x
  )


@pytest.mark.slow
@pytest.mark.parametrize("name,cls,kwargs,shape", _module_cases())
def test_matmul_bfloat16_compute_float32_params(name, cls, kwargs, shape):
  mod = cls(conv_impl="matmul", dtype=jnp.bfloat16, param_dtype=jnp.float32, **kwargs)
  x = jnp.ones(shape, jnp.float32)
  init_kwargs = {"update_spectral": True} if "SN" in cls.__name__ else {}
  variables = mod.init(jax.random.key(0), x, **init_kwargs)
  if init_kwargs:
    y, _ = mod.apply(variables, x, update_spectral=True, mutable=["spectral"])
  else:
    y = mod.apply(variables, x)
  assert y.dtype == jnp.bfloat16
  assert bool(jnp.all(jnp.isfinite(y.astype(jnp.float32))))


def test_matmul_is_an_accepted_conv_impl():
  assert "matmul" in layers.CONV_IMPLS
  assert layers.resolve_conv_impl("matmul") == "matmul"


def _unit_scale(variables, rng):
  """Kernels N(0, 1/fan_in), BatchNorm scales ~1, biases ~0.1: every layer's output has unit scale.

  At initialisation (N(0, 0.02) kernels) the encoder's output is ~1e-6, so any absolute tolerance
  passes; unit-scale weights make the comparison mean something.
  """

  def draw(path, a):
    name = jax.tree_util.keystr(path)
    if a.ndim >= 2:
      return jnp.asarray(rng.standard_normal(a.shape) / np.sqrt(np.prod(a.shape[:-1])), a.dtype)
    if "scale" in name:
      return jnp.asarray(1 + 0.1 * rng.standard_normal(a.shape), a.dtype)
    return jnp.asarray(0.1 * rng.standard_normal(a.shape), a.dtype)

  return {**variables, "params": jax.tree_util.tree_map_with_path(draw, variables["params"])}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["generator", "discriminator", "encoder"])
def test_models_matmul_equals_xla(model):
  """The three networks at a small size: every layer's output equal, in float64, at unit scale.

  Every intermediate is compared (not only the final output: the generator's tanh saturates, so
  its output hides differences in the layers before it), each relative to its own scale.
  """
  from wav2pix_jax.models import networks

  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    f64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
    if model == "generator":
      make = lambda impl: networks.Generator(image_size=64, base_channels=4, conv_impl=impl, **f64)
      args, kw = (jnp.asarray(rng.standard_normal((2, 8))),), dict(
          train=False, update_spectral=False
      )
    elif model == "discriminator":
      make = lambda impl: networks.Discriminator(
          image_size=64, base_channels=4, conv_impl=impl, **f64
      )
      args = (
          jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 3))),
          jnp.asarray(rng.standard_normal((2, 8))),
      )
      kw = dict(update_spectral=False)
    else:
      make = lambda impl: networks.SpeechEncoder(
          channels=(4, 8, 8), hidden=(8,), embed_dim=8, conv_impl=impl, **f64
      )
      args, kw = (jnp.asarray(rng.uniform(-1, 1, (2, 1000))),), dict(train=False)
    variables = _unit_scale(make("xla").init(jax.random.key(0), *args, **kw), rng)

    def layer_outputs(impl):
      _, state = make(impl).apply(
          variables, *args, **kw, capture_intermediates=True, mutable=["intermediates"]
      )
      flat = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
      return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}

    outs_xla, outs_mat = layer_outputs("xla"), layer_outputs("matmul")
  assert outs_xla.keys() == outs_mat.keys() and len(outs_xla) >= 4
  for name, ref in outs_xla.items():
    assert ref.dtype == np.float64, name
    scale = float(np.max(np.abs(ref)))
    assert scale > 1e-2, f"{name}: output scale {scale:.1e}, the comparison would be vacuous"
    # float64 rounding through a few layers: ~1e-13 relative; a wrong index or a missing
    # flip shows at order 1.
    np.testing.assert_allclose(outs_mat[name], ref, rtol=0, atol=1e-9 * scale, err_msg=name)


@pytest.mark.slow
def test_conv_layers_benchmark_smoke(tmp_path):
  """benchmarks/conv_layers runs end to end on the small layers and writes its JSON."""
  import json
  from benchmarks import conv_layers

  out = tmp_path / "conv.json"
  conv_layers.main(
      [
          "--layers=G0,G4,E0",
          "--batch=1",
          "--rounds=1",
          "--impls=xla,matmul,matmul_out,matmul_phase",
          f"--out={out}",
      ]
  )
  rows = json.loads(out.read_text())["rows"]
  assert {(r["layer"].split()[0], r["impl"], r["mode"]) for r in rows} >= {
      ("G0", "matmul", "fwd"),
      ("G4", "matmul_phase", "fwdbwd"),
      ("E0", "matmul_out", "fwd"),
  }
  assert all(r["median_ms"] > 0 for r in rows)
