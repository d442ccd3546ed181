"""The strided convolutions as pure functions, in every implementation (config.model.conv_impl).

Every strided convolution has three implementations with the same parameters (layers.py's
modules pick one per layer):

* ``"xla"``: the plain strided / transposed convolution (``lax.conv_general_dilated`` with
  window strides or lhs dilation).
* ``"subpixel"``: the exactly equivalent stride-1 formulation (space-to-depth on the input
  for strided convs, a per-phase kernel plus depth-to-space for transposed convs). XLA:CPU
  runs transposed convolutions ~20x slower per FLOP than plain convolutions, and the
  gradient of a strided conv w.r.t. its input is a transposed conv; the stride-1 forms keep
  both the forward and the backward pass free of them.
* ``"matmul"``: the stride-1 forms written as explicit patches (a stack of shifted slices)
  times one matrix, ``[B*H*W, taps*C] x [taps*C, out]``; the transposed conv as col2im (one
  ``[B*H*W, in] x [in, k*k*out]`` matmul, then sums of shifted slices of the result). Forward
  and backward are then matmuls plus sums of shifted slices: no convolution at all.

Kernels are stored in flax's ``(kh, kw, in, out)`` layout for both conv kinds. For the
transposed conv, ``kernel[ky, kx, c, o]`` is torch's ``weight[c, o, ky, kx]`` (scatter
semantics: input pixel ``i`` adds ``x[i, c] * kernel[k, c, o]`` to output ``i*stride - pad + k``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

_NHWC = ("NHWC", "HWIO", "NHWC")
_NWC = ("NWC", "WIO", "NWC")


# ------------------------------------------------------------------------------------------
# Space <-> depth (the subpixel forms' reshapes)
# ------------------------------------------------------------------------------------------


def space_to_depth(x: Array, block: int) -> Array:
  """[B, H, W, C] -> [B, H/block, W/block, block*block*C], channel order (dy, dx, c)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // block, block, w // block, block, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // block, w // block, block * block * c)


def depth_to_space(x: Array, block: int) -> Array:
  """[B, H, W, block*block*C] (channel order (dy, dx, c)) -> [B, H*block, W*block, C]."""
  b, h, w, c = x.shape
  c_out = c // (block * block)
  x = x.reshape(b, h, w, block, block, c_out)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, c_out)


# ------------------------------------------------------------------------------------------
# xla and subpixel
# ------------------------------------------------------------------------------------------


def conv_transpose_xla(x: Array, kernel: Array, *, stride: int, padding: int) -> Array:
  """torch ``conv_transpose2d`` (scatter semantics) as one lhs-dilated convolution."""
  k = kernel.shape[0]
  pad = k - 1 - padding
  return lax.conv_general_dilated(
      x,
      kernel[::-1, ::-1],
      window_strides=(1, 1),
      padding=[(pad, pad), (pad, pad)],
      lhs_dilation=(stride, stride),
      dimension_numbers=_NHWC,
  )


def _subpixel_kernel_taps(k: int, stride: int, padding: int) -> tuple[int, int, list[list[int]]]:
  """For each output phase r and stride-1 tap t, the transposed-conv kernel index (or -1).

  Output j = stride*m + r receives x[i] * kernel[k] where j = stride*i - padding + k, i.e.
  i = m + (r + padding - k) / stride. Taps t index i = m - lo + t.
  """
  offsets = {}
  for r in range(stride):
    for kk in range(k):
      num = r + padding - kk
      if num % stride == 0:
        offsets[(r, kk)] = num // stride
  lo = -min(offsets.values())
  hi = max(offsets.values())
  taps = hi + lo + 1
  table = [[-1] * taps for _ in range(stride)]
  for (r, kk), off in offsets.items():
    table[r][off + lo] = kk
  return lo, hi, table


