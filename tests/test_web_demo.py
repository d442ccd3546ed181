"""The web demo (serving/web_demo.py, its app serving/web_app.py; its CLI, wav2pix_jax/demo.py):
the page, its limits and errors over HTTP, 20 uploads at once, the CLI, and a real headless
browser (Debian's chromium through Selenium) driving the page.

Needs the [demo] extra (starlette, uvicorn); the browser test also needs the [browser] extra
(selenium) and chromium + chromium-driver (scripts/test.sh installs all of them). Each missing
piece skips the tests that need it, saying which.
"""

import base64
import concurrent.futures
import contextlib
import http.client
import importlib
import importlib.util
import io
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile
from PIL import Image

from wav2pix_jax import demo
from wav2pix_jax.serving import web_app
from wav2pix_jax.serving import web_demo
from wav2pix_jax.serving import inference

REPO = pathlib.Path(__file__).resolve().parents[1]


def _importable(name: str) -> bool:
  try:
    importlib.import_module(name)
  except ImportError:
    return False
  return True


HAVE_DEMO_EXTRA = _importable("starlette") and _importable("uvicorn")
needs_demo_extra = pytest.mark.skipif(not HAVE_DEMO_EXTRA, reason=web_demo.DEMO_EXTRA_HINT)
RATE = 16_000
# Small limits so the tests stay fast: the tiny model's window is 1,024 samples (64 ms).
LIMITS = web_demo.Limits(
    max_upload_bytes=256 * 1024, max_seconds=3.0, video_seconds=1.5, fps=10.0, max_waiting=32
)


def _speech(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * rate)) / rate
  return (
      0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
      + 0.01 * rng.normal(size=t.size)
  ).astype(np.float32)


def _encoded(waveform: np.ndarray, fmt: str = "WAV", rate: int = RATE) -> bytes:
  buffer = io.BytesIO()
  soundfile.write(buffer, waveform, rate, format=fmt)
  return buffer.getvalue()


def _webm_opus(waveform: np.ndarray) -> bytes:
  """What Chrome's MediaRecorder uploads: Opus in WebM (48 kHz)."""
  import av

  buffer = io.BytesIO()
  with av.open(buffer, mode="w", format="webm") as container:
    stream = container.add_stream("libopus", rate=48_000, layout="mono")
    up = np.interp(np.arange(len(waveform) * 3) / 3, np.arange(len(waveform)), waveform)
    frame = av.AudioFrame.from_ndarray(up.astype(np.float32)[None], format="fltp", layout="mono")
    frame.sample_rate, frame.pts = 48_000, 0
    for packet in list(stream.encode(frame)) + list(stream.encode()):
      container.mux(packet)
  return buffer.getvalue()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
  """A tiny trained-run workdir with two checkpoints (steps 1 and 2), dropout 0.5."""
  from test_inference import save_run, tiny_config  # the workdir layout training leaves

  path = tmp_path_factory.mktemp("web") / "wd"
  save_run(path, tiny_config(), steps=(1, 2))
  return path


@pytest.fixture(scope="session")
def workdir_no_dropout(tmp_path_factory):
  from test_inference import save_run, tiny_config

  config = tiny_config()
  config.model.dropout_rate = 0.0
  path = tmp_path_factory.mktemp("web") / "wd_no_dropout"
  save_run(path, config, steps=(1,))
  return path


@pytest.fixture(scope="session")
def server(workdir):
  """(base URL, Demo) of the demo on the tiny workdir, generator warmed up."""
  if not HAVE_DEMO_EXTRA:
    pytest.skip(web_demo.DEMO_EXTRA_HINT)
  service = web_demo.Demo(workdir, limits=LIMITS)
  service.warm_up()
  with web_app.serving_in_background(web_app.create_app(service)) as url:
    yield url, service


def _post(url: str, data: bytes, query: str = "", timeout: float = 120) -> tuple[int, dict]:
  request = urllib.request.Request(
      f"{url}/api/generate{'?' + query if query else ''}", data=data, method="POST"
  )
  request.add_header("Content-Type", "application/octet-stream")
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def _get(url: str, timeout: float = 60) -> tuple[int, bytes]:
  with urllib.request.urlopen(url, timeout=timeout) as response:
    return response.status, response.read()


