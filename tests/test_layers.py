"""Tests for models/layers.py and models/conv_impls.py: torch semantics, subpixel == xla, the
authors' spectral norm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wav2pix_jax.models import conv_impls
from wav2pix_jax.models import layers

RTOL = 1e-5
ATOL = 1e-5


# ---- numpy references with torch's definitions -------------------------------------------


def ref_conv_transpose(x, kernel, stride, padding):
  """torch conv_transpose2d by scattering; kernel[ky, kx, c, o] == torch weight[c, o, ky, kx]."""
  b, h, w, _ = x.shape
  k = kernel.shape[0]
  out_h, out_w = (h - 1) * stride + k - 2 * padding, (w - 1) * stride + k - 2 * padding
  full = np.zeros((b, (h - 1) * stride + k, (w - 1) * stride + k, kernel.shape[3]))
  for i in range(h):
    for j in range(w):
      full[:, i * stride : i * stride + k, j * stride : j * stride + k] += np.einsum(
          "bc,hwco->bhwo", x[:, i, j], kernel
      )
  return full[:, padding : padding + out_h, padding : padding + out_w]


def ref_conv(x, kernel, stride, padding):
  """torch conv2d (cross-correlation) with symmetric zero padding."""
  k = kernel.shape[0]
  xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  out_h = (xp.shape[1] - k) // stride + 1
  out_w = (xp.shape[2] - k) // stride + 1
  y = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
  for i in range(out_h):
    for j in range(out_w):
      patch = xp[:, i * stride : i * stride + k, j * stride : j * stride + k]
      y[:, i, j] = np.einsum("bhwc,hwco->bo", patch, kernel)
  return y


def ref_conv1d(x, kernel, stride, padding):
  """torch conv1d after F.pad(x, padding)."""
  xp = np.pad(x, ((0, 0), padding, (0, 0)))
  k = kernel.shape[0]
  out_t = (xp.shape[1] - k) // stride + 1
  return np.stack(
      [np.einsum("btc,tco->bo", xp[:, i * stride : i * stride + k], kernel) for i in range(out_t)],
      axis=1,
  )


def _rand(rng, *shape):
  return rng.standard_normal(shape).astype(np.float32)


def _no_strided_or_dilated_convs(fn, *args):
  """True if every convolution in fn's jaxpr (incl. autodiff) is stride-1 and undilated."""
  jaxpr = jax.make_jaxpr(fn)(*args)
  found = []

  def visit(jp):
    for eqn in jp.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        p = eqn.params
        found.append(
            all(s == 1 for s in p["window_strides"])
            and all(d == 1 for d in p["lhs_dilation"])
            and all(d == 1 for d in p["rhs_dilation"])
        )
      for val in eqn.params.values():
        for item in val if isinstance(val, (list, tuple)) else [val]:
          if hasattr(item, "eqns"):
            visit(item)
          elif hasattr(getattr(item, "jaxpr", None), "eqns"):
            visit(item.jaxpr)

  visit(jaxpr.jaxpr)
  assert found, "no convolution found"
  return all(found)


# ---- xla implementations follow torch semantics --------------------------------------------


@pytest.mark.parametrize(
    "k,stride,padding,size", [(4, 2, 1, 3), (4, 1, 0, 1), (4, 2, 0, 3), (3, 2, 1, 4), (4, 2, 2, 4)]
)
def test_conv_transpose_matches_torch_semantics(k, stride, padding, size):
  rng = np.random.default_rng(0)
  x, kernel = _rand(rng, 2, size, size + 1, 3), _rand(rng, k, k, 3, 5)
  expected = ref_conv_transpose(x, kernel, stride, padding)
  for fn in (conv_impls.conv_transpose_xla, conv_impls.conv_transpose_subpixel):
    got = fn(jnp.asarray(x), jnp.asarray(kernel), stride=stride, padding=padding)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=fn.__name__)


@pytest.mark.parametrize(
    "k,stride,padding,size", [(4, 2, 1, 8), (4, 2, 1, 7), (3, 2, 1, 5), (5, 3, 2, 10)]
)
def test_conv_matches_torch_semantics(k, stride, padding, size):
  rng = np.random.default_rng(1)
  x, kernel = _rand(rng, 2, size, size + 2, 3), _rand(rng, k, k, 3, 5)
  expected = ref_conv(x, kernel, stride, padding)
  for fn in (conv_impls.conv_xla, conv_impls.conv_subpixel):
    got = fn(jnp.asarray(x), jnp.asarray(kernel), stride=stride, padding=padding)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=fn.__name__)


