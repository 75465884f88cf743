"""`dfd serve` (deepfake_cli.serve.web): the real app with the bundled default model, called through
httpx — in process (Starlette's TestClient) and over a real socket (uvicorn on a free port of
127.0.0.1). Good and bad uploads, the size limit, the full queue, the timeout, the temporary
files, the access log and the page. The model is loaded once for the module."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import socket
import subprocess
import threading
import time
import warnings
from pathlib import Path

import httpx
import pytest

pytest.importorskip("starlette", reason="dfd serve needs the [serve] extra (starlette, uvicorn, python-multipart)")
with warnings.catch_warnings():  # Starlette 1.x suggests httpx2; httpx is what the [serve] extra pins
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from deepfake_cli.serve.web.app import create_app  # noqa: E402
from deepfake_cli.serve.web.settings import ServiceSettings  # noqa: E402
from tests.helpers import (ASTRONAUT, ASTRONAUT_JUDGED, ASTRONAUT_PROBABILITY, ASTRONAUT_THRESHOLD,  # noqa: E402
                           ASTRONAUT_VERDICT, DEFAULT_MODEL_SHA256, ROOT)



@pytest.fixture(scope="module")
def detector():
    from deepfake_cli import Detector

    return Detector()


@pytest.fixture(scope="module")
def uploads_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def client(detector, uploads_dir):
    with TestClient(create_app(ServiceSettings(temp_dir=str(uploads_dir)), detector=detector)) as client:
        yield client


def clip(name: str = "astronaut.mp4", data: bytes | None = None, field: str = "file") -> dict:
    return {field: (name, ASTRONAUT.read_bytes() if data is None else data, "application/octet-stream")}


def left_behind(folder: Path, wait: float = 2.0) -> list[Path]:
    """What is still in the uploads folder (waiting a little for work that ends after its answer)."""
    deadline = time.monotonic() + wait
    while list(folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(folder.iterdir())


def test_probes_and_the_model(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    model = client.get("/v1/model").json()
    assert (model["name"], model["model_sha256"], model["runtime"]) == ("default", DEFAULT_MODEL_SHA256, "onnx")
    assert model["threshold"] == pytest.approx(ASTRONAUT_THRESHOLD)
    assert model["limits"]["max_upload_bytes"] == 200 * 1024 * 1024
    assert "uncertain" in model and "terms" in model["card"]  # the band (null: none) and the model card's terms


def test_the_model_is_loaded_once_when_the_app_starts_and_readyz_says_when(monkeypatch, tmp_path):
    import deepfake_cli.serve.detector as detector_module

    loads = []

    class Counted(detector_module.Detector):
        def __init__(self, *args, **kwargs):
            loads.append(args)
            time.sleep(0.5)  # a slow load: /readyz answers "loading" meanwhile
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(detector_module, "Detector", Counted)
    with TestClient(create_app(ServiceSettings(temp_dir=str(tmp_path)))) as client:
        assert client.get("/healthz").status_code == 200
        early = client.get("/readyz")
        assert early.status_code == 503 and early.json() == {"status": "loading"} and "retry-after" in early.headers
        first = client.post("/v1/predict", files=clip())  # queued behind the load: waits for it
        assert first.status_code == 200 and client.get("/readyz").json() == {"status": "ready"}
        assert client.post("/v1/predict", files=clip()).status_code == 200
    assert len(loads) == 1


def test_a_model_that_cannot_be_loaded_is_said_by_readyz_and_every_request(tmp_path):
    settings = ServiceSettings(model=str(tmp_path / "not-a-model"), temp_dir=str(tmp_path))
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "failed" and "not-a-model" in ready.json()["error"]
        refused = client.post("/v1/predict", files=clip())
        assert refused.status_code == 503 and "cannot be loaded" in refused.json()["error"]
    assert list(tmp_path.iterdir()) == []


def test_predict_gives_the_cli_s_result_object_for_the_upload(client, detector, uploads_dir):
    response = client.post("/v1/predict", files=clip())
    assert response.status_code == 200, response.text
    record = response.json()
    assert (record["verdict"], record["probability"]) == (ASTRONAUT_VERDICT,
                                                          pytest.approx(ASTRONAUT_PROBABILITY, abs=1e-6))
    assert record["path"] == "astronaut.mp4" and record["model_sha256"] == DEFAULT_MODEL_SHA256
    local = detector.predict(ASTRONAUT)  # what `dfd predict --json` gives, key for key
    assert sorted(record) == sorted(local)
    assert {k: v for k, v in record.items() if k not in ("path", "seconds")} == \
           {k: v for k, v in local.items() if k not in ("path", "seconds")}
    assert left_behind(uploads_dir) == []


def test_bad_uploads_get_4xx_and_the_server_still_scores_the_next_good_one(client, uploads_dir):
    cases = [
        (clip(data=b""), 400, "is empty"),
        (clip("notes.mp4", b"just some text, renamed"), 422, "notes.mp4: cannot be opened as a video"),
        (clip("notes.txt", b"just some text"), 415, "not a video or image type"),
        (clip(field="video"), 400, "no 'file' field in the form (fields: 'video')"),
        (clip("../../etc/passwd.mp4", b"\x00" * 64), 422, "passwd.mp4: "),
    ]
    for files, status, message in cases:
        response = client.post("/v1/predict", files=files)
        assert response.status_code == status and message in response.json()["error"], response.text
        assert str(uploads_dir) not in response.text  # no server path in an answer
    not_multipart = client.post("/v1/predict", content=b"raw bytes", headers={"content-type": "video/mp4"})
    assert not_multipart.status_code == 415 and "multipart/form-data" in not_multipart.json()["error"]
    unreadable = client.post("/v1/predict", files=clip("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 999))
    record = unreadable.json()
    assert unreadable.status_code == 422 and record["exit_code"] == 3 and record["verdict"] is None
    assert record["schema_version"] == 1 and record["path"] == "broken.mp4"
    good = client.post("/v1/predict", files=clip())
    assert good.status_code == 200 and good.json()["verdict"] == ASTRONAUT_VERDICT
    assert left_behind(uploads_dir) == []


def test_a_generated_real_and_fake_pair_and_a_faceless_image(client, detector, tmp_path):
    """Tiny generated clips (tests.helpers), one real and one with a blended face: the service's
    verdicts and probabilities are the local ones, and a frame without a face is 422 with exit
    code 4."""
    import cv2
    import numpy as np

    from tests.helpers import write_face_clip

    probability = {}
    for fake in (False, True):
        path = write_face_clip(tmp_path / f"{'fake' if fake else 'real'}.mp4", shift=0, fake=fake, frames=6)
        served = client.post("/v1/predict", files=clip(path.name, path.read_bytes())).json()
        local = detector.predict(path)
        assert served["verdict"] == local["verdict"] and local["verdict"] in ("real", "fake", "uncertain"), local
        probability[fake] = local["probability"]
        assert served["probability"] == pytest.approx(local["probability"], abs=1e-6)
        assert served["warnings"] == local["warnings"] and any("only 6 frames" in w for w in served["warnings"])
    # each clip scored on its own content, not a constant; which scores higher is the model's business: the
    # default since 2026-12-08 scores the clean astronaut face above the blocky one (its known failure, README)
    assert abs(probability[True] - probability[False]) > 0.05
    ok, png = cv2.imencode(".png", np.full((120, 160, 3), 128, np.uint8))
    blank = client.post("/v1/predict", files=clip("blank.png", png.tobytes()))
    assert blank.status_code == 422 and blank.json()["exit_code"] == 4 and "no face" in blank.json()["error"]


def test_an_upload_over_the_limit_is_refused_before_it_is_read(detector, tmp_path):
    settings = ServiceSettings(max_upload_bytes=10_000, temp_dir=str(tmp_path))
    with TestClient(create_app(settings, detector=detector)) as small:
        declared = small.post("/v1/predict", files=clip())  # Content-Length says 334 kB
        assert declared.status_code == 413 and "at most 10000" in declared.json()["error"]
        sent = []

        def body():  # no Content-Length: refused at the byte past the limit
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n\r\n"
            for _ in range(100):
                sent.append(1)
                yield b"\x00" * 4096

        chunked = small.post("/v1/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert chunked.status_code == 413 and "larger than this server takes" in chunked.json()["error"]
        assert small.post("/v1/predict", files=clip("tiny.png", b"\x89PNG" + b"\x00" * 100)).status_code == 422
    assert left_behind(tmp_path) == []


def test_a_client_that_disconnects_mid_upload_leaves_no_file(detector, tmp_path):
    """Raw ASGI: the body's first chunk, then the client is gone."""
    import asyncio

    app = create_app(ServiceSettings(temp_dir=str(tmp_path)), detector=detector)
    head = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.mp4\"\r\n\r\n" + b"\x00" * 4096
    messages = [{"type": "http.request", "body": head, "more_body": True}, {"type": "http.disconnect"}]
    seen_in_the_middle = []
    sent = []

    async def receive():
        if len(messages) == 1:  # the first chunk is written: the upload's file exists now
            seen_in_the_middle.extend(p for p in tmp_path.rglob("*") if p.is_file())
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"multipart/form-data; boundary=b")], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "state": {}}
    asyncio.run(app(scope, receive, send))
    assert [p.name for p in seen_in_the_middle] == ["upload.mp4"]  # it was on disk, under our name for it
    assert sent[0]["status"] == 499 and list(tmp_path.iterdir()) == []  # and is gone


