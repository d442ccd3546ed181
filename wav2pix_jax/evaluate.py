"""The paper's evaluation: face detection, identity, Frechet distance and expressivity, with reference rows.

Library: `evaluate(...)` -> a JSON-able report, `write_report`, `save_grid`. Every metric is computed
by `face_metrics` (dlib only, no learned model of ours), for three rows:

- "generated": the model's faces from held-out speech;
- "real": the real held-out faces paired with that speech (the ceiling);
- "mean_face": each speaker's pixel-mean training face, i.e. a "model" that only knows who speaks.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from wav2pix_jax import face_metrics

REPORT_FILENAME = "report.json"

DEFINITIONS = {
    "face_detection_rate": (
        "share of images in which dlib's frontal face detector finds a face (the 68-point landmark "
        f"predictor then runs); images resized to {face_metrics.DETECTION_SIZE} px, "
        f"{face_metrics.UPSAMPLE} up-samplings"
    ),
    "identity": (
        "accuracy of a nearest-centroid speaker classifier, fitted on dlib 128-d embeddings of the real "
        "training faces, applied to each image (full image as face box where none is detected); chance = "
        "1 / num_speakers"
    ),
    "frechet_distance": (
        "Frechet distance between Gaussians fitted to the row's dlib embeddings and to the real training "
        "faces' embeddings (eps = 1e-6 on the covariance diagonals); lower is closer"
    ),
    "expressivity": (
        "inner-lip gap (landmarks 62-64 vs 68-66) / outer-eye-corner distance on detected faces, and its "
        "Pearson correlation with the RMS level (dB) of the raw speech clip"
    ),
}

ROW_DESCRIPTIONS = {
    "generated": "faces generated from held-out speech",
    "real": "real held-out faces paired with that speech (ceiling)",
    "mean_face": "each speaker's pixel-mean training face (a model that only knows who is speaking)",
}


def _resize_batch(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a uint8 batch to (H, W); a no-op where the size already matches."""
    if images.shape[1:3] == size:
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize(size[::-1], Image.BICUBIC)) for im in images])


def mean_faces(train_real: np.ndarray, train_speakers: np.ndarray, num_speakers: int) -> np.ndarray:
    """uint8 [num_speakers, H, W, 3]: the pixel-mean training face of each speaker."""
    train_speakers = np.asarray(train_speakers)
    means = []
    for s in range(num_speakers):
        faces = train_real[train_speakers == s]
        if not len(faces):
            raise ValueError(f"speaker {s} has no training faces: cannot build its mean face")
        means.append(np.clip(np.round(faces.astype(np.float64).mean(0)), 0, 255).astype(np.uint8))
    return np.stack(means)


def _row(
    analysis: face_metrics.FaceAnalysis,
    *,
    speakers: np.ndarray,
    loudness: np.ndarray | None,
    classifier: face_metrics.CentroidClassifier,
    reference_embeddings: np.ndarray,
    speaker_names: Sequence[str],
    description: str,
) -> dict:
    identity = face_metrics.identity_accuracy(classifier.predict(analysis.embeddings), speakers, speaker_names)
    for c, row in enumerate(identity["per_speaker"]):
        mask = speakers == c
        row["face_detection_rate"] = float(analysis.detected[mask].mean()) if mask.any() else None
    n = len(speakers)
    return {
        "description": description,
        "num_images": n,
        "face_detection_rate": analysis.detection_rate,
        "identity": identity,
        "frechet_distance": (
            face_metrics.frechet_distance(analysis.embeddings, reference_embeddings) if n >= 2 else None
        ),
        "expressivity": None if loudness is None else face_metrics.expressivity(analysis, loudness),
    }


