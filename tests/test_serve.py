"""``jaxstyle serve`` (jaxstyle.serve): the HTTP API end to end on a real uvicorn server on a
free loopback port, the page in headless Chromium, and the command's flags.

Stylize jobs run on the cached real VGG16 (the tests that need it skip where it is absent; a
random one written here would cost 14 s of initialisation) at 64 px with two shallow layers, so
one compilation (8 s on 2 CPU cores, 16 s while other work ran) serves every job of the module;
the models are tiny networks written by the tests, with test_api's shapes where it has them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import REPO, offline_env

pytest.importorskip("starlette", reason='the serve extra is absent: pip install "jaxstyle[serve]"')
httpx = pytest.importorskip("httpx", reason="httpx (test extra) is absent")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is absent")

import jaxstyle  # noqa: E402
from jaxstyle import cli, demo, models, serve  # noqa: E402
from jaxstyle import images as imlib  # noqa: E402

#: The options of every stylize job here: small and shallow, so one compiled program serves all.
SMALL = {
    "size": "64",
    "iterations": "3",
    "content_layers": "relu2_1",
    "style_layers": "relu1_1,relu2_1",
}
UPLOAD_LIMIT = 2**20


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB with no pixel data: a decompression
    bomb's header, refused before any decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Images (content 64x48, style, a text file, a bomb header) and a folder of models: a tiny
    one-style network, a tiny 3-style one, a random AdaIN model and a file that is not a model."""
    from jaxstyle.nets import adain
    from jaxstyle.nets import transformer_net as tn

    d = tmp_path_factory.mktemp("serve")
    out = {
        "content": imlib.save_image(d / "land.png", demo.draw_landscape(64, 48)),
        "style": imlib.save_image(d / "strokes.png", demo.draw_style(64)),
        # 40x40 and content 64x48, as tests/test_api.py's AdaIN call: the suite's compilation
        # cache serves both (AdaIN compiles a program per image and per style size).
        "style40": imlib.save_image(d / "strokes40.png", demo.draw_style(40)),
        "models": d / "models",
    }
    (d / "notes.png").write_text("not a picture\n")
    # Over the pixel limit by half: refused by jaxstyle's own header check, below Pillow's
    # (twice its MAX_IMAGE_PIXELS, which jaxstyle serve sets to the limit, as every command).
    side = math.isqrt(imlib.MAX_PIXELS * 3 // 2)
    (d / "bomb.png").write_bytes(_png_header_only(side, side))
    out["text"], out["bomb"] = d / "notes.png", d / "bomb.png"
    rng = np.random.default_rng(0)

    def random_params(cfg):  # the architecture's shapes, numpy values: no compilation
        shapes = jax.eval_shape(lambda: tn.init_params(cfg, jax.random.PRNGKey(0)))

        def value(path, s):
            noise = rng.standard_normal(s.shape).astype(np.float32)
            name = jax.tree_util.keystr(path)
            if "kernel" in name:
                return noise / np.sqrt(np.prod(s.shape[:-1]))
            return (1.0 if "scale" in name else 0.0) + 0.2 * noise

        return jax.tree_util.tree_map_with_path(value, shapes)

    m = out["models"]
    m.mkdir()
    models.save_model(
        m / "candy.safetensors",
        random_params(tn.TINY),
        tn.TINY,
        {"style": "paintings/candy.jpg"},
    )
    # Three styles, as tests/test_api.py's: the suite's compilation cache serves both.
    multi = dataclasses.replace(tn.TINY, num_styles=3)
    models.save_model(
        m / "three.safetensors",
        random_params(multi),
        multi,
        {"styles": json.dumps(["s/a.png", "s/b.png", "s/c.png"])},
    )
    models.save_adain_model(m / "any.safetensors", adain.init_params(0))
    (m / "broken.safetensors").write_bytes(b"not safetensors")
    (m / "readme.txt").write_text("ignored: not a model file")
    return out


@pytest.fixture(scope="module")
def app(files):
    return serve.create_app(files["models"], max_upload_bytes=UPLOAD_LIMIT)


@pytest.fixture(scope="module")
def vgg(app, vgg16_path) -> Path:
    """The server's stylize jobs use the cached real VGG16 (skips where it is absent)."""
    app.state.jobs.weights = str(vgg16_path)
    return vgg16_path


@pytest.fixture(scope="module")
def server(app):
    """A real uvicorn server of ``create_app`` on a free loopback port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


def _submit(client, files, **options) -> dict:
    data = {**SMALL, **{k: str(v) for k, v in options.items()}}
    with open(files["content"], "rb") as c, open(files["style"], "rb") as s:
        r = client.post("/api/stylize", files={"content": c, "style": s}, data=data)
    assert r.status_code == 202, r.text
    return r.json()


def _wait(client, job_id: str, until=serve.FINISHED, timeout: float = 120) -> tuple[dict, list]:
    """Polls the job until its state is in ``until``; returns the last status and all seen."""
    seen = []
    deadline = time.time() + timeout
    while True:
        status = client.get(f"/api/jobs/{job_id}").json()
        seen.append(status)
        if status["state"] in until:
            return status, seen
        assert time.time() < deadline, f"job {job_id} still {status['state']}"
        time.sleep(0.05)


def _events(client, job_id: str) -> list[dict]:
    """Every server-sent event of a job until it finishes."""
    out = []
    with client.stream("GET", f"/api/jobs/{job_id}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ---------------------------------------------------------------------------------------------
# The HTTP API.


def test_stylize_job_end_to_end(client, files, vgg):
    job = _submit(client, files)
    assert job["state"] in ("queued", "running") and job["iterations"] == 3
    status, seen = _wait(client, job["id"])
    assert status["state"] == "done" and status["error"] is None, status
    assert status["iteration"] == 3 and status["iterations"] == 3
    iterations = [s["iteration"] for s in seen]
    assert iterations == sorted(iterations)
    # The loss curve: one point per iteration (every iteration at 3 a scale), the last = loss.
    assert [p[0] for p in status["history"]] == [1, 2, 3]
    assert status["loss"] == status["history"][-1][1] and np.isfinite(status["loss"])
    r = client.get(f"/api/jobs/{job['id']}/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    got = _png(r.content)
    # The same run through the Python API, from the same files: the same pixels.
    want = jaxstyle.stylize(
        imlib.load_image(files["content"]),
        imlib.load_image(files["style"]),
        weights=vgg,
        size=64,
        iterations=3,
        content_layers="relu2_1",
        style_layers="relu1_1,relu2_1",
    )
    np.testing.assert_array_equal(got, np.round(want * 255).astype(np.uint8))
    download = client.get(f"/api/jobs/{job['id']}/image", params={"download": 1})
    assert download.content == r.content
    assert "attachment" in download.headers["content-disposition"]
    # The events of a finished job: one, with the whole loss curve.
    (event,) = _events(client, job["id"])
    assert event["state"] == "done" and event["history"] == status["history"]


def test_queue_stop_and_events(client, files, vgg):
    # A long job, then two short ones: one job at a time, the others wait in order.
    long = _submit(client, files, iterations=2000)
    second = _submit(client, files)
    third = _submit(client, files)
    running, _ = _wait(client, long["id"], until=("running",))
    s2, s3 = (client.get(f"/api/jobs/{j['id']}").json() for j in (second, third))
    assert (s2["state"], s2["position"]) == ("queued", 0)
    assert (s3["state"], s3["position"]) == ("queued", 1)
    assert client.get(f"/api/jobs/{third['id']}/image").status_code == 404  # no image yet
    # Stopping a queued job drops it at once; the one behind it moves up.
    stopped = client.post(f"/api/jobs/{third['id']}/stop").json()
    assert stopped["state"] == "stopped" and stopped["iteration"] == 0
    # Stopping the running job ends its run at the next progress report; its image stays.
    with_image, _ = _wait(client, long["id"], until=("running",))
    while not with_image["has_image"]:
        time.sleep(0.05)
        with_image = client.get(f"/api/jobs/{long['id']}").json()
    client.post(f"/api/jobs/{long['id']}/stop")
    events = _events(client, second["id"])  # meanwhile: the second job, as it runs
    ended, _ = _wait(client, long["id"])
    assert ended["state"] == "stopped" and 0 < ended["iteration"] < 2000, ended
    assert _png(client.get(f"/api/jobs/{long['id']}/image").content).shape == (48, 64, 3)
    states = [e["state"] for e in events]
    assert states[0] == "queued" and states[-1] == "done" and "running" in states, states
    # Events carry only the loss points that are new since the previous event.
    points = [p for e in events for p in e["history"]]
    assert [p[0] for p in points] == [1, 2, 3]
    assert client.get(f"/api/jobs/{third['id']}").json()["state"] == "stopped"
    assert client.get("/api/jobs/nope").status_code == 404


def test_a_failed_job_says_why_and_the_next_one_runs(app, client, files, vgg, tmp_path):
    bad = tmp_path / "truncated-vgg16.safetensors"
    bad.write_bytes(vgg.read_bytes()[:4096])
    app.state.jobs.weights = str(bad)
    try:
        failed, _ = _wait(client, _submit(client, files)["id"])
    finally:
        app.state.jobs.weights = str(vgg)
    assert failed["state"] == "failed" and "cannot read as .safetensors" in failed["error"], failed
    assert str(bad) in failed["error"] and not failed["has_image"]
    done, _ = _wait(client, _submit(client, files)["id"])
    assert done["state"] == "done"


def test_apply_and_models(client, files):
    listing = client.get("/api/models").json()
    assert listing["models"] == [
        {"name": "any.safetensors", "kind": "adain", "styles": []},
        {"name": "candy.safetensors", "kind": "johnson", "styles": ["candy.jpg"]},
        {"name": "three.safetensors", "kind": "multistyle", "styles": ["a.png", "b.png", "c.png"]},
    ]
    assert list(listing["skipped"]) == ["broken.safetensors"]

    def apply(style=None, **fields):
        uploads = {"image": files["content"].read_bytes()}
        if style is not None:
            uploads["style"] = style.read_bytes()
        return client.post("/api/apply", files=uploads, data=fields)

    r = apply(model="candy.safetensors")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    content = imlib.load_image(files["content"])
    want = jaxstyle.load_model(files["models"] / "candy.safetensors")(content)
    np.testing.assert_array_equal(_png(r.content), np.round(want * 255).astype(np.uint8))
    three = jaxstyle.load_model(files["models"] / "three.safetensors")
    r = apply(model="three.safetensors", style_index="1", size="32")
    want = three(imlib.resize_long_side(content, 32), style_index=1)
    np.testing.assert_array_equal(_png(r.content), np.round(want * 255).astype(np.uint8))
    # AdaIN: the style is an upload too.
    r = apply(model="any.safetensors", style=files["style40"], alpha="0.5", style_size="0")
    want = jaxstyle.load_model(files["models"] / "any.safetensors")(
        content, styles=imlib.load_image(files["style40"]), alpha=0.5, style_size=0
    )
    np.testing.assert_array_equal(_png(r.content), np.round(want * 255).astype(np.uint8))
    # Errors: the API's own messages, with the request's names.
    cases = {
        (("model", "nope.safetensors"),): (404, "model 'nope.safetensors': no such model"),
        (("model", "broken.safetensors"),): (404, "no such model"),
        (("model", "candy.safetensors"), ("style_index", "0")): (400, "style_index is for"),
        (("model", "three.safetensors"),): (400, "give style_index or style_mix"),
        (("model", "three.safetensors"), ("style_index", "5")): (400, "0 a.png, 1 b.png, 2 c.png"),
        (("model", "candy.safetensors"), ("alpha", "x")): (400, "alpha: expected a number"),
        (("model", "candy.safetensors"), ("colour", "1")): (400, "unknown field(s) colour"),
        (): (400, "model: give a model's name"),
        (("model", "any.safetensors"),): (400, "is an AdaIN model: give style images with styles"),
    }
    for fields, (code, fragment) in cases.items():
        r = apply(**dict(fields))
        assert r.status_code == code and fragment in r.json()["error"], (fields, r.text)


def test_bad_uploads_then_the_server_goes_on(client, files, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", imlib.MAX_PIXELS)  # as cli.main sets it
    side = math.isqrt(imlib.MAX_PIXELS * 3 // 2)

    def post(path, uploads, data=None):
        opened = {k: (Path(p).name, Path(p).read_bytes()) for k, p in uploads.items()}
        return client.post(path, files=opened, data=data or SMALL)

    cases = [
        ("/api/stylize", {"content": files["text"], "style": files["style"]}, 400,
         "content (notes.png): not an image file"),
        ("/api/stylize", {"content": files["content"], "style": files["bomb"]}, 400,
         f"style (bomb.png): {side}x{side} exceeds the {imlib.MAX_PIXELS:,}-pixel limit"),
        ("/api/apply", {"image": files["text"]}, 400, "image (notes.png): not an image file"),
        ("/api/stylize", {"content": files["content"]}, 400, "style: give at least one"),
        ("/api/stylize", {"style": files["style"]}, 400, "content: give one image file"),
    ]  # fmt: skip
    for path, uploads, code, fragment in cases:
        data = {"model": "candy.safetensors"} if path == "/api/apply" else None
        r = post(path, uploads, data)
        assert r.status_code == code and fragment in r.json()["error"], r.text
        assert str(Path("/tmp")) not in r.json()["error"]  # no server-side temp names
    # Options: named and checked as the CLI's flags, a bad one refused before any work.
    for options, fragment in (
        ({"size": "16"}, "sizes must be at least 32"),
        ({"size": "x"}, "size: expected an integer, got 'x'"),
        ({"sise": "64"}, "unknown keyword(s) sise"),
        ({"style_weight": "nan"}, "--style-weight: nan is not a finite number"),
        ({"init": "/etc/passwd"}, "init: the server takes content, noise or style"),
        ({"save_every": "1"}, "save_every: not taken by the server"),
        ({"content_layers": "relu9_9"}, "relu9_9"),
    ):
        r = post("/api/stylize", {"content": files["content"], "style": files["style"]},
                 {**SMALL, **options})  # fmt: skip
        assert r.status_code == 400 and fragment in r.json()["error"], (options, r.text)
    # Over the byte limit: refused from Content-Length before the body is read.
    big = np.random.default_rng(0).integers(0, 255, UPLOAD_LIMIT + 1, dtype=np.uint8).tobytes()
    r = client.post("/api/stylize", files={"content": ("big.png", big)})
    assert (
        r.status_code == 413
        and "upload of 1 MiB is over this server's limit of 1 MiB a request" in r.json()["error"]
    )

    def chunked():  # no Content-Length: counted as it streams in
        yield b'--b\r\nContent-Disposition: form-data; name="content"; filename="a.png"\r\n\r\n'
        for _ in range(20):
            yield bytes(2**17)

    r = client.post(
        "/api/stylize",
        content=chunked(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 413 and "over this server's limit" in r.json()["error"], r.text
    r = client.post("/api/stylize", json={"content": "x"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
    # ... and the server keeps serving.
    with open(files["content"], "rb") as f:
        r = client.post("/api/apply", files={"image": f}, data={"model": "candy.safetensors"})
    assert r.status_code == 200 and _png(r.content).shape == (48, 64, 3)


def test_page_and_static_endpoints(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/api/stylize" in page.text and "EventSource" in page.text
    options = client.get("/api/options").json()
    assert options["size"]["default"] == 512 and options["iterations"]["default"] == 500
    assert "save_every" not in options
    assert _png(client.get("/api/demo/style").content).shape == (384, 384, 3)
    assert client.get("/api/demo/other").status_code == 404


# ---------------------------------------------------------------------------------------------
# The page in a real browser.

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium from the system packages, driven by selenium; downloads into a temp
    folder. Skips where Chromium or its driver is absent (.ci/run installs them)."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(
            f"{CHROMIUM} or {CHROMEDRIVER} absent (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (test extra) absent")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.downloads = downloads
    yield driver
    driver.quit()


def test_page_in_a_browser(browser, server, files, vgg):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(server + "/")
    find = browser.find_element
    wait = WebDriverWait(browser, 120, poll_frequency=0.1)
    find(By.ID, "content").send_keys(str(files["content"]))
    find(By.ID, "style").send_keys(str(files["style"]))
    for field, value in (("size", "64"), ("iterations", "3")):
        find(By.ID, field).clear()
        find(By.ID, field).send_keys(value)
    find(By.ID, "extra").send_keys("content_layers=relu2_1 style_layers=relu1_1,relu2_1")
    find(By.ID, "start").click()
    wait.until(lambda d: find(By.ID, "state").text in serve.FINISHED)
    assert find(By.ID, "state").text == "done", find(By.ID, "error").text
    progress = find(By.ID, "progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == "3"
    assert "iteration 3 / 3" in find(By.ID, "status").text
    wait.until(lambda d: d.execute_script("return document.getElementById('result').naturalWidth"))
    assert browser.execute_script("return document.getElementById('result').naturalWidth") == 64
    # The loss curve was drawn: the canvas has the curve's blue pixels.
    blue = browser.execute_script(
        "const c = document.getElementById('loss'), g = c.getContext('2d');"
        "const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;"
        "for (let i = 0; i < d.length; i += 4) if (d[i+2] > 150 && d[i] < 60) n++; return n;"
    )
    assert blue > 50, blue
    # The download link saves the PNG.
    find(By.ID, "download").click()
    deadline = time.time() + 20
    while not (saved := [p for p in browser.downloads.iterdir() if p.suffix == ".png"]):
        assert time.time() < deadline, list(browser.downloads.iterdir())
        time.sleep(0.1)
    assert _png(saved[0].read_bytes()).shape == (48, 64, 3)
    # A model answers at once: choose it, start, the image appears.
    find(By.ID, "mode-apply").click()
    Select(find(By.ID, "model")).select_by_value("candy.safetensors")
    find(By.ID, "size").clear()
    find(By.ID, "size").send_keys("48")
    find(By.ID, "start").click()
    wait.until(lambda d: find(By.ID, "state").text in ("done", "failed"))
    assert find(By.ID, "state").text == "done", find(By.ID, "error").text
    assert browser.execute_script("return document.getElementById('result').naturalWidth") == 48
    # A bad upload is shown as the server's message.
    find(By.ID, "content").send_keys(str(files["text"]))
    find(By.ID, "start").click()
    wait.until(lambda d: find(By.ID, "state").text == "failed")
    assert "image (notes.png): not an image file" in find(By.ID, "error").text
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert all("/api/apply" in e["message"] for e in errors), errors  # only the refused upload


# ---------------------------------------------------------------------------------------------
# The command.


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--port", "70000"], "--port must be in 0..65535"),
        (["--max-upload-mb", "0"], "--max-upload-mb must be a positive number"),
        (["--models", "no/such/dir"], "no/such/dir: no such folder"),
        (["--weights", "no/vgg.safetensors"], "no/vgg.safetensors: no such file"),
        (["--host", "no.such.host.invalid"], "no.such.host.invalid:8000: cannot listen"),
    ],
)
def test_cli_bad_flags(argv, fragment, capsys):
    assert cli.main(["serve", *argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1, err


def test_cli_port_in_use(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--port", str(port)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}: cannot listen (Address already in use)" in err


def test_cli_without_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"
        "from jaxstyle import cli; sys.exit(cli.main(['serve', '--port', '0']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2, r.stderr
    assert r.stderr == (
        "error: jaxstyle serve needs the web server packages (uvicorn is missing): pip install "
        '"jaxstyle[serve]"\n'
    )


def test_cli_serves_until_interrupted(tmp_path, files):
    import signal

    exe = shutil.which("jaxstyle") or sys.executable
    cmd = [exe] if exe != sys.executable else [exe, "-m", "jaxstyle.cli"]
    proc = subprocess.Popen(
        [*cmd, "serve", "--port", "0", "--models", str(files["models"]), "--quiet"],
        env=offline_env(tmp_path / "home"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        assert line.startswith("jaxstyle serve: http://127.0.0.1:"), line
        url = line.split()[2]
        deadline = time.time() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                models = httpx.get(url + "api/models", timeout=5).json()["models"]
                break
            assert time.time() < deadline and proc.poll() is None, "the server did not answer"
            time.sleep(0.1)
        assert [m["name"] for m in models] == [
            "any.safetensors",
            "candy.safetensors",
            "three.safetensors",
        ]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
