"""`asl-tinyml pipeline`: every stage in order on the default (or given) data, ending with a report.

merge -> preprocess -> eda -> train (default model, then the baseline) -> evaluate -> compress ->
export -> bench, then (with the `landmarks` extra) MediaPipe landmarks -> landmark_fastkan -> the fused
int8 predictor. Each stage is the same function its CLI subcommand calls; this module only chains
them and writes `RUN/report.md`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .merge import default_sources, format_report, merge
from .preprocess import preprocess


MAIN_JOB_BENCH_ROUNDS = 3  # main job: the shipped int8 file against the baseline, median of 3 (throughput swings run to run)


@contextmanager
def _stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    print(f"== {name}", flush=True)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 1)
    print(f"== {name} done in {timings[name]} s", flush=True)


def _model_row(name: str, summary: dict[str, Any], metrics: dict[str, Any]) -> str:
    per_source = ", ".join(f"{s} {v['accuracy']:.3f}" for s, v in sorted(metrics["per_source"].items()))
    return (
        f"| {name} | {summary['params']:,} | {summary['train_seconds']:.0f} | {summary['epochs_run']} | "
        f"{metrics['accuracy']:.4f} | {metrics['macro_f1']:.4f} | {metrics['weighted_f1']:.4f} | "
        f"{metrics['twin_aware_accuracy']:.4f} | {per_source} |"
    )


def _section(path: Path, title: str) -> list[str]:
    """A stage's own markdown table, inlined under a heading (skipped when the stage made none)."""
    if not path.exists():
        return []
    body = path.read_text().strip().splitlines()
    body = [line for line in body if not line.startswith("# ")]  # drop the file's own title
    return ["", f"## {title}", "", *body]