def evaluate(
    *,
    generated: np.ndarray,
    real: np.ndarray,
    speakers: np.ndarray,
    loudness: np.ndarray | None,
    train_real: np.ndarray,
    train_speakers: np.ndarray,
    speaker_names: Sequence[str],
) -> dict:
    """The evaluation report (JSON-able): one row each for generated, real and mean-face images.

    generated: uint8 [N, S, S, 3] faces from held-out speech; real: uint8 [N, H, W, 3] the paired
    real faces (resized to S); speakers: int [N]; loudness: [N] RMS dB of each raw clip (or None to
    skip expressivity); train_real / train_speakers: real training faces and their speakers, for
    the identity classifier, the Frechet reference set and the mean faces.
    """
    generated = face_metrics.check_images(generated, "generated")
    real = face_metrics.check_images(real, "real")
    train_real = face_metrics.check_images(train_real, "train_real")
    speakers = np.asarray(speakers).astype(np.int64)
    train_speakers = np.asarray(train_speakers).astype(np.int64)
    num_speakers = len(speaker_names)
    n = generated.shape[0]
    if real.shape[0] != n or speakers.shape != (n,):
        raise ValueError(f"generated ({n}), real ({real.shape[0]}) and speakers {speakers.shape} must align")
    if train_speakers.shape != (train_real.shape[0],):
        raise ValueError(f"train_speakers {train_speakers.shape} must have one entry per train_real face")
    for name, labels in (("speakers", speakers), ("train_speakers", train_speakers)):
        if labels.min() < 0 or labels.max() >= num_speakers:
            raise ValueError(f"{name} must lie in [0, {num_speakers}) for {num_speakers} speaker_names")
    if loudness is not None:
        loudness = np.asarray(loudness, np.float64)
        if loudness.shape != (n,):
            raise ValueError(f"loudness {loudness.shape} must have one value per generated image ({n})")

    size = generated.shape[1:3]
    train_analysis = face_metrics.analyze_faces(train_real)
    classifier = face_metrics.fit_identity_classifier(train_analysis.embeddings, train_speakers, num_speakers)
    # One analysis per speaker's mean face, then indexed: identical to analysing the N repeated images.
    mean_analysis = face_metrics.analyze_faces(
        _resize_batch(mean_faces(train_real, train_speakers, num_speakers), size)
    )
    mean_analysis = face_metrics.FaceAnalysis(
        detected=mean_analysis.detected[speakers],
        boxes=mean_analysis.boxes[speakers],
        landmarks=mean_analysis.landmarks[speakers],
        embeddings=mean_analysis.embeddings[speakers],
    )
    analyses = {
        "generated": face_metrics.analyze_faces(generated),
        "real": face_metrics.analyze_faces(_resize_batch(real, size)),
        "mean_face": mean_analysis,
    }
    common = dict(
        speakers=speakers,
        loudness=loudness,
        classifier=classifier,
        reference_embeddings=train_analysis.embeddings,
        speaker_names=speaker_names,
    )
    return {
        "definitions": DEFINITIONS,
        "settings": {
            "image_size": list(size),
            "detection_size": face_metrics.DETECTION_SIZE,
            "detector_upsample": face_metrics.UPSAMPLE,
            "embedding": "dlib_face_recognition_resnet_model_v1 (128-d)",
            "classifier": "nearest class centroid, Euclidean",
            "frechet_reference": "real training faces",
            "num_train_faces": int(train_real.shape[0]),
            "train_face_detection_rate": train_analysis.detection_rate,
        },
        "speaker_names": list(speaker_names),
        "num_examples": n,
        "rows": {
            name: _row(analysis, description=ROW_DESCRIPTIONS[name], **common)
            for name, analysis in analyses.items()
        },
    }


