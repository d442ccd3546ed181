"""Per-layer conv micro-benchmark: every conv of the three networks at the training shapes,
each conv_impl, forward and forward+backward (gradients w.r.t. kernel AND input), interleaved.

    .venv/bin/python -m benchmarks.conv_layers                     # all layers, xla/subpixel/matmul
    .venv/bin/python -m benchmarks.conv_layers --layers='D*' --rounds=7 --modes=fwdbwd
    .venv/bin/python -m benchmarks.conv_layers --impls=xla,matmul,matmul_full --out=conv.json

Shapes: batch 64 for G and the encoder (one g_update), 3 x 64 for D (d_update scores real, fake
and wrong faces in one call). The pure conv functions of `wav2pix_jax.models.conv_impls` are
timed (no spectral norm, no activation). All variants are compiled first, then timed round-robin
(layer-major, impl and mode inner), so load changes on a shared machine hit every variant
alike; the table shows medians over rounds. GFLOP/s use the NOMINAL FLOPs of the direct conv
(2 * outputs * k*k*cin for a conv, 2 * inputs * k*k*cout for a transposed conv; 3x that for
fwd+bwd), the same count for every impl, so GFLOP/s compare like times do.

Benchmark-only variants: `matmul_phase`, the transposed conv per output phase (input patches of
that phase's 2x2 taps @ matrix); `matmul_full`, the transposed conv as ONE matmul with the 3x3
subpixel kernel ([B*H*W, 9*cin] x [9*cin, 4*cout], 2.25x the FLOPs); `matmul_out`, the strided
convs output side (Y = x @ [C, taps*N], then a sum of shifted slices of Y), the form that
"matmul" uses for the transposed conv (col2im).
"""

from __future__ import annotations

import fnmatch
import json
import statistics
import sys
import time
from typing import Callable, NamedTuple, Sequence

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import LoadMeter, loadavg
from wav2pix_jax import cli
from wav2pix_jax.models import conv_impls
from wav2pix_jax.models import layers

PROG = "benchmarks.conv_layers"
# The tool's own flags (not absl's global FLAGS: see wav2pix_jax/cli.py).
FLAGS = flags.FlagValues()
flags.DEFINE_string("layers", "*", "Comma-separated globs over layer names.", flag_values=FLAGS)
flags.DEFINE_string(
    "impls", "xla,subpixel,matmul", "Comma-separated conv_impls.", flag_values=FLAGS
)
flags.DEFINE_string("modes", "fwd,fwdbwd", "Comma-separated: fwd, fwdbwd.", flag_values=FLAGS)
flags.DEFINE_integer("rounds", 5, "Timed rounds over every variant.", flag_values=FLAGS)
flags.DEFINE_integer("batch", 64, "Batch size (D: 3 x batch).", flag_values=FLAGS)
flags.DEFINE_integer("image-size", 64, "Image size of the networks.", flag_values=FLAGS)
flags.DEFINE_string("out", "", "JSON file for all samples.", flag_values=FLAGS)


class Layer(NamedTuple):
  name: str
  kind: str  # "convT" | "conv" | "conv1d"
  x_shape: tuple[int, ...]
  k_shape: tuple[int, ...]
  stride: int
  padding: object


