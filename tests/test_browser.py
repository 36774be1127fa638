"""End to end in a real browser: headless Chromium with a fake camera playing test images.

The server runs on 127.0.0.1 in a background thread; Playwright drives Debian's Chromium (no browser
download). Skipped when Chromium or Playwright is missing: install them with
`apt-get install -y chromium` and `pip install playwright`.

Environment variables: `ASL_TINYML_SCREENSHOT=docs/screenshot.png` saves the page's screenshot there
(else in the test's tmp folder); `ASL_TINYML_DEMO_MODEL` (a trained .onnx/.pt) with `ASL_TINYML_DEMO_IMAGES`
(a folder of photos, played in name order, 1.5 s each) replaces the tiny random model and the generated
frames; then `ASL_TINYML_DEMO_TEXT` (the word those photos spell) is awaited before the screenshot.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from asl_tinyml.config import IMAGE_EXTENSIONS
from asl_tinyml.models import create_model, save_checkpoint
from asl_tinyml.serve import ServeSettings, create_app
from asl_tinyml.spelling import SpellingConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)"),
]
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]
CLASSES = ["a", "b", "c", "d", "e"]  # letters only: whatever the random model commits shows as text
VIDEO_SIZE = (320, 240)
VIDEO_FPS = 15


def write_y4m(frames: list[np.ndarray], path: Path, fps: int = VIDEO_FPS) -> Path:
    """uint8 RGB frames (H, W, 3), all one size, -> a YUV4MPEG2 (4:2:0) video for Chromium's fake camera."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            y, cb, cr = Image.fromarray(rgb).convert("YCbCr").split()
            f.write(b"FRAME\n" + y.tobytes())
            f.writelines(plane.resize((w // 2, h // 2), Image.Resampling.BILINEAR).tobytes() for plane in (cb, cr))
    return path


def video_frames(images: list[np.ndarray], seconds_each: float = 1.5, fps: int = VIDEO_FPS) -> list[np.ndarray]:
    """Each image letterboxed to VIDEO_SIZE and repeated for `seconds_each` seconds."""
    w, h = VIDEO_SIZE
    out = []
    for img in images:
        canvas = Image.new("RGB", (w, h))
        im = Image.fromarray(img)
        im.thumbnail((w, h))
        canvas.paste(im, ((w - im.width) // 2, (h - im.height) // 2))
        out += [np.asarray(canvas)] * max(1, round(seconds_each * fps))
    return out


def generated_images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    colors = [(200, 60, 60), (60, 180, 80), (70, 90, 210), (220, 200, 60)]
    return [
        np.clip(np.array(colors[i % 4])[None, None] + rng.integers(-40, 40, (240, 240, 3)), 0, 255).astype(np.uint8)
        for i in range(n)
    ]


def folder_images(folder: Path) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    return [np.asarray(Image.open(p).convert("RGB")) for p in files]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_thread(app: object) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yields its URL, stops it afterwards."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start within 20 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The app on 127.0.0.1:<free port> in a background thread; yields its base URL."""
    demo = os.environ.get("ASL_TINYML_DEMO_MODEL")
    if demo:
        model: Path = Path(demo)
        spelling = SpellingConfig(window=3, threshold=0.5, stable_frames=6, release_frames=3)
    else:
        torch.manual_seed(0)
        options = {"channels": [4, 8], "hidden": 8}
        net = create_model("convkan", len(CLASSES), **options).eval()
        model = tmp_path / "best.pt"
        save_checkpoint(model, net, {"model": "convkan", "model_options": options, "classes": CLASSES, "image_size": 32})
        spelling = SpellingConfig(window=1, threshold=0.0, stable_frames=2, release_frames=1)
    yield from serve_in_thread(create_app(model, settings=ServeSettings(spelling=spelling)))


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[object]:
    demo_images = os.environ.get("ASL_TINYML_DEMO_IMAGES")
    images = folder_images(Path(demo_images)) if demo_images else generated_images()
    video = write_y4m(video_frames(images), tmp_path / "camera.y4m")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={video}"],
            viewport={"width": 1100, "height": 760},
        )
        try:
            yield context
        finally:
            context.close()


def test_webcam_page_shows_predictions_and_spells_text(server: str, browser_context: object, tmp_path: Path) -> None:
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server)
    page.wait_for_selector("#status.ok", timeout=15_000)  # WebSocket connected
    page.wait_for_selector("#top .pred", timeout=30_000)  # predictions from the fake camera's frames
    labels = page.eval_on_selector_all("#top .pred", "els => els.map(e => e.dataset.label)")
    assert len(labels) == 3 and len(set(labels)) == 3
    widths = page.eval_on_selector_all("#top .pred .fill", "els => els.map(e => parseFloat(e.style.width))")
    assert widths == sorted(widths, reverse=True) and widths[0] > 0
    page.wait_for_function("document.getElementById('text').textContent.trim().length > 0", timeout=30_000)
    text = page.text_content("#text")
    if not os.environ.get("ASL_TINYML_DEMO_MODEL"):
        assert set(text) <= set("".join(CLASSES)), text
    assert page.is_hidden("#camera-note")
    # the frame-rate line is refreshed about once a second, possibly after the first letter is typed
    page.wait_for_function("document.getElementById('rate').textContent.includes('frames/s')", timeout=10_000)

    demo_images = os.environ.get("ASL_TINYML_DEMO_IMAGES")
    photo = tmp_path / "photo.jpg"
    Image.fromarray(folder_images(Path(demo_images))[0] if demo_images else generated_images(1, seed=9)[0]).save(photo)
    page.set_input_files("#upload", str(photo))
    page.wait_for_selector("#upload-top .pred", timeout=15_000)
    assert len(page.query_selector_all("#upload-top .pred")) == 3

    word = os.environ.get("ASL_TINYML_DEMO_TEXT")
    if word:
        page.wait_for_function(f"document.getElementById('text').textContent.endsWith({word!r})", timeout=60_000)
    shot = Path(os.environ.get("ASL_TINYML_SCREENSHOT") or tmp_path / "screenshot.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 1000

    page.click("#toggle")  # pause the camera stream, then clear the text
    assert page.text_content("#toggle") == "Resume"
    page.wait_for_timeout(500)
    page.click("#clear")
    page.wait_for_function("document.getElementById('text').textContent === ''", timeout=5_000)
    assert errors == []


def test_page_explains_when_no_camera_is_allowed(server: str, browser_context: object) -> None:
    page = browser_context.new_page()
    page.add_init_script(
        "navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('denied', 'NotAllowedError'));"
    )
    page.set_viewport_size({"width": 390, "height": 844})  # a phone screen
    page.goto(server)
    page.wait_for_selector("#camera-note:not([hidden])", timeout=15_000)
    assert "permission was denied" in page.text_content("#camera-note")
    assert "upload a photo" in page.text_content("#camera-note")
    page.wait_for_selector("#status.ok", timeout=15_000)
    # one column on a phone: nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_api_docs_render_with_the_network_cut_off(server: str, browser_context: object) -> None:
    """/docs: Swagger UI draws the API from assets the app serves itself; any other host is blocked."""
    page = browser_context.new_page()
    blocked: list[str] = []
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def local_only(route: object) -> None:
        url = route.request.url
        if url.startswith(server):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", local_only)
    page.goto(server + "docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
    assert "asl-tinyml" in page.text_content(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-summary-path", timeout=15_000)
    paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent.trim())")
    assert {"/predict", "/health"} <= set(paths)
    assert blocked == [] and errors == []
@pytest.fixture
def motion_server(tmp_path: Path) -> Iterator[str]:
    """The app with stand-in motion models and tracker (no MediaPipe): every frame shows a hand on a j path."""
    from asl_tinyml import motion as M
    from tests.test_motion import FixedPredictor, j_path, words_window

    class PathTracker:
        def __init__(self) -> None:
            self.n = 0

        def process(self, rgb: np.ndarray) -> np.ndarray:
            self.n += 1
            return words_window(j_path(30))[self.n % 30]

        def close(self) -> None:
            pass

    torch.manual_seed(0)
    options = {"channels": [4, 8], "hidden": 8}
    net = create_model("convkan", len(CLASSES), **options).eval()
    model = tmp_path / "best.pt"
    save_checkpoint(model, net, {"model": "convkan", "model_options": options, "classes": CLASSES, "image_size": 32})
    motion = M.MotionModels(
        FixedPredictor("letters", ["i", "idle", "j", "z"], "j"), FixedPredictor("words", ["coffee", "idle", "tea"], "coffee"),
        M.LiveConfig(window=12, min_frames=6, stable=2, smooth=1), tracker_factory=PathTracker,
    )
    yield from serve_in_thread(create_app(model, settings=ServeSettings(spelling=SpellingConfig(threshold=1.0)), motion=motion))


def test_page_shows_moving_signs_and_word_mode_types_words(motion_server: str, browser_context: object,
                                                            tmp_path: Path) -> None:
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(motion_server)
    page.wait_for_selector("#motion-card:not([hidden])", timeout=15_000)
    assert page.is_visible("#word-mode-label")
    page.wait_for_selector("#motion-top .pred", timeout=30_000)  # the motion model's top classes
    assert page.eval_on_selector_all("#motion-top .pred", "els => els.map(e => e.dataset.label)")[0] == "j"
    page.wait_for_function("document.getElementById('text').textContent.includes('j')", timeout=30_000)
    page.check("#word-mode")
    page.wait_for_function("document.getElementById('motion-mode').textContent === '(words)'", timeout=10_000)
    page.wait_for_function("document.getElementById('text').textContent.includes('coffee')", timeout=30_000)
    assert "frames" in page.text_content("#motion-note")
    page.screenshot(path=str(tmp_path / "motion.png"), full_page=True)
    assert errors == []
