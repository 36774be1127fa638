"""Real-time recognition: a FastAPI app with a webcam page that spells words, and a small JSON API.

- `GET /`: the page (webcam preview, live top-3, the spelled text, a photo upload box).
- `GET /health`: status, the model file and its classes.
- `POST /predict?topk=3`: one photo (multipart field `file`, or a raw image body) -> the top classes.
- `WS /ws`: camera frames in (binary JPEG/PNG bytes, or JSON `{"type": "frame", "image": "data:..."}`),
  per-frame predictions and the spelled text out; `{"type": "clear" | "space" | "backspace"}` edit the text.
- `GET /docs`, `GET /redoc`: the OpenAPI documentation, its Swagger UI and ReDoc assets served by the app
  itself (fastapi-offline), so the page renders without a network.
  With motion models (`create_app(..., motion=MotionModels)`), each frame also goes through MediaPipe
  Holistic in video mode (one tracker per connection) into a rolling window, and the reply carries a
  `motion` entry (`j`/`z` or words); `{"type": "mode", "mode": "letters" | "words"}` switches word mode, and
  `{"type": "landmarks", "values": [258 floats]}` feeds one landmark frame directly (no camera needed).

The model is loaded once, through ONNX Runtime (or PyTorch for a `.pt`), by `inference.load_predictor`.
Client images are decoded from memory and never written to disk, at most `max_decodes` at once and only
up to `max_pixels`; oversized uploads (413), non-images (400), malformed messages and clients sending too
many frames per second get a clear error while the server keeps serving everyone else. A failure of the
server itself on a WebSocket message closes that socket with code 1011 after an error message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import json
import logging
import math
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import File as MultipartFile
from python_multipart.multipart import FormParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from .answers import class_mask, restrict_proba
from .config import UserError
from .fusion import SignPredictor, load_sign_predictor
from .hands import quiet_native_stderr
from .images import BadImageError, ImageTooLargeError, read_rgb
from .inference import Predictor
from .spelling import Speller, SpellingConfig

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MIB = 1024 * 1024
_DETECT_LOCK = threading.Lock()


@dataclass(frozen=True)
class ServeSettings:
    """Limits and behaviour of the server."""

    topk: int = 3  # classes returned per prediction unless `topk` is given
    max_upload_bytes: int = 8 * MIB  # POST /predict request body
    max_frame_bytes: int = 1 * MIB  # one WebSocket frame
    max_fps: float = 20.0  # frames per second accepted from one WebSocket client; the rest are dropped
    # decoded image size, checked from the header before decoding: a 12-megapixel phone photo passes, a webcam
    # frame is under 1 megapixel; a small file may declare far more pixels (a PNG bomb) and is refused (413)
    max_pixels: int = 16_000_000
    max_decodes: int = 2  # images decoded at once (each up to ~4 bytes x max_pixels); the rest wait their turn
    threads: int | None = 1  # inference threads per call (requests run in parallel on a thread pool)
    classes: str = "all"  # answers allowed: all, letters or digits (`fusion.class_mask`); the page can switch
    spelling: SpellingConfig = field(default_factory=SpellingConfig)


class Prediction(BaseModel):
    label: str
    prob: float


class PredictResponse(BaseModel):
    label: str  # the answer: the top class, or "no hand found"
    top: list[Prediction]
    hand: bool | None  # whether MediaPipe found a hand (None: the predictor does not look for one)
    ms: float  # server time to decode the image and run the model


class Health(BaseModel):
    status: str
    model: str
    landmark_model: str | None
    fusion_weight: float | None
    crop: str
    kind: str
    model_name: str | None
    classes: int
    labels: list[str]
    image_size: int


BadImage = BadImageError  # the bytes a client sent are not a readable image (400)
ImageTooLarge = ImageTooLargeError  # more pixels than `max_pixels` (413)


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


@dataclass
class Classified:
    """One image's answer: probabilities (restricted to the allowed classes), whether a hand was found, time."""

    probs: np.ndarray
    hand: bool
    label: str
    ms: float


def classify_bytes(
    predictor: SignPredictor, data: bytes, max_pixels: int = ServeSettings.max_pixels,
    decoding: threading.Semaphore | None = None, mask: np.ndarray | None = None,
) -> Classified:
    """Decode an image from memory and classify it (hand detection, crop, fusion as the predictor does).

    Raises BadImage (ImageTooLarge past `max_pixels`, checked from the header before decoding).
    `decoding` bounds how many images are decoded at once (memory).
    """
    start = time.perf_counter()
    if not data:
        raise BadImage("empty image: the upload contained no bytes; send a JPEG, PNG or WebP photo")
    try:
        with decoding if decoding is not None else contextlib.nullcontext():
            image = read_rgb(data, max_pixels=max_pixels)
    except ImageTooLarge as exc:
        raise ImageTooLarge(f"{exc}; send a smaller photo") from exc
    except BadImage as exc:
        raise BadImage(f"{exc}; send a JPEG, PNG or WebP photo") from exc
    with _DETECT_LOCK:  # one MediaPipe graph per predictor, not thread-safe
        probs, hand = predictor.predict_image(image)
    if mask is not None:
        probs = restrict_proba(probs[None], mask)[0]
    return Classified(probs, hand, predictor.label(probs, hand), (time.perf_counter() - start) * 1000)


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