def default_layers(batch: int = 64, image_size: int = 64, audio: int = 16000) -> list[Layer]:
  """The conv layers of the paper's model (configs/base.py) at the training shapes."""
  out: list[Layer] = []
  # Speech encoder: Conv1d k15 s4 pad (6, 7), channels (16, 32, 128, 256, 512, 1024).
  t, cin = audio, 1
  for i, ch in enumerate((16, 32, 128, 256, 512, 1024)):
    out.append(Layer(f"E{i} {t}x{cin}->{ch}", "conv1d", (batch, t, cin), (15, cin, ch), 4, (6, 7)))
    t = layers.conv1d_output_length(t, kernel_size=15, stride=4, padding=(6, 7))
    cin = ch
  # Generator: 1x1x128 -> 4x4 (s1 p0) -> stride-2 doublings -> image.
  num_up = int(np.log2(image_size // 4))
  widths = [64 * 2 ** (num_up - 1 - i) for i in range(num_up)] + [3]
  s, cin = 1, 128
  for i, w in enumerate(widths):
    first = i == 0
    out.append(
        Layer(
            f"G{i} {s}x{s}x{cin}->{w}",
            "convT",
            (batch, s, s, cin),
            (4, 4, cin, w),
            1 if first else 2,
            0 if first else 1,
        )
    )
    s = 4 if first else 2 * s
    cin = w
  # Discriminator: stride-2 convs on 3 x batch images.
  s, cin = image_size, 3
  for i in range(num_up):
    w = 64 * 2**i
    out.append(
        Layer(f"D{i} {s}x{s}x{cin}->{w}", "conv", (3 * batch, s, s, cin), (4, 4, cin, w), 2, 1)
    )
    s //= 2
    cin = w
  return out


def conv_transpose_matmul_phase(x, kernel, *, stride, padding):
  """Transposed conv per output phase: only that phase's kernel taps, input patches @ matrix."""
  k, _, cin, cout = kernel.shape
  b, h, w, _ = x.shape
  if (h == 1 and w == 1) or stride == 1:
    return conv_impls.conv_transpose_matmul(x, kernel, stride=stride, padding=padding)
  out_h = (h - 1) * stride + k - 2 * padding
  out_w = (w - 1) * stride + k - 2 * padding
  lo, hi, table = conv_impls._subpixel_kernel_taps(k, stride, padding)
  m_h, m_w = -(-out_h // stride), -(-out_w // stride)
  xp = conv_impls._pad_or_crop(x, [(lo, hi + m_h - h), (lo, hi + m_w - w)])
  rows = []
  for ry in range(stride):
    cols = []
    for rx in range(stride):
      ty = [t for t, kk in enumerate(table[ry]) if kk >= 0]
      tx = [t for t, kk in enumerate(table[rx]) if kk >= 0]
      p = conv_impls._stack_channels([xp[:, a : a + m_h, c : c + m_w] for a in ty for c in tx])
      mat = jnp.concatenate([kernel[table[ry][a], table[rx][c]] for a in ty for c in tx])
      cols.append(conv_impls._matmul_last(p, mat))
    rows.append(jnp.stack(cols, axis=3))
  y = jnp.stack(rows, axis=2)
  return y.reshape(b, m_h * stride, m_w * stride, cout)[:, :out_h, :out_w]


def conv_transpose_matmul_full(x, kernel, *, stride, padding):
  """Transposed conv as one matmul with the full subpixel kernel, then depth-to-space."""
  k = kernel.shape[0]
  if stride == 1:
    return conv_impls.conv_transpose_matmul(x, kernel, stride=stride, padding=padding)
  lo, hi, _ = conv_impls._subpixel_kernel_taps(k, stride, padding)
  sub = conv_impls.subpixel_transpose_kernel(kernel, stride=stride, padding=padding)
  h, w = x.shape[1:3]
  out_h = (h - 1) * stride + k - 2 * padding
  out_w = (w - 1) * stride + k - 2 * padding
  m_h, m_w = -(-out_h // stride), -(-out_w // stride)
  xp = conv_impls._pad_or_crop(x, [(lo, hi + m_h - h), (lo, hi + m_w - w)])
  y = conv_impls._valid_conv_matmul(xp, sub)
  return conv_impls.depth_to_space(y, stride)[:, :out_h, :out_w]


def _valid_conv_matmul_out(x, kernel):
  """Stride-1 VALID correlation, output side: Y = x @ [C, taps*N], then a sum of shifted
  slices of Y (col2im); the matmul runs on x itself, nothing input-sized is materialised."""
  taps = kernel.shape[:-2]
  c, n = kernel.shape[-2:]
  nd = len(taps)
  out = tuple(s - t + 1 for s, t in zip(x.shape[1:-1], taps))
  w = jnp.moveaxis(kernel, -2, 0).reshape(c, -1)
  y = conv_impls._matmul_last(x, w).reshape(*x.shape[:-1], *taps, n)
  acc = None
  for offs in conv_impls._tap_offsets(taps):
    idx = (slice(None),) + tuple(slice(t, t + o) for t, o in zip(offs, out)) + offs
    acc = y[idx] if acc is None else acc + y[idx]
  return acc


def conv_matmul_out(x, kernel, *, stride, padding):
  k = kernel.shape[0]
  h, w = x.shape[1:3]
  out_h = (h + 2 * padding - k) // stride + 1
  out_w = (w + 2 * padding - k) // stride + 1
  a = -(-k // stride)
  need_h, need_w = stride * (out_h + a - 1), stride * (out_w + a - 1)
  xp = conv_impls._pad_or_crop(
      x, [(padding, need_h - h - padding), (padding, need_w - w - padding)]
  )
  z = conv_impls.space_to_depth(xp, stride) if stride > 1 else xp
  return _valid_conv_matmul_out(z, conv_impls.subpixel_conv_kernel(kernel, stride=stride))


def conv1d_matmul_out(x, kernel, *, stride, padding):
  k, cin, cout = kernel.shape
  b, t, _ = x.shape
  out_t = (t + padding[0] + padding[1] - k) // stride + 1
  a = -(-k // stride)
  need = stride * (out_t + a - 1)
  xp = conv_impls._pad_or_crop(x, [(padding[0], need - t - padding[0])])
  z = xp.reshape(b, need // stride, stride * cin)
  sub = jnp.pad(kernel, ((0, a * stride - k), (0, 0), (0, 0))).reshape(a, stride * cin, cout)
  return _valid_conv_matmul_out(z, sub)


IMPLS: dict[str, dict[str, Callable]] = {
    "xla": {
        "convT": conv_impls.conv_transpose_xla,
        "conv": conv_impls.conv_xla,
        "conv1d": conv_impls.conv1d_xla,
    },
    "subpixel": {
        "convT": conv_impls.conv_transpose_subpixel,
        "conv": conv_impls.conv_subpixel,
        "conv1d": conv_impls.conv1d_subpixel,
    },
    "matmul": {
        "convT": conv_impls.conv_transpose_matmul,
        "conv": conv_impls.conv_matmul,
        "conv1d": conv_impls.conv1d_matmul,
    },
    "matmul_phase": {"convT": conv_transpose_matmul_phase},
    "matmul_full": {"convT": conv_transpose_matmul_full},
    # Output side (col2im) for the strided convs too; "matmul" already is col2im for convT.
    "matmul_out": {"conv": conv_matmul_out, "conv1d": conv1d_matmul_out},
}


def nominal_flops(layer: Layer, out_shape: tuple[int, ...]) -> float:
  """Direct-conv FLOPs of the forward pass (multiply-adds x 2), whatever the impl."""
  if layer.kind == "convT":
    k, _, cin, cout = layer.k_shape
    return 2.0 * np.prod(layer.x_shape[:-1]) * k * k * cin * cout
  taps_cin = np.prod(layer.k_shape[:-1])
  return 2.0 * np.prod(out_shape[:-1]) * taps_cin * layer.k_shape[-1]


def make_fns(layer: Layer, fn: Callable) -> dict[str, Callable]:
  kw = dict(stride=layer.stride, padding=layer.padding)
  fwd = jax.jit(lambda x, k: fn(x, k, **kw))

  def loss(x, k, ct):
    return jnp.sum(fn(x, k, **kw) * ct)

  fwdbwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return {"fwd": fwd, "fwdbwd": fwdbwd}


def main(argv: Sequence[str] | None = None) -> dict:
  """Runs the benchmark; returns its results (exits after --help or a bad command line)."""
  status = cli.parse_command_line(FLAGS, argv, PROG, __doc__)
  if status is not None:
    raise SystemExit(status)

  globs = FLAGS.layers.split(",")
  chosen = [
      l
      for l in default_layers(FLAGS.batch, FLAGS["image-size"].value)
      if any(fnmatch.fnmatch(l.name, g) or fnmatch.fnmatch(l.name.split()[0], g) for g in globs)
  ]
  impls = FLAGS.impls.split(",")
  modes = FLAGS.modes.split(",")
  rng = np.random.default_rng(0)
  meta = {
      "loadavg_start": loadavg(),
      "jax": jax.__version__,
      "xla_flags": __import__("os").environ.get("XLA_FLAGS", ""),
  }
  print(f"# loadavg {meta['loadavg_start']}  XLA_FLAGS={meta['xla_flags']!r}", flush=True)

  variants = []  # (layer, impl, mode, fn, args, flops)
  for layer in chosen:
    x = jnp.asarray(rng.standard_normal(layer.x_shape, np.float32))
    k = jnp.asarray(0.05 * rng.standard_normal(layer.k_shape, np.float32))
    out_shape = jax.eval_shape(
        lambda a, b: IMPLS["xla"][layer.kind](a, b, stride=layer.stride, padding=layer.padding),
        x,
        k,
    ).shape
    ct = jnp.asarray(rng.standard_normal(out_shape, np.float32))
    flops = nominal_flops(layer, out_shape)
    for impl in impls:
      if layer.kind not in IMPLS[impl]:
        continue
      fns = make_fns(layer, IMPLS[impl][layer.kind])
      for mode in modes:
        a = (x, k) if mode == "fwd" else (x, k, ct)
        t0 = time.perf_counter()
        jax.block_until_ready(fns[mode](*a))  # compile + first run
        variants.append(
            dict(
                layer=layer.name,
                impl=impl,
                mode=mode,
                fn=fns[mode],
                args=a,
                flops=flops * (1 if mode == "fwd" else 3),
                compile_s=time.perf_counter() - t0,
                wall=[],
                other=[],
            )
        )
  print(f"# {len(variants)} variants compiled; timing {FLAGS.rounds} rounds", flush=True)

  for r in range(FLAGS.rounds):
    for v in variants:
      with LoadMeter() as m:
        jax.block_until_ready(v["fn"](*v["args"]))
      v["wall"].append(m.wall_s)
      v["other"].append(m.other_cores)
    print(f"# round {r + 1}/{FLAGS.rounds} done, loadavg {loadavg()}", flush=True)
  meta["loadavg_end"] = loadavg()

  rows = []
  for v in variants:
    med = statistics.median(v["wall"])
    rows.append(
        dict(
            layer=v["layer"],
            impl=v["impl"],
            mode=v["mode"],
            median_ms=1e3 * med,
            min_ms=1e3 * min(v["wall"]),
            gflops_nominal=v["flops"] / 1e9,
            gflop_s=v["flops"] / med / 1e9,
            other_cores=statistics.median(v["other"]),
            compile_s=v["compile_s"],
            wall_ms=[1e3 * w for w in v["wall"]],
        )
    )
  # Table: one line per (layer, mode), impls side by side.
  print(f"\n# loadavg start {meta['loadavg_start']} end {meta['loadavg_end']}")
  head = " | ".join(f"{i} ms (GFLOP/s)" for i in impls)
  print(f"| layer | mode | GFLOP | {head} | other cores |")
  print("| --- | --- | ---: | " + " | ".join("---:" for _ in impls) + " | ---: |")
  by_key = {(r["layer"], r["mode"], r["impl"]): r for r in rows}
  for layer in chosen:
    for mode in modes:
      cells, other, gf = [], [], None
      for impl in impls:
        r = by_key.get((layer.name, mode, impl))
        if r is None:
          cells.append("")
          continue
        gf = r["gflops_nominal"]
        other.append(r["other_cores"])
        cells.append(f"{r['median_ms']:.1f} ({r['gflop_s']:.0f})")
      print(
          f"| {layer.name} | {mode} | {gf:.2f} | "
          + " | ".join(cells)
          + f" | {statistics.median(other):.2f} |"
      )
  result = {"meta": meta, "rows": rows}
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
