"""The web app's API: health, predict, limits and bad input, the WebSocket with spelling, and the CLI."""

from __future__ import annotations

import base64
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx2", reason="the test client needs httpx2 (pip install httpx2)")
import python_multipart.multipart
from fastapi.testclient import TestClient

from asl_tinyml.cli import main
from asl_tinyml.config import UserError
from asl_tinyml.images import load_image
from asl_tinyml.inference import load_predictor
from asl_tinyml.models import create_model, save_checkpoint
from asl_tinyml.serve import RateLimiter, ServeSettings, create_app, run_server, top_k
from asl_tinyml.spelling import SpellingConfig, apply_label

from .helpers import websocket_error

CLASSES = ["a", "b", "c", "l", "space", "del", "nothing"]
SIZE = 16
OPTIONS = {"channels": [4, 8], "hidden": 8}


def build_model(root: Path, classes: list[str] = CLASSES, size: int = SIZE) -> tuple[Path, Path]:
    """A small random convkan checkpoint and its ONNX export (export.py's exporter)."""
    from asl_tinyml.export import export_onnx

    ckpt = make_checkpoint(root / "best.pt", classes, size)
    return ckpt, export_onnx(ckpt, root / "model.onnx")


def make_checkpoint(path: Path, classes: list[str] = CLASSES, size: int = SIZE) -> Path:
    torch.manual_seed(0)
    model = create_model("convkan", len(classes), **OPTIONS).eval()
    save_checkpoint(path, model, {"model": "convkan", "model_options": OPTIONS, "classes": classes, "image_size": size})
    return path


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("serve"))[1]


