"""Real-time recognition: a FastAPI app with a webcam page that spells words, and a small JSON API.

- `GET /`: the page (webcam preview, live top-3, the spelled text, a photo upload box).
- `GET /health`: status, the model file, its set (packaged or a folder) and its classes.
- `POST /predict?topk=3`: one photo (multipart field `file`, or a raw image body) -> the top classes.
- `WS /ws`: camera frames in (binary JPEG/PNG bytes, or JSON `{"type": "frame", "image": "data:..."}`),
  per-frame predictions and the spelled text out; `{"type": "clear" | "space" | "backspace"}` edit the text.
  A frame in which MediaPipe finds no hand types nothing unless the pixel model is sure of a sign
  (`sure_without_hand`): no hand, no letter.
- `GET /docs`, `GET /redoc`: the OpenAPI documentation, its Swagger UI and ReDoc assets served by the app
  itself (fastapi-offline), so the page renders without a network.
  With motion models (`create_app(..., motion=MotionModels)`), each frame also goes through MediaPipe
  Holistic in video mode (one tracker per connection) into a rolling window (in letters mode the hand
  detector's hand where Holistic, seeing no body, finds none), and the reply carries a `motion` entry
  (`j`/`z` or words); `{"type": "mode", "mode": "letters" | "words"}` switches word mode, and
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .answers import NO_HAND_LABEL, class_mask, restrict_proba
from .config import UserError
from .fusion import SignPredictor, load_sign_predictor
from .hands import HandResult, quiet_native_stderr
from .images import BadImageError, ImageTooLargeError, read_rgb
from .inference import Predictor
from .model_sets import describe_file
from .spelling import Speller, SpellingConfig
from .uploads import MIB, UPLOAD_BODY, image_from_body, read_body, size_text

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
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
    # a camera frame in which MediaPipe finds no hand reaches the speller only when the pixel model's top class is
    # at least this sure (else it counts as no hand: no letter); stricter than the photo answer's "no hand found"
    # rule (`no_hand_threshold`, 0.5): a letter typed from an empty room costs more than a frame left out
    sure_without_hand: float = 0.8


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
    model_set: dict[str, Any]


BadImage = BadImageError  # the bytes a client sent are not a readable image (400)
ImageTooLarge = ImageTooLargeError  # more pixels than `max_pixels` (413)


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
    """One image's answer: probabilities (restricted to the allowed classes), whether a hand was found, the
    answer (`NO_HAND_LABEL` when no hand was found and the pixel model is unsure), time, and the detection."""

    probs: np.ndarray
    hand: bool
    label: str
    ms: float
    detection: HandResult = field(default_factory=lambda: HandResult(False))
    looked: bool = False  # the predictor looked for a hand (`SignPredictor.needs_hands`)

    def spelled(self, sure: float) -> np.ndarray | None:
        """What the speller gets: the probabilities, or None (no hand, no letter) where the predictor looked for a
        hand, found none, and its top class is under `sure` (or the answer is "no hand found")."""
        unsure = self.looked and not self.hand and float(self.probs.max()) < sure
        return None if unsure or self.label == NO_HAND_LABEL else self.probs


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
        probs, detection = predictor.predict_hand(image)
    if mask is not None:
        probs = restrict_proba(probs[None], mask)[0]
    label = predictor.label(probs, detection.found)
    return Classified(probs, detection.found, label, (time.perf_counter() - start) * 1000, detection, predictor.needs_hands)


def decode_data_url(text: str) -> bytes:
    """The bytes of a `data:image/...;base64,...` URL (or of plain base64). Raises BadImage."""
    header, comma, payload = text.partition(",") if text.startswith("data:") else ("", ",", text)
    if not comma:
        raise BadImage(f"a data URL needs a comma before its base64 payload, got {header[:40]!r}: send "
                       "data:image/jpeg;base64,<base64 bytes>")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadImage(f"image is not valid base64 ({exc})") from exc


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


@dataclass
class Service:
    """What every request of one app shares: the predictor and its classes, the answer sets (`masks`, the
    default one), the settings, the bound on images decoded at once, and the motion models (or None)."""

    predictor: SignPredictor
    settings: ServeSettings
    classes: list[str]
    masks: dict[str, np.ndarray]
    default_mask: np.ndarray
    decoding: threading.Semaphore
    motion: Any = None

    @classmethod
    def load(cls, model: str | Path | Predictor | SignPredictor | None, settings: ServeSettings, motion: Any = None
             ) -> Service:
        """The predictor (a loaded one, a pixel model file, or None for the shipped default), warmed up."""
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
        return cls(predictor, settings, classes, masks, class_mask(classes, settings.classes),
                   threading.BoundedSemaphore(settings.max_decodes), motion)

    def health(self) -> dict[str, Any]:
        """GET /health: the model file, its kind, and its classes."""
        pixel, landmark = self.predictor.pixel, self.predictor.landmark
        return {
            "status": "ok", "model": str(pixel.path), "kind": pixel.kind, "model_name": pixel.model_name,
            "landmark_model": str(landmark.path) if landmark else None,
            "fusion_weight": self.predictor.weight if landmark else None, "crop": pixel.crop,
            "classes": len(self.classes), "labels": self.classes, "image_size": pixel.image_size,
            "model_set": describe_file(pixel.path),
        }

    async def predict(self, body: bytes, content_type: str, topk: int, which: str) -> dict[str, Any]:
        """POST /predict: one uploaded photo's answer and its `topk` best classes of answer set `which`."""
        if which not in self.masks:
            raise HTTPException(422, f"the model knows no {which}; use classes=all")
        mask = self.masks[which]

        def handle() -> Classified:  # parse, decode and classify in one worker thread
            data = image_from_body(body, content_type, self.settings.max_upload_bytes)
            return classify_bytes(self.predictor, data, self.settings.max_pixels, self.decoding, mask)

        try:
            out = await run_in_threadpool(handle)
        except ImageTooLarge as exc:
            raise HTTPException(413, str(exc)) from exc
        except BadImage as exc:
            raise HTTPException(400, str(exc)) from exc
        return {"label": out.label, "top": top_k(out.probs, self.classes, min(topk, int(mask.sum()))),
                "hand": out.hand if self.predictor.needs_hands else None, "ms": round(out.ms, 3)}


