"""Wav2Pix models (flax.linen, NHWC, images in [-1, 1]); see DESIGN.md and PAPER.md.

Collections: "params"; "batch_stats" (BatchNorm in encoder and classifier); "spectral"
(power-iteration vectors); Dropout draws from the "dropout" rng.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from wav2pix_jax import config_lib
from wav2pix_jax.models import layers

Array = jax.Array
Dtype = Any

SUPPORTED_IMAGE_SIZES = config_lib.IMAGE_SIZES
UPSAMPLE_MODES = config_lib.UPSAMPLE_MODES
D_CONDITIONINGS = config_lib.D_CONDITIONINGS  # Discriminator.conditioning
# torch BatchNorm momentum 0.1 == flax momentum 0.9 (flax weighs the running average).
BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def _check_image_size(image_size: int) -> int:
  """Number of stride-2 stages between 4x4 and image_size; ValueError if unsupported."""
  if image_size not in SUPPORTED_IMAGE_SIZES:
    raise ValueError(f"image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {image_size!r}")
  return int(math.log2(image_size // 4))


def _batch_norm(
    *, train: bool, axis_name: str | None, dtype: Dtype, param_dtype: Dtype, name: str
) -> nn.BatchNorm:
  """BatchNorm with torch's defaults and the paper's N(1, 0.02) scale init."""
  return nn.BatchNorm(
      use_running_average=not train,
      momentum=BN_MOMENTUM,
      epsilon=_BN_EPSILON,
      scale_init=layers.batchnorm_scale_init(),
      bias_init=nn.initializers.zeros,
      axis_name=axis_name,
      dtype=dtype,
      param_dtype=param_dtype,
      name=name,
  )


def _dense(features: int, *, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.Dense:
  """Dense with N(0, 0.02) weights and zero bias."""
  return nn.Dense(
      features,
      kernel_init=layers.weight_init(),
      bias_init=nn.initializers.zeros,
      dtype=dtype,
      param_dtype=param_dtype,
      name=name,
  )


def encoder_output_length(
    num_samples: int, *, num_blocks: int, kernel_size: int, stride: int, padding: tuple[int, int]
) -> int:
  """Time length after the encoder's conv blocks; ValueError if the waveform is too short."""
  length = num_samples
  for block in range(num_blocks):
    length = layers.conv1d_output_length(
        length, kernel_size=kernel_size, stride=stride, padding=padding
    )
    if length < 1:
      raise ValueError(
          f"waveform length {num_samples} is too short for the speech encoder: conv block "
          f"{block} (kernel_size={kernel_size}, stride={stride}, padding={padding}) "
          f"leaves no time steps; need a longer waveform or fewer encoder channels"
      )
  return length


class SpeechEncoder(nn.Module):
  """SEGAN-discriminator speech encoder: raw waveform [B, T] -> embedding [B, embed_dim]."""

  channels: tuple[int, ...] = (16, 32, 128, 256, 512, 1024)
  kernel_size: int = 15
  stride: int = 4
  padding: tuple[int, int] = (6, 7)
  hidden: tuple[int, ...] = (256, 128)
  embed_dim: int = 128
  negative_slope: float = 0.3
  conv_impl: str = "xla"
  axis_name: str | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, waveform: Array, *, train: bool) -> Array:
    """[B, T] float waveform -> [B, embed_dim]."""
    if waveform.ndim != 2:
      raise ValueError(f"waveform must be [batch, samples], got shape {waveform.shape}")
    # Validates the length up front, with a message naming the waveform.
    encoder_output_length(
        waveform.shape[1],
        num_blocks=len(self.channels),
        kernel_size=self.kernel_size,
        stride=self.stride,
        padding=tuple(self.padding),
    )
    x = waveform.astype(self.dtype)[:, :, None]
    for i, ch in enumerate(self.channels):
      x = layers.Conv1d(
          ch,
          kernel_size=self.kernel_size,
          stride=self.stride,
          padding=tuple(self.padding),
          conv_impl=layers.layer_conv_impl(self.conv_impl, i, len(self.channels)),
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          name=f"conv{i}",
      )(x)
      x = _batch_norm(
          train=train,
          axis_name=self.axis_name,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          name=f"bn{i}",
      )(x)
      x = nn.leaky_relu(x, self.negative_slope)
    # Flatten in (time, channel) order; the flatten size follows from the input length.
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x = _dense(width, dtype=self.dtype, param_dtype=self.param_dtype, name=f"fc{i}")(x)
      x = nn.relu(x)
    return _dense(self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="embed")(x)


