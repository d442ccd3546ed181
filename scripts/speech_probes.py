"""What the speech carries about its face beyond who speaks: probes on real data (issue 22, part 2).

    python scripts/speech_probes.py --workdir=W --data_dir=D --out=results/probes/report.json \
        [--waveform_steps=1500] [--max_examples=N]

The ceiling of what a speech-to-face model can get right within a speaker. Targets, read from each
clip's real face (the run's dataset, train and validation splits, the model's centred windows):

  expression  fer's top class (7; emotion.py)
  mouth       dlib's inner-lip gap / outer-eye-corner distance (the report's expressivity)
  yaw, pitch  the nose tip (landmark 31) off the eye corners' midpoint, over their distance:
              horizontally (yaw) and vertically (pitch)
  roll        the eye corners' line's angle, degrees

(dlib targets on faces its detector finds only.) Two probes, fitted on train, scored on
validation, each given the speaker as well so that only what the speech adds within a speaker
counts:

  embedding   the run's trained speech encoder (latest checkpoint), frozen: ridge / softmax
              regression on [embedding, speaker one-hot]
  waveform    a fresh encoder of the run's architecture trained on the raw waveform to all the
              targets at once (speaker one-hot beside its embedding)

against within-speaker chance: each speaker's most common train class (expression accuracy) and
each speaker's train mean (continuous targets: R2 within speakers 0, r 0). Reported per target:
accuracy or within-speaker Pearson r (targets and predictions centred on each speaker's
validation mean) and out-of-sample R2 against the speaker's train mean.
"""

import json
import pathlib
import sys
import time
from typing import Sequence

from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from wav2pix_jax import cli
from wav2pix_jax import config_lib
from wav2pix_jax.evaluation import clip_metrics
from wav2pix_jax.evaluation import data as eval_data
from wav2pix_jax.evaluation import emotion
from wav2pix_jax.evaluation import face_metrics
from wav2pix_jax.models import networks
from wav2pix_jax.serving import inference

PROG = "speech_probes"
FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "A training run (its config and encoder).", flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "Override config.input.data_dir.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Write the report here as JSON.", flag_values=FLAGS)
flags.DEFINE_integer(
    "max_examples", None, "Read only the first N records of each split.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "waveform_steps", 1500, "Training steps of the waveform probe (0: skip).", flag_values=FLAGS
)
flags.DEFINE_integer("batch_size", 32, "The waveform probe's batch size.", flag_values=FLAGS)
flags.DEFINE_float("learning_rate", 3e-4, "The waveform probe's Adam rate.", flag_values=FLAGS)
flags.DEFINE_integer(
    "seed", 0, "The waveform probe's initialisation and batches.", flag_values=FLAGS
)

CONTINUOUS = ("mouth", "yaw", "pitch", "roll")
NOSE_TIP = 30  # 0-indexed landmark 31


# ----------------------------------------------------------------------------- targets


def pose(landmarks: np.ndarray) -> dict[str, np.ndarray]:
  """float64 [N] yaw, pitch (nose tip off the eye corners' midpoint / their distance) and roll
  (the eye line's angle, degrees) from dlib's 68 landmarks [N, 68, 2]."""
  landmarks = np.asarray(landmarks, np.float64)
  left, right = (landmarks[:, i] for i in face_metrics.OUTER_EYE_CORNERS)
  axis = right - left
  distance = np.maximum(np.linalg.norm(axis, axis=-1), 1e-6)
  unit = axis / distance[:, None]
  normal = np.stack([-unit[:, 1], unit[:, 0]], -1)  # points down the face in image coordinates
  offset = landmarks[:, NOSE_TIP] - (left + right) / 2
  return {
      "yaw": np.sum(offset * unit, -1) / distance,
      "pitch": np.sum(offset * normal, -1) / distance,
      "roll": np.degrees(np.arctan2(axis[:, 1], axis[:, 0])),
  }


