"""Which trained models `predict`, `evaluate`, `serve` and `motion predict` use, and the set packaged with asl-tinyml.

A model set is a folder of the int8 files the main job exports (`models/` by default). Resolution order:
`--models-dir DIR`, else `$ASL_TINYML_MODELS`, else `./models` when the main job has written a set there,
else the set packaged inside the installed package (`packaged_models/`, with its model card), so a fresh
install works from any folder without a training run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, UserError

MODELS_ENV = "ASL_TINYML_MODELS"
PACKAGED_DIR = Path(__file__).resolve().parent / "packaged_models"
LOCAL_DIR = Path("models")
PIXEL_FILE = "asl_fastkan_int8.onnx"  # the set's marker: every set has the pixel model
PACKAGED_FILES = (PIXEL_FILE, "asl_landmarks_int8.onnx", "asl_motion_letters_int8.onnx", "asl_motion_words_int8.onnx")
CARD_JSON, CARD_MD = "model_card.json", "MODEL_CARD.md"


@dataclass(frozen=True)
class ModelSet:
    """A folder of shipped model files and how it was chosen."""

    path: Path
    origin: str  # "--models-dir", "$ASL_TINYML_MODELS", "models/ (the main job's)" or "packaged"

    def describe(self) -> dict[str, Any]:
        """What `--json` outputs and `/health` say about the set: folder, origin and the card's run."""
        card = read_card(self.path)
        out: dict[str, Any] = {"dir": str(self.path), "origin": self.origin}
        if card:
            out["card"] = {k: card.get(k) for k in ("made", "commit", "seed")}
        return out


def resolve_models(explicit: str | Path | None = None) -> ModelSet:
    """The model set a command uses (the module docstring's order)."""
    if explicit not in (None, ""):
        return ModelSet(Path(explicit), "--models-dir")
    env = os.environ.get(MODELS_ENV)
    if env:
        return ModelSet(Path(env), f"${MODELS_ENV}")
    if (LOCAL_DIR / PIXEL_FILE).exists():
        return ModelSet(LOCAL_DIR, "models/ (the main job's)")
    return ModelSet(PACKAGED_DIR, "packaged")


def describe_file(path: str | Path) -> dict[str, Any]:
    """The set a model file belongs to, for outputs that name it: its folder, "packaged" when it is the set
    packaged with asl-tinyml (with its card's run), else "files"."""
    folder = Path(path).resolve().parent
    origin = "packaged" if folder == PACKAGED_DIR else "files"
    return ModelSet(folder, origin).describe()


def read_card(folder: str | Path) -> dict[str, Any] | None:
    """A set's `model_card.json`, or None."""
    path = Path(folder) / CARD_JSON
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def card_from_run(run_dir: str | Path, models_dir: str | Path) -> dict[str, Any]:
    """The model card of a main-job run: what each file is (classes, bytes), the data, seed and commit, and
    the run's held-out and test figures (its `metrics.json`)."""
    from .inference import open_session

    run_dir, models_dir = Path(run_dir), Path(models_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        raise UserError(f"no {metrics_path}; run `asl-tinyml pipeline` first, then package its models")
    metrics = json.loads(metrics_path.read_text())
    config = Config.from_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else Config()
    files = {}
    for name in PACKAGED_FILES:
        path = models_dir / name
        if not path.exists():
            raise UserError(f"{path} missing; run `asl-tinyml pipeline` (it writes every file of the set)")
        meta = open_session(path)[1]
        files[name] = {"bytes": path.stat().st_size, "classes": json.loads(meta.get("classes", "[]")),
                       **{k: meta[k] for k in ("model", "input", "fusion_weight") if k in meta}}
    fused = metrics.get("fused", {})
    return {
        "made": time.strftime("%Y-%m-%d"), "commit": _commit(), "seed": config.seed,
        "run": str(run_dir), "files": files,
        "held_out": metrics.get("held_out", {}),
        "test_split": {"fused_accuracy": fused.get("accuracy"), "fused_macro_f1": fused.get("macro_f1"),
                       "pixel_macro_f1": metrics.get("macro_f1"), "images": fused.get("n")},
        "motion": {k: {m: v.get(m) for m in ("holdout_mean_accuracy", "j_recall", "z_recall", "n")}
                   for k, v in metrics.get("motion", {}).items() if isinstance(v, dict) and "kind" in v},
        "data": "../shared/datasets (five image sources), ../shared/landmarks/asl_keypoints, "
                "../shared/sequences/sign_sequences and sign_words_people: see README.md, Data",
    }


def card_markdown(card: dict[str, Any]) -> str:
    """A short human-readable model card."""
    lines = ["# Packaged models", "", f"Made by `asl-tinyml pipeline` (run `{card['run']}`, commit `{card['commit']}`, "
             f"seed {card['seed']}); data: {card['data']}.", "", "| file | bytes | classes |", "|---|---|---|"]
    lines += [f"| `{n}` | {f['bytes']:,} | {len(f['classes'])} |" for n, f in card["files"].items()]
    lines += ["", *headline_figures(card)]
    lines += ["", "Held-out and test figures: `model_card.json` (`held_out`, `test_split`, `motion`); the commands "
              "and the full record: docs/experiments.md.", ""]
    return "\n".join(lines)


def headline_figures(card: dict[str, Any]) -> list[str]:
    """The card's figures in a few bullets: held-out groups, words on held-out repositories, the test split."""
    held, test = card.get("held_out", {}), card.get("test_split", {})
    out = []
    if (g := held.get("groups_in_kind", {}).get("shipped")) is not None:
        out.append(f"- held-out people and groups, in kind: mean {g['mean']:.3f}, worst {g['worst']:.3f} ({g['groups']} groups)")
    if (w := held.get("word_repositories")) is not None:
        out.append(f"- motion words, {w['folds']} folds over {w['groups']} held-out repositories: "
                   + ", ".join(f"{k} {v:.3f}" for k, v in w["key_words"].items()))
    if test.get("fused_macro_f1") is not None:
        out.append(f"- test split ({test['images']} images of unseen people): fused macro-F1 {test['fused_macro_f1']:.3f}, "
                   f"accuracy {test['fused_accuracy']:.3f}; pixels alone macro-F1 {test['pixel_macro_f1']:.3f}")
    return out


def package_models(run_dir: str | Path, models_dir: str | Path = LOCAL_DIR, dest: str | Path = PACKAGED_DIR) -> Path:
    """Copy a main-job set (`models_dir`) into `dest` with its model card (for maintainers: the packaged set)."""
    card = card_from_run(run_dir, models_dir)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in PACKAGED_FILES:
        shutil.copyfile(Path(models_dir) / name, dest / name)
    (dest / CARD_JSON).write_text(json.dumps(card, indent=2, default=str) + "\n")
    (dest / CARD_MD).write_text(card_markdown(card))
    return dest