@pytest.mark.parametrize("length", [2, 3, 16, 63, 101, 250])
def test_conv1d_matches_torch_semantics(length):
  rng = np.random.default_rng(2)
  x, kernel = _rand(rng, 2, length, 3), _rand(rng, 15, 3, 4)
  expected = ref_conv1d(x, kernel, 4, (6, 7))
  assert expected.shape[1] == layers.conv1d_output_length(
      length, kernel_size=15, stride=4, padding=(6, 7)
  )
  for fn in (conv_impls.conv1d_xla, conv_impls.conv1d_subpixel):
    got = fn(jnp.asarray(x), jnp.asarray(kernel), stride=4, padding=(6, 7))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=fn.__name__)


def test_conv1d_output_lengths_of_paper_encoder():
  lengths = [16000]
  for _ in range(6):
    lengths.append(
        layers.conv1d_output_length(lengths[-1], kernel_size=15, stride=4, padding=(6, 7))
    )
  assert lengths == [16000, 4000, 1000, 250, 63, 16, 4]
  assert layers.conv1d_output_length(1, kernel_size=15, stride=4, padding=(6, 7)) == 0


# ---- subpixel == xla: forward and gradients, through the modules --------------------------


def _module_cases():
  cases = [
      ("convT_s2", layers.SNConvTranspose2d, dict(features=5, stride=2, padding=1), (2, 4, 4, 6)),
      ("convT_s1", layers.SNConvTranspose2d, dict(features=5, stride=1, padding=0), (2, 1, 1, 6)),
      ("conv_s2", layers.SNConv2d, dict(features=5), (2, 8, 8, 6)),
      ("conv1d", layers.Conv1d, dict(features=5), (2, 64, 3)),
  ]
  return [pytest.param(*case, id=case[0]) for case in cases]


def _apply_fn(module):
  needs_sn = not isinstance(module, layers.Conv1d)

  def fn(variables, x):
    if needs_sn:
      return module.apply(variables, x, update_spectral=False)
    return module.apply(variables, x)

  return fn, needs_sn


@pytest.mark.slow
@pytest.mark.parametrize("name,cls,kwargs,shape", _module_cases())
def test_subpixel_equals_xla_forward_and_gradients(name, cls, kwargs, shape):
  rng = np.random.default_rng(3)
  x = jnp.asarray(_rand(rng, *shape))
  xla_mod, sub_mod = cls(conv_impl="xla", **kwargs), cls(conv_impl="subpixel", **kwargs)
  init_kwargs = {"update_spectral": False} if "SN" in cls.__name__ else {}
  variables = xla_mod.init(jax.random.key(0), x, **init_kwargs)
  # Random kernels well away from the N(0, 0.02) init, so the comparison is not trivially tiny.
  variables = jax.tree_util.tree_map(lambda a: jnp.asarray(_rand(rng, *a.shape)), variables)
  f_xla, _ = _apply_fn(xla_mod)
  f_sub, _ = _apply_fn(sub_mod)
  y_xla, y_sub = f_xla(variables, x), f_sub(variables, x)
  assert y_xla.shape == y_sub.shape
  np.testing.assert_allclose(y_sub, y_xla, rtol=1e-4, atol=1e-4)

  cotangent = jnp.asarray(_rand(rng, *y_xla.shape))

  def loss(f):
    return lambda p, xx: jnp.sum(f(p, xx) * cotangent)

  g_xla = jax.grad(loss(f_xla), argnums=(0, 1))(variables, x)
  g_sub = jax.grad(loss(f_sub), argnums=(0, 1))(variables, x)
  np.testing.assert_allclose(g_sub[1], g_xla[1], rtol=1e-4, atol=1e-4)  # input gradient
  for a, b in zip(
      jax.tree_util.tree_leaves(g_sub[0]["params"]), jax.tree_util.tree_leaves(g_xla[0]["params"])
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)  # param gradients