@pytest.fixture(scope="module")
def client(onnx_model: Path) -> TestClient:
    with TestClient(create_app(onnx_model, settings=ServeSettings(max_upload_bytes=4 * 1024 * 1024))) as c:
        yield c


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (40, 30), seed: int = 0, noise: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    if noise:
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    else:
        arr = np.clip(np.array([180, 120, 90]) + rng.integers(-30, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def expected_probs(model: Path, data: bytes) -> np.ndarray:
    pred = load_predictor(model)
    return pred.predict_proba(load_image(io.BytesIO(data), pred.image_size))[0]


# --- HTTP ----------------------------------------------------------------------------------------------
def test_health_names_the_model_and_its_classes(client: TestClient, onnx_model: Path) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model"] == str(onnx_model) and body["kind"] == "onnx"
    assert body["classes"] == len(CLASSES) and body["labels"] == CLASSES and body["image_size"] == SIZE


def test_predict_returns_the_models_top_classes(client: TestClient, onnx_model: Path) -> None:
    data = image_bytes()
    r = client.post("/predict", files={"file": ("hand.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    probs = expected_probs(onnx_model, data)
    order = np.argsort(-probs)
    assert [p["label"] for p in body["top"]] == [CLASSES[i] for i in order[:3]]
    np.testing.assert_allclose([p["prob"] for p in body["top"]], probs[order[:3]], atol=1e-5)
    assert body["ms"] >= 0
    five = client.post("/predict?topk=5", files={"file": ("hand.jpg", data, "image/jpeg")}).json()
    assert len(five["top"]) == 5 and five["top"][:3] == body["top"]
    many = client.post("/predict?topk=50", files={"file": ("hand.jpg", data, "image/jpeg")}).json()
    assert len(many["top"]) == len(CLASSES) and sum(p["prob"] for p in many["top"]) == pytest.approx(1, abs=1e-4)


def test_predict_accepts_a_raw_image_body_and_other_formats(client: TestClient) -> None:
    png = image_bytes("PNG", seed=3)
    multipart = client.post("/predict", files={"file": ("x.png", png, "image/png")}).json()
    raw = client.post("/predict", content=png, headers={"content-type": "image/png"}).json()
    assert raw["top"] == multipart["top"]
    webp = client.post("/predict", files={"file": ("x.webp", image_bytes("WEBP"), "image/webp")})
    assert webp.status_code == 200


def test_predict_rejects_topk_out_of_range(client: TestClient) -> None:
    r = client.post("/predict?topk=0", files={"file": ("hand.jpg", image_bytes(), "image/jpeg")})
    assert r.status_code == 422


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"this is a text file, not a photo", "not a readable image"),
        (image_bytes()[:60], "not a readable image"),  # a truncated JPEG
        (b"", "empty image"),
    ],
    ids=["text", "truncated-jpeg", "empty"],
)
def test_predict_rejects_non_images_with_400(client: TestClient, payload: bytes, message: str) -> None:
    r = client.post("/predict", files={"file": ("photo.jpg", payload, "image/jpeg")})
    assert r.status_code == 400
    assert message in r.json()["detail"] and "JPEG, PNG" in r.json()["detail"]
    assert "object at 0x" not in r.json()["detail"]
    assert client.get("/health").status_code == 200  # still serving


def test_predict_without_a_file_is_422_with_a_hint(client: TestClient) -> None:
    r = client.post("/predict", files={"note": (None, "no file here")})  # multipart with a text field only
    assert r.status_code == 422 and "no file in the form" in r.json()["detail"]
    r = client.post("/predict", data={"note": "a urlencoded form"})
    assert r.status_code == 422 and "multipart/form-data field 'file'" in r.json()["detail"]
    r = client.post("/predict", json={"image": "x"})
    assert r.status_code == 422 and "unsupported content type 'application/json'" in r.json()["detail"]


def test_oversized_upload_is_413_and_the_server_keeps_serving(onnx_model: Path) -> None:
    with TestClient(create_app(onnx_model, settings=ServeSettings(max_upload_bytes=20_000))) as c:
        big = image_bytes("PNG", size=(200, 200), noise=True)
        assert len(big) > 20_000
        r = c.post("/predict", files={"file": ("big.png", big, "image/png")})
        assert r.status_code == 413 and "upload too large" in r.json()["detail"]
        chunked = c.post("/predict", content=iter([big[:15_000], big[15_000:]]), headers={"content-type": "image/png"})
        assert chunked.status_code == 413  # no Content-Length: counted while streaming
        assert c.post("/predict", files={"file": ("ok.jpg", image_bytes(), "image/jpeg")}).status_code == 200


def test_images_with_too_many_pixels_are_refused_before_decoding(onnx_model: Path) -> None:
    with TestClient(create_app(onnx_model, settings=ServeSettings(max_pixels=1_000_000))) as c:
        huge = image_bytes("PNG", size=(1500, 1000))  # small file, 1.5 megapixels
        r = c.post("/predict", files={"file": ("huge.png", huge, "image/png")})
        assert r.status_code == 413 and "1500x1000 pixels exceeds 1 megapixels" in r.json()["detail"]
        with c.websocket_connect("/ws") as ws:
            ws.receive_json()
            ws.send_bytes(huge)
            assert ws.receive_json()["code"] == "too_large"


def test_uploads_are_decoded_in_memory_never_spooled_to_disk(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_disk(self: object) -> None:
        raise AssertionError("an upload was rolled over to a temporary file on disk")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", no_disk)
    monkeypatch.setattr(python_multipart.multipart.File, "flush_to_disk", no_disk)
    for name in ("NamedTemporaryFile", "TemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, no_disk)
    big = image_bytes("PNG", size=(700, 700), noise=True)
    assert len(big) > 1024 * 1024  # larger than the parsers' default in-memory limit
    r = client.post("/predict", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 200, r.text


def test_page_static_files_and_openapi_docs(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="static/app.js"' in page.text and 'id="text"' in page.text
    assert "getUserMedia" in client.get("/static/app.js").text
    assert client.get("/static/style.css").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/health"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


# --- WebSocket -----------------------------------------------------------------------------------------
def test_websocket_frames_give_predictions_and_spelled_text(onnx_model: Path) -> None:
    spelling = SpellingConfig(window=1, threshold=0.0, stable_frames=2, release_frames=1)
    # a frame whose top label types something (the random test model may well prefer `nothing`)
    data, top = next(
        (d, CLASSES[int(expected_probs(onnx_model, d).argmax())])
        for d in (image_bytes(seed=s, noise=True) for s in range(200))
        if CLASSES[int(expected_probs(onnx_model, d).argmax())] not in ("nothing", "del", "space")
    )
    with TestClient(create_app(onnx_model, settings=ServeSettings(spelling=spelling))) as c, c.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello" and hello["classes"] == CLASSES and hello["text"] == ""
        ws.send_bytes(data)
        first = ws.receive_json()
        assert first["type"] == "prediction" and first["top"][0]["label"] == top and first["text"] == ""
        assert first["progress"] == pytest.approx(0.5)
        url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
        ws.send_text(json.dumps({"type": "frame", "image": url, "id": 7}))
        second = ws.receive_json()
        assert second["id"] == 7 and second["committed"] == top
        assert second["text"] == apply_label("", top, spelling)
        ws.send_text(json.dumps({"type": "clear"}))
        assert ws.receive_json() == {**ws_state(""), "type": "state", "held": None}
        ws.send_text(json.dumps({"type": "space"}))
        assert ws.receive_json()["text"] == " "
        ws.send_text(json.dumps({"type": "backspace"}))
        assert ws.receive_json()["text"] == ""


def ws_state(text: str) -> dict[str, object]:
    return {"text": text, "label": None, "prob": 0.0, "candidate": None, "progress": 0.0, "committed": None}


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        ("this is not json", "bad_json", "not JSON"),
        ("[1, 2, 3]", "bad_message", "JSON object"),
        ('{"type": "dance"}', "bad_message", "unknown message type 'dance'"),
        ('{"type": "frame"}', "bad_message", "needs 'image'"),
        ('{"type": "frame", "image": "data:image/jpeg;base64,@@@"}', "bad_image", "not valid base64"),
        ('{"type": "frame", "image": "data:image/jpeg;base64,aGVsbG8="}', "bad_image", "not a readable image"),
    ],
    ids=["not-json", "not-object", "unknown-type", "no-image", "bad-base64", "not-an-image"],
)
def test_malformed_websocket_messages_get_an_error_and_the_socket_stays_usable(
    client: TestClient, message: str, code: str, words: str
) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        reply = websocket_error(ws, message)
        assert reply["code"] == code and words in reply["error"], reply
        ws.send_bytes(b"\x00\x01 binary garbage")
        assert ws.receive_json()["code"] == "bad_image"
        ws.send_bytes(image_bytes())
        assert ws.receive_json()["type"] == "prediction"


def test_websocket_too_many_frames_are_dropped_with_a_message(onnx_model: Path) -> None:
    settings = ServeSettings(max_fps=2)
    with TestClient(create_app(onnx_model, settings=settings)) as c, c.websocket_connect("/ws") as ws:
        ws.receive_json()
        frame = image_bytes()
        for _ in range(8):
            ws.send_bytes(frame)
        replies = [ws.receive_json() for _ in range(8)]
        kinds = [r["type"] for r in replies]
        assert kinds[:2] == ["prediction", "prediction"]
        dropped = [r for r in replies if r["type"] == "error"]
        assert dropped and all(r["code"] == "rate_limited" and "at most 2 per second" in r["error"] for r in dropped)
        ws.send_text('{"type": "ping"}')
        assert ws.receive_json() == {"type": "pong"}
        with c.websocket_connect("/ws") as other:  # another client is not limited by the first
            other.receive_json()
            other.send_bytes(frame)
            assert other.receive_json()["type"] == "prediction"


def test_websocket_oversized_frame_is_refused(onnx_model: Path) -> None:
    with TestClient(create_app(onnx_model, settings=ServeSettings(max_frame_bytes=1000))) as c, c.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_bytes(image_bytes("PNG", size=(100, 100), noise=True))
        reply = ws.receive_json()
        assert reply["code"] == "too_large" and "downscale" in reply["error"]
        ws.send_bytes(image_bytes(size=(16, 16)))
        assert ws.receive_json()["type"] == "prediction"


def test_each_websocket_client_spells_its_own_text(onnx_model: Path) -> None:
    spelling = SpellingConfig(window=1, threshold=0.0, stable_frames=1, release_frames=1)
    app = create_app(onnx_model, settings=ServeSettings(spelling=spelling))
    with TestClient(app) as c, c.websocket_connect("/ws") as a, c.websocket_connect("/ws") as b:
        a.receive_json(), b.receive_json()
        a.send_text('{"type": "space"}')
        assert a.receive_json()["text"] == " "
        b.send_text('{"type": "ping"}')
        b.receive_json()
        b.send_text('{"type": "backspace"}')
        assert b.receive_json()["text"] == ""
        a.send_text('{"type": "space"}')
        assert a.receive_json()["text"] == "  "


# --- helpers, start-up and CLI ---------------------------------------------------------------------------
def test_rate_limiter_sliding_window() -> None:
    limiter = RateLimiter(3)
    assert [limiter.allow(t) for t in (0.0, 0.1, 0.2, 0.3, 0.9)] == [True, True, True, False, False]
    assert limiter.allow(1.0) and limiter.allow(1.1) and not limiter.allow(1.15)


def test_top_k_is_sorted_and_clamped() -> None:
    probs = np.array([0.1, 0.6, 0.3])
    assert top_k(probs, ["x", "y", "z"], 2) == [{"label": "y", "prob": 0.6}, {"label": "z", "prob": 0.3}]
    assert len(top_k(probs, ["x", "y", "z"], 10)) == 3


def test_the_app_also_serves_a_pt_checkpoint(tmp_path: Path) -> None:
    with TestClient(create_app(make_checkpoint(tmp_path / "best.pt"))) as c:
        assert c.get("/health").json()["kind"] == "torch"
        assert c.post("/predict", files={"file": ("a.jpg", image_bytes(), "image/jpeg")}).status_code == 200


def test_missing_model_is_a_one_line_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "models" / "asl_fastkan_int8.onnx"
    with pytest.raises(UserError, match="not found; pass a best.pt .* or an .onnx from `asl-tinyml export`"):
        run_server(missing)
    assert main(["serve", "--model", str(missing), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(missing) in err and "asl-tinyml export" in err
    # no --model: the shipped predictor in --models-dir, which the pipeline makes
    assert main(["serve", "--models-dir", str(tmp_path / "models"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no shipped model in" in err and "asl-tinyml pipeline" in err


def test_answers_can_be_restricted_to_letters_or_digits(onnx_model: Path) -> None:
    data = image_bytes(seed=3, noise=True)
    letters = [c for c in CLASSES if not c.isdigit()]
    with TestClient(create_app(onnx_model)) as c:
        body = c.post("/predict?topk=50&classes=letters", files={"file": ("a.jpg", data, "image/jpeg")}).json()
        assert {p["label"] for p in body["top"]} <= set(letters) and body["label"] == body["top"][0]["label"]
        assert sum(p["prob"] for p in body["top"]) == pytest.approx(1.0, abs=1e-4)
        assert body["hand"] is None  # a centre-crop pixel model alone does not look for a hand
        assert c.post("/predict?classes=words", files={"file": ("a.jpg", data, "image/jpeg")}).status_code == 422
        with c.websocket_connect("/ws") as ws:
            assert ws.receive_json()["answer_sets"][0] == "all"
            ws.send_text(json.dumps({"type": "classes", "classes": "letters"}))
            assert ws.receive_json() == {"type": "classes", "classes": "letters"}
            ws.send_bytes(data)
            reply = ws.receive_json()
            assert reply["type"] == "prediction" and {p["label"] for p in reply["top"]} <= set(letters)
            ws.send_text(json.dumps({"type": "classes", "classes": "words"}))
            assert ws.receive_json()["type"] == "error"


@pytest.mark.parametrize("sure_above", [0.5, 0.0])
def test_a_camera_frame_without_a_hand_types_nothing_unless_the_pixel_model_is_sure(tmp_path: Path, sure_above: float) -> None:
    """No hand found and an unsure pixel model: the photo answer is "no hand found" (under `no_hand_threshold`)
    and the speller, however eager, types nothing (under `sure_without_hand`); a pixel model sure enough of a
    sign (both 0 here) is typed as before."""
    from asl_tinyml.fusion import SignPredictor

    letters = ["a", "b", "c", "l"]
    torch.manual_seed(0)
    net = create_model("convkan", len(letters), **OPTIONS).eval()
    ckpt = tmp_path / "hand.pt"  # a model trained on hand crops: the server looks for a hand in every frame
    save_checkpoint(ckpt, net, {"model": "convkan", "model_options": OPTIONS, "classes": letters, "image_size": SIZE,
                                "crop": "hand"})
    predictor = SignPredictor(load_predictor(ckpt), no_hand_threshold=sure_above)
    eager = SpellingConfig(window=1, threshold=0.0, stable_frames=1, release_frames=1)
    wall = image_bytes(size=(160, 120))  # a brown wall: no hand
    settings = ServeSettings(spelling=eager, max_fps=1000, sure_without_hand=0.8 if sure_above else 0.0)
    with TestClient(create_app(predictor, settings=settings)) as c:
        with c.websocket_connect("/ws") as ws:
            ws.receive_json()
            for _ in range(3):
                ws.send_bytes(wall)
                reply = ws.receive_json()
        answer = c.post("/predict", files={"file": ("wall.jpg", wall, "image/jpeg")}).json()
    assert answer["hand"] is False and (answer["label"] == "no hand found") == bool(sure_above)
    assert reply["hand"] is False
    if sure_above:  # the speller's state: nothing seen, nothing held, nothing typed
        assert reply["label"] is None and reply["candidate"] is None and reply["text"] == ""
    else:
        assert reply["label"] in letters and reply["text"] != ""