def _face(result: dict) -> np.ndarray:
  prefix = "data:image/png;base64,"
  assert result["face"].startswith(prefix)
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(result["face"][len(prefix) :]))))


def _our_temp_dirs() -> set[str]:
  return {p.name for p in pathlib.Path(tempfile.gettempdir()).glob("wav2pix-demo-*")}


# ---------------------------------------------------------------------------------------------
# Without a server.


def test_demo_module_imports_no_web_framework():
  """The package (demo.py, web_demo.py and web_app.py included) imports without the [demo]
  extra: only create_app and serve need it."""
  code = (
      "import sys; import wav2pix_jax.demo, wav2pix_jax.serving.web_demo, wav2pix_jax.generate; "
      "import wav2pix_jax.serving.web_app; "
      "bad = [m for m in ('starlette', 'uvicorn', 'selenium', 'jax') if m in sys.modules]; "
      "assert not bad, bad"
  )
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_limits_are_checked():
  with pytest.raises(ValueError, match="max_seconds must be positive"):
    web_demo.Limits(max_seconds=0)
  with pytest.raises(ValueError, match="video_seconds"):
    web_demo.Limits(video_seconds=-1)
  assert web_app.is_loopback("127.0.0.1") and web_app.is_loopback("localhost")
  assert web_app.is_loopback("::1") and not web_app.is_loopback("0.0.0.0")


def test_variety_is_refused_in_one_line_without_dropout(workdir_no_dropout):
  service = web_demo.Demo(workdir_no_dropout, limits=LIMITS)
  info = service.info()
  assert not info["can_sample"] and inference.NO_DROPOUT_MESSAGE in info["variety_note"]
  wav = _encoded(_speech(0.5))
  assert service.run_bytes(wav)["size"] == 64
  with pytest.raises(web_demo.DemoError, match="no dropout") as e:
    service.run_bytes(wav, variety=True, seed=3)
  assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# Over HTTP.


@needs_demo_extra
def test_page_and_info(server):
  url, _ = server
  status, html = _get(url + "/")
  text = html.decode("utf-8")
  assert status == 200 and 'id="file"' in text and 'id="record"' in text
  assert "image-rendering: pixelated" in text
  assert 'src="http' not in text and 'href="http' not in text  # nothing fetched from outside
  status, body = _get(url + "/api/info")
  info = json.loads(body)
  assert info["steps"] == [1, 2] and info["default_step"] == 2 and info["can_sample"]
  assert info["image_size"] == 64 and info["max_upload_bytes"] == LIMITS.max_upload_bytes


@needs_demo_extra
def test_face_from_wav_and_from_a_browser_recording(server, workdir):
  url, _ = server
  before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
  wav = _encoded(_speech(0.5))
  status, result = _post(url, wav)
  assert status == 200, result
  face = _face(result)
  assert face.shape == (64, 64, 3) and face.std() > 1.0
  assert result["step"] == 2 and result["video"] is None and len(result["envelope"]) == 400
  assert result["seconds"] == pytest.approx(0.5)
  # The same path as the library: the face equals inference.load(...).generate(...).
  expected = inference.load(workdir).generate(_speech(0.5), RATE)[0]
  np.testing.assert_array_equal(face, expected)
  # Another checkpoint, and variety with a seed (reproducible, and different per seed).
  status, older = _post(url, wav, "step=1")
  assert status == 200 and older["step"] == 1 and not np.array_equal(_face(older), face)
  seeds = [_face(_post(url, wav, f"variety=1&seed={s}")[1]) for s in (5, 5, 6)]
  assert np.array_equal(seeds[0], seeds[1]) and not np.array_equal(seeds[0], seeds[2])
  # Compressed formats: FLAC, Ogg Vorbis and Chrome's MediaRecorder format (Opus in WebM).
  for data in (
      _encoded(_speech(0.5), "FLAC"),
      _encoded(_speech(0.5), "OGG"),
      _webm_opus(_speech(0.5)),
  ):
    status, result = _post(url, data)
    assert status == 200 and _face(result).shape == (64, 64, 3), result
  # Nothing written into the workdir.
  assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