def test_a_full_queue_answers_503_with_retry_after_and_recovers(detector, tmp_path):
    app = create_app(ServiceSettings(queue_size=0, temp_dir=str(tmp_path)), detector=detector)
    with TestClient(app) as client:
        worker = app.state.service.worker
        assert worker.try_admit()  # the one place is taken (a request being scored)
        busy = client.post("/v1/predict", files=clip())
        assert busy.status_code == 503 and busy.headers["retry-after"] == "2" and "busy" in busy.json()["error"]
        worker.release()
        assert client.post("/v1/predict", files=clip()).status_code == 200
    assert left_behind(tmp_path) == []


def test_a_request_past_its_timeout_gets_504_and_its_files_are_deleted(detector, tmp_path):
    app = create_app(ServiceSettings(timeout_s=1.0, temp_dir=str(tmp_path)), detector=detector)
    with TestClient(app) as client:
        worker = app.state.service.worker
        blocker = worker._executor.submit(time.sleep, 2.5)  # the model's thread is busy with another clip
        late = client.post("/v1/predict", files=clip())
        assert late.status_code == 504 and "longer than 1 s" in late.json()["error"]
        blocker.result()
        assert left_behind(tmp_path) == []
        assert worker.admitted == 0
        after = client.post("/v1/predict", files=clip("notes.mp4", b"text"))  # quick, through the model's thread
        assert after.status_code == 422 and after.json()["exit_code"] == 3