def write_report(report: dict, out_dir: str | os.PathLike) -> pathlib.Path:
    """Writes `report` as out_dir/report.json (atomically: no half-written file) and returns its path."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILENAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def save_grid(
    path: str | os.PathLike,
    *,
    real: np.ndarray,
    generated: np.ndarray,
    speakers: np.ndarray,
    speaker_names: Sequence[str],
    per_speaker: int = 8,
    gap: int = 4,
) -> pathlib.Path:
    """PNG grid: one band per speaker (name on top), each cell a real face next to its generated face."""
    generated = face_metrics.check_images(generated, "generated")
    size = generated.shape[1]
    real = _resize_batch(face_metrics.check_images(real, "real"), generated.shape[1:3])
    speakers = np.asarray(speakers)
    if not (real.shape[0] == generated.shape[0] == speakers.shape[0]):
        raise ValueError("real, generated and speakers must have the same length")
    present = [s for s in range(len(speaker_names)) if np.any(speakers == s)]
    label_h, cell_w = 14, 2 * size + gap
    cols = min(per_speaker, max(int(np.sum(speakers == s)) for s in present))
    width = cols * cell_w + (cols + 1) * gap
    height = len(present) * (label_h + size + gap) + gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = gap
    for s in present:
        draw.text((gap, y), str(speaker_names[s]), fill=(0, 0, 0))
        y += label_h
        for j, i in enumerate(np.flatnonzero(speakers == s)[:per_speaker]):
            x = gap + j * (cell_w + gap)
            canvas.paste(Image.fromarray(real[i]), (x, y))
            canvas.paste(Image.fromarray(generated[i]), (x + size + gap, y))
        y += size + gap
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


# ----------------------------------------------------------------------------- workdir evaluation / CLI


def _centred(waveform: np.ndarray, window: int) -> np.ndarray:
    """The centred `window` of a clip: the samples the model sees in evaluation (audio.preprocess)."""
    start = max(0, (waveform.shape[0] - window) // 2)
    return waveform[start:start + window]


def _train_faces(input_cfg, info, *, image_size: int, per_speaker: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `per_speaker` real faces per speaker, evenly spaced over the train split (uint8 RGB)."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    from wav2pix_jax import inference  # pylint: disable=g-import-not-at-top
    from wav2pix_jax import input_pipeline  # pylint: disable=g-import-not-at-top

    split = input_cfg.get("train_split", "train")
    source = tfds.data_source(info.name, split=split, data_dir=info.data_dir,
                              decoders={"face": tfds.decode.SkipDecoding()})
    speakers = np.array([int(source[i]["speaker"]) for i in range(len(source))], np.int64)
    keys = []
    for s in range(info.num_speakers):
        own = np.flatnonzero(speakers == s)
        if own.size == 0:
            raise ValueError(f"speaker {info.speaker_names[s]!r} has no faces in split {split!r}: "
                             "the identity classifier needs real faces of every speaker")
        keys.extend(own[np.unique(np.linspace(0, own.size - 1, min(per_speaker, own.size)).round().astype(int))])
    faces = np.stack([
        inference.to_uint8(input_pipeline.decode_face(source[int(k)]["face"], image_size)) for k in keys])
    return faces, speakers[keys]


def evaluate_workdir(
    workdir: str,
    *,
    split: str = "test",
    out_dir: str | os.PathLike,
    step: int | None = None,
    max_examples: int | None = None,
    batch_size: int = 32,
    train_faces_per_speaker: int = 100,
    data_dir: str | None = None,
    grid_per_speaker: int = 8,
) -> dict:
    """Generates faces for `split` with a trained workdir's generator, evaluates, writes report + grid."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    from wav2pix_jax import inference  # pylint: disable=g-import-not-at-top
    from wav2pix_jax import input_pipeline  # pylint: disable=g-import-not-at-top

    try:
        generator = inference.load(workdir, step, batch_size=batch_size)
    except (AttributeError, KeyError, TypeError) as e:
        # A hand-edited config.json (a list, a missing section, a key like "__reduce__").
        raise ValueError(f"{workdir}: config.json does not describe a model ({type(e).__name__}: {e})") from None
    config = generator.config
    input_cfg = config.input
    if data_dir is not None:
        input_cfg = _with_overrides(input_cfg, data_dir=data_dir)
    info = input_pipeline.get_dataset_info(input_cfg)
    if info.num_speakers != generator.num_speakers or (
            generator.speaker_names and tuple(generator.speaker_names) != tuple(info.speaker_names)):
        raise ValueError(f"the checkpoint was trained on speakers {generator.speaker_names} "
                         f"({generator.num_speakers}) but dataset {info.name!r} has {list(info.speaker_names)}")
    size = generator.image_size

    generated, real, speakers = [], [], []
    for batch in input_pipeline.create_eval_iterator(
            input_cfg, split=split, batch_size=batch_size, image_size=size, max_examples=max_examples,
            process_index=0, process_count=1):
        mask = np.asarray(batch["mask"], bool)
        if not mask.any():
            continue
        generated.append(generator.generate_preprocessed(batch["waveform"][mask]))
        real.append(inference.to_uint8(batch["face"][mask]))
        speakers.append(np.asarray(batch["speaker"])[mask])
    generated, real, speakers = np.concatenate(generated), np.concatenate(real), np.concatenate(speakers)

    # Loudness of the raw (not peak-normalised) window the model heard; the eval iterator reads
    # records in order, so record i is example i.
    source = tfds.data_source(info.name, split=split, data_dir=info.data_dir,
                              decoders={"face": tfds.decode.SkipDecoding()})
    loudness = face_metrics.loudness_db(
        [_centred(np.asarray(source[i]["waveform"]), generator.window) for i in range(len(generated))])

    train_real, train_speakers = _train_faces(input_cfg, info, image_size=size,
                                              per_speaker=train_faces_per_speaker)
    report = evaluate(generated=generated, real=real, speakers=speakers, loudness=loudness,
                      train_real=train_real, train_speakers=train_speakers,
                      speaker_names=list(info.speaker_names))
    report["run"] = {
        "workdir": os.path.abspath(os.path.expanduser(str(workdir))),
        "step": generator.step,
        "dataset": info.name,
        "split": split,
        "train_faces_per_speaker": train_faces_per_speaker,
    }
    write_report(report, out_dir)
    save_grid(pathlib.Path(out_dir) / "grid.png", real=real, generated=generated, speakers=speakers,
              speaker_names=list(info.speaker_names), per_speaker=grid_per_speaker)
    return report