class BadMessage(Exception):
    """A text message that is not a JSON object with a string `type`; `reply` is the error to send back."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.reply = _error(code, message)


def read_message(text: str) -> dict[str, Any]:
    """A client's text message as a JSON object with a string `type`; raises BadMessage."""
    try:
        msg = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise BadMessage("bad_json", "message is nested too deeply: send {\"type\": \"frame\", \"image\": \"data:...\"}") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, an integer of thousands of digits
        raise BadMessage("bad_json", f"message is not JSON ({exc}): send binary image bytes or "
                                     "{\"type\": \"frame\", \"image\": \"data:...\"}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise BadMessage("bad_message", "message must be a JSON object with a string field 'type'")
    return msg


class Connection:
    """One WebSocket client's side of the protocol: its speller, answer set (`mask`), frame rate limit and,
    with motion models, its landmark session (`live`). `receive` answers a message with the method of its
    kind; `close` releases the session's MediaPipe graph."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = service.settings
        self.speller = Speller(service.classes, service.settings.spelling)
        self.limiter = RateLimiter(service.settings.max_fps)
        self.mask = service.default_mask
        self.live: Any = None
        if service.motion is not None:
            from .motion import LiveSession

            self.live = LiveSession(service.motion)
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "clear": self.clear, "space": self.edit, "backspace": self.edit, "ping": self.ping,
            "classes": self.choose_classes, "mode": self.set_mode, "landmarks": self.landmarks, "frame": self.frame,
        }

    def hello(self) -> dict[str, Any]:
        """The first message: the classes, the limits, the answer sets, the text state (and the motion modes)."""
        service = self.service
        hello = {
            "type": "hello", "classes": service.classes, "image_size": service.predictor.pixel.image_size,
            "max_fps": self.settings.max_fps, "hand": service.predictor.needs_hands, "answer_sets": list(service.masks),
            "max_frame_bytes": self.settings.max_frame_bytes, **self.speller.state.to_dict(),
        }
        if self.live is not None:
            hello["motion"] = {**service.motion.describe(), "mode": self.live.mode}
        return hello

    async def receive(self, message: dict[str, Any]) -> dict[str, Any]:
        """The reply to one WebSocket message: binary image bytes, or a JSON text message of a known `type`."""
        if message.get("bytes") is not None:
            return await self.image(message["bytes"])
        try:
            msg = read_message(message.get("text") or "")
        except BadMessage as exc:
            return exc.reply
        handler = self.handlers.get(msg["type"])
        if handler is None:
            return _error("bad_message", f"unknown message type {msg['type']!r}; use frame, clear, space, backspace or "
                          "ping" + (" (or mode, landmarks)" if self.live is not None else ""))
        return await handler(msg)

    async def clear(self, msg: dict[str, Any]) -> dict[str, Any]:
        """`clear`: the spelled text emptied."""
        return {"type": "state", **self.speller.clear().to_dict()}

    async def edit(self, msg: dict[str, Any]) -> dict[str, Any]:
        """`space` or `backspace`: the spelled text edited as the space and delete signs would."""
        spelling = self.settings.spelling
        label = spelling.space_label if msg["type"] == "space" else spelling.delete_label
        return {"type": "state", **self.speller.edit(label).to_dict()}

    async def ping(self, msg: dict[str, Any]) -> dict[str, Any]:
        """`ping`: `pong`."""
        return {"type": "pong"}

    async def choose_classes(self, msg: dict[str, Any]) -> dict[str, Any]:
        """`classes`: the answer set of the following frames (all, letters or digits)."""
        which = msg.get("classes")
        if not isinstance(which, str) or which not in self.service.masks:
            return _error("bad_message", f"classes must be one of {', '.join(self.service.masks)}")
        self.mask = self.service.masks[which]
        return {"type": "classes", "classes": which}

    async def set_mode(self, msg: dict[str, Any]) -> dict[str, Any]:
        """`mode`: letters or words for the motion models."""
        if self.live is None:
            return _error("no_motion", "this server has no motion models, so no word mode")
        try:
            self.live.set_mode(str(msg.get("mode")))
        except ValueError as exc:
            return _error("bad_message", str(exc))
        return {"type": "state", "mode": self.live.mode, **self.speller.state.to_dict(), "text": self.speller.text}

    async def landmarks(self, msg: dict[str, Any]) -> dict[str, Any]:
        """`landmarks`: one landmark frame (258 values) straight into the motion window, no camera needed."""
        if not self.limiter.allow(time.monotonic()):
            return self._rate_limited()
        return await run_in_threadpool(self._landmarks, msg)

    async def frame(self, msg: dict[str, Any]) -> dict[str, Any]:
        """`frame`: a camera frame as a data URL, with an optional `id` the reply echoes."""
        if not isinstance(msg.get("image"), str):
            return _error("bad_message", "a frame message needs 'image': a data:image/jpeg;base64,... URL")
        frame_id = msg.get("id")
        if not _is_frame_id(frame_id):
            return _error("bad_message", "a frame's 'id' must be a string of at most 100 characters or a finite number")
        try:
            raw = decode_data_url(msg["image"])
        except BadImage as exc:
            return _error("bad_image", str(exc))
        return await self.image(raw, frame_id)

    async def image(self, data: bytes, frame_id: Any = None) -> dict[str, Any]:
        """One camera frame's prediction and the spelled text (through the landmark path with motion models)."""
        if not self.limiter.allow(time.monotonic()):
            return self._rate_limited()
        settings = self.settings
        if len(data) > settings.max_frame_bytes:
            return _error("too_large", f"frame of {size_text(len(data))} exceeds {size_text(settings.max_frame_bytes)}; downscale it")
        service = self.service
        try:
            out = await run_in_threadpool(classify_bytes, service.predictor, data, settings.max_pixels,
                                          service.decoding, self.mask)
        except ImageTooLarge as exc:
            return _error("too_large", str(exc))
        except BadImage as exc:
            return _error("bad_image", str(exc))
        reply = {"type": "prediction", "label": out.label, "hand": out.hand if service.predictor.needs_hands else None,
                 "top": top_k(out.probs, service.classes, min(settings.topk, int(self.mask.sum()))), "ms": round(out.ms, 3)}
        if self.live is None:
            reply |= self.speller.update(out.spelled(settings.sure_without_hand)).to_dict()
        else:
            reply |= await run_in_threadpool(self._landmark_frame, data, out)
        if frame_id is not None:
            reply["id"] = frame_id
        return reply

    def _rate_limited(self) -> dict[str, str]:
        return _error("rate_limited", f"too many frames: at most {self.settings.max_fps:g} per second; frame dropped")

    def _landmark_frame(self, data: bytes, out: Classified) -> dict[str, Any]:
        """The landmark path of one camera frame (in a worker thread): Holistic (else the hand detector's hand
        of `out`) -> window -> motion model, then the spelled text (static letters typed only in letters mode)."""
        motion_out = self.live.image(read_rgb(data, max_pixels=self.settings.max_pixels), out.detection)
        return self._spell_with_motion(motion_out, out.spelled(self.settings.sure_without_hand), camera=True)

    def _landmarks(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.live is None:
            return _error("no_motion", "this server has no motion models: start it with models/asl_motion_*_int8.onnx")
        try:
            row = np.asarray(msg.get("values"), dtype=np.float32).ravel()
            aspect = float(msg.get("aspect", 0.75))
        except (TypeError, ValueError):
            return _error("bad_message", "a landmarks message needs 'values': 258 numbers (pose, left hand, right hand)")
        if row.size != 258 or not np.all(np.isfinite(row)) or not 0.1 <= aspect <= 10:
            return _error("bad_message", f"a landmarks message needs 258 finite values and an aspect in [0.1, 10], got {row.size}")
        return {"type": "motion", **self._spell_with_motion(self.live.landmarks(row, aspect))}

    def _spell_with_motion(self, motion_out: dict[str, Any], probs: np.ndarray | None = None,
                           camera: bool = False) -> dict[str, Any]:
        """The spelled text after one frame: its static letter (letters mode, camera frames; `probs` None: no
        hand) and motion commit."""
        spelling = self.settings.spelling
        if self.live.mode == "letters" and camera:
            state = self.speller.update(probs)
            if state.committed and state.committed not in (spelling.space_label, spelling.delete_label):
                self.live.letter_typed()
        if motion_out.get("commit"):
            self.speller.text = self.live.apply(self.speller.text, motion_out["commit"])
        return {**self.speller.state.to_dict(), "text": self.speller.text, "motion": motion_out}

    def close(self) -> None:
        if self.live is not None:
            self.live.close()  # the connection's MediaPipe graph


def create_app(
    model: str | Path | Predictor | SignPredictor | None = None, *, settings: ServeSettings | None = None,
    motion: Any = None,
) -> FastAPI:
    """The web app around one predictor: a loaded one, a pixel model file, or None for the shipped default
    (`fusion.load_sign_predictor`: the fused predictor when `models/` holds the landmark model), and
    optionally the motion models (`motion.MotionModels`: j, z and words from the landmark path)."""
    service = Service.load(model, settings or ServeSettings(), motion)
    settings = service.settings
    app = FastAPIOffline(  # /docs and /redoc with Swagger UI and ReDoc served from the package: no CDN
        title="asl-tinyml",
        version="0.1.0",
        description="ASL fingerspelling from a webcam or a photo with a tiny FastKAN classifier.",
    )
    app.state.predictor = service.predictor
    app.state.settings = settings
    app.state.motion = motion
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health", response_model=Health)
    def health() -> dict[str, Any]:
        """The server is up: the model file, its kind, and its classes."""
        return service.health()

    @app.post("/predict", response_model=PredictResponse, openapi_extra=UPLOAD_BODY,
              responses={400: {"description": "not a readable image"}, 413: {"description": "upload too large"},
                         422: {"description": "no image in the request"}})
    async def predict(
        request: Request, topk: int = Query(settings.topk, ge=1, le=100),
        classes_: str = Query(settings.classes, alias="classes", pattern="^(all|letters|digits)$"),
    ) -> dict[str, Any]:
        """Classify one photo: multipart field `file` (or a raw image body); returns the answer and the `topk`
        best classes (`classes=letters|digits` restricts them)."""
        body = await read_body(request, settings.max_upload_bytes)
        return await service.predict(body, request.headers.get("content-type", ""), topk, classes_)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        connection = Connection(service)
        await websocket.send_json(connection.hello())
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await websocket.send_json(await connection.receive(message))
        except WebSocketDisconnect:
            pass
        except Exception:  # a bug, not the client's input: say so, close properly, keep serving the others
            log.exception("websocket message failed")
            with contextlib.suppress(Exception):
                await websocket.send_json(_error("internal", "the server failed on this message; reconnect"))
                await websocket.close(code=1011, reason="internal error")
        finally:
            connection.close()

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