@pytest.mark.parametrize("name,cls,kwargs,shape", _module_cases())
def test_subpixel_forward_and_backward_use_only_stride1_convs(name, cls, kwargs, shape):
  x = jnp.zeros(shape)
  mod = cls(conv_impl="subpixel", **kwargs)
  init_kwargs = {"update_spectral": False} if "SN" in cls.__name__ else {}
  variables = mod.init(jax.random.key(0), x, **init_kwargs)
  f, _ = _apply_fn(mod)
  grad_fn = jax.grad(lambda p, xx: jnp.sum(f(p, xx) ** 2), argnums=(0, 1))
  assert _no_strided_or_dilated_convs(grad_fn, variables, x)
  if kwargs.get("stride", 2) > 1 and cls is not layers.Conv1d:
    # Sanity check of the checker: the xla form does contain strided/dilated convs.
    f_xla, _ = _apply_fn(cls(conv_impl="xla", **kwargs))
    assert not _no_strided_or_dilated_convs(
        jax.grad(lambda p, xx: jnp.sum(f_xla(p, xx) ** 2), argnums=(0, 1)), variables, x
    )


def test_conv_impl_validation_layers_take_concrete_impls_only():
  for impl in layers.CONV_IMPLS:
    assert layers.resolve_conv_impl(impl) == impl
  with pytest.raises(ValueError, match="factory.conv_impl"):  # "auto" is decided in factory only
    layers.resolve_conv_impl("auto")
  with pytest.raises(ValueError, match="conv_impl"):
    layers.SNConv2d(4, conv_impl="fft").init(
        jax.random.key(0), jnp.zeros((1, 8, 8, 3)), update_spectral=False
    )


# ---- spectral normalisation ----------------------------------------------------------------


def test_sn_matrix_layouts_are_the_authors():
  kernel = jnp.arange(4 * 4 * 3 * 5, dtype=jnp.float32).reshape(4, 4, 3, 5)
  torch_conv_weight = np.transpose(np.asarray(kernel), (3, 2, 0, 1))  # (out, in, kh, kw)
  np.testing.assert_array_equal(layers.conv_sn_matrix(kernel), torch_conv_weight.reshape(5, -1))
  torch_convt_weight = np.transpose(np.asarray(kernel), (2, 3, 0, 1))  # (in, out, kh, kw)
  np.testing.assert_array_equal(
      layers.conv_transpose_sn_matrix(kernel), torch_convt_weight.reshape(3, -1)
  )


@pytest.mark.slow
@pytest.mark.parametrize(
    "cls,shape,rows",
    [(layers.SNConv2d, (1, 8, 8, 6), 7), (layers.SNConvTranspose2d, (1, 4, 4, 6), 6)],
)
def test_power_iteration_converges_to_largest_singular_value(cls, shape, rows):
  mod = cls(features=7)
  variables = mod.init(jax.random.key(0), jnp.zeros(shape), update_spectral=False)
  assert variables["spectral"]["sn"]["u"].shape == (rows,)
  kernel = variables["params"]["sn"]["kernel"]
  to_matrix = layers.conv_sn_matrix if cls is layers.SNConv2d else layers.conv_transpose_sn_matrix
  matrix = np.asarray(to_matrix(kernel), np.float64)
  top = np.linalg.svd(matrix, compute_uv=False)[0]

  step = jax.jit(
      lambda v: mod.apply(
          v, jnp.zeros(shape), update_spectral=True, mutable=["spectral", "intermediates"]
      )
  )
  for _ in range(100):
    _, updates = step(variables)
    variables = {**variables, "spectral": updates["spectral"]}
  sigma = updates["intermediates"]["sn"]["sigma"][0]
  np.testing.assert_allclose(sigma, top, rtol=1e-4)
  # The normalised kernel then has spectral norm 1.
  _, u, v, _ = layers.spectral_normalize(
      jnp.asarray(matrix, jnp.float32),
      variables["spectral"]["sn"]["u"],
      variables["spectral"]["sn"]["v"],
      update=False,
  )
  w_sn, *_ = layers.spectral_normalize(jnp.asarray(matrix, jnp.float32), u, v, update=False)
  np.testing.assert_allclose(np.linalg.svd(np.asarray(w_sn), compute_uv=False)[0], 1.0, rtol=1e-4)