def _with_overrides(cfg, **overrides):
    """A copy of a ConfigDict section with some fields replaced."""
    cfg = cfg.copy_and_resolve_references()
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def summary(report: dict) -> str:
    """A few readable lines: one per row."""
    lines = [f"{report['num_examples']} examples, {len(report['speaker_names'])} speakers "
             f"(identity chance {1 / len(report['speaker_names']):.1%})"]
    for name, row in report["rows"].items():
        fd = row["frechet_distance"]
        corr = (row["expressivity"] or {}).get("loudness_correlation")
        lines.append(
            f"{name:>10}: detection {row['face_detection_rate']:.1%}  identity {row['identity']['accuracy']:.1%}  "
            f"FD {'n/a' if fd is None else f'{fd:.3f}'}  mouth~loudness r "
            f"{'n/a' if corr is None else f'{corr:+.2f}'}")
    return "\n".join(lines)


def _parser():
    import argparse  # pylint: disable=g-import-not-at-top

    parser = argparse.ArgumentParser(
        prog="wav2pix-evaluate", description="The paper's metrics for a trained Wav2Pix workdir.")
    parser.add_argument("--workdir", required=True, help="training workdir (or its checkpoints/ dir)")
    parser.add_argument("--split", default="test", help="dataset split to evaluate (default: test)")
    parser.add_argument("--out", required=True, help="output folder for report.json and grid.png")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--max_examples", type=int, default=None, help="evaluate only the first N examples")
    parser.add_argument("--batch_size", type=int, default=32, help="waveforms per generator call")
    parser.add_argument("--train_faces_per_speaker", type=int, default=100,
                        help="real training faces per speaker for the identity classifier / FD reference")
    parser.add_argument("--data_dir", default=None, help="override config.input.data_dir")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: evaluate, print a summary; errors as one line on stderr and exit status 1."""
    import sys  # pylint: disable=g-import-not-at-top

    args = _parser().parse_args(argv)
    for name in ("max_examples", "batch_size", "train_faces_per_speaker"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"wav2pix-evaluate: error: --{name} must be a positive integer, got {value}", file=sys.stderr)
            return 2
    try:
        report = evaluate_workdir(args.workdir, split=args.split, out_dir=args.out, step=args.step,
                                  max_examples=args.max_examples, batch_size=args.batch_size,
                                  train_faces_per_speaker=args.train_faces_per_speaker, data_dir=args.data_dir)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"wav2pix-evaluate: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    print(summary(report))
    print(f"report: {pathlib.Path(args.out) / REPORT_FILENAME}")
    return 0


def run() -> None:
    """Console-script entry point (wav2pix-evaluate)."""
    raise SystemExit(main())


if __name__ == "__main__":
    run()
