"""Real-time recognition: a FastAPI app with a webcam page that spells words, and a small JSON API.

- `GET /`: the page (webcam preview, live top-3, the spelled text, a photo upload box).
- `GET /health`: status, the model file and its classes.
- `POST /predict?topk=3`: one photo (multipart field `file`, or a raw image body) -> the top classes.
- `WS /ws`: camera frames in (binary JPEG/PNG bytes, or JSON `{"type": "frame", "image": "data:..."}`),
  per-frame predictions and the spelled text out; `{"type": "clear" | "space" | "backspace"}` edit the text.
  With motion models (`create_app(..., motion=MotionModels)`), each frame also goes through MediaPipe
  Holistic in video mode (one tracker per connection) into a rolling window, and the reply carries a
  `motion` entry (`j`/`z` or words); `{"type": "mode", "mode": "letters" | "words"}` switches word mode, and
  `{"type": "landmarks", "values": [258 floats]}` feeds one landmark frame directly (no camera needed).
- `GET /docs`: the OpenAPI documentation.

The model is loaded once, through ONNX Runtime (or PyTorch for a `.pt`), by `inference.load_predictor`.
Client images are decoded from memory and never written to disk; oversized uploads (413), non-images
(400), malformed messages and clients sending too many frames per second get a clear error while the
server keeps serving everyone else.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import File as MultipartFile
from python_multipart.multipart import FormParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from .config import UserError
from .inference import Predictor, load_predictor
from .preprocess import load_image
from .spelling import Speller, SpellingConfig

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MODEL = Path("models/asl_fastkan_int8.onnx")
MIB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """Limits and behaviour of the server."""

    topk: int = 3  # classes returned per prediction unless `topk` is given
    max_upload_bytes: int = 8 * MIB  # POST /predict request body
    max_frame_bytes: int = 1 * MIB  # one WebSocket frame
    max_fps: float = 20.0  # frames per second accepted from one WebSocket client; the rest are dropped
    max_pixels: int = 64_000_000  # decoded image size (a decompression bomb guard)
    threads: int | None = 1  # inference threads per call (requests run in parallel on a thread pool)
    spelling: SpellingConfig = field(default_factory=SpellingConfig)


class Prediction(BaseModel):
    label: str
    prob: float


class PredictResponse(BaseModel):
    top: list[Prediction]
    ms: float  # server time to decode the image and run the model


class Health(BaseModel):
    status: str
    model: str
    kind: str
    model_name: str | None
    classes: int
    labels: list[str]
    image_size: int


class BadImage(ValueError):
    """The bytes a client sent are not a readable image."""


class ImageTooLarge(BadImage):
    """The image decodes to more pixels than the server accepts."""


def _size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.0f} KiB"


class RateLimiter:
    """At most `per_second` events in any sliding one-second window (times in seconds, monotonic)."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        while self._times and now - self._times[0] >= 1.0:
            self._times.popleft()
        if len(self._times) >= self.per_second:
            return False
        self._times.append(now)
        return True


def top_k(probs: np.ndarray, classes: list[str], k: int) -> list[dict[str, Any]]:
    """The `k` most probable classes, best first, as `{"label", "prob"}`."""
    order = np.argsort(-probs, kind="stable")[: max(1, min(k, len(classes)))]
    return [{"label": classes[i], "prob": round(float(probs[i]), 6)} for i in order]


def classify_bytes(predictor: Predictor, data: bytes, max_pixels: int = 64_000_000) -> tuple[np.ndarray, float]:
    """Decode an image from memory and classify it: (probabilities, milliseconds).

    Raises BadImage (ImageTooLarge past `max_pixels`, checked from the header before decoding).
    """
    start = time.perf_counter()
    if not data:
        raise BadImage("empty image: the upload contained no bytes; send a JPEG, PNG or WebP photo")
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            width, height = im.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{exc}; send a smaller photo") from exc
    except (OSError, SyntaxError, ValueError):  # unreadable: load_image below names the reason
        width = height = 0
    if width * height > max_pixels:
        raise ImageTooLarge(f"image of {width}x{height} pixels exceeds {max_pixels / 1e6:g} megapixels; send a smaller photo")
    try:
        image = load_image(io.BytesIO(data), predictor.image_size)
    except (ValueError, Image.DecompressionBombError) as exc:
        reason = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(exc))  # no memory addresses
        raise BadImage(f"{reason}; send a JPEG, PNG or WebP photo") from exc
    probs = predictor.predict_proba(image)[0]
    return probs, (time.perf_counter() - start) * 1000


