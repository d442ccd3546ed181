"""Diagnostics for issue 3: why the demo model learns identity but not expression.

Three probes on the synthetic_talking_faces clips (generated in memory by the builder's own
functions, no TFDS build), each printing within-speaker Pearson r on held-out clips:

  supervised  the demo-size speech encoder + a linear head, regressing (loudness, pitch_shift)
              directly: is the expression cue in the audio learnable by this encoder?
  oracle      the demo-size generator alone, from an oracle embedding
              [one-hot speaker, loudness, pitch_shift] * --scale: can the (spectrally normalised)
              generator draw the expression when it is given it?
  l1          the whole G side (Wav2PixG: encoder + classifier + generator) trained with only
              L1 + speaker cross-entropy, no discriminator: does expression come through the
              generator's gradient?

    .venv/bin/python scripts/expression_probes.py supervised --steps=600
    .venv/bin/python scripts/expression_probes.py oracle --scale=30 --steps=600
    .venv/bin/python scripts/expression_probes.py l1 --steps=600

Measured here (2 CPU cores, seed 0; test clips 34-39 of the 6 seen speakers):
supervised: loudness r 0.90 after 100 steps, 0.88 at 600; pitch r 0.61 at 600.
oracle --scale=1: the generator does not even learn identity (L1 0.58 -> 0.55: with spectral norm
its output can move no more than its input does); --scale=30: mouth r 0.90 at 200 steps, 0.98 at
600 (eyebrows ~0: a 2-3 px shift). l1: identity yes, mouth and eyebrows |r| < 0.35 at 600 and at
2400 steps, on test AND on training clips (L1 0.06): the embedding's variation within a speaker
follows the window's phonetic content, not the clip's vocal effort.
"""

from __future__ import annotations

import sys
import time
from typing import Sequence

from absl import flags
import numpy as np
import jax
import jax.numpy as jnp
import optax

from data_prep.synthetic import synthetic_dataset_builder as syn
from wav2pix_jax import cli
from wav2pix_jax.data import audio
from wav2pix_jax.evaluation import pixel_metrics
from wav2pix_jax.models import networks