class SpeakerClassifier(nn.Module):
  """Auxiliary identity classifier: embedding [B, E] -> logits [B, num_speakers]."""

  num_speakers: int
  hidden: int = 200
  negative_slope: float = 0.2
  axis_name: str | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, embedding: Array, *, train: bool) -> Array:
    """Dense -> BN -> LeakyReLU(0.2) -> Dense -> BN, as the reference code."""
    if self.num_speakers < 1:
      raise ValueError(f"num_speakers must be >= 1, got {self.num_speakers!r}")
    x = _dense(self.hidden, dtype=self.dtype, param_dtype=self.param_dtype, name="fc0")(
        embedding.astype(self.dtype)
    )
    x = _batch_norm(
        train=train,
        axis_name=self.axis_name,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name="bn0",
    )(x)
    x = nn.leaky_relu(x, self.negative_slope)
    x = _dense(self.num_speakers, dtype=self.dtype, param_dtype=self.param_dtype, name="fc1")(x)
    return _batch_norm(
        train=train,
        axis_name=self.axis_name,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name="bn1",
    )(x)


class Generator(nn.Module):
  """Embedding [B, E] -> face [B, S, S, 3] in [-1, 1]; SN transposed convs.

  noise_dim > 0: a noise input z ~ N(0, I) [B, noise_dim] beside the embedding, drawn from the
  "dropout" rng stream when `train` (training, and sampling at generation), zero (the prior's
  mode) otherwise; so what the speech cannot predict (pose, background) can be sampled instead of
  averaged. 0: none (the paper).
  """

  image_size: int = 64
  base_channels: int = 64
  dropout_rate: float = 0.5
  noise_dim: int = 0
  conv_impl: str = "xla"
  upsample: str = "transposed"  # UPSAMPLE_MODES
  sn_init: str = "normal"  # layers.SN_INITS
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, embedding: Array, *, train: bool, update_spectral: bool) -> Array:
    """1x1xE -> 4x4 (stride 1, VALID) -> doublings -> SxSx3, tanh.

    upsample="transposed" (the paper): each doubling is a 4x4 stride-2 transposed conv, whose
    uneven kernel overlap leaves a checkerboard texture; "resize_conv": nearest-neighbour x2
    then a 3x3 stride-1 conv (Odena et al. 2016), the same widths, no checkerboard.
    """
    num_up = _check_image_size(self.image_size)
    if self.upsample not in UPSAMPLE_MODES:
      raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {self.upsample!r}")
    if embedding.ndim != 2:
      raise ValueError(f"embedding must be [batch, embed_dim], got shape {embedding.shape}")
    x = embedding.astype(self.dtype)
    if self.noise_dim:
      shape = (x.shape[0], self.noise_dim)
      z = jax.random.normal(self.make_rng("dropout"), shape) if train else jnp.zeros(shape)
      x = jnp.concatenate([x, z.astype(self.dtype)], axis=-1)
    x = x[:, None, None, :]
    widths = [self.base_channels * 2 ** (num_up - 1 - i) for i in range(num_up)] + [3]
    for i, width in enumerate(widths):
      first = i == 0
      impl = layers.layer_conv_impl(self.conv_impl, i, len(widths))
      if first or self.upsample == "transposed":
        x = layers.SNConvTranspose2d(
            width,
            kernel_size=4,
            stride=1 if first else 2,
            padding=0 if first else 1,
            conv_impl=impl,
            sn_init=self.sn_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=f"deconv{i}",
        )(x, update_spectral=update_spectral)
      else:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        x = layers.SNConv2d(
            width,
            kernel_size=3,
            stride=1,
            padding=1,
            conv_impl=impl,
            sn_init=self.sn_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=f"upconv{i}",
        )(x, update_spectral=update_spectral)
      if i < len(widths) - 1:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.relu(x)
    return jnp.tanh(x)


