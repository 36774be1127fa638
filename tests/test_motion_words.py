"""Motion words from many people's webcams: the word collection's loader, files of 20 and 30 frames joined,
grouped folds, draws by class and group, the idle and j/z decisions, and a slice of the real collection."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from asl_tinyml import motion as M
from asl_tinyml.config import UserError, default_sequences_dir, default_words_people_file

from .test_motion import words_window

torch.set_num_threads(1)


def wave(frames: int, centre: tuple[float, float] = (0.4, 0.45), size: float = 0.1) -> np.ndarray:
    """(frames, 2) wrist positions: side to side twice beside the head (a `hello`-like wave)."""
    t = np.linspace(0, 1, frames)
    return np.stack([centre[0] + size * np.sin(4 * np.pi * t), np.full(frames, centre[1])], 1)


def drop(frames: int, start: tuple[float, float] = (0.45, 0.5), size: float = 0.25) -> np.ndarray:
    """(frames, 2) wrist positions: from the chin straight down and forward (a `thank-you`-like path)."""
    t = np.linspace(0, 1, frames)
    return np.stack([np.full(frames, start[0]), start[1] + size * t], 1)


def recording(word: str, frames: int, rng: np.random.Generator, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """(frames, 258): a still upper body and the right hand on the word's path (`idle`: no hand), moved by
    `shift` and scaled by `scale` about the frame's centre (another camera's framing and distance)."""
    jitter = 0.02 * rng.standard_normal(2)
    path = {"hello": wave, "thank-you": drop, "idle": wave}[word](frames) + jitter
    window = words_window(path)
    if word == "idle":
        window[:, 132:] = 0.0
    seen = window != 0  # a missing part stays all zeros
    moved = window.copy()
    for lo, hi, step in ((0, 132, 4), (132, 258, 3)):
        block = moved[:, lo:hi].reshape(frames, -1, step)
        block[..., :2] = (block[..., :2] - 0.5) * scale + 0.5 + shift
        moved[:, lo:hi] = block.reshape(frames, -1)
    return np.where(seen, moved, 0.0).astype(np.float32)


def collection_file(path: Path, repos: int = 6, per: int = 3, frames: int = 30, seed: int = 0,
                    words: tuple[str, ...] = ("hello", "thank-you", "idle")) -> Path:
    """A word collection in the shared layout: `repos` repositories, each recording every word `per` times."""
    rng = np.random.default_rng(seed)
    x, labels, groups = [], [], []
    for r in range(repos):
        shift, scale = 0.05 * rng.standard_normal(), float(np.exp(0.15 * rng.standard_normal()))
        for word in words:
            for _ in range(per):
                x.append(recording(word, frames, rng, shift, scale))
                labels.append(word)
                groups.append(f"owner{r}/signs")
    np.savez(path, x=np.array(x, np.float16), label=np.array(labels), group=np.array(groups),
             source_path=np.array([f"{g}@abc:{w}" for g, w in zip(groups, labels)]))
    return path


def sessions_file(path: Path, frames: int = 20, per: int = 4) -> Path:
    """A traduttore-like words file: two sessions of `hello` and `idle`, `frames` frames each."""
    rng = np.random.default_rng(1)
    x, labels, sessions = [], [], []
    for session in ("cam", "danial"):
        for word in ("hello", "idle"):
            for _ in range(per):
                x.append(recording(word, frames, rng))
                labels.append(word)
                sessions.append(session)
    np.savez(path, x=np.array(x, np.float16), label=np.array(labels), session=np.array(sessions))
    return path


# --- loader ------------------------------------------------------------------------------------------
def test_the_word_collection_loads_with_its_repositories_as_groups(tmp_path: Path) -> None:
    people = M.load_word_collection(collection_file(tmp_path / "words_people.npz", repos=3, per=2))
    assert people.x.shape == (18, 30, 258) and people.x.dtype == np.float32
    assert sorted(set(people.groups)) == ["owner0/signs", "owner1/signs", "owner2/signs"]
    assert (people.sessions == people.groups).all() and (people.lengths == 30).all()
    joined = M.concat_sequences([M.load_sequences(sessions_file(tmp_path / "words.npz")), people])
    assert joined.x.shape == (34, 30, 258) and joined.kind == "words"
    assert sorted(set(joined.groups[:16])) == ["session-cam", "session-danial"]
    assert joined.lengths[:16].tolist() == [20] * 16 and joined.lengths[16:].tolist() == [30] * 18
    np.testing.assert_array_equal(joined.x[0, 20:], np.repeat(joined.x[0, 19:20], 10, axis=0))  # padded, held
    windows = dict((len(rows), w.shape) for rows, w in joined.by_length())
    assert windows == {16: (16, 20, 258), 18: (18, 30, 258)}


@pytest.mark.parametrize("fields, expect", [
    ({"x": np.zeros((4, 30, 258)), "label": np.array(["a"] * 4)}, "no field group"),
    ({"x": np.zeros((4, 30, 126)), "label": np.array(["a"] * 4), "group": np.array(["r"] * 4)}, "(N, T >= 2, 258)"),
    ({"x": np.zeros((4, 258)), "label": np.array(["a"] * 4), "group": np.array(["r"] * 4)}, "3 dimension"),
    ({"x": np.zeros((4, 30, 258)), "label": np.array(["a"] * 3), "group": np.array(["r"] * 4)}, "disagree in length"),
])
def test_wrong_collection_files_are_refused_in_one_line(tmp_path: Path, fields: dict[str, np.ndarray], expect: str) -> None:
    path = tmp_path / "words_people.npz"
    np.savez(path, **fields)
    with pytest.raises(UserError) as err:
        M.load_word_collection(path)
    message = str(err.value)
    assert expect in message and str(path) in message and "words_people.npz" in message.split(";")[-1]
    assert "\n" not in message
    with pytest.raises(UserError, match="not found"):
        M.load_word_collection(tmp_path / "missing.npz")


def test_time_indices_keep_inside_each_recordings_own_length() -> None:
    lengths = np.array([20, 30] * 50)
    idx = M.time_indices(100, lengths, 45, np.random.default_rng(0), M.Augment())
    assert (idx.max(1) <= lengths - 1).all() and idx.min() >= 0
    assert idx[lengths == 30].max() > 19  # the longer recordings are read past the shorter ones' end


# --- folds and draws ---------------------------------------------------------------------------------
def test_grouped_folds_never_put_one_group_on_both_sides() -> None:
    rng = np.random.default_rng(0)
    groups = np.array([f"repo{g}" for g in rng.integers(0, 23, 400)] + ["session-cam"] * 50)
    labels = rng.choice(["hello", "thank-you", "iloveyou", "no"], len(groups))
    among = ~np.char.startswith(groups, "session-")
    folds = M.grouped_folds(labels, groups, 5, seed=0, among=among)
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == sorted(np.flatnonzero(among))  # every collection row is tested once
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert among[test].all() and (~among).sum() == (~among[train]).sum()  # the sessions train every fold
    assert M.grouped_folds(labels, groups, 5, seed=0, among=among)[0][1].tolist() == folds[0][1].tolist()
    with pytest.raises(UserError, match="at least 5 groups"):
        M.grouped_folds(labels[:20], np.array(["a", "b"] * 10), 5)


def test_draws_balance_groups_inside_a_class_and_temper_the_classes() -> None:
    labels = np.array(["hello"] * 190 + ["eat"] * 10)
    groups = np.array(["session-danial"] * 180 + [f"r{i}" for i in range(10)] + ["r0"] * 5 + ["r1"] * 5)
    for power in (0.0, 0.5, 1.0):
        p = M.sampling_weights(labels, groups, power)
        assert p.sum() == pytest.approx(1.0)
        share = p[labels == "hello"].sum() / p[labels == "eat"].sum()
        assert share == pytest.approx((190 / 10) ** power)
        hello = labels == "hello"
        # the session with 180 recordings weighs as much as a repository with one
        assert p[hello & (groups == "session-danial")].sum() == pytest.approx(p[hello & (groups == "r3")].sum())


# --- decisions ---------------------------------------------------------------------------------------
def test_a_clear_sign_from_a_new_camera_is_not_idle(tmp_path: Path) -> None:
    """A small words model trained on a few generated repositories; a wave from a camera it never saw
    (shifted, farther away, 20 frames instead of 30) is read as the sign, never swallowed by `idle`."""
    data, _ = M.load_motion_data(sessions_file(tmp_path / "words.npz"), collection_file(tmp_path / "people.npz"))
    classes = sorted(set(data.labels))
    model, _ = M.train_motion_model(data, classes, np.arange(len(data)), epochs=4, batch_size=16, seed=0,
                                    sampling=M.Sampling(samples=256), channels=16, hidden=8)
    rng = np.random.default_rng(7)
    new = np.stack([recording("hello", 20, rng, shift=0.08, scale=0.7) for _ in range(4)])
    new_set = M.SequenceSet(new, np.array(["hello"] * 4), np.array(["new"] * 4))
    proba = M.predict_recordings(model, new_set, np.arange(4))
    decided = np.asarray(classes)[M.decide(proba, classes, **M.thresholds("words"))]
    assert "idle" not in set(decided)
    empty = M.SequenceSet(np.stack([recording("idle", 20, rng) for _ in range(2)]), np.array(["idle"] * 2),
                          np.array(["new"] * 2))
    assert np.asarray(classes)[M.predict_recordings(model, empty, np.arange(2)).argmax(1)].tolist() == ["idle", "idle"]


def test_a_weak_j_gives_way_to_the_best_static_letter() -> None:
    classes = ["a", "i", "idle", "j", "z"]
    proba = np.array([[0.05, 0.40, 0.0, 0.45, 0.10], [0.05, 0.1, 0.0, 0.85, 0.0], [0.3, 0.1, 0.0, 0.1, 0.5]])
    assert M.decide(proba, classes).tolist() == [3, 3, 4]
    assert M.decide(proba, classes, motion_below=0.5).tolist() == [1, 3, 4]  # 0.45 < 0.5: the `i` it resembles
    assert M.decide(proba, classes, idle_below=0.5, motion_below=0.5).tolist() == [2, 3, 4]  # no sign wins: idle
    assert set(M.thresholds("letters")) == {"idle_below", "motion_below"}
    strays = M.stray_rate(np.array(["a", "i", "j", "idle"]), np.array(["j", "i", "j", "z"]))
    assert strays == {"rate": 0.5, "n": 1, "static": 2, "from": {"a": 1}}


def test_the_live_stream_never_types_a_weak_j() -> None:
    class Weak:
        kind, classes, width = "letters", ["i", "idle", "j"], M.LETTERS_WIDTH
        rule = {"idle_below": 0.0, "motion_below": 0.5}

        def predict_proba(self, windows: np.ndarray, aspect: float = M.DEFAULT_ASPECT) -> np.ndarray:
            return np.tile(np.array([[0.0, 0.55, 0.45]], np.float32) if self.low else np.array([[0.0, 0.05, 0.95]]),
                           (len(windows), 1)).astype(np.float32)

    weak = Weak()
    stream = M.MotionStream(weak, None, M.LiveConfig(min_frames=2, stable=1, smooth=1, threshold=0.4))
    row = words_window(np.array([[0.4, 0.5]]))[0]
    weak.low = True
    assert all(stream.push(row)["commit"] is None for _ in range(6))
    weak.low = False
    assert "j" in [stream.push(row)["commit"] for _ in range(3)]


# --- the real collection -----------------------------------------------------------------------------
@pytest.mark.integration
def test_word_collection_slice_trains_folds_and_round_trips(tmp_path: Path) -> None:
    folder, people = default_sequences_dir(), default_words_people_file()
    if folder is None or people is None or not (folder / "words.npz").exists() or not people.exists():
        pytest.skip("no ../shared/sequences (sign_sequences/words.npz and sign_words_people/words_people.npz)")
    m = M.train_motion(folder / "words.npz", tmp_path / "run", None, people=people, folds=2, holdouts=(), epochs=1,
                       limit=1, progress=False, sampling=M.Sampling(samples=256))
    vocabulary = set(m["classes"])
    assert {"hello", "thank-you", "iloveyou", "coffee", "idle"} <= vocabulary and m["frames"] == [20, 30]
    folds = json.loads((tmp_path / "run" / "words" / "folds.json").read_text())
    assert folds["folds"] == 2 and set(folds["per_word"]) <= vocabulary
    assert all(0.0 <= v["recall"] <= 1.0 for v in folds["per_word"].values())
    with open(tmp_path / "run" / "words" / "per_word_recall.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["word"] for r in rows} == set(folds["per_word"])
    tested = sum(f["n_test"] for f in m["repository_folds"])
    assert tested == folds["n"] and folds["groups"] > 100  # every repository of the slice held out once
    shipped = M.MotionPredictor(tmp_path / "run" / "words" / "best.pt")  # the checkpoint round-trips
    assert shipped.classes == m["classes"] and shipped.kind == "words" and shipped.rule == M.thresholds("words")
    raw = M.load_word_collection(people)
    for frames in (20, 30):
        proba = shipped.predict_proba(raw.x[:3, :frames])
        assert proba.shape == (3, len(m["classes"])) and np.allclose(proba.sum(1), 1.0, atol=1e-4)


def test_repository_spread_names_the_repositories_that_sign_a_word_differently():
    from asl_tinyml.motion.stages import repository_spread

    labels = np.array(["hello"] * 6 + ["no"] * 2)
    predicted = np.array(["hello", "hello", "no", "idle", "idle", "hello", "no", "no"])
    groups = np.array(["a", "a", "a", "b", "b", "c", "a", "b"])
    s = repository_spread(labels, predicted, groups, "hello")
    assert (s["repositories"], s["never_right"], s["never_right_names"]) == (3, 1, ["b"])
    assert (s["errors"], s["errors_in_never_right"]) == (3, 2) and s["recall_without_them"] == 0.75
    assert s["read_as"] == {"idle": 2, "no": 1}
