"""Building blocks: the authors' spectral norm, SN (transposed) convs, the encoder's Conv1d.

Each conv module holds its parameters and calls one implementation of its convolution,
conv_impls.py's "xla", "subpixel" or "matmul" (`conv_impl`: the same parameters and function
either way). Kernels are stored in flax's ``(kh, kw, in, out)`` layout for both conv kinds.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import flax.linen as nn
from jax import lax

from wav2pix_jax import config_lib
from wav2pix_jax.models import conv_impls

Array = jax.Array
Dtype = Any

CONV_IMPLS = config_lib.CONV_IMPLS
_SN_EPS = 1e-12  # the authors' l2normalize epsilon (added to the norm, not inside the sqrt)


# ------------------------------------------------------------------------------------------
# Initialisers and small helpers
# ------------------------------------------------------------------------------------------


def weight_init(stddev: float = 0.02) -> Callable[..., Array]:
  """N(0, stddev) weights, as in the paper (DCGAN-style)."""
  return nn.initializers.normal(stddev=stddev)


SN_INITS = config_lib.SN_INITS


def sn_kernel_init(init: str, *, transposed: bool) -> Callable[..., Array]:
  """The initialiser of a spectrally normalised (kh, kw, in, out) kernel.

  "normal": N(0, 0.02), the paper's text. "torch": PyTorch's default for the layer, which is what
  the authors' code used (their weight init never reached the wrapped SN weights): U(-b, b),
  b = 1/sqrt(fan_in), fan_in = in*kh*kw for Conv2d and out*kh*kw for ConvTranspose2d (torch
  reads fan_in from the weight's dim 1, which is `out` for a transposed conv). Spectral norm
  makes the layer's function scale-free, so the scale sets how fast Adam's fixed-size steps turn
  the normalised kernel: D's first conv (fan_in 48) starts 4x larger, so learns 4x slower, than
  with N(0, 0.02).
  """
  if init == "normal":
    return weight_init()
  if init != "torch":
    raise ValueError(f"sn_init must be one of {SN_INITS}, got {init!r}")

  def torch_default(key: Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> Array:
    kh, kw, cin, cout = shape
    bound = 1.0 / (kh * kw * (cout if transposed else cin)) ** 0.5
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return torch_default


def batchnorm_scale_init(stddev: float = 0.02) -> Callable[..., Array]:
  """N(1, stddev) BatchNorm scale, as in the paper."""

  def init(key: Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> Array:
    return 1.0 + stddev * jax.random.normal(key, shape, dtype)

  return init


def layer_conv_impl(conv_impl: str, index: int, num_layers: int) -> str:
  """The conv_impl of layer `index` of `num_layers`: `conv_impl` is one value for every layer or
  a comma-separated list with one value per layer (e.g. "subpixel,subpixel,matmul")."""
  parts = [p.strip() for p in conv_impl.split(",")]
  if len(parts) == 1:
    return parts[0]
  if len(parts) != num_layers:
    raise ValueError(
        f"conv_impl {conv_impl!r} lists {len(parts)} values for {num_layers} layers; "
        "give one value, or one per layer"
    )
  return parts[index]


def resolve_conv_impl(conv_impl: str) -> str:
  """Validates a concrete ``conv_impl`` (one of CONV_IMPLS).

  Layers take concrete implementations only: the per-backend "auto" choice is made once, in
  factory.conv_impl, from the model config.
  """
  if conv_impl not in CONV_IMPLS:
    raise ValueError(
        f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r} "
        '("auto" is resolved by factory.conv_impl from config.model)'
    )
  return conv_impl


def _l2normalize(x: Array) -> Array:
  """The authors' ``v / (||v|| + eps)``."""
  return x / (jnp.linalg.norm(x) + _SN_EPS)


# ------------------------------------------------------------------------------------------
# Spectral normalisation (the authors' wrapper: one power iteration per forward)
# ------------------------------------------------------------------------------------------


def conv_sn_matrix(kernel: Array) -> Array:
  """torch ``Conv2d.weight.view(out, -1)`` from a flax (kh, kw, in, out) kernel: rows = out."""
  kh, kw, cin, cout = kernel.shape
  return kernel.transpose(3, 2, 0, 1).reshape(cout, cin * kh * kw)


def conv_transpose_sn_matrix(kernel: Array) -> Array:
  """torch ``ConvTranspose2d.weight.view(in, -1)`` from our (kh, kw, in, out) kernel: rows = in."""
  kh, kw, cin, cout = kernel.shape
  return kernel.transpose(2, 3, 0, 1).reshape(cin, cout * kh * kw)


def spectral_normalize(
    matrix: Array, u: Array, v: Array, *, update: bool
) -> tuple[Array, Array, Array, Array]:
  """Returns (matrix / sigma, u, v, sigma); one power iteration first when ``update``.

  u and v carry no gradient (the authors update them on ``.data``); sigma = u^T W v does, via W.
  """
  dtype = jnp.promote_types(matrix.dtype, jnp.float32)  # float32, or float64 in x64 tests
  matrix = matrix.astype(dtype)
  w = lax.stop_gradient(matrix)
  u = u.astype(dtype)
  v = v.astype(dtype)
  if update:
    v = _l2normalize(w.T @ u)
    u = _l2normalize(w @ v)
  u = lax.stop_gradient(u)
  v = lax.stop_gradient(v)
  sigma = u @ (matrix @ v)
  return matrix / sigma, u, v, sigma


class _SpectralKernel(nn.Module):
  """Holds a (kh, kw, in, out) kernel and its power-iteration vectors; returns it normalised."""

  shape: tuple[int, int, int, int]
  transposed: bool
  sn_init: str = "normal"
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, *, update_spectral: bool) -> Array:
    """The spectrally normalised kernel (float32, or float64 for float64 parameters), in the
    (kh, kw, in, out) layout."""
    kernel = self.param(
        "kernel",
        sn_kernel_init(self.sn_init, transposed=self.transposed),
        self.shape,
        self.param_dtype,
    )
    kh, kw, cin, cout = self.shape
    rows, cols = (cin, cout * kh * kw) if self.transposed else (cout, cin * kh * kw)
    vector_dtype = jnp.promote_types(self.param_dtype, jnp.float32)
    u_var = self.variable(
        "spectral",
        "u",
        lambda: _l2normalize(jax.random.normal(self.make_rng("params"), (rows,), vector_dtype)),
    )
    v_var = self.variable(
        "spectral",
        "v",
        lambda: _l2normalize(jax.random.normal(self.make_rng("params"), (cols,), vector_dtype)),
    )
    to_matrix = conv_transpose_sn_matrix if self.transposed else conv_sn_matrix
    w_sn, u, v, sigma = spectral_normalize(
        to_matrix(kernel), u_var.value, v_var.value, update=update_spectral
    )
    if update_spectral and not self.is_initializing():
      u_var.value = u
      v_var.value = v
    self.sow("intermediates", "sigma", sigma)
    # Undo the matrix view: rows/cols back to (kh, kw, in, out).
    if self.transposed:
      return w_sn.reshape(cin, cout, kh, kw).transpose(2, 3, 0, 1)
    return w_sn.reshape(cout, cin, kh, kw).transpose(2, 3, 1, 0)