def decode_data_url(text: str) -> bytes:
    """The bytes of a `data:image/...;base64,...` URL (or of plain base64). Raises BadImage."""
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadImage(f"image is not valid base64 ({exc})") from exc


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it grows past `limit` bytes."""
    too_big = HTTPException(413, f"upload too large: the limit is {_size(limit)}; send a smaller photo")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def image_from_body(body: bytes, content_type: str, limit: int) -> bytes:
    """The uploaded image bytes: the first file of a multipart form (parsed in memory), or a raw image body."""
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("image/") or kind == "application/octet-stream":
        return body
    if kind != "multipart/form-data":
        raise HTTPException(
            422, f"unsupported content type {kind or '(none)'!r}: send the photo as multipart/form-data "
            "field 'file' (curl -F file=@photo.jpg) or as a raw image/* body",
        )
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise HTTPException(400, "malformed multipart upload: the Content-Type has no boundary")
    files: list[MultipartFile] = []
    config = {"MAX_MEMORY_FILE_SIZE": limit + 1}  # the body is at most `limit` bytes: files stay in memory
    parser = FormParser("multipart/form-data", lambda field: None, files.append, boundary=boundary, config=config)
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise HTTPException(400, f"malformed multipart upload: {exc}") from exc
    if not files:
        raise HTTPException(422, "no file in the form: send the photo as multipart field 'file' (curl -F file=@photo.jpg)")
    upload = files[0]
    upload.file_object.seek(0)
    return upload.file_object.read()


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _error(code: str, message: str) -> dict[str, str]:
    return {"type": "error", "code": code, "error": message}


def create_app(model: str | Path | Predictor = DEFAULT_MODEL, *, settings: ServeSettings | None = None,
               motion: Any = None) -> FastAPI:
    """The web app around one model (a `.pt`/`.onnx` path, loaded once here, or a loaded Predictor), and
    optionally the motion models (`motion.MotionModels`: j, z and words from the landmark path)."""
    settings = settings or ServeSettings()
    predictor = model if isinstance(model, Predictor) else load_predictor(model, threads=settings.threads)
    predictor.predict_proba(np.zeros((1, predictor.image_size, predictor.image_size, 3), np.uint8))  # warm up
    classes = list(predictor.classes)
    app = FastAPI(
        title="asl-tinyml",
        version="0.1.0",
        description="ASL fingerspelling from a webcam or a photo with a tiny FastKAN classifier.",
    )
    app.state.predictor = predictor
    app.state.settings = settings
    app.state.motion = motion
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health", response_model=Health)
    def health() -> dict[str, Any]:
        """The server is up: the model file, its kind, and its classes."""
        return {
            "status": "ok", "model": str(predictor.path), "kind": predictor.kind, "model_name": predictor.model_name,
            "classes": len(classes), "labels": classes, "image_size": predictor.image_size,
        }

    @app.post("/predict", response_model=PredictResponse, openapi_extra=_UPLOAD_BODY,
              responses={400: {"description": "not a readable image"}, 413: {"description": "upload too large"},
                         422: {"description": "no image in the request"}})
    async def predict(request: Request, topk: int = Query(settings.topk, ge=1, le=100)) -> dict[str, Any]:
        """Classify one photo: multipart field `file` (or a raw image body); returns the `topk` best classes."""
        body = await _read_body(request, settings.max_upload_bytes)
        content_type = request.headers.get("content-type", "")

        def handle() -> tuple[np.ndarray, float]:  # parse, decode and classify in one worker thread
            data = image_from_body(body, content_type, settings.max_upload_bytes)
            return classify_bytes(predictor, data, settings.max_pixels)

        try:
            probs, ms = await run_in_threadpool(handle)
        except ImageTooLarge as exc:
            raise HTTPException(413, str(exc)) from exc
        except BadImage as exc:
            raise HTTPException(400, str(exc)) from exc
        return {"top": top_k(probs, classes, topk), "ms": round(ms, 3)}

    async def on_frame(data: bytes, speller: Speller, frame_id: Any, live: Any = None) -> dict[str, Any]:
        if len(data) > settings.max_frame_bytes:
            return _error("too_large", f"frame of {_size(len(data))} exceeds {_size(settings.max_frame_bytes)}; downscale it")
        try:
            probs, ms = await run_in_threadpool(classify_bytes, predictor, data, settings.max_pixels)
        except ImageTooLarge as exc:
            return _error("too_large", str(exc))
        except BadImage as exc:
            return _error("bad_image", str(exc))
        if live is None:
            state = speller.update(probs)
            reply = {"type": "prediction", "top": top_k(probs, classes, settings.topk), "ms": round(ms, 3), **state.to_dict()}
        else:
            reply = {"type": "prediction", "top": top_k(probs, classes, settings.topk), "ms": round(ms, 3),
                     **await run_in_threadpool(landmark_frame, data, probs, speller, live)}
        if frame_id is not None:
            reply["id"] = frame_id
        return reply

    def landmark_frame(data: bytes, probs: np.ndarray, speller: Speller, live: Any) -> dict[str, Any]:
        """The landmark path of one camera frame (in a worker thread): Holistic -> window -> motion model,
        then the spelled text (static letters typed only in letters mode)."""
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"))
        motion_out = live.image(rgb)
        return spell_with_motion(probs, speller, live, motion_out)

    def spell_with_motion(probs: np.ndarray | None, speller: Speller, live: Any, motion_out: dict[str, Any]) -> dict[str, Any]:
        if live.mode == "letters" and probs is not None:
            state = speller.update(probs)
            if state.committed and state.committed not in (settings.spelling.space_label, settings.spelling.delete_label):
                live.letter_typed()
        if motion_out.get("commit"):
            speller.text = live.apply(speller.text, motion_out["commit"])
        return {**speller.state.to_dict(), "text": speller.text, "motion": motion_out}

    def on_landmarks(msg: dict[str, Any], speller: Speller, live: Any) -> dict[str, Any]:
        values = msg.get("values")
        if live is None:
            return _error("no_motion", "this server has no motion models: start it with models/asl_motion_*_int8.onnx")
        try:
            row = np.asarray(values, dtype=np.float32).ravel()
            aspect = float(msg.get("aspect", 0.75))
        except (TypeError, ValueError):
            return _error("bad_message", "a landmarks message needs 'values': 258 numbers (pose, left hand, right hand)")
        if row.size != 258 or not np.all(np.isfinite(row)) or not 0.1 <= aspect <= 10:
            return _error("bad_message", f"a landmarks message needs 258 finite values and an aspect in [0.1, 10], got {row.size}")
        reply = {"type": "motion", **spell_with_motion(None, speller, live, live.landmarks(row, aspect))}
        return reply

    async def on_message(message: dict[str, Any], speller: Speller, limiter: RateLimiter, live: Any = None) -> dict[str, Any]:
        raw = message.get("bytes")
        frame_id = None
        if raw is None:
            text = message.get("text") or ""
            try:
                msg = json.loads(text)
            except json.JSONDecodeError:
                return _error("bad_json", "message is not JSON: send binary image bytes or {\"type\": \"frame\", \"image\": \"data:...\"}")
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                return _error("bad_message", "message must be a JSON object with a string field 'type'")
            kind = msg["type"]
            if kind == "clear":
                return {"type": "state", **speller.clear().to_dict()}
            if kind in ("space", "backspace"):
                label = settings.spelling.space_label if kind == "space" else settings.spelling.delete_label
                return {"type": "state", **speller.edit(label).to_dict()}
            if kind == "ping":
                return {"type": "pong"}
            if kind == "mode":
                if live is None:
                    return _error("no_motion", "this server has no motion models, so no word mode")
                try:
                    live.set_mode(str(msg.get("mode")))
                except ValueError as exc:
                    return _error("bad_message", str(exc))
                return {"type": "state", "mode": live.mode, **speller.state.to_dict(), "text": speller.text}
            if kind == "landmarks":
                if not limiter.allow(time.monotonic()):
                    return _error("rate_limited", f"too many frames: at most {settings.max_fps:g} per second; frame dropped")
                return await run_in_threadpool(on_landmarks, msg, speller, live)
            if kind != "frame":
                return _error("bad_message", f"unknown message type {kind!r}; use frame, clear, space, backspace or ping"
                              + (" (or mode, landmarks)" if live is not None else ""))
            if not isinstance(msg.get("image"), str):
                return _error("bad_message", "a frame message needs 'image': a data:image/jpeg;base64,... URL")
            frame_id = msg.get("id")
            try:
                raw = decode_data_url(msg["image"])
            except BadImage as exc:
                return _error("bad_image", str(exc))
        if not limiter.allow(time.monotonic()):
            return _error("rate_limited", f"too many frames: at most {settings.max_fps:g} per second; frame dropped")
        return await on_frame(raw, speller, frame_id, live)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        speller = Speller(classes, settings.spelling)
        limiter = RateLimiter(settings.max_fps)
        live = None
        hello = {
            "type": "hello", "classes": classes, "image_size": predictor.image_size, "max_fps": settings.max_fps,
            "max_frame_bytes": settings.max_frame_bytes, **speller.state.to_dict(),
        }
        if motion is not None:
            from .motion import LiveSession

            live = LiveSession(motion)
            hello["motion"] = {**motion.describe(), "mode": live.mode}
        await websocket.send_json(hello)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await websocket.send_json(await on_message(message, speller, limiter, live))
        except WebSocketDisconnect:
            pass
        finally:
            if live is not None:
                live.close()  # the connection's MediaPipe graph

    return app


def run_server(model: str | Path = DEFAULT_MODEL, host: str = "127.0.0.1", port: int = 8000,
               settings: ServeSettings | None = None, log_level: str = "info",
               motion_dir: str | Path | None = "models") -> None:
    """Load the model once and serve the app with uvicorn until interrupted."""
    import uvicorn

    model = Path(model)
    if not model.exists():
        raise UserError(
            f"model file {model} not found; make it with `asl-tinyml pipeline` (train + export into models/) "
            "or `asl-tinyml export --model CHECKPOINT`, or pass --model an .onnx/.pt file"
        )
    settings = settings or ServeSettings()
    from .motion import MotionModels

    motion = MotionModels.load(motion_dir, threads=settings.threads or 1) if motion_dir is not None else None
    app = create_app(model, settings=settings, motion=motion)
    print(f"asl-tinyml: serving {model} on http://{host}:{port}/ (API docs at /docs); Ctrl+C stops", flush=True)
    if motion is not None:
        print(f"asl-tinyml: landmark path on (MediaPipe Holistic): motion modes {motion.describe()['modes']}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, ws_max_size=settings.max_frame_bytes * 2 + 4096)
