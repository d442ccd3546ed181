"""The authors' released code as it ran: base.py plus what their PyTorch code did that the paper
does not say (docs/training.md, "Which config when"). For comparisons with the paper, not for new
work.

    python -m wav2pix_jax.main --config=configs/authors.py --workdir=workdirs/authors
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  """Returns base.py with the behaviours of the authors' code."""
  config = base.get_config()
  # Their weight init (N(0, 0.02)) never reached the spectrally normalised convs, which kept
  # PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  config.model.sn_init = "torch"  # PyTorch's default init for every SN conv
  # Under Python 2, `int16 samples / their int peak` is floor division: the speech they trained on
  # was -1 for every negative sample, 0 otherwise (1 at the peak), then pre-emphasised.
  config.input.floor_division = True  # speech quantised to -1/0/+1 before pre-emphasis
  # Their G step fed D the encoder's embedding without detaching it: G's adversarial loss also
  # trained the speech encoder through D's conditioning input.
  # the adversarial gradient reaches the encoder via D's input
  config.loss.adversarial_into_encoder = True
  # Their predict() never called .eval(): generation with dropout on and BatchNorm on the batch's
  # own statistics.
  config.eval.train_mode = True  # evaluation / generation as their predict() ran
  return config