def _no_constant(name: str) -> None:
    """`json.loads` hook: NaN and Infinity are not JSON (and could not be sent back as JSON)."""
    raise ValueError(f"{name} is not a JSON value")


def _is_frame_id(value: Any) -> bool:
    """A frame id the reply can echo as valid JSON: none, a short string or a finite number."""
    if value is None or (isinstance(value, str) and len(value) <= 100):
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and abs(value) < 2**63


def create_app(
    model: str | Path | Predictor | SignPredictor | None = None, *, settings: ServeSettings | None = None,
    motion: Any = None,
) -> FastAPI:
    """The web app around one predictor: a loaded one, a pixel model file, or None for the shipped default
    (`fusion.load_sign_predictor`: the fused predictor when `models/` holds the landmark model), and
    optionally the motion models (`motion.MotionModels`: j, z and words from the landmark path)."""
    settings = settings or ServeSettings()
    if isinstance(model, SignPredictor):
        predictor = model
    elif isinstance(model, Predictor):
        predictor = SignPredictor(model)
    else:
        predictor = load_sign_predictor(model, threads=settings.threads)
    with quiet_native_stderr():  # MediaPipe's start-up logging
        predictor.predict_image(np.zeros((predictor.pixel.image_size,) * 2 + (3,), np.uint8))  # warm up
    classes = list(predictor.classes)
    masks = {which: class_mask(classes, which) for which in ("all", "letters", "digits")
             if which == "all" or any(c.isdigit() == (which == "digits") for c in classes)}
    default_mask = class_mask(classes, settings.classes)
    app = FastAPIOffline(  # /docs and /redoc with Swagger UI and ReDoc served from the package: no CDN
        title="asl-tinyml",
        version="0.1.0",
        description="ASL fingerspelling from a webcam or a photo with a tiny FastKAN classifier.",
    )
    app.state.predictor = predictor
    app.state.settings = settings
    decoding = threading.BoundedSemaphore(settings.max_decodes)
    app.state.motion = motion
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health", response_model=Health)
    def health() -> dict[str, Any]:
        """The server is up: the model file, its kind, and its classes."""
        pixel, landmark = predictor.pixel, predictor.landmark
        return {
            "status": "ok", "model": str(pixel.path), "kind": pixel.kind, "model_name": pixel.model_name,
            "landmark_model": str(landmark.path) if landmark else None,
            "fusion_weight": predictor.weight if landmark else None, "crop": pixel.crop,
            "classes": len(classes), "labels": classes, "image_size": pixel.image_size,
        }

    @app.post("/predict", response_model=PredictResponse, openapi_extra=_UPLOAD_BODY,
              responses={400: {"description": "not a readable image"}, 413: {"description": "upload too large"},
                         422: {"description": "no image in the request"}})
    async def predict(
        request: Request, topk: int = Query(settings.topk, ge=1, le=100),
        classes_: str = Query(settings.classes, alias="classes", pattern="^(all|letters|digits)$"),
    ) -> dict[str, Any]:
        """Classify one photo: multipart field `file` (or a raw image body); returns the answer and the `topk`
        best classes (`classes=letters|digits` restricts them)."""
        body = await _read_body(request, settings.max_upload_bytes)
        content_type = request.headers.get("content-type", "")
        if classes_ not in masks:
            raise HTTPException(422, f"the model knows no {classes_}; use classes=all")

        def handle() -> Classified:  # parse, decode and classify in one worker thread
            data = image_from_body(body, content_type, settings.max_upload_bytes)
            return classify_bytes(predictor, data, settings.max_pixels, decoding, masks[classes_])

        try:
            out = await run_in_threadpool(handle)
        except ImageTooLarge as exc:
            raise HTTPException(413, str(exc)) from exc
        except BadImage as exc:
            raise HTTPException(400, str(exc)) from exc
        allowed = int(masks[classes_].sum())
        return {"label": out.label, "top": top_k(out.probs, classes, min(topk, allowed)),
                "hand": out.hand if predictor.needs_hands else None, "ms": round(out.ms, 3)}

    async def on_frame(data: bytes, speller: Speller, frame_id: Any, mask: np.ndarray, live: Any = None) -> dict[str, Any]:
        if len(data) > settings.max_frame_bytes:
            return _error("too_large", f"frame of {_size(len(data))} exceeds {_size(settings.max_frame_bytes)}; downscale it")
        try:
            out = await run_in_threadpool(classify_bytes, predictor, data, settings.max_pixels, decoding, mask)
        except ImageTooLarge as exc:
            return _error("too_large", str(exc))
        except BadImage as exc:
            return _error("bad_image", str(exc))
        reply = {"type": "prediction", "label": out.label, "hand": out.hand if predictor.needs_hands else None,
                 "top": top_k(out.probs, classes, min(settings.topk, int(mask.sum()))), "ms": round(out.ms, 3)}
        if live is None:
            reply |= speller.update(out.probs).to_dict()
        else:
            reply |= await run_in_threadpool(landmark_frame, data, out.probs, speller, live)
        if frame_id is not None:
            reply["id"] = frame_id
        return reply

    def landmark_frame(data: bytes, probs: np.ndarray, speller: Speller, live: Any) -> dict[str, Any]:
        """The landmark path of one camera frame (in a worker thread): Holistic -> window -> motion model,
        then the spelled text (static letters typed only in letters mode)."""
        motion_out = live.image(read_rgb(data, max_pixels=settings.max_pixels))
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

    async def on_message(
        message: dict[str, Any], speller: Speller, limiter: RateLimiter, session: dict[str, Any], live: Any = None
    ) -> dict[str, Any]:
        raw = message.get("bytes")
        frame_id = None
        if raw is None:
            text = message.get("text") or ""
            try:
                msg = json.loads(text, parse_constant=_no_constant)
            except RecursionError:
                return _error("bad_json", "message is nested too deeply: send {\"type\": \"frame\", \"image\": \"data:...\"}")
            except ValueError as exc:  # JSONDecodeError, NaN/Infinity, an integer of thousands of digits
                return _error("bad_json", f"message is not JSON ({exc}): send binary image bytes or "
                                          "{\"type\": \"frame\", \"image\": \"data:...\"}")
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
            if kind == "classes":
                which = msg.get("classes")
                if which not in masks:
                    return _error("bad_message", f"classes must be one of {', '.join(masks)}")
                session["mask"] = masks[which]
                return {"type": "classes", "classes": which}
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
            if not _is_frame_id(frame_id):
                return _error("bad_message", "a frame's 'id' must be a string of at most 100 characters or a finite number")
            try:
                raw = decode_data_url(msg["image"])
            except BadImage as exc:
                return _error("bad_image", str(exc))
        if not limiter.allow(time.monotonic()):
            return _error("rate_limited", f"too many frames: at most {settings.max_fps:g} per second; frame dropped")
        return await on_frame(raw, speller, frame_id, session["mask"], live)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        speller = Speller(classes, settings.spelling)
        limiter = RateLimiter(settings.max_fps)
        session: dict[str, Any] = {"mask": default_mask}
        live = None
        hello = {
            "type": "hello", "classes": classes, "image_size": predictor.pixel.image_size, "max_fps": settings.max_fps,
            "hand": predictor.needs_hands, "answer_sets": list(masks),
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
                await websocket.send_json(await on_message(message, speller, limiter, session, live))
        except WebSocketDisconnect:
            pass
        except Exception:  # a bug, not the client's input: say so, close properly, keep serving the others
            log.exception("websocket message failed")
            with contextlib.suppress(Exception):
                await websocket.send_json(_error("internal", "the server failed on this message; reconnect"))
                await websocket.close(code=1011, reason="internal error")
        finally:
            if live is not None:
                live.close()  # the connection's MediaPipe graph

    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` (0: any free port), ready for uvicorn; a port in use, an unknown
    host or a port out of range is a UserError naming the flag."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is out of range; pass a port from 1 to 65535 (0: any free port)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UserError(f"--host {host!r} is not an address of this machine ({exc}); pass 127.0.0.1 or 0.0.0.0") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait for TIME_WAIT
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"--port {port} is already in use on {host}; stop the other server or pass another --port") from exc
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --host or --port") from exc
    sock.set_inheritable(True)
    return sock


def run_server(model: str | Path | SignPredictor | None = None, host: str = "127.0.0.1", port: int = 8000,
               settings: ServeSettings | None = None, log_level: str = "info",
               motion_dir: str | Path | None = "models") -> None:
    """Load the predictor once (None: the shipped default) and serve the app with uvicorn until interrupted.

    The port is bound before the model loads, so a port in use is a UserError, not uvicorn's exit 3.
    """
    import uvicorn

    settings = settings or ServeSettings()
    from .motion import MotionModels

    sock = bind_socket(host, port)
    try:
        motion = MotionModels.load(motion_dir, threads=settings.threads or 1) if motion_dir is not None else None
        app = create_app(model, settings=settings, motion=motion)
        port = sock.getsockname()[1]
        predictor: SignPredictor = app.state.predictor
        print(f"asl-tinyml: serving {predictor.name} on http://{host}:{port}/ (API docs at /docs); Ctrl+C stops",
              flush=True)
        if motion is not None:
            print(f"asl-tinyml: landmark path on (MediaPipe Holistic): motion modes {motion.describe()['modes']}",
                  flush=True)
        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, ws_max_size=settings.max_frame_bytes * 2 + 4096
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
