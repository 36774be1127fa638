"""The live landmark path: MediaPipe Holistic in video mode (`HolisticTracker`), the rolling window and its
decisions (`MotionStream`), the server's motion models (`MotionModels`) and one client's session
(`LiveSession`: how `j`, `z` and words enter the spelled text)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..hands import LEFT as MIRRORED_LEFT
from ..hands import HandResult
from .data import DEFAULT_ASPECT, IDLE, KINDS, MOTION_LETTERS, WORDS_WIDTH
from .export import MotionPredictor, default_model_path
from .train import decide

POSE_VALUES, LEFT_HAND, RIGHT_HAND = 132, 132, 195  # where the pose and each hand start in a 258-value frame
HOLISTIC, DETECTOR = "holistic", "hand detector"  # where a frame's hand came from (`LiveSession.image`)
NO_BODY_FOR_WORDS = "no body in view: word mode needs your upper body in the frame"


def detector_row(hand: HandResult, width: int, height: int) -> np.ndarray:
    """The hand detector's hand (`hands.HandDetector`, run on the same camera frame for the static letters) as
    one frame in the shared layout: 258 values, zeros but that hand, its landmarks back in image-normalised x
    and y (z in x's unit), in the slot of the person's own hand. MediaPipe Hands names hands as if the image were
    mirrored, so its "Left" on a camera frame is the person's right hand: Holistic's `right_hand_landmarks`."""
    row = np.zeros(WORDS_WIDTH, np.float32)
    if not hand.found:
        return row
    points = np.asarray(hand.landmarks, np.float64) * max(width, height)  # pixels (units of the longer side)
    xyz = np.stack([points[:, 0] / width, points[:, 1] / height, points[:, 2] / width], axis=1)
    offset = RIGHT_HAND if hand.handedness == MIRRORED_LEFT else LEFT_HAND
    row[offset : offset + 63] = xyz.astype(np.float32).ravel()
    return row


def holistic_row(result: Any, kind_width: int = WORDS_WIDTH) -> np.ndarray:
    """A MediaPipe Holistic result -> one frame in the shared layout (258 values; zeros where undetected)."""
    row = np.zeros(WORDS_WIDTH, np.float32)
    if getattr(result, "pose_landmarks", None) is not None:
        row[:132] = np.array([(p.x, p.y, p.z, p.visibility) for p in result.pose_landmarks.landmark], np.float32).ravel()
    for offset, name in ((132, "left_hand_landmarks"), (195, "right_hand_landmarks")):
        hand = getattr(result, name, None)
        if hand is not None:
            row[offset : offset + 63] = np.array([(p.x, p.y, p.z) for p in hand.landmark], np.float32).ravel()
    return row if kind_width == WORDS_WIDTH else row[132:]


class HolisticTracker:
    """MediaPipe Holistic in video (tracking) mode for one stream of frames; `close()` when the stream ends."""

    def __init__(self, model_complexity: int = 1) -> None:
        from ..hands import quiet_native_stderr, require_mediapipe

        mp = require_mediapipe()
        with quiet_native_stderr():
            self._holistic = mp.solutions.holistic.Holistic(
                static_image_mode=False, model_complexity=model_complexity, smooth_landmarks=True,
                enable_segmentation=False, refine_face_landmarks=False,
                min_detection_confidence=0.5, min_tracking_confidence=0.5,
            )

    def process(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> one 258-value frame (the person's own left/right, as in the recordings)."""
        return holistic_row(self._holistic.process(np.ascontiguousarray(rgb)))

    def close(self) -> None:
        if self._holistic is not None:
            self._holistic.close()
            self._holistic = None

    def __enter__(self) -> HolisticTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class LiveConfig:
    """The rolling window and when a motion sign is typed."""

    window: int = 24  # frames the model reads (about 1.5-2 s at 12-15 fps)
    min_frames: int = 12  # no prediction before this many frames
    threshold: float = 0.7  # smoothed probability needed
    stable: int = 4  # consecutive predictions of one label before it is typed
    smooth: int = 3  # predictions averaged
    replace_frames: int = 24  # a j/z replaces the static letter typed within this many frames (its handshape)


class MotionStream:
    """One connection's rolling window of landmark frames and the decisions on it.

    `push(row, aspect)` adds one 258-value frame (the shared words layout) and returns what the motion
    model says about the window: the top classes and, when a sign has been held long enough, `commit`.
    Letters mode commits only `j` and `z` (the static model types the other letters); words mode commits
    any word but `idle`, once until the sign changes.
    """

    def __init__(self, letters: MotionPredictor | None, words: MotionPredictor | None, config: LiveConfig = LiveConfig()) -> None:
        self.models = {"letters": letters, "words": words}
        self.config = config
        self.mode = "letters"
        self.frames: deque[np.ndarray] = deque(maxlen=config.window)
        self.reset()

    def reset(self) -> None:
        self.frames.clear()
        self._recent: deque[np.ndarray] = deque(maxlen=self.config.smooth)
        self._candidate: str | None = None
        self._count = 0
        self._held: str | None = None

    def set_mode(self, mode: str) -> None:
        if mode not in KINDS:
            raise ValueError(f"mode must be letters or words, got {mode!r}")
        if mode != self.mode:
            self.mode = mode
            self._recent.clear()
            self._candidate, self._count, self._held = None, 0, None

    @property
    def model(self) -> MotionPredictor | None:
        return self.models.get(self.mode)

    def push(self, row: np.ndarray, aspect: float = DEFAULT_ASPECT, topk: int = 3) -> dict[str, Any]:
        row = np.asarray(row, np.float32).ravel()
        if row.shape != (WORDS_WIDTH,):
            raise ValueError(f"a landmark frame has {WORDS_WIDTH} values (pose, left hand, right hand), got {row.size}")
        self.frames.append(np.nan_to_num(row))
        model = self.model
        out: dict[str, Any] = {"mode": self.mode, "frames": len(self.frames), "hand": bool(np.abs(row[132:]).sum() > 0),
                               "top": [], "commit": None}
        if model is None or len(self.frames) < self.config.min_frames:
            return out
        window = np.stack(self.frames)[None]
        if model.kind == "letters":
            window = window[..., 132:]
        start = time.perf_counter()
        probs = model.predict_proba(window, aspect)[0]
        out["ms"] = round((time.perf_counter() - start) * 1000, 3)
        self._recent.append(probs)
        smoothed = np.mean(self._recent, axis=0)
        order = np.argsort(-smoothed)[:topk]
        out["top"] = [{"label": model.classes[k], "prob": round(float(smoothed[k]), 4)} for k in order]
        best = int(decide(smoothed[None], model.classes, **model.rule)[0])  # the model file's thresholds
        label, prob = model.classes[best], float(smoothed[best])
        typable = label != IDLE and (self.mode == "words" or label in MOTION_LETTERS)
        if prob >= self.config.threshold and typable:
            self._count = self._count + 1 if label == self._candidate else 1
            self._candidate = label
            if self._count >= self.config.stable and label != self._held:
                out["commit"] = label
                self._held = label
                self.frames.clear()  # the next sign starts a fresh window
                self._recent.clear()
        else:
            self._candidate, self._count = None, 0
            if label == IDLE or not out["hand"]:
                self._held = None
        out["candidate"] = self._candidate
        return out


@dataclass
class MotionModels:
    """The live app's motion models (either may be None) and the window/decision settings."""

    letters: MotionPredictor | None = None
    words: MotionPredictor | None = None
    config: LiveConfig = LiveConfig()
    max_side: int = 320  # frames are downscaled to this longer side before MediaPipe
    tracker_factory: Any = None  # makes a connection's tracker (default: HolisticTracker; tests pass a stand-in)

    @classmethod
    def load(cls, models_dir: str | Path = "models", threads: int = 1) -> MotionModels | None:
        """The shipped int8 models found in `models_dir` (None when there is neither or MediaPipe is missing)."""
        import importlib.util

        if importlib.util.find_spec("mediapipe") is None:
            return None
        found = {k: default_model_path(k, models_dir) for k in KINDS}
        found = {k: MotionPredictor(p, threads) for k, p in found.items() if p.exists()}
        return cls(found.get("letters"), found.get("words")) if found else None

    def describe(self) -> dict[str, Any]:
        return {"modes": [k for k in KINDS if getattr(self, k) is not None],
                **{k: getattr(self, k).classes for k in KINDS if getattr(self, k) is not None},
                "window": self.config.window}


class LiveSession:
    """One WebSocket client's landmark path: a Holistic tracker (made on the first camera frame, closed
    with `close()`), the rolling window, and how motion signs enter the client's spelled text.

    Letters mode: a `j` or `z` is appended, replacing the static letter typed during the same movement
    (its handshape, e.g. `i` for `j`). Words mode: the word is appended with a space; the static letters
    are not typed meanwhile.
    """

    def __init__(self, models: MotionModels) -> None:
        self.models = models
        self.stream = MotionStream(models.letters, models.words, models.config)
        self.stream.set_mode("letters" if models.letters is not None else "words")
        self._factory = models.tracker_factory or HolisticTracker
        self.tracker: Any = None
        self.frame_no = 0
        self.last_letter_frame = -(10**9)

    @property
    def mode(self) -> str:
        return self.stream.mode

    def set_mode(self, mode: str) -> None:
        if getattr(self.models, mode, None) is None:
            raise ValueError(f"no {mode} motion model is loaded; modes: {self.models.describe()['modes']}")
        self.stream.set_mode(mode)

    def image(self, rgb: np.ndarray, hand: HandResult | None = None) -> dict[str, Any]:
        """One camera frame (RGB uint8) -> MediaPipe (timed apart) -> the window -> the motion output.

        Holistic finds hands only with a body in view; `hand`, the hand detector's answer on the same frame,
        stands in for them in letters mode (the letters model reads the hands alone). `hand_source` says where
        the frame's hand came from (`holistic`, `hand detector` or None) and `note` why there is none to use."""
        from PIL import Image

        h, w = rgb.shape[:2]
        full = (w, h)
        if max(h, w) > self.models.max_side:
            im = Image.fromarray(rgb)
            im.thumbnail((self.models.max_side, self.models.max_side), Image.Resampling.BILINEAR)
            rgb = np.asarray(im)
        if self.tracker is None:
            self.tracker = self._factory()
        start = time.perf_counter()
        row = self.tracker.process(rgb)
        mediapipe_ms = (time.perf_counter() - start) * 1000
        source, note = (HOLISTIC, None) if np.abs(row[POSE_VALUES:]).sum() > 0 else (None, None)
        if source is None and hand is not None and hand.found:
            if self.mode == "letters":
                row = np.concatenate([row[:POSE_VALUES], detector_row(hand, *full)[POSE_VALUES:]])
                source = DETECTOR
            elif not np.abs(row[:POSE_VALUES]).any():
                note = NO_BODY_FOR_WORDS
        out = self.landmarks(row, rgb.shape[0] / rgb.shape[1])
        out.update(mediapipe_ms=round(mediapipe_ms, 2), hand_source=source, note=note)
        return out

    def landmarks(self, row: np.ndarray, aspect: float = DEFAULT_ASPECT) -> dict[str, Any]:
        self.frame_no += 1
        return self.stream.push(row, aspect)

    def letter_typed(self) -> None:
        """The static path just typed a letter (a later j/z within `replace_frames` replaces it)."""
        self.last_letter_frame = self.frame_no

    def apply(self, text: str, commit: str | None) -> str:
        """The spelled text after a motion commit."""
        if not commit:
            return text
        if self.mode == "words":
            return (text if not text or text.endswith(" ") else text + " ") + commit + " "
        if text and self.frame_no - self.last_letter_frame <= self.models.config.replace_frames:
            text = text[:-1]
        self.last_letter_frame = -(10**9)
        return text + commit

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
