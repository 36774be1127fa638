"""Signs that move: `j`, `z` and words from MediaPipe Holistic landmark sequences.

Data: `.npz` files in the shared sequence layout (`x` (N, T, D) float, `label`, `session`), D = 126
(letters: left hand, right hand, 21 x (x, y, z) each) or D = 258 (words: 33 pose points x (x, y, z,
visibility), then both hands). Coordinates are normalised to the image, left/right are Holistic's labels
on the unmirrored image (the person's own hands), and an undetected part is all zeros. The words model also
trains on the word collection of many people's webcams (`words_people.npz`: `group` = the repository);
every recording's group is the unit of splits and held-out folds (`grouped_folds`), and training draws
batches by class and group (`Sampling`).

Features per frame (`sequence_features`):
- every hand through `hands.canonical_points` / `HAND_RECIPE` (wrist origin, palm scale, one
  handedness: 70 values) plus a presence flag, its wrist position relative to a reference, and the
  velocities of its wrist, index tip and pinky tip (the path over time);
- the reference is the shoulders when the pose is there (midpoint, shoulder width as the unit), else
  the frame: the window's mean position of the signing hand, in its median palm size;
- the signing hand is the hand seen in more frames (the one that travels further on a tie); when it is
  the left hand, the whole window is mirrored, so a left-handed signer reads like a right-handed one;
- letters use the signing hand only, its shape also with the in-plane roll removed (139 values a frame);
  words use both hands and the upper-body pose (nose, mouth, shoulders, elbows, wrists, index knuckles:
  185 values a frame).

`motion_fastkan` (models/motion.py) reads any number of frames. Training augments the raw landmarks:
time stretch and crop to 15-45 frames (with held frames at the ends), frame drop, missed detections, hand
jitter, 3D rotation of each hand, a roll of the whole scene, a change of aspect ratio, left/right mirror;
letters also a bigger or smaller path, `z`/`j` paths carried by other static `d`/`i` handshapes
(`transplant_motion`) and windows whose edges show the neighbouring sign (`carry_over`). The best class
decides, under the thresholds the model file records (`decide`, `thresholds`). Measured figures:
docs/experiments.md, "Motion words from many people" and "Motion models".

One module per job: `data` (sequence files, the raw layout), `features`, `augment`, `train` (training,
metrics, the held-out fold), `export` (checkpoints, ONNX, `MotionPredictor`), `stages` (what the CLI and
the pipeline call), `live` (the Holistic tracker and the live window); the figures are in `plots`.
"""

from __future__ import annotations

from .augment import TRANSPLANT, Augment, augment_parts, time_indices, transplant_motion
from .data import (
    DEFAULT_ASPECT,
    HOLDOUT_SESSIONS,
    IDLE,
    KINDS,
    LETTERS_WIDTH,
    MOTION_LETTERS,
    WORDS_WIDTH,
    Parts,
    SequenceSet,
    _present,
    concat_sequences,
    kind_for_width,
    load_sequences,
    load_word_collection,
    split_parts,
)
from .export import STEMS, MotionPredictor, default_model_path, export_motion, export_motion_onnx, save_motion_model
from .features import HAND_RECIPE, frame_width, sequence_features, signing_hand_is_left
from .live import HolisticTracker, LiveConfig, LiveSession, MotionModels, MotionStream, holistic_row
from .stages import KEY_WORDS, WORDS_SAMPLING, evaluate_motion, load_motion_data, predict_motion, train_motion, window_latency
from .train import (
    IDLE_BELOW,
    MODEL_NAME,
    MOTION_BELOW,
    Sampling,
    decide,
    grouped_folds,
    holdout,
    holdout_split,
    make_model,
    predict_recordings,
    sampling_weights,
    score,
    stray_rate,
    thresholds,
    train_motion_model,
)

__all__ = [
    "DEFAULT_ASPECT", "HAND_RECIPE", "HOLDOUT_SESSIONS", "IDLE", "IDLE_BELOW", "KEY_WORDS", "KINDS", "LETTERS_WIDTH",
    "MODEL_NAME", "MOTION_BELOW", "MOTION_LETTERS", "STEMS", "TRANSPLANT", "WORDS_SAMPLING", "WORDS_WIDTH", "Augment",
    "HolisticTracker", "LiveConfig", "LiveSession", "MotionModels", "MotionPredictor", "MotionStream", "Parts",
    "Sampling", "SequenceSet", "_present", "augment_parts", "concat_sequences", "decide", "default_model_path",
    "evaluate_motion", "export_motion", "export_motion_onnx", "frame_width", "grouped_folds", "holdout",
    "holdout_split", "holistic_row", "kind_for_width", "load_motion_data", "load_sequences", "load_word_collection",
    "make_model", "predict_motion", "predict_recordings", "sampling_weights", "save_motion_model", "score",
    "sequence_features", "signing_hand_is_left", "split_parts", "stray_rate", "thresholds", "time_indices",
    "train_motion", "train_motion_model", "transplant_motion", "window_latency",
]