def face_targets(real: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """({expression: int [N], mouth/yaw/pitch/roll: float64 [N]}, bool [N] dlib detected), each
  distinct face analysed once (the YouTubers pair 5 windows with each face)."""
  ids = clip_metrics.face_ids(real)
  first = np.array([np.flatnonzero(ids == i)[0] for i in range(ids.max() + 1)])
  faces = real[first]
  analysis = face_metrics.analyze_faces(faces)
  targets = {"expression": emotion.load().predict(faces).astype(np.int64)}
  targets["mouth"] = face_metrics.mouth_opening(analysis.landmarks).astype(np.float64)
  targets.update(pose(analysis.landmarks))
  return {k: v[ids] for k, v in targets.items()}, analysis.detected[ids]


# ----------------------------------------------------------------------------- scores


def within_r(pred: np.ndarray, target: np.ndarray, speakers: np.ndarray) -> float | None:
  """Pearson r of predictions and targets, each centred on its speaker's mean (None: flat)."""

  def centred(x):
    x = np.asarray(x, np.float64).copy()
    for s in np.unique(speakers):
      x[speakers == s] -= x[speakers == s].mean()
    return x

  return face_metrics.pearson(centred(pred), centred(target))


def score_continuous(pred, target, speakers, train_means: dict[int, float]) -> dict:
  """Within-speaker r and R2 against each speaker's train mean (the chance predictor)."""
  baseline = np.array([train_means[int(s)] for s in speakers])
  residual = np.sum((target - baseline) ** 2)
  return {
      "within_speaker_r": within_r(pred, target, speakers),
      "r2_over_speaker_mean": float(1 - np.sum((target - pred) ** 2) / max(residual, 1e-12)),
      "num_examples": int(len(target)),
  }


def score_expression(pred, target, speakers, train_majority: dict[int, int]) -> dict:
  """Accuracy beside the within-speaker chance (each speaker's most common train class)."""
  baseline = np.array([train_majority[int(s)] for s in speakers])
  return {
      "accuracy": float(np.mean(pred == target)),
      "within_speaker_chance": float(np.mean(baseline == target)),
      "num_examples": int(len(target)),
  }


def speaker_baselines(targets: dict, detected: np.ndarray, speakers: np.ndarray) -> dict:
  """{target: {speaker: train mean, or most common class}}."""
  out = {"expression": {}}
  for s in np.unique(speakers):
    own = speakers == s
    out["expression"][int(s)] = int(np.bincount(targets["expression"][own]).argmax())
    for key in CONTINUOUS:
      out.setdefault(key, {})[int(s)] = float(targets[key][own & detected].mean())
  return out


def score_all(predict, val: dict, baselines: dict) -> dict:
  """`predict(target) -> predictions on val` scored for every target."""
  out = {
      "expression": score_expression(
          predict("expression"), val["expression"], val["speakers"], baselines["expression"]
      )
  }
  det = val["detected"]
  for key in CONTINUOUS:
    out[key] = score_continuous(
        predict(key)[det], val[key][det], val["speakers"][det], baselines[key]
    )
  return out


# ----------------------------------------------------------------------------- embedding probe


def _features(embeddings: np.ndarray, speakers: np.ndarray, num_speakers: int, stats) -> np.ndarray:
  mean, std = stats
  onehot = np.eye(num_speakers)[speakers]
  return np.concatenate([(embeddings - mean) / std, onehot, np.ones((len(speakers), 1))], -1)


def _folds(face_ids: np.ndarray, k: int = 5) -> np.ndarray:
  """Each record's fold: blocks of 10 consecutive faces (a face's windows stay together)."""
  return (face_ids // 10) % k


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
  """Weights of ridge regression (the last column, the bias, unpenalised)."""
  penalty = lam * np.eye(x.shape[1])
  penalty[-1, -1] = 0.0
  return np.linalg.solve(x.T @ x + penalty, x.T @ y)


def softmax_regression(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 300) -> np.ndarray:
  """Weights [F, 7] of L2-regularised multinomial logistic regression (full-batch Adam)."""
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y)

  def loss(w):
    ce = optax.softmax_cross_entropy_with_integer_labels(x @ w, y).mean()
    return ce + l2 * jnp.sum(w[:-1] ** 2)

  opt = optax.adam(0.05)

  @jax.jit
  def fit(w):
    def step(carry, _):
      w, state = carry
      updates, state = opt.update(jax.grad(loss)(w), state)
      return (optax.apply_updates(w, updates), state), None

    return jax.lax.scan(step, (w, opt.init(w)), None, length=steps)[0][0]

  return np.asarray(fit(jnp.zeros((x.shape[1], len(emotion.LABELS)), jnp.float32)))


def _cross_validated(fit, predict_score, x, y, folds, grid) -> tuple[float, list]:
  """The grid value with the best mean held-out-fold score, and every value's score."""
  scores = []
  for value in grid:
    per_fold = [
        predict_score(fit(x[folds != f], y[folds != f], value), x[folds == f], y[folds == f])
        for f in np.unique(folds)
    ]
    scores.append(float(np.mean(per_fold)))
  return grid[int(np.argmax(scores))], scores


def embedding_probe(train: dict, val: dict, num_speakers: int) -> tuple[dict, dict]:
  """(val predictions by target, the regularisation chosen by 5-fold CV on train)."""
  stats = train["embeddings"].mean(0), train["embeddings"].std(0) + 1e-6
  xt = _features(train["embeddings"], train["speakers"], num_speakers, stats)
  xv = _features(val["embeddings"], val["speakers"], num_speakers, stats)
  folds, det = _folds(train["face_ids"]), train["detected"]
  accuracy = lambda w, x, y: float(np.mean((x @ w).argmax(-1) == y))
  l2, _ = _cross_validated(
      softmax_regression, accuracy, xt, train["expression"], folds, [1e-4, 1e-3, 1e-2, 1e-1]
  )
  preds = {"expression": (xv @ softmax_regression(xt, train["expression"], l2)).argmax(-1)}
  chosen = {"expression_l2": l2}
  neg_mse = lambda w, x, y: -float(np.mean((x @ w - y) ** 2))
  for key in CONTINUOUS:
    lam, _ = _cross_validated(
        ridge, neg_mse, xt[det], train[key][det], folds[det], [1.0, 10.0, 100.0, 1000.0, 1e4]
    )
    preds[key] = xv @ ridge(xt[det], train[key][det], lam)
    chosen[f"{key}_ridge"] = lam
  return preds, chosen


# ----------------------------------------------------------------------------- waveform probe


class WaveformProbe(nn.Module):
  """A fresh speech encoder (the run's architecture) + the speaker -> 7 logits and 4 targets."""

  encoder: dict
  num_speakers: int

  @nn.compact
  def __call__(self, waveform, speakers, *, train: bool):
    embedding = networks.SpeechEncoder(**self.encoder)(waveform, train=train)
    x = jnp.concatenate([embedding, jax.nn.one_hot(speakers, self.num_speakers)], -1)
    return nn.Dense(len(emotion.LABELS) + len(CONTINUOUS))(x)


def _encoder_kwargs(model_cfg) -> dict:
  return {
      "channels": tuple(model_cfg.encoder_channels),
      "kernel_size": model_cfg.encoder_kernel_size,
      "stride": model_cfg.encoder_stride,
      "hidden": tuple(model_cfg.encoder_hidden),
      "embed_dim": model_cfg.embed_dim,
  }


def _standardised(data: dict, baselines: dict, scale: np.ndarray) -> np.ndarray:
  """[N, 4]: each continuous target minus its speaker's train mean, over the train spread (NaN
  where dlib found no face: no loss there)."""
  cols = []
  for i, key in enumerate(CONTINUOUS):
    base = np.array([baselines[key][int(s)] for s in data["speakers"]])
    cols.append(np.where(data["detected"], (data[key] - base) / scale[i], np.nan))
  return np.stack(cols, -1).astype(np.float32)


def _probe_step(model, optimizer):
  num_classes = len(emotion.LABELS)

  def loss_fn(params, batch_stats, batch):
    out, new_state = model.apply(
        {"params": params, "batch_stats": batch_stats},
        batch["waveform"],
        batch["speakers"],
        train=True,
        mutable=["batch_stats"],
    )
    ce = optax.softmax_cross_entropy_with_integer_labels(
        out[:, :num_classes], batch["expression"]
    ).mean()
    y = batch["continuous"]
    seen = ~jnp.isnan(y)
    mse = jnp.sum(jnp.where(seen, (out[:, num_classes:] - jnp.nan_to_num(y)) ** 2, 0.0))
    return ce + mse / jnp.maximum(seen.sum(), 1), new_state["batch_stats"]

  @jax.jit
  def step(params, batch_stats, opt_state, batch):
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, batch
    )
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  return step