def test_update_spectral_flag_controls_the_collection():
  mod = layers.SNConvTranspose2d(features=4)
  x = jnp.asarray(_rand(np.random.default_rng(4), 2, 2, 2, 3))
  variables = mod.init(jax.random.key(1), x, update_spectral=False)
  u0, v0 = variables["spectral"]["sn"]["u"], variables["spectral"]["sn"]["v"]
  np.testing.assert_allclose(jnp.linalg.norm(u0), 1.0, rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(v0), 1.0, rtol=1e-5)

  _, frozen = mod.apply(variables, x, update_spectral=False, mutable=["spectral"])
  np.testing.assert_array_equal(frozen["spectral"]["sn"]["u"], u0)
  np.testing.assert_array_equal(frozen["spectral"]["sn"]["v"], v0)

  _, updated = mod.apply(variables, x, update_spectral=True, mutable=["spectral"])
  assert not np.allclose(updated["spectral"]["sn"]["u"], u0)
  assert not np.allclose(updated["spectral"]["sn"]["v"], v0)
  # Exactly one power iteration, as the authors' wrapper.
  matrix = layers.conv_transpose_sn_matrix(variables["params"]["sn"]["kernel"])
  v1 = matrix.T @ u0 / (jnp.linalg.norm(matrix.T @ u0) + 1e-12)
  u1 = matrix @ v1 / (jnp.linalg.norm(matrix @ v1) + 1e-12)
  np.testing.assert_allclose(updated["spectral"]["sn"]["v"], v1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(updated["spectral"]["sn"]["u"], u1, rtol=1e-5, atol=1e-6)

  # update_spectral=False uses the stored vectors as they are: same output as with u0, v0.
  y_frozen = mod.apply(variables, x, update_spectral=False)
  kernel_sn = variables["params"]["sn"]["kernel"] / (u0 @ matrix @ v0)
  np.testing.assert_allclose(
      y_frozen,
      conv_impls.conv_transpose_xla(x, kernel_sn, stride=2, padding=1),
      rtol=1e-5,
      atol=1e-6,
  )


def test_sigma_gradient_flows_through_w_only():
  rng = np.random.default_rng(5)
  matrix = jnp.asarray(_rand(rng, 4, 6))
  u = jnp.asarray(_rand(rng, 4))
  v = jnp.asarray(_rand(rng, 6))
  for update in (False, True):
    grad = jax.grad(lambda m: layers.spectral_normalize(m, u, v, update=update)[3])(matrix)
    _, u_used, v_used, _ = layers.spectral_normalize(matrix, u, v, update=update)
    # u, v are constants for autodiff, so d(u^T W v)/dW = u v^T.
    np.testing.assert_allclose(grad, np.outer(u_used, v_used), rtol=1e-5, atol=1e-6)


# ---- initialisation and dtypes ------------------------------------------------------------


def test_initialisers():
  key = jax.random.key(0)
  w = layers.weight_init()(key, (200, 200))
  assert abs(float(w.mean())) < 1e-3 and abs(float(w.std()) - 0.02) < 1e-3
  s = layers.batchnorm_scale_init()(key, (20000,))
  assert abs(float(s.mean()) - 1.0) < 1e-3 and abs(float(s.std()) - 0.02) < 1e-3
  variables = layers.Conv1d(8).init(key, jnp.zeros((1, 32, 2)))
  np.testing.assert_array_equal(variables["params"]["bias"], 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["xla", "subpixel"])
@pytest.mark.parametrize("name,cls,kwargs,shape", _module_cases())
def test_bfloat16_compute_float32_params(impl, name, cls, kwargs, shape):
  mod = cls(conv_impl=impl, dtype=jnp.bfloat16, param_dtype=jnp.float32, **kwargs)
  x = jnp.ones(shape, jnp.float32)
  init_kwargs = {"update_spectral": True} if "SN" in cls.__name__ else {}
  variables = mod.init(jax.random.key(0), x, **init_kwargs)
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(variables))
  if init_kwargs:
    y, updates = mod.apply(variables, x, update_spectral=True, mutable=["spectral"])
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(updates))
  else:
    y = mod.apply(variables, x)
  assert y.dtype == jnp.bfloat16
  assert bool(jnp.all(jnp.isfinite(y.astype(jnp.float32))))
