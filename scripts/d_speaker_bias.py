"""What D rewards at each checkpoint of a run, per speaker: the identity-swing diagnostic.

    python scripts/d_speaker_bias.py --workdir=W --data_dir=D [--steps=500,1000] [--out=F.json]

The paper's D scores f(face) + g(speech) (additive: `model.d_conditioning="concat"`,
`d_joint_channels=0`). Trained on matching pairs (target 0.9) and wrong-speaker pairs (target 0)
it cannot tell them apart, so what it can learn is which speaker's faces look "more real" (f).
G's adversarial term then pulls every clip's face towards that speaker: the hypothesis for the
swing where every clip gets one speaker's face. For each checkpoint step this prints, on the
validation split's real faces:

  realness   mean D score of each speaker's real faces (averaged over every clip's speech), and
             the gap between the top speaker and the rest: f's per-speaker bias;
  matching   mean D(real, own speech) - D(real, another speaker's speech): ~0 for an additive D;
  drawn      the share of generated faces nearest (pixels) to each speaker's mean real face:
             one speaker near 100 % is the collapse;
  drawn_bs   the same with G's BatchNorm on batch statistics (train mode; fast.py has no dropout)
             instead of the running averages evaluation uses: a collapse here too is G's, one
             that vanishes is the running statistics lagging the weights;
  separable  nearest-centroid speaker accuracy of the speech embeddings (evaluation mode): does
             the encoder still tell the speakers apart.

Prediction of the hypothesis: when `drawn` collapses onto one speaker, that speaker has the
highest `realness` at that step (or the step before).
"""

import json
import pathlib
import sys
from typing import Sequence

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from wav2pix_jax import checkpoints
from wav2pix_jax import cli
from wav2pix_jax import config_lib
from wav2pix_jax.evaluation import data as eval_data
from wav2pix_jax.models import factory
from wav2pix_jax.serving import inference
from wav2pix_jax.training import step as step_lib

PROG = "d_speaker_bias"
FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "Training workdir.", flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "Override config.input.data_dir.", flag_values=FLAGS)
flags.DEFINE_list("steps", [], "Checkpoint steps (default: all in the workdir).", flag_values=FLAGS)
flags.DEFINE_integer("max_examples", 128, "Validation examples.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Write the rows as JSON here.", flag_values=FLAGS)
flags.mark_flag_as_required("workdir", flag_values=FLAGS)


def speaker_rows(real_scores: np.ndarray, drawn: np.ndarray, speakers: np.ndarray) -> dict:
  """Per-speaker realness (real faces, any speech), the matching gap and the drawn shares.

  real_scores [N, N]: D(real face i, speech of clip j); drawn [N]: the speaker each generated face
  is nearest to.
  """
  ids = np.unique(speakers)
  realness = {int(s): float(real_scores[speakers == s].mean()) for s in ids}
  # Per speaker: its faces with its own speech minus with the others' speech; then the mean over
  # speakers (balanced: exactly 0 for an additive D whatever the speakers' shares of the clips).
  gaps = [
      real_scores[np.ix_(speakers == s, speakers == s)].mean()
      - real_scores[np.ix_(speakers == s, speakers != s)].mean()
      for s in ids
  ]
  matching = float(np.mean(gaps)) if len(ids) > 1 else 0.0
  drawn_share = {int(s): float(np.mean(drawn == s)) for s in ids}
  ranked = sorted(realness.values(), reverse=True)
  return {
      "realness": realness,
      "realness_gap": ranked[0] - (ranked[1] if len(ranked) > 1 else ranked[0]),
      "top_real": max(realness, key=realness.get),
      "matching_gap": matching,
      "drawn": drawn_share,
      "top_drawn": max(drawn_share, key=drawn_share.get),
  }


def nearest_speaker(images: np.ndarray, real: np.ndarray, speakers: np.ndarray) -> np.ndarray:
  """For each image, the speaker whose mean real face is nearest in pixels."""
  ids = np.unique(speakers)
  means = np.stack([real[speakers == s].astype(np.float32).mean(0) for s in ids])
  flat = images.astype(np.float32).reshape(len(images), -1)
  dist = ((flat[:, None, :] - means.reshape(len(ids), -1)[None]) ** 2).sum(-1)
  return ids[np.argmin(dist, axis=1)]