def _probe_predict(model, variables, data: dict, chunk: int = 185) -> np.ndarray:
  """Outputs on `data` in chunks of `chunk` records with the chunk's own BatchNorm statistics (the
  probe's running averages would lag its weights)."""
  apply = jax.jit(lambda w, s: model.apply(variables, w, s, train=True, mutable=["batch_stats"])[0])
  outs = [
      np.asarray(apply(data["waveform"][i : i + chunk], data["speakers"][i : i + chunk]))
      for i in range(0, len(data["speakers"]), chunk)
  ]
  return np.concatenate(outs)


def waveform_probe(train: dict, val: dict, baselines: dict, model_cfg, num_speakers: int) -> dict:
  """Val predictions by target of the waveform probe trained FLAGS.waveform_steps steps."""
  scale = np.array([np.nanstd(train[k][train["detected"]]) + 1e-6 for k in CONTINUOUS])
  train_y = _standardised(train, baselines, scale)
  model = WaveformProbe(encoder=_encoder_kwargs(model_cfg), num_speakers=num_speakers)
  rng = np.random.default_rng(FLAGS.seed)
  variables = model.init(
      jax.random.key(FLAGS.seed), train["waveform"][:2], train["speakers"][:2], train=False
  )
  params, batch_stats = variables["params"], variables["batch_stats"]
  optimizer = optax.adam(FLAGS.learning_rate)
  opt_state, step = optimizer.init(params), _probe_step(model, optimizer)
  start = time.time()
  for i in range(1, FLAGS.waveform_steps + 1):
    idx = rng.integers(len(train["speakers"]), size=FLAGS.batch_size)
    batch = {k: train[k][idx] for k in ("waveform", "speakers", "expression")}
    batch["continuous"] = train_y[idx]
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, batch)
    if i % 100 == 0 or i == FLAGS.waveform_steps:
      print(
          f"waveform probe step {i}/{FLAGS.waveform_steps}  loss {float(loss):.4f}  "
          f"({time.time() - start:.0f} s)",
          flush=True,
      )
  out = _probe_predict(model, {"params": params, "batch_stats": batch_stats}, val)
  num_classes = len(emotion.LABELS)
  preds = {"expression": out[:, :num_classes].argmax(-1)}
  for i, key in enumerate(CONTINUOUS):
    base = np.array([baselines[key][int(s)] for s in val["speakers"]])
    preds[key] = base + scale[i] * out[:, num_classes + i]
  return preds