class Discriminator(nn.Module):
  """(image [B, S, S, 3], embedding [B, E]) -> (scores [B], features [B, 4, 4, C])."""

  image_size: int = 64
  base_channels: int = 64
  negative_slope: float = 0.2
  conv_impl: str = "xla"
  sn_init: str = "normal"  # layers.SN_INITS
  # 0 (the paper): the score is ONE linear conv over [image features, tiled embedding], i.e.
  # f(image) + g(embedding): additive, so D cannot judge whether a face matches the speech (real
  # and wrong-speaker pairs get the same score) and G can raise every score by moving the
  # embedding. > 0: a spectrally normalised 1x1 conv of this width + LeakyReLU after the concat
  # (Reed et al. 2016's text-conditioned D), so image and speech features interact.
  joint_channels: int = 0
  # How the speech enters the score: "concat" (the paper: the tiled embedding concatenated before
  # the score layer, additive unless joint_channels > 0) | "projection" (Miyato & Koyama 2018:
  # score = w . features + <V e, pooled features>, so D judges whether a face matches the speech;
  # the standard conditional D of spectrally normalised GANs).
  conditioning: str = "concat"
  # False (the paper): the score layer is a plain conv whose weights may grow without bound (the
  # other layers are spectrally normalised); True: spectrally normalised too (D 1-Lipschitz).
  score_sn: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
      self, images: Array, embedding: Array, *, update_spectral: bool
  ) -> tuple[Array, Array]:
    """SN stride-2 convs down to 4x4; then the speech (concat: tiled embedding concatenated
    [and a joint 1x1 conv]; projection: an inner product) and a 4x4 VALID conv -> score."""
    num_down = self._checked_downsamplings(images, embedding)
    x = images.astype(self.dtype)
    for i in range(num_down):
      impl = layers.layer_conv_impl(self.conv_impl, i, num_down)
      conv = self._sn_conv(
          self.base_channels * 2**i, 4, stride=2, padding=1, impl=impl, name=f"conv{i}"
      )
      x = nn.leaky_relu(conv(x, update_spectral=update_spectral), self.negative_slope)
    features = x
    if self.conditioning == "projection":
      score = self._score(x, update_spectral) + self._projection(x, embedding, update_spectral)
      return score, features
    tiled = jnp.broadcast_to(
        embedding.astype(self.dtype)[:, None, None, :], (x.shape[0], 4, 4, embedding.shape[-1])
    )
    x = jnp.concatenate([x, tiled], axis=-1)
    if self.joint_channels:
      joint = self._sn_conv(self.joint_channels, 1, stride=1, padding=0, impl="xla", name="joint")
      x = nn.leaky_relu(joint(x, update_spectral=update_spectral), self.negative_slope)
    return self._score(x, update_spectral), features

  def _score(self, x: Array, update_spectral: bool) -> Array:
    """The final 4x4 VALID conv over the 4x4 map (a dense layer) -> [B]."""
    if self.score_sn:
      conv = self._sn_conv(1, 4, stride=1, padding=0, impl="xla", name="score")
      score = conv(x, update_spectral=update_spectral)
    else:  # no transposed conv in its gradient: the same for every conv_impl
      score = nn.Conv(
          1,
          (4, 4),
          padding="VALID",
          use_bias=False,
          kernel_init=layers.weight_init(),
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          name="score",
      )(x)
    return score.reshape(score.shape[0])

  def _projection(self, x: Array, embedding: Array, update_spectral: bool) -> Array:
    """<V e, sum of the 4x4 features> [B]: V a (spectrally normalised) 1x1 conv E -> C."""
    e = embedding.astype(self.dtype)[:, None, None, :]
    if self.score_sn:
      v = self._sn_conv(x.shape[-1], 1, stride=1, padding=0, impl="xla", name="projection")
      projected = v(e, update_spectral=update_spectral)
    else:
      projected = nn.Conv(
          x.shape[-1],
          (1, 1),
          use_bias=False,
          kernel_init=layers.weight_init(),
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          name="projection",
      )(e)
    return jnp.sum(jnp.sum(x, axis=(1, 2)) * projected[:, 0, 0, :], axis=-1)

  def _checked_downsamplings(self, images: Array, embedding: Array) -> int:
    """The number of stride-2 convs down to 4x4; ValueError for a bad image or embedding shape."""
    num_down = _check_image_size(self.image_size)
    expected = (self.image_size, self.image_size, 3)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
      raise ValueError(
          f"images must be [batch, {self.image_size}, {self.image_size}, 3] "
          f"for image_size={self.image_size}, got shape {images.shape}"
      )
    if embedding.ndim != 2 or embedding.shape[0] != images.shape[0]:
      raise ValueError(
          f"embedding must be [batch={images.shape[0]}, embed_dim], got shape {embedding.shape}"
      )
    return num_down

  def _sn_conv(
      self, features: int, kernel_size: int, *, stride: int, padding: int, impl: str, name: str
  ) -> layers.SNConv2d:
    """A spectrally normalised conv of this D (its sn_init and dtypes), not yet applied."""
    return layers.SNConv2d(
        features,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        conv_impl=impl,
        sn_init=self.sn_init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name=name,
    )