def centroid_accuracy(embeddings: np.ndarray, speakers: np.ndarray) -> float:
  """Share of embeddings nearest (cosine) to their own speaker's centroid."""
  ids = np.unique(speakers)
  unit = embeddings / (np.linalg.norm(embeddings, axis=1, keepdims=True) + 1e-8)
  centroids = np.stack([unit[speakers == s].mean(0) for s in ids])
  return float(np.mean(ids[np.argmax(unit @ centroids.T, axis=1)] == speakers))


def score_step(manager, step: int, config, num_speakers: int, eval_set) -> dict:
  """D's scores on every (real face, speech) pair of the eval set, and what G draws, at `step`."""
  abstract = step_lib.abstract_train_state(config, num_speakers)
  state = checkpoints.restore(manager, step, abstract_state=abstract)
  generator = inference.FaceGenerator.from_state(config, num_speakers, state, train_mode=False)
  embeddings = np.asarray(generator.embed_preprocessed(eval_set.waveforms))
  generated = generator.generate_preprocessed(eval_set.waveforms)
  d_model = factory.make_discriminator(config.model)
  variables = {"params": state.d_params, "spectral": state.d_spectral}
  faces = jnp.asarray(eval_set.real, jnp.float32) / 127.5 - 1.0

  @jax.jit
  def scores_for(embedding):  # D(every real face, one clip's speech)
    tiled = jnp.broadcast_to(embedding, (faces.shape[0], embedding.shape[-1]))
    return d_model.apply(variables, faces, tiled, update_spectral=False)[0]

  table = np.stack([np.asarray(scores_for(e[None])) for e in embeddings], axis=1)  # [face, speech]
  drawn = nearest_speaker(generated, eval_set.real, eval_set.speakers)
  batch_stats = inference.FaceGenerator.from_state(
      config, num_speakers, state, train_mode=True
  ).generate_preprocessed(eval_set.waveforms)
  drawn_bs = nearest_speaker(batch_stats, eval_set.real, eval_set.speakers)
  rows = speaker_rows(table, drawn, eval_set.speakers)
  rows["drawn_bs"] = {int(s): float(np.mean(drawn_bs == s)) for s in np.unique(eval_set.speakers)}
  rows["separable"] = centroid_accuracy(embeddings, eval_set.speakers)
  return {"step": step, **rows}


def main(argv: Sequence[str] | None = None) -> int:
  if cli.wants_help(argv):
    print(cli.help_text(FLAGS, PROG, __doc__))
    return 0
  try:
    cli.parse_flags(FLAGS, argv, PROG)
    workdir = pathlib.Path(FLAGS.workdir).expanduser()
    config = config_lib.with_defaults(json.loads((workdir / "config.json").read_text()))
    if FLAGS.data_dir:
      config.input.data_dir = FLAGS.data_dir
    num_speakers = json.loads((workdir / "dataset.json").read_text())["num_speakers"]
  except (cli.UsageError, config_lib.ConfigError, OSError) as e:
    print(cli.error_line(PROG, e), file=sys.stderr)
    return 2
  cli.quiet_library_logs()
  manager = checkpoints.open_directory(checkpoints.checkpoint_dir(str(workdir)))
  steps = [int(s) for s in FLAGS.steps] or checkpoints.list_steps(
      checkpoints.checkpoint_dir(str(workdir))
  )
  eval_set = eval_data.load_eval_set(
      config.input,
      split=config.eval.split or config.input.eval_split,
      image_size=config.model.image_size,
      max_examples=FLAGS.max_examples,
      reference_faces_per_speaker=1,
      batch_size=32,
  )
  rows = []
  for step in steps:
    row = score_step(manager, step, config, num_speakers, eval_set)
    rows.append(row)
    print(
        f"step {step:6d}  realness "
        + " ".join(f"{s}:{v:+.3f}" for s, v in row["realness"].items())
        + f"  gap {row['realness_gap']:.3f} (top {row['top_real']})"
        + f"  matching {row['matching_gap']:+.4f}  drawn "
        + " ".join(f"{s}:{100 * v:.0f}%" for s, v in row["drawn"].items())
        + "  drawn_bs "
        + " ".join(f"{s}:{100 * v:.0f}%" for s, v in row["drawn_bs"].items())
        + f"  separable {100 * row['separable']:.0f}%",
        flush=True,
    )
  if FLAGS.out:
    pathlib.Path(FLAGS.out).write_text(json.dumps(rows, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