# ----------------------------------------------------------------------------- main


def read(generator, input_cfg, split: str) -> dict:
  """A split's windows, speakers, speech embeddings and real-face targets."""
  waveforms, real, speakers = eval_data.read_split(
      input_cfg,
      split=split,
      image_size=generator.image_size,
      batch_size=generator.batch_size,
      max_examples=FLAGS.max_examples,
  )
  targets, detected = face_targets(real)
  print(
      f"{split}: {len(speakers)} windows, {len(np.unique(clip_metrics.face_ids(real)))} faces, "
      f"dlib detected {detected.mean():.1%}",
      flush=True,
  )
  return {
      "waveform": waveforms,
      "speakers": speakers,
      "face_ids": clip_metrics.face_ids(real),
      "detected": detected,
      "embeddings": generator.embed_preprocessed(waveforms),
      **targets,
  }


def run() -> dict:
  """The report: every probe's scores on validation, with what each was fitted on."""
  generator = inference.load(FLAGS.workdir, checkpoint="latest")
  input_cfg = generator.config.input.copy_and_resolve_references()
  if FLAGS.data_dir:
    input_cfg.data_dir = FLAGS.data_dir
  train = read(generator, input_cfg, input_cfg.train_split)
  val = read(generator, input_cfg, input_cfg.eval_split)
  num_speakers = len(generator.speaker_names)
  baselines = speaker_baselines(train, train["detected"], train["speakers"])
  preds, chosen = embedding_probe(train, val, num_speakers)
  report = {
      "workdir": str(FLAGS.workdir),
      "step": generator.step,
      "splits": {"train": input_cfg.train_split, "validation": input_cfg.eval_split},
      "num_train": int(len(train["speakers"])),
      "embedding": {**score_all(preds.__getitem__, val, baselines), "regularisation": chosen},
  }
  print(_line("embedding", report["embedding"]), flush=True)
  if FLAGS.waveform_steps:
    preds = waveform_probe(train, val, baselines, generator.config.model, num_speakers)
    report["waveform"] = {
        **score_all(preds.__getitem__, val, baselines),
        "steps": FLAGS.waveform_steps,
        "batch_size": FLAGS.batch_size,
        "learning_rate": FLAGS.learning_rate,
        "seed": FLAGS.seed,
    }
    print(_line("waveform", report["waveform"]), flush=True)
  return report


def _line(name: str, scores: dict) -> str:
  e = scores["expression"]
  parts = [
      f"expression {e['accuracy']:.1%} (within-speaker chance {e['within_speaker_chance']:.1%})"
  ]
  for key in CONTINUOUS:
    s = scores[key]
    r = "n/a" if s["within_speaker_r"] is None else f"{s['within_speaker_r']:+.2f}"
    parts.append(f"{key} r {r} R2 {s['r2_over_speaker_mean']:+.2f}")
  return f"{name:>9}: " + "  ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry; returns the exit status."""
  if cli.wants_help(argv):
    print(cli.help_text(FLAGS, PROG, __doc__))
    return 0
  try:
    if cli.parse_flags(FLAGS, argv, PROG):
      raise cli.UsageError("takes no arguments")
    if not FLAGS.workdir:
      raise cli.UsageError("--workdir is required")
  except cli.UsageError as e:
    print(cli.error_line(PROG, e), file=sys.stderr)
    return 2
  try:
    report = run()
  except (config_lib.ConfigError, OSError, emotion.Unavailable) as e:
    print(cli.error_line(PROG, e), file=sys.stderr)
    return 1
  if FLAGS.out:
    pathlib.Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(FLAGS.out).write_text(json.dumps(report, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
