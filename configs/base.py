"""The paper's recipe: 64x64 faces from 1 s of 16 kHz speech, YouTubers dataset (PAPER.md).

    python -m wav2pix_jax.main --config=configs/base.py --workdir=workdirs/base \
        --config.optim.d.learning_rate=4e-4
"""

import os

import ml_collections

# The authors' release shared beside the repository: <repo>/../shared/youtubers.
_SHARED_YOUTUBERS = os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "youtubers")
)


def get_config() -> ml_collections.ConfigDict:
  """Returns the paper's 64x64 YouTubers training config."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # seeds parameter init, dropout and the data order
  config.batch_size = 64  # GLOBAL batch, split over processes then local devices
  # ~82 epochs of the YouTubers train split (4,990 pairs / 64); the paper: ~200
  config.num_train_steps = 6_400
  # > 0: also stop (checkpoint + evaluation) after this much training wall time
  config.max_train_minutes = 0.0
  # > 0: G's BatchNorm statistics recomputed for the current weights on the first N training
  # records before every checkpoint, evaluation and image grid (training never reads them); 0 (the
  # paper): the running averages, which can lag the weights (docs/results.md, the identity swing)
  config.precise_bn_examples = 0
  # True: skip updates with a non-finite loss/gradient instead of stopping
  config.skip_nonfinite = False
  # True: jax.distributed.initialize() first (multi-host; SLURM/MPI/TPU auto-detected)
  config.distributed = False
  # Explicit cluster launch (all three, or none: SLURM / Open MPI / Cloud TPU are auto-detected).
  config.coordinator_address = ""  # HOST:PORT of process 0's coordinator ("" = auto-detect)
  config.num_processes = -1  # processes in the job (-1 = auto-detect)
  config.process_id = -1  # this process, in [0, num_processes) (-1 = auto-detect)

  config.model = model = ml_collections.ConfigDict()
  model.image_size = 64  # face side in pixels: 64 or 128
  model.embed_dim = 128  # speech embedding size (the generator's only input)
  model.encoder_channels = (16, 32, 128, 256, 512, 1024)  # SEGAN encoder conv widths, one per block
  model.encoder_kernel_size = 15  # encoder Conv1d kernel
  model.encoder_stride = 4  # encoder Conv1d stride (16000 samples -> 4 steps after 6 blocks)
  # dense layers between the flattened conv output and the embedding
  model.encoder_hidden = (256, 128)
  model.classifier_hidden = 200  # hidden width of the auxiliary speaker classifier
  model.g_base_channels = 64  # generator width of the last hidden layer (doubles towards 4x4)
  model.d_base_channels = 64  # discriminator width of the first conv (doubles towards 4x4)
  model.dropout_rate = 0.5  # generator dropout (a source of randomness)
  model.noise_dim = 0  # noise input z ~ N(0, I) beside the embedding (0: none, the paper)
  # "auto" (per backend and network: factory.conv_impl) | "xla" | "subpixel" | "matmul"
  model.conv_impl = "auto"
  # Per-network overrides below take one value or a comma-separated list, one per conv layer.
  # generator (+ speech encoder) override of conv_impl ("" = follow conv_impl)
  model.g_conv_impl = ""
  model.encoder_conv_impl = ""  # speech encoder override ("" = follow g_conv_impl, then conv_impl)
  model.d_conv_impl = ""  # discriminator override of conv_impl ("" = follow conv_impl)
  # G doublings: "transposed" (paper, 4x4 stride 2) | "resize_conv" (nearest x2 + 3x3 conv: no
  # checkerboard)
  model.g_upsample = "transposed"
  # 0 (paper): D's score is additive in image and speech; > 0: a joint 1x1 conv lets them interact
  model.d_joint_channels = 0
  # How D sees the speech: "concat" (paper: tiled embedding before the score layer) | "projection"
  # (an inner product of the projected embedding with D's features: judges matching pairs)
  model.d_conditioning = "concat"
  # False (paper): D's score layer is a plain conv (unbounded); True: spectrally normalised too
  model.d_score_sn = False
  # SN conv weights: "normal" N(0, 0.02) (paper) | "torch" (PyTorch's default: the authors' code)
  model.sn_init = "normal"
  model.dtype = "float32"  # computation dtype: "float32" | "bfloat16" | "float16"
  model.param_dtype = "float32"  # parameter dtype

  config.input = inp = ml_collections.ConfigDict()
  # TFDS builder name: youtubers | wav2pix_videos | synthetic_talking_faces | synthetic_voice_faces
  inp.dataset = "youtubers"
  inp.data_dir = "~/tensorflow_datasets"  # TFDS data_dir holding the prepared ArrayRecord files
  # raw release the builder reads if the dataset isn't prepared yet
  inp.manual_dir = _SHARED_YOUTUBERS
  inp.train_split = "train"  # split to train on
  inp.eval_split = "validation"  # split for evaluation / image grids
  inp.audio_samples = 16_000  # speech window fed to the encoder (1 s at 16 kHz)
  inp.sample_rate = 16_000  # Hz
  inp.preemphasis = 0.95  # y[t] = x[t] - a x[t-1] after peak normalisation
  inp.num_workers = 0  # grain worker processes (0: decode in the main process)
  inp.shuffle_seed = 0  # seed of the data order (independent of the model seed)
  # True: the authors' Python 2 int division x // max|x| (speech becomes -1/0/+1)
  inp.floor_division = False
  # train on the first N speech windows of each face (clip_id); 0 = all (YouTubers: 5)
  inp.windows_per_face = 0

  config.optim = ml_collections.ConfigDict()
  config.optim.g = ml_collections.ConfigDict()
  config.optim.g.learning_rate = 1e-4  # Adam lr of the generator side (encoder, classifier, G)
  config.optim.g.b1 = 0.5  # Adam beta1
  config.optim.g.b2 = 0.999  # Adam beta2
  # > 0: evaluate/generate with an EMA of G's weights (e.g. 0.999); 0 = off
  config.optim.g.ema_decay = 0.0
  config.optim.d = ml_collections.ConfigDict()
  config.optim.d.learning_rate = 4e-4  # Adam lr of the discriminator
  config.optim.d.b1 = 0.5  # Adam beta1
  config.optim.d.b2 = 0.999  # Adam beta2

  config.loss = loss = ml_collections.ConfigDict()
  # the adversarial objective: "lsgan" (paper) | "hinge" | "logistic" (non-saturating)
  loss.gan = "lsgan"
  loss.real_label = 0.9  # lsgan's D target for real matching pairs (one-sided label smoothing)
  loss.adversarial = 1.0  # weight of G's adversarial term (lsgan: MSE(D(G(e), e), 1))
  loss.feature_matching = 100.0  # weight of MSE between D-feature batch means (fake vs real)
  loss.l1 = 50.0  # weight of L1(G(e), real face)
  loss.l1_low_pass = 1  # 1: per-pixel L1 (paper); k > 1: L1 of k x k block means (coarse only)
  loss.speaker_ce = 20.0  # weight of the auxiliary speaker cross-entropy
  # True (the authors' code): G's adversarial loss also trains the speech encoder through D's
  # speech-embedding input, so G can raise D's score by moving the condition instead of improving
  # the face; every D score then drifts up and the run diverges (docs/results.md). False: that
  # input is a constant for G (the encoder still learns from the adversarial loss via the face).
  loss.adversarial_into_encoder = False  # see above
  # LeCam regulariser weight (0 = off): D's real scores held under the running mean of its fake
  # scores and the fake scores over that of the real ones (Tseng et al. 2021; MAGVIT)
  loss.lecam = 0.0
  loss.lecam_decay = 0.99  # decay of those running means
  # fer's expression network in G's loss (0 = off; training/expression_loss.py)
  loss.expression = 0.0  # weight of KL(real face's expressions || generated face's)
  loss.expression_features = 0.0  # weight of MSE of fer's last features (a perceptual loss)
  loss.r1 = 0.0  # R1 penalty gamma/2 E|grad_x D(x, e)|^2 on real pairs (0 = off)
  # DiffAugment policy for every image D sees: "" | e.g. "color,translation,cutout"
  loss.diff_augment = ""

  config.log = log = ml_collections.ConfigDict()
  log.every_steps = 50  # scalars (losses, D scores, grad norms, steps/s) and a progress line
  log.image_every_steps = 500  # generated-vs-real face grid in TensorBoard
  log.num_images = 8  # faces per grid (generated over real; validation clips, speakers in turn)
  log.checkpoint_every_steps = 1_000  # checkpoint schedule (plus one at the end / on SIGTERM)
  log.max_checkpoints = 3  # checkpoints kept
  log.divergence_window = 200  # steps per window of the divergence signal (D loss and score drift)

  # Periodic evaluation during training (evaluate.py's metrics on the current G, process 0 only;
  # scalars "eval/<row>/<metric>" in TensorBoard). The same report: python -m wav2pix_jax.evaluate.
  config.eval = ev = ml_collections.ConfigDict()
  ev.every_steps = 1_000  # 0: off; also runs after the last step
  ev.max_examples = 64  # the first N examples of the split (records are in a fixed shuffled order)
  ev.split = ""  # "" = input.eval_split
  # the paper's dlib metrics (real faces only; a whole evaluation of 3 rows x 128 faces took 11-17 s
  # on 2 CPU cores, results/fast/train_log.txt)
  ev.dlib = True
  # real training faces per speaker: identity classifier, mean faces
  ev.reference_faces_per_speaker = 50
  # True: generate as the authors' predict() did (dropout on, BatchNorm batch statistics)
  ev.train_mode = False
  # keep <workdir>/best (what generate/evaluate/demo load by default): "identity" = the generated
  # row's identity accuracy (dlib's, else pixel), ties within 0.5 points by lower dlib FD; "": off
  ev.best_metric = "identity"
  return config