PROG = "expression_probes"
PROBES = ("supervised", "oracle", "l1")
# The tool's own flags (not absl's global FLAGS: see wav2pix_jax/cli.py).
FLAGS = flags.FlagValues()
flags.DEFINE_integer("steps", 600, "Training steps.", flag_values=FLAGS)
flags.DEFINE_integer("every", 100, "Evaluate every N steps.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 16, "Clips per batch.", flag_values=FLAGS)
flags.DEFINE_integer("window", 8000, "Audio samples per example (demo: 8000).", flag_values=FLAGS)
flags.DEFINE_float("scale", 30.0, "Oracle embedding scale.", flag_values=FLAGS)
flags.DEFINE_float("speaker_ce", 20.0, "l1 probe: cross-entropy weight.", flag_values=FLAGS)
flags.DEFINE_float("learning_rate", 1e-3, "Adam's learning rate.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the initialisation and the batches.", flag_values=FLAGS)

# The demo config's model widths (configs/demo.py).
_ENCODER = dict(channels=(16, 32, 64, 128, 256), hidden=(128,), embed_dim=64)


def _clips(speakers, clip_range):
  seen = [i for i, name in enumerate(syn.SPEAKERS) if name not in syn.UNSEEN_SPEAKERS]
  return [syn.make_clip(i, c, syn.SEED, speakers) for i in seen for c in clip_range]


def _columns(records):
  index = {name: k for k, name in enumerate(syn.SPEAKERS)}
  return (
      np.array([index[r["speaker"]] for r in records]),
      np.array([r["loudness"] for r in records], np.float32),
      np.array([r["pitch_shift"] for r in records], np.float32),
  )


def _within_r(x, y, groups):
  return float(
      np.corrcoef(pixel_metrics.within_group(x, groups), pixel_metrics.within_group(y, groups))[
          0, 1
      ]
  )


def _face_rs(images, speakers, loudness, pitch):
  """Within-speaker r of mouth opening ~ loudness and eyebrow height ~ pitch (pixel metrics)."""
  u8 = np.clip((np.asarray(images) + 1) * 127.5, 0, 255).round().astype(np.uint8)
  mouth = pixel_metrics.mouth_expressivity(
      pixel_metrics.mouth_opening_px(u8, syn.MOUTH_BOX), loudness, speakers
  )
  brows = pixel_metrics.brow_expressivity(
      pixel_metrics.brow_height_px(u8, syn.BROW_BOXES), pitch, speakers
  )
  return mouth["loudness_correlation_within_speaker"], brows["pitch_correlation_within_speaker"]


def _fmt(value):
  return "n/a" if value is None else f"{value:+.2f}"


def _parse(argv: Sequence[str] | None) -> tuple[str | None, int | None]:
  """(the probe, None) to go on, else (None, the exit status): 0 after the help, 2 on bad usage."""

  def check(args):
    if len(args) != 1 or args[0] not in PROBES:
      return f"give one probe of {list(PROBES)}, got {args}"
    return None

  args, status = cli.parse_with_arguments(FLAGS, argv, PROG, __doc__, check)
  return (args[0] if status is None else None), status


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry (the argument: the probe); returns the exit status."""
  probe, status = _parse(argv)
  if status is not None:
    return status

  speakers = syn.make_speakers(syn.SEED)
  train, test = _clips(speakers, syn.SEEN_SPLITS["train"]), _clips(
      speakers, syn.SEEN_SPLITS["test"]
  )
  train_spk, train_loud, train_pitch = _columns(train)
  test_spk, test_loud, test_pitch = _columns(test)
  train_faces = np.stack([r["face"] for r in train]).astype(np.float32) / 127.5 - 1.0
  window = lambda r, rng=None: audio.preprocess(
      r["waveform"], window=FLAGS.window, preemphasis=0.95, rng=rng
  )
  test_audio = np.stack([window(r) for r in test])
  num_speakers = len(syn.SPEAKERS)

  if probe == "supervised":
    import flax.linen as nn

    class Probe(nn.Module):

      @nn.compact
      def __call__(self, x, train):
        return nn.Dense(2)(networks.SpeechEncoder(conv_impl="xla", **_ENCODER)(x, train=train))

    model = Probe()
    variables = model.init(jax.random.PRNGKey(FLAGS.seed), test_audio[:2], train=False)
    targets = np.stack([train_loud, train_pitch], 1)
    mean, std = targets.mean(0), targets.std(0)

    def loss_fn(params, state, batch):
      out, new_state = model.apply(
          {"params": params, **state}, batch["x"], train=True, mutable=["batch_stats"]
      )
      return jnp.mean(jnp.square(out - (batch["y"] - mean) / std)), new_state

    def make_batch(idx, rng):
      return {"x": np.stack([window(train[i], rng) for i in idx]), "y": targets[idx]}

    def report(params, state):
      out = np.asarray(model.apply({"params": params, **state}, test_audio, train=False))
      return (
          f"loudness r {_fmt(_within_r(out[:, 0], test_loud, test_spk))}  "
          f"pitch r {_fmt(_within_r(out[:, 1], test_pitch, test_spk))}"
      )

    optimizer = optax.adam(FLAGS.learning_rate)
  else:
    if probe == "oracle":
      model = networks.Generator(image_size=64, base_channels=32, dropout_rate=0.0, conv_impl="xla")

      def oracle(spk, loud, pitch):
        e = np.zeros((len(spk), _ENCODER["embed_dim"]), np.float32)
        e[np.arange(len(spk)), spk] = 1.0
        e[:, num_speakers], e[:, num_speakers + 1] = 2 * loud - 1, pitch
        return e * FLAGS.scale

      train_in, test_in = oracle(train_spk, train_loud, train_pitch), oracle(
          test_spk, test_loud, test_pitch
      )
      variables = model.init(
          jax.random.PRNGKey(FLAGS.seed), train_in[:2], train=False, update_spectral=False
      )

      def loss_fn(params, state, batch):
        images, new_state = model.apply(
            {"params": params, **state},
            batch["x"],
            train=True,
            update_spectral=True,
            mutable=["spectral"],
        )
        return jnp.mean(jnp.abs(images - batch["y"])), new_state

      def make_batch(idx, rng):
        del rng
        return {"x": train_in[idx], "y": train_faces[idx]}

      def generate(params, state):
        return model.apply({"params": params, **state}, test_in, train=False, update_spectral=False)

    else:
      model = networks.Wav2PixG(
          num_speakers=num_speakers,
          encoder_channels=_ENCODER["channels"],
          encoder_hidden=_ENCODER["hidden"],
          embed_dim=_ENCODER["embed_dim"],
          classifier_hidden=64,
          base_channels=32,
          dropout_rate=0.0,
          conv_impl="xla",
      )
      variables = model.init(
          jax.random.PRNGKey(FLAGS.seed), test_audio[:2], train=False, update_spectral=False
      )

      def loss_fn(params, state, batch):
        (images, _, logits), new_state = model.apply(
            {"params": params, **state},
            batch["x"],
            train=True,
            update_spectral=True,
            mutable=["batch_stats", "spectral"],
        )
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["s"]).mean()
        return 100.0 * jnp.mean(jnp.abs(images - batch["y"])) + FLAGS.speaker_ce * ce, new_state

      def make_batch(idx, rng):
        return {
            "x": np.stack([window(train[i], rng) for i in idx]),
            "y": train_faces[idx],
            "s": train_spk[idx].astype(np.int32),
        }

      def generate(params, state):
        return model.apply(
            {"params": params, **state}, test_audio, train=False, update_spectral=False
        )[0]

    def report(params, state):
      mouth, brows = _face_rs(generate(params, state), test_spk, test_loud, test_pitch)
      return f"mouth~loudness r {_fmt(mouth)}  eyebrows~pitch r {_fmt(brows)}"

    optimizer = optax.adam(FLAGS.learning_rate, b1=0.5)

  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, state, opt_state, batch):
    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), {**state, **new_state}, opt_state, loss

  rng = np.random.default_rng(FLAGS.seed)
  start = time.time()
  for i in range(FLAGS.steps + 1):
    idx = rng.integers(len(train), size=FLAGS.batch_size)
    params, state, opt_state, loss = step(params, state, opt_state, make_batch(idx, rng))
    if i % FLAGS.every == 0 or i == FLAGS.steps:
      print(
          f"{probe} step {i:5d}  loss {float(loss):.4f}  test, within speakers: "
          f"{report(params, state)}  ({time.time() - start:.0f} s)",
          flush=True,
      )
  return 0


if __name__ == "__main__":
  sys.exit(main())