# ------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------


class _SNConv(nn.Module):
  """A spectrally normalised 2-D conv or transposed conv, no bias, torch padding semantics: the
  kernel (parameters under "sn") and the implementation chosen by `conv_impl`."""

  features: int
  kernel_size: int = 4
  stride: int = 2
  padding: int = 1
  conv_impl: str = "xla"
  sn_init: str = "normal"  # SN_INITS
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  transposed: ClassVar[bool]
  impls: ClassVar[dict[str, Callable[..., Array]]]  # conv_impl -> function (others: "xla")

  @nn.compact
  def __call__(self, x: Array, *, update_spectral: bool) -> Array:
    k = self.kernel_size
    kernel = _SpectralKernel(
        (k, k, x.shape[-1], self.features),
        transposed=self.transposed,
        sn_init=self.sn_init,
        param_dtype=self.param_dtype,
        name="sn",
    )(update_spectral=update_spectral)
    fn = self.impls.get(resolve_conv_impl(self.conv_impl), self.impls["xla"])
    return fn(
        x.astype(self.dtype), kernel.astype(self.dtype), stride=self.stride, padding=self.padding
    )


class SNConvTranspose2d(_SNConv):
  """Spectrally normalised ConvTranspose2d: [B, H, W, in] -> [B, (H-1)*stride + k - 2*padding,
  ..., features]. stride 1 / padding 0 maps 1x1 -> kxk ('VALID'); stride 2 / padding 1 doubles
  H and W."""

  transposed = True
  impls = {
      "xla": conv_impls.conv_transpose_xla,
      "subpixel": conv_impls.conv_transpose_subpixel,
      "matmul": conv_impls.conv_transpose_matmul,
  }


class SNConv2d(_SNConv):
  """Spectrally normalised Conv2d, symmetric zero padding: [B, H, W, in] ->
  [B, (H + 2p - k)//stride + 1, ..., features]."""

  transposed = False
  impls = {
      "xla": conv_impls.conv_xla,
      "subpixel": conv_impls.conv_subpixel,
      "matmul": conv_impls.conv_matmul,
  }


def conv1d_output_length(
    length: int, *, kernel_size: int, stride: int, padding: tuple[int, int]
) -> int:
  """Output length of :class:`Conv1d` (<= 0 means the input is too short)."""
  padded = length + padding[0] + padding[1]
  if padded < kernel_size:
    return 0
  return (padded - kernel_size) // stride + 1


class Conv1d(nn.Module):
  """The speech encoder's strided Conv1d with bias (default: kernel 15, stride 4, pad 6/7)."""

  features: int
  kernel_size: int = 15
  stride: int = 4
  padding: tuple[int, int] = (6, 7)
  conv_impl: str = "xla"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[B, T, in] -> [B, T', features]."""
    impl = resolve_conv_impl(self.conv_impl)
    kernel = self.param(
        "kernel", weight_init(), (self.kernel_size, x.shape[-1], self.features), self.param_dtype
    )
    bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
    fn = {"subpixel": conv_impls.conv1d_subpixel, "matmul": conv_impls.conv1d_matmul}.get(
        impl, conv_impls.conv1d_xla
    )
    y = fn(
        x.astype(self.dtype),
        kernel.astype(self.dtype),
        stride=self.stride,
        padding=tuple(self.padding),
    )
    return y + bias.astype(self.dtype)