def test_one_access_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="dfd.serve.access"):
        client.post("/v1/predict", files=clip())
        client.get("/healthz")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dfd.serve.access"]
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("POST", "/v1/predict", 200), ("GET", "/healthz", 200)]
    assert lines[0]["verdict"] == ASTRONAUT_VERDICT and lines[0]["bytes_in"] > ASTRONAUT.stat().st_size
    assert lines[0]["bytes_out"] > 0 and lines[0]["seconds"] > 0


def test_the_page_loads_nothing_from_the_network_and_fits_a_phone(client):
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert 'name="viewport" content="width=device-width' in page.text
    texts = [page.text] + [client.get(f"/static/{name}").text for name in ("app.js", "style.css")]
    for text in texts:
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text) and "@import" not in text
        assert not re.search(r"fetch\([\"']https?:", text)
    assert "/v1/predict" in texts[1] and "upload.onprogress" in texts[1]
    assert client.get("/static/secret.py").status_code == 404
    missing, wrong_method = client.get("/v1/nothing"), client.get("/v1/predict")
    assert (missing.status_code, wrong_method.status_code) == (404, 405)
    assert missing.json() == {"error": "GET /v1/nothing: Not Found"} and "error" in wrong_method.json()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app):
    """``app`` served by uvicorn on a free port of 127.0.0.1, in a thread: its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_over_a_real_socket(detector, tmp_path):
    """uvicorn on a free port of 127.0.0.1: the verdict, and an oversize upload refused."""
    app = create_app(ServiceSettings(max_upload_bytes=1_000_000, temp_dir=str(tmp_path)), detector=detector)
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        assert http.get("/readyz").status_code == 200
        good = http.post("/v1/predict", files=clip())
        assert good.status_code == 200
        assert good.json()["probability"] == pytest.approx(ASTRONAUT_PROBABILITY, abs=1e-6)
        big = http.post("/v1/predict", files=clip("big.mp4", b"\x00" * 5_000_000))
        assert big.status_code == 413
        assert http.post("/v1/predict", files=clip()).status_code == 200
    assert left_behind(tmp_path) == []


HARNESS = """<!doctype html><title>waiting</title>
<iframe id="page" src="/" style="border:0;width:100%;height:100%;position:fixed;inset:0"></iframe>
<script>
// what a person does: choose the clip on the page, then wait for the verdict
document.getElementById("page").onload = async () => {
  const doc = document.getElementById("page").contentDocument;
  const blob = await (await fetch("/harness/clip")).blob();
  const chosen = new DataTransfer();
  chosen.items.add(new File([blob], "astronaut.mp4", {type: "video/mp4"}));
  const input = doc.getElementById("file");
  input.files = chosen.files;
  input.dispatchEvent(new Event("change"));
  const started = Date.now();
  while (doc.getElementById("result").hidden && doc.getElementById("error").hidden && Date.now() - started < 60000) {
    await new Promise((r) => setTimeout(r, 100));
  }
  document.title = "verdict: " + doc.getElementById("verdict").textContent + " | " +
    doc.getElementById("numbers").textContent + " | " + doc.getElementById("judged").textContent +
    " | error: " + doc.getElementById("error").textContent + " | band: " +
    (doc.getElementById("gauge-band").hidden ? "none" : doc.getElementById("gauge-band").style.left);
};
</script>"""


def chromium() -> str | None:
    return next((found for name in ("chromium-headless-shell", "chromium", "chromium-browser")
                 if (found := shutil.which(name))), None)


def test_the_page_in_headless_chromium_gives_the_verdict_at_phone_width(detector, tmp_path):
    """The page driven in headless Chromium at a phone's width (412 px): the clip chosen, the verdict
    shown; the screenshot is docs/images/serve-page.png's kind."""
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium to drive the page in (apt-get install chromium-headless-shell)")
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    app = create_app(ServiceSettings(temp_dir=str(tmp_path)), detector=detector)
    app.router.routes += [  # test-only routes: the harness page, and the clip it chooses
        Route("/harness", lambda request: HTMLResponse(HARNESS)),
        Route("/harness/clip", lambda request: Response(ASTRONAUT.read_bytes(), media_type="video/mp4"))]
    shot = tmp_path / "page.png"
    with running(app) as base:
        common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  "--virtual-time-budget=60000", "--window-size=412,1400"]
        dom = subprocess.run([*common, "--dump-dom", f"{base}/harness"], capture_output=True, text=True, timeout=180)
        subprocess.run([*common, f"--screenshot={shot}", f"{base}/harness"], capture_output=True, timeout=180)
    title = re.search(r"<title>(.*?)</title>", dom.stdout, re.S)
    assert title is not None, dom.stderr[-2000:]
    heading = {"real": "Likely real", "fake": "Likely fake", "uncertain": "Uncertain: too close to call"}  # app.js
    assert f"verdict: {heading[ASTRONAUT_VERDICT]}" in title.group(1)
    assert (f"P(fake) = {ASTRONAUT_PROBABILITY:.3f} against the threshold {ASTRONAUT_THRESHOLD:.3f}"
            in title.group(1))
    assert "Judged frames 0–49 of 50 (0.0–2.0 s)" in title.group(1)  # which part of the clip: its windows
    assert f"({ASTRONAUT_JUDGED})" in title.group(1)  # as the CLI line says it (judged_summary)
    band = json.loads((ROOT / "deepfake_cli" / "serve" / "default_model" / "config.json").read_text())["uncertain"]
    assert f"band: {100 * band[0]:.1f}%" in title.group(1)
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[1] == 412
    b, g, r = image[..., 0], image[..., 1], image[..., 2]
    coloured = {  # the verdict (and, but when uncertain, its bar) in its colour (style.css)
        "real": (g > 100) & (b < 80) & (r < 80),  # green
        "fake": (r > 100) & (g < 80) & (b < 80),  # red
        "uncertain": (r > 100) & (g > 50) & (g < 120) & (b < 40),  # brown
    }[ASTRONAUT_VERDICT]
    assert coloured.mean() > 0.001


def test_serve_without_the_serve_extra_names_its_pip_line_and_exits_2():
    import sys

    from tests.test_install import PLAIN  # a dfd in which the named modules cannot be imported

    run = subprocess.run([sys.executable, "-c", PLAIN, "starlette,uvicorn,python_multipart", "serve"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "dfd serve needs the 'serve' extra" in run.stderr and "pip install 'deepfake-cli[serve]'" in run.stderr
    assert run.stderr.splitlines()[-1].strip() == "LOADED"  # nothing of the extra was even tried


def test_serve_refuses_a_model_that_is_not_there(tmp_path):
    from typer.testing import CliRunner

    from deepfake_cli.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", "no-such-model", "--models-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no model bundle 'no-such-model'" in result.output


@pytest.mark.slow
def test_report_gives_the_html_evidence_page(client):
    pytest.importorskip("keras", reason="the report's heatmaps need the [train] extra")
    response = client.post("/v1/report", files=clip())
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower() and "astronaut.mp4" in response.text
    assert "dfd-upload-" not in response.text  # the private folder's name is not shown
    assert client.post("/v1/report", files=clip("notes.mp4", b"text")).status_code == 422
