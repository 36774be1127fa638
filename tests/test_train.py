"""Training on tiny generated data: learning, checkpoints, history, resume, repeatability, DDP, LOSO, CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from asl_tinyml.cli import main
from asl_tinyml.config import Config, UserError
from asl_tinyml.engine import HISTORY_COLUMNS, class_weights, ema_model, should_stop
from asl_tinyml.preprocess import Cache, save_splits
from asl_tinyml.train import augment_for, build_augment, build_mixup, fit_options, train, train_folds

SIZE = 16
CLASSES = ["a", "b", "c", "d"]


def _image(cls: int, rng: np.random.Generator) -> np.ndarray:
    """A class is a bright bar in one of four places on a noisy background: separable, not trivial."""
    img = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.uint8)
    shift = rng.integers(-1, 2)
    if cls == 0:
        img[2 + shift : 6 + shift, :, 0] = 230
    elif cls == 1:
        img[:, 2 + shift : 6 + shift, 1] = 230
    elif cls == 2:
        img[10 + shift : 14 + shift, :, 2] = 230
    else:
        img[:, 10 + shift : 14 + shift, :] = 230
    return img


def make_run(path: Path, per_class: int = 24, seed: int = 0) -> Path:
    """A run folder with a tiny cache (3 'signers' per class) and train/val/test splits."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    images = np.stack([_image(c, rng) for c in labels])
    hands = np.array([f"massey_asl:hand{1 + i % 3}" for i in range(len(labels))])
    cache = Cache(images, labels, CLASSES, np.array(["massey_asl"] * len(labels)), hands,
                  np.array([f"{CLASSES[c]}/{i}.png" for i, c in enumerate(labels)]))
    path.mkdir(parents=True, exist_ok=True)
    cache.save(path / "cache.npz")
    order = rng.permutation(len(labels))
    n_val = len(labels) // 5
    splits = {"train": np.sort(order[2 * n_val :]), "val": np.sort(order[:n_val]), "test": np.sort(order[n_val : 2 * n_val])}
    save_splits(splits, path / "splits.json", seed)
    return path


def tiny_cfg(**changes: object) -> Config:
    base = dict(model="convkan", epochs=4, batch_size=8, lr=1e-2, patience=10, image_size=SIZE, num_threads=1, augment=False)
    return Config().replace(**(base | changes))


def _history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


def test_class_weights_are_inverse_frequencies() -> None:
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert torch.allclose(w, torch.tensor([4 / 6, 2.0, 0.0]))  # n / (k_present * count); absent class 0
    balanced = class_weights(np.array([0, 1, 2, 0, 1, 2]), 3)
    assert torch.allclose(balanced, torch.ones(3))


def test_augmentation_knobs_reach_the_transforms() -> None:
    default = build_augment().transforms
    assert not any(isinstance(t, v2.RandomErasing) for t in default)
    assert next(t for t in default if isinstance(t, v2.ColorJitter)).brightness == (0.7, 1.3)
    tuned = build_augment(erasing=0.5, jitter=0.4).transforms
    assert next(t for t in tuned if isinstance(t, v2.ColorJitter)).contrast == pytest.approx((0.6, 1.4))
    assert next(t for t in tuned if isinstance(t, v2.RandomErasing)).p == 0.5
    assert not any(isinstance(t, v2.RandAugment) for t in default)
    rand = next(t for t in build_augment(rand_augment=7).transforms if isinstance(t, v2.RandAugment))
    assert (rand.num_ops, rand.magnitude) == (2, 7)
    assert augment_for(Config(augment=False)) is None
    from_cfg = augment_for(Config(color_jitter=0.2, rand_augment=5)).transforms
    assert next(t for t in from_cfg if isinstance(t, v2.ColorJitter)).saturation == pytest.approx((0.8, 1.2))
    assert next(t for t in from_cfg if isinstance(t, v2.RandAugment)).magnitude == 5


def test_config_from_a_checkpoint_dict_skips_keys_it_no_longer_has() -> None:
    cfg = Config.from_dict({"epochs": 7, "rand_augment": 3, "a_removed_key": 1})
    assert (cfg.epochs, cfg.rand_augment) == (7, 3)
    with pytest.raises(UserError, match="a_removed_key"):
        Config().replace(a_removed_key=1)  # a user's typo is still an error


def test_mixup_blends_images_and_labels_alike() -> None:
    assert build_mixup(0.0, 4) is None
    torch.manual_seed(0)
    x, y = torch.rand(6, 3, SIZE, SIZE), torch.tensor([0, 1, 2, 3, 0, 1])
    mixed, target = build_mixup(0.4, 4)(x, y)
    assert target.shape == (6, 4) and torch.allclose(target.sum(1), torch.ones(6))
    lam = float(target[0, 0])  # image 0 (class 0) is blended with its neighbour image 5 (class 1)
    assert torch.allclose(mixed[0], lam * x[0] + (1 - lam) * x[5], atol=1e-6)
    assert float(target[0, 1]) == pytest.approx(1 - lam)