@needs_demo_extra
def test_fuse_all_windows(server, workdir):
  """fuse=1: the face of the mean embedding of every window, as generate --fuse makes it."""
  url, _ = server
  status, result = _post(url, _encoded(_speech(0.5)), "fuse=1")
  assert status == 200, result
  generator = inference.load(workdir)
  windows = generator.fusion_windows(_speech(0.5), RATE)
  assert result["fused_windows"] == len(windows) > 1 and result["window_start"] == 0
  np.testing.assert_array_equal(_face(result), generator.generate_fused(_speech(0.5), RATE)[0])
  status, plain = _post(url, _encoded(_speech(0.5)))
  assert plain["fused_windows"] == 0
  status, result = _post(url, _encoded(_speech(0.5)), "fuse=maybe")
  assert status == 400 and result["error"] == "fuse must be 0 or 1, got 'maybe'"


@needs_demo_extra
def test_long_clip_gets_the_talking_face_video(server):
  import av

  url, _ = server
  status, result = _post(url, _encoded(_speech(2.0)))
  assert status == 200, result
  assert result["frames"] == 20 and "20 frames at 10 fps" in result["note"]  # 2 s at 10 fps
  with av.open(io.BytesIO(base64.b64decode(result["video"]))) as container:
    assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
    frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
  assert len(frames) == 20 and frames[0].shape == (64, 64, 3)


@needs_demo_extra
def test_bad_input_is_one_clear_line_and_the_server_keeps_serving(server):
  url, _ = server
  temp_before = _our_temp_dirs()
  cases = {
      "corrupt": (os.urandom(5000), 400, "not a readable audio or video file"),
      "text": (b"this is not audio\n" * 100, 400, "not a readable audio or video file"),
      "silence": (_encoded(np.zeros(RATE, np.float32)), 400, "silent"),
      "short": (_encoded(_speech(0.03)), 400, "too short: 0.03 s"),
      "long": (_encoded(_speech(3.5), "FLAC"), 400, "longer than the limit of 3 s"),
      "empty": (b"", 400, "no file received"),
      "big": (b"\0" * (LIMITS.max_upload_bytes + 1), 413, "the limit is 0.25 MB"),
  }
  for name, (data, want_status, want) in cases.items():
    status, body = _post(url, data)
    assert status == want_status and want in body["error"], (name, status, body)
    assert "\n" not in body["error"] and tempfile.gettempdir() not in body["error"], name
    assert "Errno" not in body["error"], name
  # A silent middle (the face's window) in a clip that is not silent throughout.
  speech = _speech(1.0)
  speech[400:-400] = 0
  status, body = _post(url, _encoded(speech))
  assert status == 400 and "the middle 0.06 s" in body["error"], body
  for query, want in (
      ("step=7", "no checkpoint for step 7; available steps: [1, 2]"),
      ("step=x", "step must be a checkpoint number"),
      ("seed=-1", "seed must be an integer"),
      ("variety=maybe", "variety must be 0 or 1"),
  ):
    status, body = _post(url, _encoded(_speech(0.5)), query)
    assert status == 400 and want in body["error"], (query, body)
  assert _get(url + "/api/info")[0] == 200
  assert _our_temp_dirs() <= temp_before  # every private upload directory was removed


