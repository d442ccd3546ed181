"""Smoke test of the speed harness (benchmarks/): tiny config, one timed step, a fake reference."""

import json
import sys
import textwrap

import jax
import pytest

from benchmarks import rows as rows_lib
from benchmarks import run, timing

# Prints what wav2pix_torch_ref.py prints (one JSON line), without torch.
_FAKE_REFERENCE = textwrap.dedent("""
    import json, sys
    args = sys.argv[1:]
    batch = int(args[args.index("--batch") + 1])
    ms = [100.0, 110.0, 90.0]
    stats = {"n": 3, "ms_min": 90.0, "ms_median": 100.0, "ms_max": 110.0,
             "samples_per_s_median": batch / 0.1, "samples_per_s_best": batch / 0.09,
             "gflops_per_s_median": 1.0, "gflops_per_s_best": 1.1, "cpu_util_median": 2.0}
    print("noise before the result")
    print(json.dumps({"impl": "torch-ref", "mode": args[args.index("--mode") + 1],
                      "detach_in_d": "--detach-in-d" in args, "gflop_per_iter": 0.1,
                      "all": stats, "clean": stats, "all_ms": ms,
                      "all_other_cores": [0.0, 0.0, 0.0]}))
""")


def test_parse_row_round_trips_and_rejects_bad_names():
  for name in ("train-64-b64-subpixel", "generate-128-b1-xla-bf16", "pipeline-64-b64-w2",
               "phases-64-b16", "peak"):
    assert rows_lib.parse_row(name).name == name
  row = rows_lib.parse_row("train-128-b16-xla")
  assert (row.kind, row.image_size, row.batch, row.conv_impl) == ("train", 128, 16, "xla")
  for bad in ("train-32-b64", "train-64-64", "fly-64-b1", "generate-64-b1-fast", "peak-1"):
    with pytest.raises(ValueError, match="bad row name"):
      rows_lib.parse_row(bad)


def test_select_rows_globs_over_defaults():
  rows = rows_lib.select_rows("train-64-*,peak")
  assert [r.name for r in rows] == [n for n in rows_lib.DEFAULT_ROWS if n.startswith("train-64-")] + ["peak"]
  with pytest.raises(ValueError, match="matches no default row"):
    rows_lib.select_rows("nothing-*")


def test_schedule_interleaves_one_reference_run_per_group_and_variant():
  rows = rows_lib.select_rows("train-64-b16-xla,train-64-b16-subpixel,generate-64-b1-xla,pipeline-64-b64")
  order = rows_lib.schedule(rows, ["authors", "detach"])
  names = [(impl, item.name if impl == "jax" else (item[0].group, item[1])) for impl, item in order]
  assert names == [
      ("jax", "train-64-b16-xla"), ("torch", (("train", 64, 16), "authors")),
      ("jax", "train-64-b16-subpixel"), ("torch", (("train", 64, 16), "detach")),
      # the next group starts with the reference; --detach-in-d is only for training
      ("torch", (("generate", 64, 1), "authors")), ("jax", "generate-64-b1-xla"),
      ("jax", "pipeline-64-b64"),
  ]


def test_time_calls_keeps_load_per_sample():
  samples = timing.time_calls(lambda: sum(range(1000)), steps=3, warmup=1, inner=2)
  assert len(samples.wall_s) >= 3 and len(samples.other_cores) == len(samples.wall_s)
  res = timing.summarize(samples, batch=4, flops=1e6)
  assert res["all"]["ms_min"] <= res["all"]["ms_median"] <= res["all"]["ms_max"]
  assert timing.headline(res)["n"] >= 1


@pytest.fixture
def fast_compile():
  """XLA without its optimisation passes: the smoke test checks the harness, not the speed."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def test_run_tiny_config_end_to_end(tmp_path, capsys, fast_compile):
  fake_ref = tmp_path / "wav2pix_torch_ref.py"
  fake_ref.write_text(_FAKE_REFERENCE)
  out = tmp_path / "bench.json"
  rc = run.main([
      "--config=configs/tiny.py", "--rows=train-64-b4-subpixel,generate-64-b2-xla,pipeline-64-b4",
      "--steps=1", "--gen-steps=1", "--warmup=0", "--gen-inner=1", "--pipeline-steps=1",
      f"--data-dir={tmp_path / 'no_data'}", f"--torch-python={sys.executable}",
      f"--torch-ref={tmp_path}", "--torch-variants=authors", f"--out={out}"])
  assert rc == 0
  printed = capsys.readouterr().out
  assert "| train-64-b4-subpixel jax |" in printed and "torch/JAX" in printed

  result = json.loads(out.read_text())
  by_name = {(r["name"], r["impl"]): r for r in result["rows"]}
  train = by_name[("train-64-b4-subpixel", "jax")]
  assert "error" not in train, train.get("traceback")
  assert train["finite"] and train["conv_impl"] == "subpixel"
  assert train["flops_per_iter"] > 0 and train["compile_s"] > 0
  assert train["all"]["n"] >= 1 and len(train["all_other_cores"]) == train["all"]["n"]
  gen = by_name[("generate-64-b2-xla", "jax")]
  assert "error" not in gen, gen.get("traceback")
  assert gen["out_shape"] == [2, 64, 64, 3] and gen["finite"]
  assert "skipped" in by_name[("pipeline-64-b4", "jax")]
  ref = by_name[("train-64-b4", "torch")]
  assert ref["variant"] == "authors" and ref["all"]["ms_median"] == 100.0
  assert {q["row"] for q in result["ratios"]} == {"train-64-b4-subpixel", "generate-64-b2-xla"}
  assert result["meta"]["loadavg_start"] is not None