def test_mixup_changes_training_and_counts_accuracy_on_dominant_labels(run: Path, tmp_path: Path) -> None:
    train(tiny_cfg(epochs=2), run, tmp_path / "plain", progress=False)
    train(tiny_cfg(epochs=2, mixup_alpha=0.4), run, tmp_path / "mixup", progress=False)
    plain, mixed = _state(tmp_path / "plain" / "last.pt"), _state(tmp_path / "mixup" / "last.pt")
    assert not all(torch.equal(plain[k], mixed[k]) for k in plain)
    assert all(0.0 <= float(r["train_acc"]) <= 1.0 for r in _history(tmp_path / "mixup" / "history.csv"))


def test_training_learns_and_writes_its_files(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    summary = train(tiny_cfg(epochs=6, augment=True), run, out, progress=False)
    assert summary["best_val_macro_f1"] >= 0.75  # chance 0.25; seeds 0-9 x 1, 2 threads: min 0.833 (seed_margins.py)
    assert summary["epochs_run"] == 6 and 1 <= summary["best_epoch"] <= 6
    assert Path(summary["checkpoint"]) == out / "best.pt"
    rows = _history(out / "history.csv")
    assert list(rows[0]) == HISTORY_COLUMNS and [int(r["epoch"]) for r in rows] == list(range(1, 7))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["meta"]["val_macro_f1"] == pytest.approx(summary["best_val_macro_f1"])
    assert best["meta"]["classes"] == CLASSES and best["meta"]["params"] == summary["params"]
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 6 and "optimizer" in last and "scheduler" in last
    assert Config.from_yaml(out / "config.yaml").epochs == 6


def test_default_out_dir_and_early_stopping(run: Path, tmp_path: Path) -> None:
    summary = train(tiny_cfg(epochs=8, patience=1, lr=1e-6), run, progress=False)  # too small a lr to improve
    assert Path(summary["checkpoint"]) == run / "train" / "convkan" / "best.pt"
    assert summary["epochs_run"] == 8  # by default never before the end of the schedule
    anytime = train(tiny_cfg(epochs=8, patience=1, lr=1e-6, early_stop_after=0.0), run, tmp_path, progress=False)
    assert anytime["epochs_run"] < 8


def test_early_stopping_waits_for_the_end_of_the_schedule() -> None:
    assert not should_stop(40, 49, fit_options(tiny_cfg(epochs=50, patience=10)))  # the default runs the whole schedule
    cfg = tiny_cfg(epochs=50, patience=10, early_stop_after=0.8)
    opts = fit_options(cfg)
    assert not should_stop(10, 30, opts) and not should_stop(25, 39, opts)  # the high-lr phase: never
    assert should_stop(10, 40, opts) and not should_stop(9, 45, opts)
    assert should_stop(10, 11, fit_options(cfg.replace(early_stop_after=0.0)))


def test_weight_average_warms_up_then_decays() -> None:
    assert ema_model(torch.nn.Linear(2, 1), 0.0) is None
    net = torch.nn.Linear(2, 1)
    ema = ema_model(net, 0.999)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update_parameters(net)  # the first update copies
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema.update_parameters(net)  # after 1 update the decay is min(0.999, 2/11)
    assert torch.allclose(ema.module.weight.detach(), torch.full((1, 2), 2 / 11))
    for _ in range(5000):
        ema.update_parameters(net)
    assert float(ema.module.weight.detach().max()) < 0.02  # then 0.999: (2/11) * 0.999**5000 ~ 0.001


def test_weight_average_leaves_training_alone_and_is_saved(run: Path, tmp_path: Path) -> None:
    averaged = train(tiny_cfg(epochs=3), run, tmp_path / "ema", progress=False)
    train(tiny_cfg(epochs=3, ema_decay=0.0), run, tmp_path / "plain", progress=False)
    trained, plain = _state(tmp_path / "ema" / "last.pt"), _state(tmp_path / "plain" / "last.pt")
    assert all(torch.equal(trained[k], plain[k]) for k in plain)  # the average only watches the training
    last = torch.load(tmp_path / "ema" / "last.pt", weights_only=True)
    average = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert average.keys() == trained.keys()
    assert not all(torch.equal(average[k], trained[k]) for k in trained)
    best = torch.load(tmp_path / "ema" / "best.pt", weights_only=True)
    assert best["meta"]["val_macro_f1"] == pytest.approx(averaged["best_val_macro_f1"])
    if averaged["best_epoch"] == 3:  # best.pt is the average, not the trained weights
        assert all(torch.equal(average[k], best["state_dict"][k]) for k in trained)
    assert "ema" not in torch.load(tmp_path / "plain" / "last.pt", weights_only=True)


def test_seeded_runs_repeat_and_resume_continues(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg(epochs=3, augment=True)
    train(cfg, run, tmp_path / "a", progress=False)
    train(cfg, run, tmp_path / "b", progress=False)
    a, b = _state(tmp_path / "a" / "last.pt"), _state(tmp_path / "b" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)

    import asl_tinyml.engine as engine

    original = engine.write_history

    def interrupt_after_epoch_2(path: Path, rows: list) -> None:
        original(path, rows)
        if len(rows) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "write_history", interrupt_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, tmp_path / "c", progress=False)
    monkeypatch.setattr(engine, "write_history", original)
    assert torch.load(tmp_path / "c" / "last.pt", weights_only=True)["epoch"] == 2
    summary = train(cfg, run, tmp_path / "c", resume=True, progress=False)
    assert [int(r["epoch"]) for r in _history(tmp_path / "c" / "history.csv")] == [1, 2, 3]
    c = _state(tmp_path / "c" / "last.pt")
    assert all(torch.equal(a[k], c[k]) for k in a)  # interrupted + resumed == uninterrupted
    a_best, c_best = _state(tmp_path / "a" / "best.pt"), _state(tmp_path / "c" / "best.pt")
    assert all(torch.equal(a_best[k], c_best[k]) for k in a_best)  # the weight average resumes too
    assert summary["epochs_run"] == 3


def test_resume_without_last_checkpoint_is_a_user_error(run: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot resume"):
        train(tiny_cfg(), run, tmp_path / "none", resume=True, progress=False)


def test_leave_people_out(run: Path, tmp_path: Path) -> None:
    results = train_folds(tiny_cfg(epochs=6), run, "person", tmp_path / "lopo", progress=False)
    assert [r["fold"] for r in results] == ["people1", "people2", "people3"]  # three signers, one fold each
    assert all(r["kind"] == "person" and r["n_images"] == 32 and r["accuracy"] >= 0.7 for r in results)  # seeds: min 0.84
    assert [list(r["per_person"]) for r in results] == [[f"massey_asl:hand{k}"] for k in (1, 2, 3)]
    assert all(r["per_person"][f"massey_asl:hand{k}"]["accuracy"] == r["accuracy"] for k, r in zip((1, 2, 3), results))
    assert json.loads((tmp_path / "lopo" / "folds.json").read_text()) == results
    assert len(_history(tmp_path / "lopo" / "people1" / "history.csv")) == 6


def test_cli_train_prints_a_summary_and_reports_bad_input(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    tiny_cfg(epochs=1).save(cfg_file)
    assert main(["train", "--run", str(run), "--config", str(cfg_file), "--out", str(tmp_path / "cli"), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "best val macro-F1" in out and str(tmp_path / "cli" / "best.pt") in out
    assert len(_history(tmp_path / "cli" / "history.csv")) == 2
    assert main(["train", "--run", str(tmp_path / "nowhere")]) == 2
    assert "no preprocessed cache" in capsys.readouterr().err


DDP_SCRIPT = """
import hashlib, json, os, sys
from pathlib import Path
import torch
import asl_tinyml.train as t
from asl_tinyml.config import Config

built = []
original = t.create_model
t.create_model = lambda *a, **k: built.append(original(*a, **k)) or built[-1]
run, out = Path(sys.argv[1]), Path(sys.argv[2])
cfg = Config().replace(**json.loads(sys.argv[3]))
summary = t.train(cfg, run, out, progress=False)
state = built[0].state_dict()
digest = hashlib.sha256(b"".join(state[k].detach().cpu().numpy().tobytes() for k in sorted(state))).hexdigest()
(out.parent / f"rank{os.environ['RANK']}.json").write_text(json.dumps({"hash": digest, "summary": summary}))
"""


@pytest.mark.slow
def test_torchrun_two_processes_end_with_identical_weights(run: Path, tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    cfg = {k: v for k, v in tiny_cfg(epochs=1, augment=True).to_dict().items() if k in ("model", "epochs", "batch_size", "lr", "image_size", "num_threads", "augment")}
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(run), str(tmp_path / "ddp" / "out"), json.dumps(cfg)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["hash"] == ranks[1]["hash"]
    assert ranks[0]["summary"]["world_size"] == 2
    assert (tmp_path / "ddp" / "out" / "best.pt").exists()
    saved = _state(tmp_path / "ddp" / "out" / "last.pt")
    digest_input = b"".join(saved[k].numpy().tobytes() for k in sorted(saved))
    import hashlib

    assert hashlib.sha256(digest_input).hexdigest() == ranks[0]["hash"]  # rank 0 saved the shared weights


def test_cli_train_passes_model_options_and_rejects_bad_ones(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    tiny_cfg(epochs=1).save(cfg_file)
    base = ["train", "--run", str(run), "--config", str(cfg_file), "--out", str(tmp_path / "o")]
    assert main(base + ["--option", "hidden=8", "--option", "channels=[8, 16]"]) == 0
    meta = torch.load(tmp_path / "o" / "best.pt", weights_only=True)["meta"]
    assert meta["model_options"]["hidden"] == 8 and meta["model_options"]["channels"] == [8, 16]
    assert main(base + ["--option", "hidden"]) == 2
    assert "--option 'hidden' is not KEY=VALUE" in capsys.readouterr().err
    assert main(base + ["--option", "wings=2"]) == 2
    assert "model 'convkan' rejected its options" in capsys.readouterr().err
