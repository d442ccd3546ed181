"""The Beam build of `wav2pix_videos`: one video per element, PyAV and dlib inside the workers.

The builder calls `build_splits` when TFDS is given Beam options (`tfds build data_prep/videos
--beam_pipeline_options=...`, or `python -m data_prep.videos.build --beam_pipeline_options=...`):

    ListVideos, Reshuffle -> ExtractVideos (PyAV + dlib): records (key, (meta, record)) and one
    VideoSummary per video -> metas grouped by speaker -> Carve (the validation split, per
    speaker): (key, split) and one SpeakerSplit per speaker -> CoGroupByKey(records, splits)
    -> Route: (key, features) on the "train" / "validation" outputs, which TFDS writes;
    VideoSummary + SpeakerSplit -> CombineGlobally(ReportCounts) -> WriteReport.

Only record metadata is grouped by speaker (the validation carve needs each speaker's records in
time order), so a speaker's waveforms and faces never have to fit in one worker's memory. The
report is summed from one `VideoSummary` per video and one `SpeakerSplit` per speaker with the
same `ReportCounts` as the single-process build, and written by the pipeline; Beam counters in
the "wav2pix_videos" namespace show progress while it runs (Dataflow, Flink and Spark UIs).
Workers import this module and `extract` / `records` by name: the package must be installed
there (see README).
"""

import json
import logging
import pathlib
import time

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from etils import epath

from data_prep.videos import extract
from data_prep.videos import records

NAMESPACE = "wav2pix_videos"
_SUMMARY = "summary"
_SPEAKER_SPLIT = "speaker_split"


class _ExtractVideos(beam.DoFn):
  """(number, speaker, clip_id, path) -> (key, (RecordMeta, Record)) per record + its summary."""

  def __init__(self, options: extract.ExtractOptions):
    self._options = options
    self._detector = None
    self._counters = {}

  def setup(self):
    # One detector per worker instance: building it is not cheap, and it is not picklable.
    self._detector = extract.face_detector()
    names = (
        "videos_read",
        "videos_failed",
        "frames_sampled",
        "faces_found",
        *(f"dropped_{reason}" for reason in extract.FRAME_DROP_REASONS),
    )
    self._counters = {name: Metrics.counter(NAMESPACE, name) for name in names}
    # Milliseconds per video in the worker, for throughput figures (videos/s per worker).
    self._extract_ms = Metrics.distribution(NAMESPACE, "extract_ms")

  def process(self, video):
    number, speaker, clip_id, path = video
    started = time.perf_counter()
    result = extract.extract_video(pathlib.Path(path), self._options, self._detector)
    self._extract_ms.update(int(round(1000 * (time.perf_counter() - started))))
    summary = records.VideoSummary.of(number, speaker, clip_id, result)
    if result.failure:  # in the worker's log, as the single-process build logs it
      logging.warning("skipping %s (%s): %s", clip_id, result.failure, result.error)
    self._counters["videos_failed" if result.failure else "videos_read"].inc()
    self._counters["frames_sampled"].inc(result.frames_sampled)
    self._counters["faces_found"].inc(len(result.records))
    for reason, count in result.dropped.items():
      self._counters[f"dropped_{reason}"].inc(count)
    yield beam.pvalue.TaggedOutput(_SUMMARY, summary)
    for record in result.records:
      meta = records.RecordMeta(speaker, clip_id, record.frame_ms, record.window_ms)
      yield meta.key, (meta, record)


def _carve(speaker_metas, validation_fraction: float):
  """One speaker's metas -> (key, split) of each kept record, and its SpeakerSplit."""
  speaker, metas = speaker_metas
  train, validation, dropped = records.carve_speaker(list(metas), validation_fraction)
  for split, metas_of_split in (("train", train), ("validation", validation)):
    for meta in metas_of_split:
      yield meta.key, split
  yield beam.pvalue.TaggedOutput(
      _SPEAKER_SPLIT, records.SpeakerSplit(speaker, len(train), len(validation), dropped)
  )


