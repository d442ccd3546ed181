"""Differentiable augmentation of the images the discriminator sees (DiffAugment).

Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training" (NeurIPS 2020): with
little data (here ~2,000 faces) D memorises the real faces and its feedback to G turns into
noise. Augmenting EVERY image D sees (real, generated and wrong-speaker faces, in both the D and
the G phase) with the same random, differentiable transformations keeps D from memorising while
G still receives gradients through the transformation. Images are NHWC in [-1, 1]; every image of
the batch gets its own random draw.

Policies (comma-separated, applied in this order): "color" (brightness, saturation, contrast),
"translation" (shift by up to 1/8 of the side, zero padding), "cutout" (a square of half the
side set to 0).
"""

from typing import Callable

import jax
import jax.numpy as jnp

from wav2pix_jax import config_lib

POLICIES = config_lib.DIFF_AUGMENT_POLICIES
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _color(images: jax.Array, rng: jax.Array) -> jax.Array:
  """Brightness +U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5) (the reference's
  ranges, which it applies to [-1, 1] images too)."""
  b = images.shape[0]
  r_bright, r_sat, r_con = jax.random.split(rng, 3)
  bright = jax.random.uniform(r_bright, (b, 1, 1, 1), minval=-0.5, maxval=0.5)
  x = images + bright
  mean = jnp.mean(x, axis=-1, keepdims=True)
  x = (x - mean) * jax.random.uniform(r_sat, (b, 1, 1, 1), minval=0.0, maxval=2.0) + mean
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * jax.random.uniform(r_con, (b, 1, 1, 1), minval=0.5, maxval=1.5) + mean


def _translation(images: jax.Array, rng: jax.Array) -> jax.Array:
  """Shifts each image by an integer offset in [-S/8, S/8] per axis, filling with zeros."""
  b, h, w, _ = images.shape
  sy, sx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
  r_y, r_x = jax.random.split(rng)
  dy = jax.random.randint(r_y, (b,), -sy, sy + 1)
  dx = jax.random.randint(r_x, (b,), -sx, sx + 1)
  padded = jnp.pad(images, ((0, 0), (sy, sy), (sx, sx), (0, 0)))

  def shift(image, oy, ox):
    return jax.lax.dynamic_slice(image, (sy - oy, sx - ox, 0), (h, w, image.shape[-1]))

  return jax.vmap(shift)(padded, dy, dx)


def _cutout(images: jax.Array, rng: jax.Array) -> jax.Array:
  """Zeroes a square of side S/2 centred anywhere in each image (it may stick out)."""
  b, h, w, _ = images.shape
  ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
  r_y, r_x = jax.random.split(rng)
  # The square's top-left corner, as in the reference implementation.
  y0 = jax.random.randint(r_y, (b, 1, 1), 0, h + (1 - ch % 2)) - ch // 2
  x0 = jax.random.randint(r_x, (b, 1, 1), 0, w + (1 - cw % 2)) - cw // 2
  ys = jnp.arange(h)[None, :, None]
  xs = jnp.arange(w)[None, None, :]
  inside = (ys >= y0) & (ys < y0 + ch) & (xs >= x0) & (xs < x0 + cw)
  return images * (~inside)[..., None].astype(images.dtype)


_FUNCTIONS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "color": _color,
    "translation": _translation,
    "cutout": _cutout,
}
assert tuple(_FUNCTIONS) == POLICIES, "config_lib.DIFF_AUGMENT_POLICIES lists _FUNCTIONS, in order"


def parse_policy(policy: str) -> tuple[str, ...]:
  """ "color,translation" -> ("color", "translation"); "" -> (); ConfigError names the unknown
  (the rule is config_lib.diff_augment_policy, part of the one config schema)."""
  return config_lib.diff_augment_policy(policy)


def diff_augment(images: jax.Array, rng: jax.Array, policy: str) -> jax.Array:
  """Applies `policy` (see module doc) to each image independently; identity for ""."""
  for i, name in enumerate(parse_policy(policy)):
    images = _FUNCTIONS[name](images, jax.random.fold_in(rng, i))
  return images