@needs_demo_extra
def test_size_is_checked_before_reading_the_body(server):
  """A Content-Length over the limit is refused at once; without one, while streaming."""
  url, _ = server
  host, port = url.removeprefix("http://").split(":")
  connection = http.client.HTTPConnection(host, int(port), timeout=30)
  connection.putrequest("POST", "/api/generate")
  connection.putheader("Content-Length", str(50 * 2**30))  # 50 GiB announced, nothing sent
  connection.endheaders()
  response = connection.getresponse()
  assert response.status == 413 and "the file is 51200.0 MB" in json.loads(response.read())["error"]
  connection.close()

  def chunks():  # no Content-Length: chunked transfer encoding
    for _ in range(8):
      yield b"\1" * 64 * 1024

  connection = http.client.HTTPConnection(host, int(port), timeout=30)
  connection.request("POST", "/api/generate", body=chunks(), encode_chunked=True)
  response = connection.getresponse()
  assert response.status == 413 and "the limit is 0.25 MB" in json.loads(response.read())["error"]
  connection.close()
  assert _get(url + "/api/info")[0] == 200


@needs_demo_extra
def test_twenty_simultaneous_uploads_are_all_answered(server):
  url, _ = server
  wav = _encoded(_speech(2.0))  # each also makes a 20-frame video
  with concurrent.futures.ThreadPoolExecutor(20) as pool:
    answers = list(pool.map(lambda _: _post(url, wav, timeout=300), range(20)))
  assert [status for status, _ in answers] == [200] * 20, [a[1].get("error") for a in answers]
  faces = [_face(result) for _, result in answers]
  assert all(np.array_equal(face, faces[0]) for face in faces)  # serialised, deterministic
  assert _get(url + "/api/info")[0] == 200


@needs_demo_extra
def test_a_full_queue_says_busy_and_still_answers_everyone(workdir):
  service = web_demo.Demo(workdir, limits=web_demo.Limits(max_waiting=2, video_seconds=0))
  service.warm_up()
  wav = _encoded(_speech(0.5))
  with (
      web_app.serving_in_background(web_app.create_app(service)) as url,
      concurrent.futures.ThreadPoolExecutor(8) as pool,
  ):
    with service._lock:  # pylint: disable=protected-access  # hold the generator: requests queue
      futures = [pool.submit(_post, url, wav) for _ in range(8)]
      time.sleep(2.0)
      turned_away = [f.result() for f in futures if f.done()]
    # The first 3 (one generating, two waiting) were held; the other 5 were turned away at once.
    assert len(turned_away) == 5
    assert all(s == 503 and "busy: 3 requests are queued" in b["error"] for s, b in turned_away)
    statuses = sorted(f.result()[0] for f in futures)
    assert statuses == [200, 200, 200, 503, 503, 503, 503, 503]


# ---------------------------------------------------------------------------------------------
# The command line.


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def test_cli_bad_command_lines_exit_2_and_user_errors_1_in_one_line(tmp_path, capsys):
  """The CLI parses into its own flags (every call from the defaults), like generate/evaluate."""
  for argv, status, message in (
      ([], 2, "--workdir must have a value other than None"),
      ([f"--workdir={tmp_path}", "--port=0"], 2, "--port must be in 1..65535, got 0"),
      ([f"--workdir={tmp_path}", "--max_upload_mb=0"], 2, "--max_upload_mb must be positive"),
      ([f"--workdir={tmp_path}", "--max_seconds=0"], 2, "--max_seconds must be positive, got 0"),
      ([f"--workdir={tmp_path}", "extra"], 2, "unexpected arguments ['extra']"),
      ([f"--workdir={tmp_path / 'none'}"], 1, "no such workdir or checkpoint directory"),
  ):
    assert demo.main(argv) == status, argv
    err = capsys.readouterr().err
    assert err.startswith("wav2pix-demo: error:") and message in err, (argv, err)
    assert err.count("\n") == 1, err
  assert demo.main(["--help"]) == 0
  printed = capsys.readouterr().out
  for name in ("workdir", "host", "port", "step", "checkpoint", "max_waiting", "library_logs"):
    assert f"--{name}:" in printed


