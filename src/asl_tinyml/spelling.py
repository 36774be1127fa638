"""Fingerspelling: turn a stream of per-frame class probabilities into typed text.

Pure logic (no I/O, no model): the web app feeds it one probability vector per camera frame.

- The probabilities are smoothed over the last `window` frames (a moving average).
- A label is *committed* once the smoothed top label has stayed the same, at or above `threshold`,
  for `stable_frames` consecutive frames: a letter or digit is appended, `space` adds a space,
  `del` removes the last character.
- The same label is not committed twice in a row while the hand holds it: a repeated letter needs the
  hand to change in between, either to a different label that becomes stable or through a gap of
  `release_frames` frames that are below the threshold, `nothing`, or without a hand (`None`).
- A frame without a hand (`None`) is no evidence for any sign: it stays out of the moving average, pauses the
  count of a sign being held (a detection missed for a frame or two costs nothing), and after `release_frames`
  of them in a row the hand has gone: the average starts afresh, so the next sign, the same letter again
  included, counts from its first frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpellingConfig:
    """Knobs of the speller; the defaults suit ~10-15 frames per second."""

    window: int = 4  # frames in the moving average of probabilities
    threshold: float = 0.6  # smoothed top probability needed to count a frame as a steady sign
    stable_frames: int = 8  # consecutive steady frames of one label before it is committed
    release_frames: int = 3  # low-confidence / no-hand frames that end a held sign (allows a repeat)
    space_label: str = "space"
    delete_label: str = "del"
    nothing_label: str = "nothing"
    max_length: int = 500  # the text keeps its last `max_length` characters

    def __post_init__(self) -> None:
        for name in ("window", "stable_frames", "release_frames", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SpellingConfig.{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"SpellingConfig.threshold must be in [0, 1], got {self.threshold}")


@dataclass(frozen=True)
class SpellingState:
    """What the speller shows after a frame."""

    text: str
    label: str | None  # the smoothed top label (None before any frame or without a hand)
    prob: float  # its smoothed probability
    candidate: str | None  # the label being held steadily (None in a gap)
    progress: float  # candidate's steady frames / stable_frames, in [0, 1]
    committed: str | None  # the label committed on this very frame, if any
    held: str | None  # the last committed label still being held (a repeat needs a change first)

    def to_dict(self) -> dict[str, object]:
        return {
            "text": self.text, "label": self.label, "prob": round(self.prob, 4), "candidate": self.candidate,
            "progress": round(self.progress, 4), "committed": self.committed, "held": self.held,
        }


def apply_label(text: str, label: str, config: SpellingConfig) -> str:
    """The text after committing `label`: a character appended, a space, or the last character deleted."""
    if label == config.delete_label:
        return text[:-1]
    if label == config.space_label:
        text += " "
    elif label == config.nothing_label:
        return text
    else:
        text += label
    return text[-config.max_length :]


class Speller:
    """Stateful fingerspeller over one stream of frames (one per client)."""

    def __init__(self, classes: Sequence[str], config: SpellingConfig | None = None) -> None:
        self.classes = [str(c) for c in classes]
        if not self.classes:
            raise ValueError("Speller needs at least one class")
        self.config = config or SpellingConfig()
        self.reset()

    def reset(self, text: str = "") -> None:
        """Forget every frame and start from `text`."""
        self.text = text
        self._window: deque[np.ndarray] = deque(maxlen=self.config.window)
        self._candidate: str | None = None
        self._count = 0
        self._gap = 0
        self._held: str | None = None
        self._last = SpellingState(text, None, 0.0, None, 0.0, None, None)

    @property
    def state(self) -> SpellingState:
        """The state after the last frame (or edit)."""
        return self._last

    def clear(self) -> SpellingState:
        """Empty the text and forget the frames."""
        self.reset()
        return self._last

    def edit(self, label: str) -> SpellingState:
        """Apply a label by hand (the page's space/backspace buttons), as if it had been signed."""
        self.text = apply_label(self.text, label, self.config)
        self._last = SpellingState(self.text, *self._summary(), None, self._held)
        return self._last

    def _summary(self) -> tuple[str | None, float, str | None, float]:
        s = self._last
        return s.label, s.prob, s.candidate, s.progress

    def update(self, probs: Sequence[float] | np.ndarray | None) -> SpellingState:
        """Feed one frame's class probabilities (or None: no hand found) and return the new state."""
        cfg = self.config
        if probs is None:
            return self._no_hand()
        frame = np.asarray(probs, dtype=np.float64).reshape(-1)
        if frame.shape != (len(self.classes),):
            raise ValueError(f"expected {len(self.classes)} probabilities, got shape {np.shape(probs)}")
        self._window.append(frame)
        smoothed = np.mean(self._window, axis=0)
        top = int(smoothed.argmax())
        prob = float(smoothed[top])
        label: str | None = self.classes[top] if prob > 0 else None
        steady = label is not None and label != cfg.nothing_label and prob >= cfg.threshold
        committed: str | None = None
        if steady:
            self._gap = 0
            if label == self._candidate:
                self._count += 1
            else:
                self._candidate, self._count = label, 1
            if self._count >= cfg.stable_frames and label != self._held:
                self.text = apply_label(self.text, label, cfg)
                self._held = committed = label
        else:
            self._candidate, self._count = None, 0
            self._gap += 1
            if self._gap >= cfg.release_frames:
                self._held = None
        progress = 0.0
        if self._candidate is not None and self._candidate != self._held:
            progress = min(1.0, self._count / cfg.stable_frames)
        elif self._candidate is not None:
            progress = 1.0
        self._last = SpellingState(self.text, label, prob, self._candidate, progress, committed, self._held)
        return self._last

    def _no_hand(self) -> SpellingState:
        """A frame without a hand: the held sign's count pauses; `release_frames` in a row end it and clear the
        moving average."""
        self._gap += 1
        if self._gap >= self.config.release_frames:
            self._held, self._candidate, self._count = None, None, 0
            self._window.clear()
        self._last = SpellingState(self.text, None, 0.0, None, 0.0, None, self._held)
        return self._last


def spell(classes: Sequence[str], frames: Sequence[Sequence[float] | np.ndarray | None],
          config: SpellingConfig | None = None) -> str:
    """The text a fresh Speller types for a sequence of frames (handy for tests and offline videos)."""
    speller = Speller(classes, config)
    for probs in frames:
        speller.update(probs)
    return speller.text