def train_and_evaluate(cfg: Config, run: Path, model: str, epochs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train `model` on the run's train split, then evaluate its best checkpoint on the test split."""
    from .evaluate import evaluate
    from .train import train

    model_cfg = cfg.replace(model=model, epochs=epochs)
    summary = train(model_cfg, run)
    metrics = evaluate(summary["checkpoint"], run, run / "eval" / model)
    metrics.update(params=summary["params"], train_seconds=summary["train_seconds"])
    (run / "eval" / model / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return summary, metrics


def untrained_baseline(cfg: Config, run: Path, classes: list[str]) -> tuple[Path, int]:
    """The baseline's architecture with its initial weights, saved for the bench (speed and size do not
    depend on the weights): the main job measures the baseline's cost without spending minutes training it.
    Returns (checkpoint path, parameter count)."""
    from .models import count_parameters, create_model, save_checkpoint
    from .train import model_options

    options = model_options(str(cfg.baseline), cfg.image_size)
    model = create_model(str(cfg.baseline), len(classes), **options)
    path = run / "train" / str(cfg.baseline) / "untrained.pt"
    save_checkpoint(path, model, {"model": cfg.baseline, "model_options": options, "classes": classes,
                                  "image_size": cfg.image_size, "trained": False})
    return path, count_parameters(model)


def ship_qat_if_needed(compress_rows: list[dict[str, Any]], int8_path: Path) -> str:
    """Ship the quantization-aware int8 model instead of the post-training one when compress made one.

    `compress` fine-tunes with fake quantization only when post-training int8 lost more than its
    tolerance of macro-F1 (the rule the compression issue set), so its presence is the decision.
    """
    qat = next((r for r in compress_rows if r["name"] == "qat_int8"), None)
    if qat is None:
        return "post-training static quantization (within tolerance of float)"
    shutil.copyfile(qat["path"], int8_path)
    return f"quantization-aware fine-tuning (post-training int8 lost more than the tolerance); from {qat['path']}"


def landmarks_available() -> bool:
    """Whether MediaPipe (the `landmarks` extra) is installed: the pipeline then adds the landmark stage."""
    import importlib.util

    return importlib.util.find_spec("mediapipe") is not None


def landmarks_and_fusion(cfg: Config, run: Path, merged: Path, pixel_int8: Path, pixel_params: int) -> list[str]:
    """MediaPipe landmarks of every cached image (from the hand cache), `landmark_fastkan` trained (with the
    static letters of the landmark sequences) and exported to int8 next to the pixel model with the fusion
    weight chosen on held-out sources (`compare`; else `cfg.fusion_weight`), and the shipped fused pair scored
    on the test split; the report's table rows."""
    from .evaluate import evaluate
    from .fusion import held_out_weight
    from .landmarks import build_landmark_cache, export_landmark_model, landmark_folds, train_landmarks

    build_landmark_cache(merged, run, hand_cache=cfg.hand_cache_path())
    lm = train_landmarks(run, **cfg.landmark_options())
    if cfg.landmark_folds:  # every person and group held out once: the report's first table
        landmark_folds(run, "person", person_folds=cfg.person_folds, progress=False, **cfg.landmark_options())
    weight = held_out_weight(run)
    paths = export_landmark_model(run, cfg.models_dir, fusion_weight=cfg.fusion_weight if weight is None else weight)
    fused = evaluate(pixel_int8, run, run / "eval" / "fused", landmark_model=paths["onnx_int8"])
    test = lm["test"]
    per_source = ", ".join(f"{s} {v['end_to_end_accuracy']:.3f}" for s, v in sorted(lm["test_by_source"].items()))
    sessions = ", ".join(f"{g.split(':')[-1]} {v['end_to_end_accuracy']:.3f}" for g, v in lm["held_out_groups"].items())
    kib = (pixel_int8.stat().st_size + paths["onnx_int8"].stat().st_size) / 1024
    chosen = "chosen on held-out sources" if weight is not None else "the default; `compare` chooses it on held-out sources"
    return [
        f"| landmark_fastkan (hand found in {test['hand_found']}/{test['images']}; a miss counts as wrong) | "
        f"{lm['params']:,} | {lm['train_seconds']:.0f} | {lm['epochs_run']} | {test['end_to_end_accuracy']:.4f} | – | – | – | "
        f"{per_source}{'; test groups of the landmark-only sources: ' + sessions if sessions else ''} |",
        _model_row(f"**shipped: fused int8** ({pixel_int8.name} + {paths['onnx_int8'].name}, {kib:.0f} KiB, weight "
                   f"{fused['fusion_weight']}: {chosen})",
                   {"params": pixel_params + lm["params"], "train_seconds": 0, "epochs_run": "–"}, fused),
    ]


def read_folds(run: Path, model: str, kind: str) -> list[dict[str, Any]] | None:
    """The `folds.json` rows `compare` wrote for `model`'s `kind` folds in a run, or None."""
    from .train import folds_dir

    path = folds_dir(run, model, kind) / "folds.json"
    return json.loads(path.read_text()) if path.exists() else None


def group_accuracy(run: Path) -> dict[str, dict[str, float]]:
    """Every held-out person and landmark-only group (repository, session) with its accuracy in kind (answers
    kept to letters or digits): `landmarks` from the landmark model's people-and-groups folds, `shipped` the
    fused predictor's where `compare` scored it (image people), else the landmarks' (groups without images),
    and `pixels` where measured. Empty without the landmark folds."""
    from .compare import person_accuracy

    landmark = person_accuracy(read_folds(run, "landmark_fastkan", "person"), "per_person_in_kind")
    fused = person_accuracy(read_folds(run, "fused", "person"), "per_person_in_kind")
    pixels = person_accuracy(read_folds(run, "fused", "person"), "pixel_per_person")
    return {g: {"landmarks": v, "shipped": fused.get(g, v), **({"pixels": pixels[g]} if g in pixels else {})}
            for g, v in landmark.items()}


def held_out_summary(run: Path) -> dict[str, Any]:
    """Mean and worst held-out-source and held-out-person accuracy per model, from the folds `compare` wrote,
    and the mean and worst over every held-out group in kind (`group_accuracy`)."""
    from .compare import held_out_figures

    out: dict[str, Any] = {}
    groups = group_accuracy(run)
    if groups:
        out["groups_in_kind"] = {
            key: {"mean": float(np.mean(v)), "worst": float(np.min(v)), "groups": len(v)}
            for key in ("shipped", "landmarks", "pixels")
            if (v := [g[key] for g in groups.values() if key in g])
        }
    for name, model, acc, per in (("fused", "fused", "accuracy", "per_person"), ("pixels", "convkan", "accuracy", "per_person"),
                                  ("landmarks", "landmark_fastkan", "end_to_end_accuracy", "per_person")):
        source, person = read_folds(run, model, "source"), read_folds(run, model, "person")
        if source or person:
            out[name] = held_out_figures(source, person, acc, per)
    if (words := word_folds(run)) is not None:
        out["word_repositories"] = {k: words[k] for k in ("groups", "folds", "accuracy", "key_words", "worst_fold")}
        out["word_repositories"]["recall"] = {w: v["recall"] for w, v in words["per_word"].items()}
    return out


def word_folds(run: Path) -> dict[str, Any] | None:
    """The motion words' held-out-repository figures `compare` wrote (`compare.ensure_word_folds`), or None."""
    from .compare import word_folds_path

    path = word_folds_path(run)
    return json.loads(path.read_text()) if path.exists() else None


def held_out_words_section(run: Path) -> list[str]:
    """The motion words on held-out repositories: every word's recall, most recorded first (a pointer to
    `compare` when not measured)."""
    s = word_folds(run)
    head = ["", "## Motion words on held-out repositories", ""]
    if s is None:
        return head + [f"Not measured in this run: `asl-tinyml compare --run {run}` runs them (5 grouped folds over the "
                       "word collection's repositories, about 5 minutes on 2 cores)."]
    lines = head + [f"{s['folds']} grouped folds over the word collection's {s['groups']} repositories (each tested once, "
                    f"never trained on in its fold; the traduttore sessions train every fold), {s['epochs']} epochs, seed "
                    f"{s['seed']}; recall as the shipped rule decides (the best class). Words with few repositories "
                    "that sign them differently stay low: they are named here, not hidden.", "",
                    "| word | recall | worst fold | recordings | repositories |", "|---|---|---|---|---|"]
    for w, v in s["per_word"].items():
        worst = s["worst_fold"].get(w)
        name = f"**{w}**" if w in s["key_words"] else w
        lines.append(f"| {name} | {v['recall']:.3f} | {'–' if worst is None else f'{worst:.3f}'} | {v['n']} | {v['groups']} |")
    for w, r in s.get("by_repository", {}).items():
        read_as = ", ".join(f"{k} {n}" for k, n in r["read_as"].items())
        lines.append(f"\n`{w}`: {r['never_right']} of {r['repositories']} repositories read wrong on every recording "
                     f"({r['errors_in_never_right']} of {r['errors']} errors; recall {r['recall_without_them']:.3f} "
                     f"without them); its errors read as {read_as or '–'}.")
    return lines


def held_out_groups_section(run: Path) -> list[str]:
    """The report's first table: every held-out person and group, in kind, worst first (`group_accuracy`)."""
    groups = group_accuracy(run)
    if not groups:
        return []
    lines = ["", "## Held-out people and groups, in kind", "",
             "Each image-source person, keypoint repository and recording session held out once (trained on the "
             "rest); answers kept to the true label's kind (letters or digits), as `--classes letters|digits` does. "
             "Groups without images are scored on their landmarks (the shipped predictor's input there).", "",
             "| held out | shipped | landmarks alone | pixels alone |", "|---|---|---|---|"]
    def fmt(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"
    for g, v in sorted(groups.items(), key=lambda kv: kv[1]["shipped"]):
        lines.append(f"| `{g}` | {fmt(v['shipped'])} | {fmt(v['landmarks'])} | {fmt(v.get('pixels'))} |")
    for label, fn in (("mean", np.mean), ("worst", np.min)):
        cells = [fmt(float(fn(vals))) if (vals := [v[k] for v in groups.values() if k in v]) else "–"
                 for k in ("shipped", "landmarks", "pixels")]
        lines.append(f"| **{label} of {len(groups)}** | **{cells[0]}** | {cells[1]} | {cells[2]} |")
    return lines


def held_out_section(run: Path) -> list[str]:
    """The report's first table: leave-one-source-out and leave-people-out accuracy of the fused predictor,
    pixels alone and landmarks alone, from the folds `compare` wrote (a pointer to it when there are none)."""
    from .compare import person_accuracy

    source, person = read_folds(run, "fused", "source"), read_folds(run, "fused", "person")
    if not source or not person:
        return ["", "## New people and new sources", "",
                f"Not measured in this run: `asl-tinyml compare --run {run}` trains the held-out folds (about 50 "
                "minutes on 2 cores) and chooses the fusion weight on held-out sources; run the pipeline again "
                "afterwards to ship that weight."]
    lines = ["", "## New people and new sources (held out)", "",
             "Accuracy on images of a source or a person that training never saw; \"in kind\": answers kept to the "
             "true label's kind (letters or digits), as `--classes letters|digits` does, which tells the ASL "
             "handshape twins (o/0, v/2, w/6, f/9) apart.", "",
             "| held out | images | fused (shipped) | in kind | pixels alone | landmarks alone | weight |",
             "|---|---|---|---|---|---|---|"]
    for r in source:
        lines.append(f"| source `{r['fold']}` | {r['n_images']} | {r['accuracy']:.3f} | {r['accuracy_in_kind']:.3f} "
                     f"| {r['pixel_accuracy']:.3f} | {r['landmark_accuracy']:.3f} | {r['weight']} |")
    keys = ("accuracy", "accuracy_in_kind", "pixel_accuracy", "landmark_accuracy")
    mean = {k: float(np.mean([r[k] for r in source])) for k in keys}
    lines.append(f"| **every source, mean** | | **{mean['accuracy']:.3f}** | {mean['accuracy_in_kind']:.3f} "
                 f"| {mean['pixel_accuracy']:.3f} | {mean['landmark_accuracy']:.3f} | |")
    fused, kind, pix, lmk = (person_accuracy(person, k) for k in
                             ("per_person", "per_person_in_kind", "pixel_per_person", "landmark_per_person"))
    for p in sorted(fused):
        lines.append(f"| person `{p}` | | {fused[p]:.3f} | {kind.get(p, float('nan')):.3f} "
                     f"| {pix.get(p, float('nan')):.3f} | {lmk.get(p, float('nan')):.3f} | |")
    lines.append(f"| **every person, mean** | | **{np.mean(list(fused.values())):.3f}** | {np.mean(list(kind.values())):.3f} "
                 f"| {np.mean(list(pix.values())):.3f} | {np.mean(list(lmk.values())):.3f} | |")
    return lines
def motion_stage(cfg: Config, run: Path) -> tuple[list[str], dict[str, Any]]:
    """The motion models (`asl_tinyml.motion`): for letters and words, the held-out-session folds and the
    shipped model trained on every session, exported to int8 ONNX in `models_dir`. Returns the report's
    lines and the `motion` entry of metrics.json; a note instead when the sequences folder is absent."""
    from .motion import train_motion, window_latency

    folder = cfg.sequences_folder()
    files = [folder / f"{k}.npz" for k in ("letters", "words")] if folder else []
    if not files or not all(f.exists() for f in files):
        note = (f"skipped: no letters.npz/words.npz in {folder or '../shared/sequences/sign_sequences'} "
                "(set sequences_dir or $ASL_TINYML_SEQUENCES)")
        return ["", "## Motion models (j, z, words)", "", note], {"skipped": note}
    rows, out = [], {}
    people = cfg.motion_people_path()
    for path in files:
        # words with the word collection: the shipped model only; `compare` holds its repositories out
        words_union = people is not None and path.stem == "words"
        m = train_motion(path, run / "motion", cfg.models_dir, people=people, epochs=cfg.motion_epochs, seed=cfg.seed,
                         limit=cfg.motion_limit, progress=False, **({"holdouts": ()} if words_union else {}))
        int8 = Path(m["export"]["paths"]["onnx_int8"])
        m["latency"] = window_latency(int8, frames=30)
        out[m["kind"]] = m
        folds = {f["held_out"]: f["trained_classes"]["accuracy"] for f in m["folds"]}
        jz = ", ".join(f"{k} {m[f'{k}_recall']:.3f}" for k in ("j", "z") if m.get(f"{k}_recall") is not None)
        strays = [f"{f['held_out']} {f['strays']['rate']:.1%}" for f in m["folds"] if "strays" in f]
        jz += f"; static letters read as j/z: {', '.join(strays)}" if strays else ""
        held = (", ".join(f"{k} {v:.4f}" for k, v in folds.items()) + f" | {m['holdout_mean_accuracy']:.4f}" if folds else
                "held-out repositories: see above | –")
        rows.append(
            f"| {m['kind']} | {m['n']} | {len(m['classes'])} | {m['params']:,} | {held}"
            + f" | {jz or '–'} | {int8.stat().st_size / 1024:.1f} | "
            f"{m['latency']['ms_window']:.3f} | {m['export']['checks']['onnx_int8']['argmax_agreement']:.4f} |"
        )
    lines = [
        "", "## Motion models (j, z, words)", "",
        f"`motion_fastkan` on landmark sequences from `{folder}`"
        + (f" (words also on the word collection `{people}`, drawn by class and repository)" if people else "")
        + "; accuracy on a held-out recording session (trained on the others; classes the other sessions lack are "
        f"left out), then the shipped model trained on every recording ({cfg.motion_epochs} epochs, seed {cfg.seed}). "
        "Latency: one 30-frame window, features + int8 model, one thread.",
        "",
        "| set | windows | classes | params | accuracy per held-out session | mean | j/z recall | int8 KiB | ms/window | int8 top-1 = PyTorch |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    return lines, out


def skipped_note(cfg: Config, run: Path) -> list[str]:
    """What this run left out and the command that runs it (empty when nothing was left out)."""
    left = []
    if not cfg.study:
        left.append(f"the full study: the baseline trained ({cfg.baseline_epochs} epochs), the pruning sweep "
                    f"({', '.join(f'{s:.0%}' for s in cfg.sparsities)}), the PyTorch and float ONNX files in the bench and "
                    f"{cfg.bench_rounds} bench rounds: "
                    "`asl-tinyml pipeline --study` (about 15 minutes more on 2 cores)")
    if read_folds(run, "fused", "source") is None:
        left.append(f"the held-out folds (new people, new sources): `asl-tinyml compare --run {run}` (about 50 minutes)")
    if cfg.motion_people_path() is not None and word_folds(run) is None:
        left.append(f"the motion words' held-out repositories: `asl-tinyml compare --run {run}` (about 5 minutes of it)")
    return ["", "Not in this run: " + "; ".join(left) + "."] if left else []


def run_pipeline(cfg: Config) -> str:
    """Run every stage; writes `RUN/report.md` (and `RUN/metrics.json`) and returns the report text."""
    from .bench import bench, bench_images, write_bench
    from .compress import compress
    from .eda import run_eda
    from .export import export_all

    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    cfg.save(run / "config.yaml")
    timings: dict[str, float] = {}
    sources = [Path(s) for s in cfg.sources] or default_sources()
    merged = Path(cfg.merged_dir)

    with _stage("merge", timings):
        report = merge(
            sources, merged, include_extra=cfg.include_extra, limit_per_class=cfg.limit_per_class,
            frame_block=cfg.frame_block,
        )
        print(format_report(report, merged))
    hand_crop = cfg.hand_crop and landmarks_available()
    with _stage("preprocess" + (" (MediaPipe hand crops)" if hand_crop else ""), timings):
        prep = preprocess(merged, run, cfg.image_size, cfg.seed, cfg.val_fraction, cfg.test_fraction,
                          hand_crop=hand_crop, hand_cache=cfg.hand_cache_path(), margin=cfg.crop_margin)
    with _stage("eda", timings):
        figures = run_eda(merged, run, run / "eda")
    with _stage(f"train + evaluate {cfg.model}", timings):
        summary, metrics = train_and_evaluate(cfg, run, cfg.model, cfg.epochs)
    rows = [_model_row(cfg.model, summary, metrics)]
    baseline_ckpt = None
    if cfg.baseline and cfg.study:
        with _stage(f"train + evaluate {cfg.baseline} (baseline)", timings):
            b_summary, b_metrics = train_and_evaluate(cfg, run, cfg.baseline, cfg.baseline_epochs)
        rows.append(_model_row(f"{cfg.baseline} (baseline)", b_summary, b_metrics))
        baseline_ckpt = b_summary["checkpoint"]
    elif cfg.baseline:
        baseline_ckpt, b_params = untrained_baseline(cfg, run, list(metrics["classes"]))
        rows.append(f"| {cfg.baseline} (baseline) | {b_params:,} | – | – | not trained in the main job (its speed is in "
                    f"Speed): `asl-tinyml pipeline --study` trains it for {cfg.baseline_epochs} epochs | | | | |")
    with _stage("compress", timings):
        compressed = compress(summary["checkpoint"], run, run / "compress", sparsities=cfg.sparsities if cfg.study else [],
                              finetune_epochs=cfg.finetune_epochs, seed=cfg.seed, float_convs=cfg.int8_float_convs)
    with _stage("export", timings):
        exported = export_all(summary["checkpoint"], cfg.models_dir, calibration=run, float_convs=cfg.int8_float_convs)
        int8_note = ship_qat_if_needed(compressed, Path(exported["paths"]["onnx_int8"]))
        exported["bytes"]["onnx_int8"] = Path(exported["paths"]["onnx_int8"]).stat().st_size
    with _stage("bench", timings):
        paths = exported["paths"]
        formats = ("pt", "onnx", "onnx_int8") if cfg.study else ("onnx_int8",)  # the main job: the shipped file
        bench_models = [paths[k] for k in formats if k in paths]
        images = bench_images(run, cfg.image_size)
        rounds = cfg.bench_rounds if cfg.study else min(cfg.bench_rounds, MAIN_JOB_BENCH_ROUNDS)
        rows_bench = bench(bench_models, images, baseline=baseline_ckpt, rounds=rounds)
        write_bench(rows_bench, run / "bench")

    landmark_rows: list[str] = []
    if landmarks_available():
        with _stage("landmarks + fused", timings):
            pixel_int8 = Path(exported["paths"]["onnx_int8"])
            landmark_rows = landmarks_and_fusion(cfg, run, merged, pixel_int8, summary["params"])

    with _stage("motion", timings):
        motion_lines, motion_metrics = motion_stage(cfg, run)

    from .tflm import micro_available, micro_section

    tflite = [Path(cfg.models_dir) / f"{stem}_int8.tflite" for stem in ("asl_fastkan", "asl_landmarks")]
    # the tflite extra's environment runs the exported files in TensorFlow Lite Micro (a timed stage); elsewhere
    # the section says where those figures come from
    with _stage("microcontroller", timings) if micro_available() else nullcontext():
        micro_lines = micro_section(tflite, run)

    headline = {
        "model": cfg.model, "params": summary["params"], "train_seconds": summary["train_seconds"],
        "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "weighted_f1": metrics["weighted_f1"],
        "n": metrics["n"], "per_source": metrics["per_source"], "artifacts": {k: str(v) for k, v in exported["paths"].items()},
        "bytes": exported["bytes"], "timings": timings, "motion": motion_metrics,
    }
    fused_metrics = run / "eval" / "fused" / "metrics.json"
    if landmark_rows and fused_metrics.exists():
        fused = json.loads(fused_metrics.read_text())
        headline["fused"] = {k: fused[k] for k in ("accuracy", "macro_f1", "twin_aware_accuracy", "n", "hand_found",
                                                   "fusion_weight", "model_bytes", "per_source")}
    held_out = held_out_groups_section(run) + held_out_words_section(run) + held_out_section(run)
    headline = {"held_out": held_out_summary(run), **headline}
    (run / "metrics.json").write_text(json.dumps(headline, indent=2, default=str))
    lines = [
        f"# asl-tinyml run `{run}`",
        "",
        f"Sources: {', '.join(s.name for s in sources)}; merged into `{merged}` "
        f"({report.n_merged} new, {report.already} already there, {len(report.skipped)} skipped).",
        f"Cache: {prep.n_images} images at {cfg.image_size}x{cfg.image_size}"
        + (f", cropped to the hand where MediaPipe found one ({prep.hands_found})" if prep.hands_found is not None else "")
        + "; grouped splits " + ", ".join(f"{k} {v}" for k, v in prep.split_sizes.items())
        + " (no person or frame block in two splits; the test split holds unseen people).",
        f"EDA: {len(figures)} PNGs in `{run / 'eda'}`.",
        *(held_out if landmark_rows else []),
        "",
        "## Models on the grouped test split",
        "",
        "| model | params | train s | epochs | accuracy | macro-F1 | weighted-F1 | twin-aware accuracy | accuracy per source |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        *landmark_rows,
        *_section(run / "compress" / "compress.md", "Compression"),
        "",
        "## Artifacts",
        "",
        f"`{Path(exported['paths']['onnx_int8']).name}` comes from {int8_note}.",
        "",
        *(f"- `{exported['paths'][k]}`: {exported['bytes'][k]:,} bytes" for k in exported["paths"] if k in exported["bytes"]),
        *_section(run / "bench" / "bench.md", "Speed"),
        *micro_lines,
        *motion_lines,
        "",
        "## Stage times (s)",
        "",
        "| stage | seconds |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in timings.items()),
        f"| **total** | **{sum(timings.values()):.1f}** |",
        *skipped_note(cfg, run),
    ]
    text = "\n".join(lines) + "\n"
    (run / "report.md").write_text(text)
    return text
