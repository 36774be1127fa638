"""One configuration dataclass for every stage, loadable from YAML and overridable from the CLI."""

from __future__ import annotations

import dataclasses
import os
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


def canonical_classes(include_extra: bool = False) -> list[str]:
    """The class names in their fixed order: digits, letters, space (then del, nothing)."""
    return CORE_CLASSES + (EXTRA_CLASSES if include_extra else [])


def repo_root() -> Path:
    """The checkout this package lives in (src layout), or the working directory when installed."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def default_data_root() -> Path | None:
    """`$ASL_TINYML_DATA`, else `../shared/datasets` beside the working directory or the checkout."""
    env = os.environ.get("ASL_TINYML_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), repo_root()):
        candidate = (base / ".." / "shared" / "datasets").resolve()
        if candidate.is_dir():
            return candidate
    return None


def default_sequences_dir() -> Path | None:
    """`$ASL_TINYML_SEQUENCES`, else `../shared/sequences/sign_sequences` beside the working directory or the
    checkout: the landmark sequences (`letters.npz`, `words.npz`) of the motion models."""
    env = os.environ.get("ASL_TINYML_SEQUENCES")
    if env:
        return Path(env)
    for base in (Path.cwd(), repo_root()):
        candidate = (base / ".." / "shared" / "sequences" / "sign_sequences").resolve()
        if candidate.is_dir():
            return candidate
    return None


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
    frame_block: int = 100  # consecutive frame numbers that form one group
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # model and training
    model: str = "convkan"
    epochs: int = 100  # measured: test macro-F1 +2.3 points over 50 epochs on two seeds, 9.5 min (README)
    batch_size: int = 64
    lr: float = 3e-3  # OneCycle peak; measured: 1e-3 gave test macro-F1 0.891 vs 0.933 at 3e-3 (README)
    weight_decay: float = 1e-4
    patience: int = 10
    early_stop_after: float = 1.0  # no early stop before this fraction of `epochs` (train.should_stop; measured)
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    ema_decay: float = 0.999  # validate and save an exponential moving average of the weights; 0 turns it off
    augment: bool = True
    color_jitter: float = 0.3  # brightness, contrast, saturation factors in [1 - j, 1 + j]; measured: 0.5 worse
    rand_augment: int = 0  # > 0: two v2.RandAugment ops of this magnitude (0-30); measured: 9 worse (README)
    random_erasing: float = 0.0  # chance of erasing a rectangle (v2.RandomErasing); measured: 0.25 worse (README)
    mixup_alpha: float = 0.0  # > 0: mix image pairs with Beta(a, a) weights (v2.MixUp); measured: 0.2 worse
    num_threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    # pipeline: baseline, compression, export
    baseline: str | None = "fastkan"  # trained and measured side by side; None skips it
    baseline_epochs: int = 15
    sparsities: list[float] = field(default_factory=lambda: [0.0, 0.3, 0.5, 0.7, 0.9])
    finetune_epochs: int = 3
    int8_float_convs: int = 3  # leading convolutions int8 exports keep float (export.quantize_onnx)
    bench_rounds: int = 5  # round-robin repeats of every benchmark; each figure is their median (about 30 s each)
    # compare: held-out folds and the transfer-learning model
    fold_epochs: int = 40  # at most this many epochs per leave-one-signer/source-out fold
    transfer_epochs: int = 10  # efficientnet_lite0 fine-tuning
    transfer_lr: float = 1e-3
    models_dir: str = "models"  # final artifacts
    quick: bool = False
    # motion: j, z and words from landmark sequences (asl_tinyml.motion)
    sequences_dir: str | None = None  # letters.npz / words.npz; None: $ASL_TINYML_SEQUENCES or ../shared/sequences/sign_sequences
    motion_epochs: int = 20  # measured: 20 and 30 epochs alike on the held-out sessions (docs/experiments.md)
    motion_limit: int | None = None  # at most N windows per class and session (quick runs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Config:
        """Load a config file; unknown keys are an error naming the key."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        return cls().replace(**data)

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
            motion_epochs=min(self.motion_epochs, 2), motion_limit=self.motion_limit or 6,
        )
