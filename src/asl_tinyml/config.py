"""One configuration dataclass for every stage, loadable from YAML and overridable from the CLI."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DIGITS = [str(d) for d in range(10)]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
CORE_CLASSES: list[str] = DIGITS + LETTERS + ["space"]
EXTRA_CLASSES: list[str] = ["del", "nothing"]
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class UserError(Exception):
    """An error caused by the user's input: the CLI prints it as one line, without a traceback."""


def output_dir(path: str | Path, flag: str = "--out", create: bool = True) -> Path:
    """`path` as a folder to write into, created with its parents unless `create` is False.

    A path that is a file, lies below a file, or cannot be created is a UserError naming `flag`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; pass a folder path (it is created when missing)")
    if not create:
        parent = next((p for p in path.parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise UserError(f"{flag} {path} lies below the file {parent}; pass a folder path")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the {flag} folder {path} ({exc.strerror or type(exc).__name__}); pass a folder you can write to"
        ) from exc
    return path


def canonical_classes(include_extra: bool = False) -> list[str]:
    """The class names in their fixed order: digits, letters, space (then del, nothing)."""
    return CORE_CLASSES + (EXTRA_CLASSES if include_extra else [])


def repo_root() -> Path:
    """The checkout this package lives in (src layout), or the working directory when installed."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def _shared_folder(env_var: str, *parts: str) -> Path | None:
    """`$env_var`, else `../shared/<parts>` beside the working directory or the checkout, else None."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    for base in (Path.cwd(), repo_root()):
        candidate = (base / ".." / "shared" / Path(*parts)).resolve()
        if candidate.exists():
            return candidate
    return None


def default_data_root() -> Path | None:
    """`$ASL_TINYML_DATA`, else `../shared/datasets` beside the working directory or the checkout."""
    return _shared_folder("ASL_TINYML_DATA", "datasets")


def default_keypoints_file() -> Path | None:
    """`$ASL_TINYML_KEYPOINTS`, else `../shared/landmarks/asl_keypoints/letters.npz` (the keypoint collection)."""
    return _shared_folder("ASL_TINYML_KEYPOINTS", "landmarks", "asl_keypoints", "letters.npz")


def default_sequences_dir() -> Path | None:
    """`$ASL_TINYML_SEQUENCES`, else `../shared/sequences/sign_sequences` (letters.npz, words.npz)."""
    return _shared_folder("ASL_TINYML_SEQUENCES", "sequences", "sign_sequences")


def default_words_people_file() -> Path | None:
    """`$ASL_TINYML_WORDS_PEOPLE`, else `../shared/sequences/sign_words_people/words_people.npz` (the word
    collection of many people's webcams)."""
    return _shared_folder("ASL_TINYML_WORDS_PEOPLE", "sequences", "sign_words_people", "words_people.npz")
def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells, else `os.cpu_count()`)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _is_type(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a Config field's annotation (int, float, bool, str, list[...], X | None)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_is_type(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_is_type(v, args[0]) for v in value)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


@dataclass
class Config:
    """Every knob of the pipeline. Paths are relative to the working directory."""

    # data
    sources: list[str] = field(default_factory=list)  # empty: default sources (see merge.default_sources)
    merged_dir: str = "data_merged"
    run_dir: str = "runs/default"
    include_extra: bool = False
    limit_per_class: int | None = None  # per source and class; a small slice for quick runs
    image_size: int = 64
    hand_crop: bool = True  # crop each image to its MediaPipe hand (needs the `landmarks` extra; centre crop without)
    crop_margin: float = 0.25  # the hand crop's margin around the landmarks, x their extent, on every side
    hand_cache: str | None = None  # hand detections by image hash, shared by runs; None: hands.npz beside the run
    frame_block: int = 100  # consecutive frame numbers that form one group
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # model and training
    model: str = "convkan"
    epochs: int = 30  # pixel model epochs (the main job's; `fold_epochs` for the held-out folds)
    batch_size: int = 64
    lr: float = 3e-3  # OneCycle peak learning rate (docs/experiments.md compares others)
    weight_decay: float = 1e-4
    patience: int = 10
    early_stop_after: float = 1.0  # no early stop before this fraction of `epochs` (engine.should_stop)
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    ema_decay: float = 0.999  # validate and save an exponential moving average of the weights; 0 turns it off
    augment: bool = True
    color_jitter: float = 0.3  # brightness, contrast, saturation factors in [1 - j, 1 + j]
    rand_augment: int = 0  # > 0: two v2.RandAugment ops of this magnitude (0-30)
    random_erasing: float = 0.0  # chance of erasing a rectangle (v2.RandomErasing)
    hue: float = 0.0  # hue shift in [-hue, hue] (white balance); off: it triples the augmentation time
    blur: float = 0.3  # chance of a Gaussian blur (v2.GaussianBlur; focus, motion)
    noise: float = 0.2  # chance of sensor noise (v2.GaussianNoise)
    jpeg: float = 0.3  # chance of JPEG compression at quality 30-90 (v2.JPEG; webcam and phone uploads)
    mixup_alpha: float = 0.0  # > 0: mix image pairs with Beta(a, a) weights (v2.MixUp)
    negatives: float = 0.25  # empty scenes (RUN/negatives.npz) added to each pixel batch, as a share of it, with a
    # uniform target: the model learns to be unsure where no hand is (asl_tinyml.negatives); 0 turns it off
    num_threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    # hand landmarks and the fused predictor
    landmark_epochs: int = 40
    landmark_sequences: str | None = None  # a letters.npz whose static letters also train the landmark model;
    # None: letters.npz in `sequences_dir` when present; "" turns them off
    landmark_keypoints: str | None = None  # the keypoint collection's letters.npz (many people's webcams), also
    # trained on; None: $ASL_TINYML_KEYPOINTS or ../shared/landmarks/asl_keypoints/letters.npz; "" turns it off
    landmark_folds: bool = True  # the main job holds out every person and group once with the landmark model
    landmark_group_cap: int = 30  # rows of one (person or group, class) an epoch of the landmark model takes at most
    fusion_weight: float = 0.8  # landmark weight of the shipped pair unless `compare` chose one for the run: what
    # leave-one-source-out chose, scoring answers kept to letters or digits (docs/experiments.md)
    no_hand_threshold: float = 0.5  # below this top probability, a photo without a detected hand is "no hand found"
    # pipeline: baseline, compression, export
    study: bool = False  # the pipeline's full study: train the baseline, sweep `sparsities`, bench every format for
    # `bench_rounds` rounds; off (the main job): the untrained baseline against the shipped int8 file, 3 rounds
    baseline: str | None = "fastkan"  # measured side by side (trained with `study`); None skips it
    baseline_epochs: int = 15
    sparsities: list[float] = field(default_factory=lambda: [0.0, 0.3, 0.5, 0.7, 0.9])
    finetune_epochs: int = 3
    int8_float_convs: int = 3  # leading convolutions int8 exports keep float (export.quantize_onnx)
    bench_rounds: int = 5  # round-robin repeats of every benchmark; each figure is their median (about 30 s each)
    # compare: held-out folds and the transfer-learning model
    fold_epochs: int = 12  # at most this many epochs per leave-people/source-out fold (the held-out figures used 12)
    person_folds: int = 4  # leave-people-out folds: every known person is held out once
    transfer_epochs: int = 10  # efficientnet_lite0 fine-tuning
    transfer_lr: float = 1e-3
    models_dir: str = "models"  # final artifacts
    quick: bool = False
    # motion: j, z and words from landmark sequences (asl_tinyml.motion)
    sequences_dir: str | None = None  # letters.npz / words.npz; None: $ASL_TINYML_SEQUENCES or ../shared/sequences/sign_sequences
    motion_epochs: int = 20  # epochs of each motion model (folds and shipped)
    motion_limit: int | None = None  # at most N windows per class and group (quick runs)
    motion_people: str | None = None  # the word collection (words_people.npz) the words model also trains on; None:
    # $ASL_TINYML_WORDS_PEOPLE or ../shared/sequences/sign_words_people/words_people.npz; "" turns it off

    @classmethod
    def from_yaml(cls, path: str | Path) -> Config:
        """Load a config file (a YAML mapping of Config fields); a missing or malformed file, an unknown key
        or a value of the wrong type is a UserError naming the file and the key."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise UserError(f"--config {path} not found; pass a YAML file of config keys (e.g. `epochs: 20`)") from exc
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise UserError(f"--config {path} is not a readable YAML file ({problem}); fix it or pass another") from exc
        if data is None:
            data = {}
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise UserError(f"--config {path} must be a YAML mapping of config keys (e.g. `epochs: 20`), "
                            f"not a {type(data).__name__}")
        try:
            return cls().replace(**data).checked()
        except UserError as exc:
            raise UserError(f"--config {path}: {exc}") from exc

    def checked(self) -> Config:
        """This config, after checking every field's type and the ranges that would break a stage."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _is_type(value, hints[f.name]):
                raise UserError(f"config key {f.name!r} must be {_type_name(hints[f.name])}, got {value!r}")
        positive = ("image_size", "frame_block", "epochs", "batch_size", "patience", "bench_rounds", "fold_epochs",
                    "transfer_epochs", "baseline_epochs", "finetune_epochs", "landmark_group_cap", "landmark_epochs",
                    "motion_epochs")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"config key {name!r} must be at least 1, got {getattr(self, name)}")
        for name in ("limit_per_class", "motion_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"config key {name!r} must be at least 1 (or null), got {getattr(self, name)}")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise UserError("config keys 'val_fraction' and 'test_fraction' must lie in (0, 1) with a sum below 1")
        if not 0 <= self.negatives <= 1:
            raise UserError(f"config key 'negatives' must lie in [0, 1] (a share of each batch), got {self.negatives}")
        if not all(0 <= s < 1 for s in self.sparsities):
            raise UserError(f"config key 'sparsities' must hold levels in [0, 1), got {self.sparsities}")
        for name in ("lr", "transfer_lr"):
            if not getattr(self, name) > 0:
                raise UserError(f"config key {name!r} must be above 0, got {getattr(self, name)}")
        return self

    @classmethod
    def field_names(cls) -> set[str]:
        """The names of every config key."""
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """A config from a saved dict (a checkpoint's `config`), ignoring keys this version no longer has."""
        names = cls.field_names()
        return cls().replace(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed; `None` values are ignored (handy for CLI flags)."""
        names = self.field_names()
        unknown = sorted(set(changes) - names)
        if unknown:
            raise UserError(f"unknown config key(s) {unknown}; valid keys: {sorted(names)}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def hand_cache_path(self) -> Path:
        """Where hand detections are kept by image hash: `hand_cache`, else `hands.npz` beside the run folder."""
        return Path(self.hand_cache) if self.hand_cache else Path(self.run_dir).parent / "hands.npz"

    def sequences_folder(self) -> Path | None:
        """The folder of letters.npz / words.npz: `sequences_dir`, else `default_sequences_dir()`."""
        return Path(self.sequences_dir) if self.sequences_dir else default_sequences_dir()

    def landmark_sequences_path(self) -> Path | None:
        """The `letters.npz` the landmark model also trains on, or None."""
        if self.landmark_sequences == "":
            return None
        if self.landmark_sequences is not None:
            return Path(self.landmark_sequences)
        root = self.sequences_folder()
        return root / "letters.npz" if root is not None and (root / "letters.npz").exists() else None

    def landmark_keypoints_path(self) -> Path | None:
        """The keypoint collection the landmark model also trains on, or None."""
        if self.landmark_keypoints == "":
            return None
        path = Path(self.landmark_keypoints) if self.landmark_keypoints is not None else default_keypoints_file()
        return path if path is not None and path.exists() else None

    def motion_people_path(self) -> Path | None:
        """The word collection the words model also trains on, or None."""
        if self.motion_people == "":
            return None
        path = Path(self.motion_people) if self.motion_people is not None else default_words_people_file()
        return path if path is not None and path.exists() else None

    def landmark_options(self) -> dict[str, Any]:
        """The landmark-only sources and sampling every landmark-model training of this config uses."""
        return {"sequences": self.landmark_sequences_path(), "keypoints": self.landmark_keypoints_path(),
                "group_cap": self.landmark_group_cap, "seed": self.seed, "epochs": self.landmark_epochs}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def quick_mode(self) -> Config:
        """A small, fast slice for smoke tests and the notebook's quick mode."""
        return self.replace(
            quick=True, limit_per_class=self.limit_per_class or 12, epochs=min(self.epochs, 2),
            baseline_epochs=min(self.baseline_epochs, 1), sparsities=[0.0, 0.5], finetune_epochs=1, bench_rounds=1,
            fold_epochs=min(self.fold_epochs, 2), transfer_epochs=min(self.transfer_epochs, 1),
            landmark_epochs=min(self.landmark_epochs, 10), landmark_group_cap=min(self.landmark_group_cap, 4),
            motion_epochs=min(self.motion_epochs, 2), motion_limit=self.motion_limit or 6,
        )