class Wav2PixG(nn.Module):
  """The whole G side: speech encoder + speaker classifier + generator."""

  num_speakers: int
  encoder_channels: tuple[int, ...] = (16, 32, 128, 256, 512, 1024)
  encoder_kernel_size: int = 15
  encoder_stride: int = 4
  encoder_padding: tuple[int, int] = (6, 7)
  encoder_hidden: tuple[int, ...] = (256, 128)
  embed_dim: int = 128
  classifier_hidden: int = 200
  image_size: int = 64
  base_channels: int = 64
  dropout_rate: float = 0.5
  noise_dim: int = 0  # Generator.noise_dim
  conv_impl: str = "xla"
  encoder_conv_impl: str = ""  # the speech encoder's conv_impl ("" = conv_impl)
  upsample: str = "transposed"  # Generator.upsample
  sn_init: str = "normal"  # layers.SN_INITS
  axis_name: str | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self) -> None:
    """Builds the three submodules ("encoder", "classifier", "generator")."""
    self.encoder = SpeechEncoder(
        channels=tuple(self.encoder_channels),
        kernel_size=self.encoder_kernel_size,
        stride=self.encoder_stride,
        padding=tuple(self.encoder_padding),
        hidden=tuple(self.encoder_hidden),
        embed_dim=self.embed_dim,
        conv_impl=self.encoder_conv_impl or self.conv_impl,
        axis_name=self.axis_name,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
    )
    self.classifier = SpeakerClassifier(
        num_speakers=self.num_speakers,
        hidden=self.classifier_hidden,
        axis_name=self.axis_name,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
    )
    self.generator = Generator(
        image_size=self.image_size,
        base_channels=self.base_channels,
        dropout_rate=self.dropout_rate,
        noise_dim=self.noise_dim,
        conv_impl=self.conv_impl,
        upsample=self.upsample,
        sn_init=self.sn_init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
    )

  def __call__(
      self, waveform: Array, *, train: bool, update_spectral: bool
  ) -> tuple[Array, Array, Array]:
    """[B, T] waveform -> (images [B, S, S, 3], embedding [B, E], logits [B, num_speakers])."""
    embedding = self.encoder(waveform, train=train)
    logits = self.classifier(embedding, train=train)
    images = self.generator(embedding, train=train, update_spectral=update_spectral)
    return images, embedding, logits


def precise_batch_stats(g_model: nn.Module, variables: dict, waveforms: Array) -> dict:
  """BatchNorm statistics of G's current weights: the mean over batches of its batch statistics.

  `g_model`: Wav2PixGenerator (built without an axis name); `waveforms` [K, B, window]: K batches
  of preprocessed windows; `variables`: G's params, batch stats and spectral vectors. The running
  averages training keeps mix many past weights (momentum 0.9); with G's learning rate they can
  describe a network that no longer exists, and the evaluation-mode encoder then gives every clip
  one speaker's face (docs/results.md, the identity swing). This recomputes them for the weights as
  they are ("precise BN", Wu & Johnson 2021).
  """
  zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
  momentum = BN_MOMENTUM  # from zeros, one train-mode call stores (1 - m) x the batch's

  def one(batch):
    _, new = g_model.apply(
        {**variables, "batch_stats": zeros},
        batch,
        train=True,
        update_spectral=False,
        rngs={"dropout": jax.random.PRNGKey(0)},
        mutable=["batch_stats", "spectral"],
    )
    return jax.tree.map(lambda x: x / (1.0 - momentum), new["batch_stats"])

  return jax.tree.map(lambda x: jnp.mean(x, axis=0), jax.lax.map(one, waveforms))