@pytest.mark.slow
@needs_demo_extra
def test_cli_serves_warns_on_all_interfaces_and_fails_in_one_line(workdir, tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  bad = subprocess.run(
      [sys.executable, "-m", "wav2pix_jax.demo", f"--workdir={tmp_path / 'none'}"],
      capture_output=True,
      text=True,
      cwd=REPO,
      env=env,
      timeout=120,
  )
  assert bad.returncode == 1 and bad.stderr.strip().startswith("wav2pix-demo: error:"), bad.stderr
  assert "no such workdir" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
  port = _free_port()
  log = tmp_path / "log.txt"
  with open(log, "w") as out:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wav2pix_jax.demo",
            f"--workdir={workdir}",
            f"--port={port}",
            "--host=0.0.0.0",
            "--step=1",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
  try:
    deadline = time.monotonic() + 120
    while "open http://127.0.0.1" not in log.read_text():
      assert process.poll() is None, log.read_text()
      assert time.monotonic() < deadline, log.read_text()
      time.sleep(0.2)
    assert "anyone who can reach this machine" in log.read_text()
    # A quiet console: our lines, not Orbax's INFO logs (those need --library_logs).
    assert "INFO step 1: as asked" in log.read_text()
    assert "orbax" not in log.read_text().lower() and "Restoring" not in log.read_text()
    for _ in range(50):  # the log line comes just before uvicorn binds
      with contextlib.suppress(OSError):
        info = json.loads(_get(f"http://127.0.0.1:{port}/api/info")[1])
        break
      time.sleep(0.2)
    assert info["default_step"] == 1 and info["steps"] == [1, 2]
  finally:
    process.send_signal(signal.SIGINT)
    process.wait(30)


def test_space_app_reads_its_workdir_and_limits_from_the_environment(workdir):
  spec = importlib.util.spec_from_file_location("space_app", REPO / "app.py")
  app = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(app)
  service = app.demo_from_env(
      {"WAV2PIX_WORKDIR": str(workdir), "WAV2PIX_STEP": "1", "WAV2PIX_MAX_SECONDS": "5"}
  )
  assert service.default_step == 1 and service.limits.max_seconds == 5.0
  assert service.limits.max_upload_bytes == 10 * 2**20
  with pytest.raises(ValueError, match="set WAV2PIX_WORKDIR"):
    app.demo_from_env({})
  with pytest.raises(ValueError, match="WAV2PIX_MAX_SECONDS must be a number"):
    app.demo_from_env({"WAV2PIX_WORKDIR": str(workdir), "WAV2PIX_MAX_SECONDS": "lots"})


@needs_demo_extra
def test_latency_benchmark_runs(workdir, tmp_path):
  from benchmarks import web_demo_latency

  report = web_demo_latency.main(
      [f"--workdir={workdir}", "--runs=2", f"--out={tmp_path / 'r.json'}"]
  )
  assert (
      report["runs"] == 2 and report["image_size"] == 64 and report["round_trip_ms"]["median"] > 0
  )
  assert json.loads((tmp_path / "r.json").read_text())["step"] == 2


# ---------------------------------------------------------------------------------------------
# A real browser.


def _browser_or_skip():
  """(chromium, chromedriver) paths, or a skip that says what is missing."""
  missing = []
  if not _importable("selenium"):
    missing.append("selenium (pip install -e '.[browser]')")
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  driver = shutil.which("chromedriver")
  if not chromium or not driver:
    missing.append("chromium and chromium-driver (apt-get install chromium chromium-driver)")
  if missing:
    reason = "browser test needs " + " and ".join(missing)
    print(reason)
    pytest.skip(reason)
  return chromium, driver


@needs_demo_extra
def test_in_a_headless_browser(server, tmp_path):
  chromium, driver_path = _browser_or_skip()
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait

  url, _ = server
  wav = tmp_path / "talk.wav"
  wav.write_bytes(_encoded(_speech(2.0)))
  corrupt = tmp_path / "broken.mp3"
  corrupt.write_bytes(os.urandom(4000))
  options = webdriver.ChromeOptions()
  options.binary_location = chromium
  for argument in (
      "--headless=new",
      "--no-sandbox",  # root in CI containers
      "--disable-dev-shm-usage",
      "--window-size=1280,900",
      "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt
      "--use-fake-device-for-media-stream",  # a synthetic microphone ...
      f"--use-file-for-fake-audio-capture={wav}",  # ... that says talk.wav (looped), not beeps
  ):
    options.add_argument(argument)
  browser = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
  try:
    wait = WebDriverWait(browser, 120)
    state = lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-state")
    browser.get(url + "/")
    wait.until(lambda _: state() == "ready")
    assert browser.find_element(By.ID, "step").is_displayed()  # two checkpoints: a selector
    assert browser.find_element(By.ID, "variety").is_enabled()

    browser.find_element(By.ID, "file").send_keys(str(wav))
    wait.until(lambda _: state() in ("done", "error"))
    assert state() == "done", browser.find_element(By.ID, "error").text
    image_size = json.loads(_get(url + "/api/info")[1])["image_size"]
    assert image_size == 64
    face = browser.find_element(By.ID, "face")
    natural_size = "return [arguments[0].naturalWidth, arguments[0].naturalHeight]"
    assert browser.execute_script(natural_size, face) == [image_size, image_size]
    assert face.size == {"width": 256, "height": 256}  # shown 4x, pixelated
    caption = browser.find_element(By.ID, "face-caption").text
    assert caption.startswith(f"{image_size}x{image_size} face, step 2 ("), caption
    pixels = browser.execute_script(
        """const img = arguments[0], canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const context = canvas.getContext('2d'); context.drawImage(img, 0, 0);
        return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data);""",
        face,
    )
    rgba = np.asarray(pixels, np.uint8).reshape(image_size, image_size, 4)
    # The page shows the model's face, pixel for pixel: the API's answer for the same file.
    status, expected = _post(url, wav.read_bytes())
    assert status == 200, expected
    np.testing.assert_array_equal(rgba[..., :3], _face(expected))
    assert (rgba[..., 3] == 255).all()
    assert browser.find_element(By.ID, "video-box").is_displayed()  # 2 s: a talking-face video
    duration = browser.execute_script(
        "const v = document.getElementById('video');"
        "return v.readyState >= 1 ? v.duration"
        " : new Promise(r => v.onloadedmetadata = () => r(v.duration));"
    )
    assert 1.5 < duration < 2.5
    polygon = browser.find_element(By.CSS_SELECTOR, "#wave polygon")
    assert len(polygon.get_attribute("points").split()) == 800
    browser.save_screenshot(str(tmp_path / "web_demo.png"))

    browser.find_element(By.ID, "file").send_keys(str(corrupt))
    wait.until(lambda _: state() == "error")
    error = browser.find_element(By.ID, "error").text
    assert "not a readable audio or video file" in error and "\n" not in error
    browser.save_screenshot(str(tmp_path / "web_demo_error.png"))
    big = tmp_path / "big.wav"
    big.write_bytes(os.urandom(LIMITS.max_upload_bytes + 50_000))
    browser.find_element(By.ID, "file").send_keys(str(big))
    wait.until(lambda _: "limit" in browser.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "error").text == "the file is 0.3 MB; the limit is 0.25 MB"

    # The microphone path: MediaRecorder (Opus in WebM) from Chrome's fake device, uploaded. The
    # fake microphone plays talk.wav (speech all through): the page must show a new face.
    browser.execute_script("document.getElementById('face').src = '';")
    browser.find_element(By.ID, "record").click()
    wait.until(lambda _: "recording" in browser.find_element(By.ID, "rec-status").text)
    time.sleep(1.5)
    browser.find_element(By.ID, "record").click()
    # The state still says "error" (the big file) until the upload starts; the click cleared the
    # error line, so a new error is one with a line.
    error_line = lambda: browser.find_element(By.ID, "error").text
    wait.until(lambda _: state() == "done" or error_line())
    assert state() == "done", error_line()
    assert browser.execute_script(natural_size, face) == [image_size, image_size]
    seconds = float(browser.find_element(By.ID, "wave-caption").text.split(" s;")[0])
    assert 1.0 < seconds < 3.0, seconds  # the recording itself, about 1.5 s
    print(f"screenshots in {tmp_path}")
  finally:
    browser.quit()