def _route(key_groups):
  """A record and its split (none: dropped by the carve) -> (key, features) on that split."""
  key, groups = key_groups
  splits, found = list(groups["split"]), list(groups["record"])
  if len(splits) > 1 or len(found) != 1:
    raise ValueError(f"record key {key!r} is not unique: {len(found)} records, splits {splits}")
  if not splits:
    return
  meta, record = found[0]
  yield beam.pvalue.TaggedOutput(
      splits[0],
      records.example(
          meta.speaker,
          meta.clip_id,
          record.frame_ms,
          record.face_box,
          record.waveform,
          record.face_jpeg,
      ),
  )


class _SumReport(beam.CombineFn):
  """Sums VideoSummary and SpeakerSplit items into one ReportCounts."""

  def create_accumulator(self):
    return records.ReportCounts()

  def add_input(self, accumulator, item):
    accumulator.add(item)
    return accumulator

  def merge_accumulators(self, accumulators):
    accumulators = iter(accumulators)
    merged = next(accumulators)
    for accumulator in accumulators:
      merged.merge(accumulator)
    return merged

  def extract_output(self, accumulator):
    return accumulator


def _write_report(counts: records.ReportCounts, header: dict, path: str, started: float) -> dict:
  report = counts.report(**header, seconds=time.time() - started)
  epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
  epath.Path(path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
  return report


def build_splits(
    pipeline: beam.Pipeline,
    videos: list[tuple[int, str, str, str]],
    *,
    options: extract.ExtractOptions,
    validation_fraction: float,
    report_header: dict,
    report_path: str,
    started: float,
) -> dict[str, beam.PCollection]:
  """{split: PCollection of (key, features)} of `videos`; the report goes to `report_path`.

  `videos` are (number, speaker, clip_id, path) in build order; `report_header` holds the
  `ReportCounts.report` fields other than the counts and `seconds`.
  """
  extracted = (
      pipeline
      | "ListVideos" >> beam.Create(videos)
      # Without it a runner may fuse the listing with the extraction and run it on one worker.
      | "SpreadVideos" >> beam.Reshuffle()
      | "ExtractVideos"
      >> beam.ParDo(_ExtractVideos(options)).with_outputs(_SUMMARY, main="records")
  )
  found = extracted.records
  carved = (
      found
      | "MetaBySpeaker"
      >> beam.MapTuple(lambda key, meta_record: (meta_record[0].speaker, meta_record[0]))
      | "GroupBySpeaker" >> beam.GroupByKey()
      | "Carve"
      >> beam.FlatMap(_carve, validation_fraction).with_outputs(_SPEAKER_SPLIT, main="assignments")
  )
  routed = (
      {"record": found, "split": carved.assignments}
      | "JoinSplit" >> beam.CoGroupByKey()
      | "Route" >> beam.FlatMap(_route).with_outputs("train", "validation")
  )
  _ = (
      (extracted[_SUMMARY], carved[_SPEAKER_SPLIT])
      | "ReportItems" >> beam.Flatten()
      | "SumReport" >> beam.CombineGlobally(_SumReport())
      | "WriteReport" >> beam.Map(_write_report, report_header, report_path, started)
  )
  splits = {"train": routed.train}
  # Splits are declared before any video is read: with a fraction > 0, validation is empty only
  # when no speaker gave two records, and the build then fails (the single-process build leaves
  # the split out); the builder turns TFDS's error into one that says so.
  if validation_fraction > 0:
    splits["validation"] = routed.validation
  return splits


def metrics(pipeline_result) -> tuple[dict[str, int], dict[str, dict]]:
  """The build's Beam metrics: ({counter: value}, {distribution: {count, mean, min, max}}).

  Committed values, or attempted ones where a runner does not commit metrics.
  """
  query = pipeline_result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
  counters, distributions = {}, {}
  for result in query["counters"]:
    value = result.committed if result.committed is not None else result.attempted
    counters[result.key.metric.name] = counters.get(result.key.metric.name, 0) + value
  for result in query["distributions"]:
    value = result.committed if result.committed is not None else result.attempted
    if value is not None and value.count:
      distributions[result.key.metric.name] = {
          "count": value.count,
          "mean": round(value.sum / value.count, 1),
          "min": value.min,
          "max": value.max,
      }
  return counters, distributions