def subpixel_transpose_kernel(kernel: Array, *, stride: int, padding: int) -> Array:
  """(k, k, in, out) transposed-conv kernel -> (t, t, in, stride*stride*out) stride-1 kernel."""
  k, _, cin, cout = kernel.shape
  _, _, table = _subpixel_kernel_taps(k, stride, padding)
  idx = jnp.asarray(table)  # [stride, taps]
  valid = idx >= 0
  idx = jnp.where(valid, idx, 0)
  # g[ry, ty, rx, tx, c, o] = kernel[idx[ry, ty], idx[rx, tx], c, o] (0 where no tap).
  g = kernel[idx[:, :, None, None], idx[None, None, :, :]]
  mask = (valid[:, :, None, None] & valid[None, None, :, :]).astype(kernel.dtype)
  g = g * mask[..., None, None]
  taps = idx.shape[1]
  # -> (ty, tx, c, ry, rx, o) -> (ty, tx, c, stride*stride*out) with channel order (ry, rx, o).
  g = g.transpose(1, 3, 4, 0, 2, 5)
  return g.reshape(taps, taps, cin, stride * stride * cout)


def conv_transpose_subpixel(x: Array, kernel: Array, *, stride: int, padding: int) -> Array:
  """The same function as :func:`conv_transpose_xla`, using only stride-1 convolutions."""
  k = kernel.shape[0]
  if stride == 1:
    # Already a plain correlation with the flipped kernel; no dilation involved.
    return conv_transpose_xla(x, kernel, stride=1, padding=padding)
  lo, hi, _ = _subpixel_kernel_taps(k, stride, padding)
  sub = subpixel_transpose_kernel(kernel, stride=stride, padding=padding)
  h, w = x.shape[1:3]
  out_h = (h - 1) * stride + k - 2 * padding
  out_w = (w - 1) * stride + k - 2 * padding
  # Output row j = stride*m + r needs m < ceil(out / stride); the stride-1 conv yields
  # H + (extra padding on the high side) values of m, so pad (or crop, if negative) there.
  m_h = -(-out_h // stride)
  m_w = -(-out_w // stride)
  y = lax.conv_general_dilated(
      x,
      sub,
      window_strides=(1, 1),
      padding=[(lo, hi + m_h - h), (lo, hi + m_w - w)],
      dimension_numbers=_NHWC,
  )
  return depth_to_space(y, stride)[:, :out_h, :out_w]


def conv_xla(x: Array, kernel: Array, *, stride: int, padding: int) -> Array:
  """torch ``conv2d`` with symmetric zero padding, as one strided convolution."""
  return lax.conv_general_dilated(
      x,
      kernel,
      window_strides=(stride, stride),
      padding=[(padding, padding), (padding, padding)],
      dimension_numbers=_NHWC,
  )


def subpixel_conv_kernel(kernel: Array, *, stride: int) -> Array:
  """(k, k, in, out) -> (k/s, k/s, s*s*in, out), matching :func:`space_to_depth` channel order."""
  k, _, cin, cout = kernel.shape
  kp = -(-k // stride) * stride
  kernel = jnp.pad(kernel, ((0, kp - k), (0, kp - k), (0, 0), (0, 0)))
  a = kp // stride
  g = kernel.reshape(a, stride, a, stride, cin, cout)  # (ay, qy, ax, qx, c, o)
  g = g.transpose(0, 2, 1, 3, 4, 5)
  return g.reshape(a, a, stride * stride * cin, cout)


def conv_subpixel(x: Array, kernel: Array, *, stride: int, padding: int) -> Array:
  """The same function as :func:`conv_xla`: space-to-depth, then a stride-1 conv."""
  k = kernel.shape[0]
  b, h, w, _ = x.shape
  out_h = (h + 2 * padding - k) // stride + 1
  out_w = (w + 2 * padding - k) // stride + 1
  a = -(-k // stride)
  # Pad (or crop) so that the padded extent is exactly stride * (out + taps - 1).
  need_h = stride * (out_h + a - 1)
  need_w = stride * (out_w + a - 1)
  xp = jnp.pad(
      x,
      (
          (0, 0),
          (padding, max(0, need_h - h - padding)),
          (padding, max(0, need_w - w - padding)),
          (0, 0),
      ),
  )
  xp = xp[:, :need_h, :need_w]
  z = space_to_depth(xp, stride)
  return lax.conv_general_dilated(
      z,
      subpixel_conv_kernel(kernel, stride=stride),
      window_strides=(1, 1),
      padding="VALID",
      dimension_numbers=_NHWC,
  )


def conv1d_xla(x: Array, kernel: Array, *, stride: int, padding: tuple[int, int]) -> Array:
  """Strided 1-D convolution, [B, T, C] x (k, in, out), asymmetric zero padding."""
  return lax.conv_general_dilated(
      x, kernel, window_strides=(stride,), padding=[padding], dimension_numbers=_NWC
  )


def _fold_time(
    x: Array, kernel: Array, *, stride: int, padding: tuple[int, int]
) -> tuple[Array, Array]:
  """A strided Conv1d as a stride-1 VALID one: the kernel padded to a multiple of stride and
  time folded by stride into channels (order (q, c)); returns (folded x, folded kernel)."""
  k, cin, cout = kernel.shape
  b, t, _ = x.shape
  out_t = (t + padding[0] + padding[1] - k) // stride + 1
  a = -(-k // stride)
  need = stride * (out_t + a - 1)
  xp = _pad_or_crop(x, [(padding[0], need - t - padding[0])])
  z = xp.reshape(b, need // stride, stride * cin)
  sub = jnp.pad(kernel, ((0, a * stride - k), (0, 0), (0, 0))).reshape(a, stride * cin, cout)
  return z, sub


def conv1d_subpixel(x: Array, kernel: Array, *, stride: int, padding: tuple[int, int]) -> Array:
  """The same function as :func:`conv1d_xla`: time folded by stride (_fold_time), then a
  stride-1 conv."""
  z, sub = _fold_time(x, kernel, stride=stride, padding=padding)
  return lax.conv_general_dilated(
      z, sub, window_strides=(1,), padding="VALID", dimension_numbers=_NWC
  )


# ------------------------------------------------------------------------------------------
# "matmul": explicit patches (concat of shifted slices) x one matrix; no convolutions
# ------------------------------------------------------------------------------------------


def _matmul_last(p: Array, w: Array) -> Array:
  """[..., K] x [K, N] -> [..., N] as one 2-D matmul."""
  lead = p.shape[:-1]
  y = jnp.dot(p.reshape(-1, p.shape[-1]), w)
  return y.reshape(*lead, w.shape[-1])


def _patches(x: Array, taps: tuple[int, ...], out: tuple[int, ...]) -> Array:
  """[B, *S, C] -> [B, *out, prod(taps)*C]: shifted VALID windows, channel order (t..., c)."""
  if all(t == 1 for t in taps):
    return x[(slice(None),) + tuple(slice(0, o) for o in out)]
  views = []
  for offs in _tap_offsets(taps):
    views.append(x[(slice(None),) + tuple(slice(t, t + o) for t, o in zip(offs, out))])
  return _stack_channels(views)


def _stack_channels(views: list[Array]) -> Array:
  """Concatenates equally shaped arrays along the last axis. A stack on a new axis plus a
  reshape: XLA:CPU emits that ~2x faster than the same ``concatenate`` (measured)."""
  if len(views) == 1:
    return views[0]
  y = jnp.stack(views, axis=-2)
  return y.reshape(*y.shape[:-2], y.shape[-2] * y.shape[-1])


def _tap_offsets(taps: tuple[int, ...]) -> list[tuple[int, ...]]:
  """All tap offsets in row-major order (matching a (t0, t1, ..., C) kernel reshape)."""
  offsets: list[tuple[int, ...]] = [()]
  for t in taps:
    offsets = [o + (i,) for o in offsets for i in range(t)]
  return offsets


def _pad_or_crop(x: Array, pads: list[tuple[int, int]]) -> Array:
  """Zero-pads (or, for negative amounts, crops) the spatial axes 1.. of x."""
  x = jnp.pad(x, [(0, 0)] + [(max(0, lo), max(0, hi)) for lo, hi in pads] + [(0, 0)])
  idx = [slice(None)]
  for (lo, hi), n in zip(pads, x.shape[1:-1]):
    idx.append(slice(max(0, -lo), n - max(0, -hi)))
  return x[tuple(idx)]


def _valid_conv_matmul(x: Array, kernel: Array) -> Array:
  """A stride-1 VALID correlation [B, *S, C] x (*taps, C, N) as patches @ kernel."""
  taps = kernel.shape[:-2]
  out = tuple(n - t + 1 for n, t in zip(x.shape[1:-1], taps))
  return _matmul_last(_patches(x, taps, out), kernel.reshape(-1, kernel.shape[-1]))


def conv_transpose_matmul(x: Array, kernel: Array, *, stride: int, padding: int) -> Array:
  """The same function as :func:`conv_transpose_xla`, as col2im: one matmul
  ``[B*H*W, in] x [in, k*k*out]`` (exactly the transposed conv's multiply-adds, no zero taps,
  no input patches), then per output phase the sum of the shifted slices of it that land there.

  Measured on XLA:CPU (batch 64, fwd+bwd, ``benchmarks/conv_layers.py``): 30-45 % faster than
  ``subpixel`` for the generator's 4x4 -> 32x32 layers, but ~3x slower than it for the last
  64 -> 3 channel layer (the [B*H*W, 48] result is mostly memory traffic).
  """
  k, _, cin, cout = kernel.shape
  b, h, w, _ = x.shape
  out_h = (h - 1) * stride + k - 2 * padding
  out_w = (w - 1) * stride + k - 2 * padding
  if h == 1 and w == 1 and padding >= 0:
    # One input pixel: output (y, x) = x @ kernel[y + padding, x + padding]; a dense layer.
    sub = kernel[padding : padding + out_h, padding : padding + out_w]  # (oh, ow, c, o)
    mat = sub.transpose(2, 0, 1, 3).reshape(cin, out_h * out_w * cout)
    return jnp.dot(x.reshape(b, cin), mat).reshape(b, out_h, out_w, cout)
  if stride == 1:
    pad = k - 1 - padding
    return _valid_conv_matmul(_pad_or_crop(x, [(pad, pad), (pad, pad)]), kernel[::-1, ::-1])
  lo, hi, table = _subpixel_kernel_taps(k, stride, padding)
  m_h = -(-out_h // stride)
  m_w = -(-out_w // stride)
  # y[b, i, j, ky, kx, o]: what input pixel (i, j) adds to output (stride*i - p + ky, ...).
  y = _matmul_last(x, kernel.transpose(2, 0, 1, 3).reshape(cin, k * k * cout))
  y = y.reshape(b, h, w, k, k, cout)
  y = _pad_or_crop(y, [(lo, hi + m_h - h), (lo, hi + m_w - w), (0, 0), (0, 0)])
  rows = []
  for ry in range(stride):
    cols = []
    for rx in range(stride):
      acc = jnp.zeros((b, m_h, m_w, cout), y.dtype)
      for ty, ky in enumerate(table[ry]):
        for tx, kx in enumerate(table[rx]):
          if ky >= 0 and kx >= 0:
            acc = acc + y[:, ty : ty + m_h, tx : tx + m_w, ky, kx]
      cols.append(acc)  # output phase (ry, rx): [B, m_h, m_w, cout]
    rows.append(jnp.stack(cols, axis=3))  # [B, m_h, m_w, rx, cout]
  out = jnp.stack(rows, axis=2)  # [B, m_h, ry, m_w, rx, cout]
  return out.reshape(b, m_h * stride, m_w * stride, cout)[:, :out_h, :out_w]


def conv_matmul(x: Array, kernel: Array, *, stride: int, padding: int) -> Array:
  """The same function as :func:`conv_xla`: space-to-depth, then patches @ matrix."""
  k = kernel.shape[0]
  h, w = x.shape[1:3]
  out_h = (h + 2 * padding - k) // stride + 1
  out_w = (w + 2 * padding - k) // stride + 1
  a = -(-k // stride)
  need_h = stride * (out_h + a - 1)
  need_w = stride * (out_w + a - 1)
  xp = _pad_or_crop(x, [(padding, need_h - h - padding), (padding, need_w - w - padding)])
  z = space_to_depth(xp, stride) if stride > 1 else xp
  return _valid_conv_matmul(z, subpixel_conv_kernel(kernel, stride=stride))


def conv1d_matmul(x: Array, kernel: Array, *, stride: int, padding: tuple[int, int]) -> Array:
  """The same function as :func:`conv1d_xla`: time folded by stride (_fold_time), then
  patches ([T', taps*stride*C]) @ matrix."""
  return _valid_conv_matmul(*_fold_time(x, kernel, stride=stride, padding=padding))
