"""The landmark sources in one form: the keypoint and sequence layouts, group sampling, grouped splits and folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from asl_tinyml.config import UserError
from asl_tinyml.hands import LEFT
from asl_tinyml.landmarks import (
    LandmarkCache,
    balanced_rows,
    epoch_labels,
    extra_folds,
    load_landmark_data,
    sampling_cells,
)
from asl_tinyml.preprocess import Cache, save_splits
from asl_tinyml.sources import (
    KEYPOINT_SOURCE,
    SEQUENCE_SOURCE,
    HandSet,
    keypoint_hands,
    palm_points,
    read_npz,
    sequence_hands,
)


def _hand(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-1, 1, (21, 2)).astype(np.float16)


def write_keypoints(path: Path, groups: dict[str, int], labels: tuple[str, ...] = ("a", "b", "c"), seed: int = 0) -> Path:
    """A keypoint collection in the shared layout: `groups` name -> rows per label."""
    rng = np.random.default_rng(seed)
    rows = [(g, c) for g, n in groups.items() for c in labels for _ in range(n)]
    xy = np.stack([_hand(rng) for _ in rows])
    xy[:, 0] = 0  # wrist-relative
    np.savez(path, xy=xy, label=np.array([c for _, c in rows]), group=np.array([g for g, _ in rows]),
             row=np.arange(len(rows), dtype=np.int32), path=np.array(["x.csv"] * len(rows)))
    return path


def test_keypoints_load_into_one_form_with_their_repository_as_group(tmp_path: Path) -> None:
    path = write_keypoints(tmp_path / "letters.npz", {"ann/app": 2, "bob/app": 1}, labels=("a", "b", "5"))
    hands = keypoint_hands(path, classes=["a", "b"])  # 5 is not among the model's classes: left out
    assert len(hands) == 6 and set(hands.labels) == {"a", "b"} and hands.found.all()
    assert set(hands.groups) == {f"{KEYPOINT_SOURCE}:ann/app", f"{KEYPOINT_SOURCE}:bob/app"}
    assert hands.points.shape == (6, 21, 3) and not hands.points[..., 2].any()  # no z in the collection
    assert np.allclose(hands.points[:, 0], 0)
    palm = np.linalg.norm(hands.points[:, [5, 9, 13, 17]], axis=2).mean(axis=1)
    assert np.allclose(palm, 1.0, atol=1e-4)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"xy": np.zeros((3, 21, 3)), "label": np.array(["a"] * 3), "group": np.array(["g"] * 3)}, r"\(N, 21, 2\)"),
    ({"xy": np.zeros((3, 21, 2)), "label": np.array(["a"] * 3)}, "no field group"),
    ({"xy": np.zeros((3, 21, 2)), "label": np.array(["a"] * 2), "group": np.array(["g"] * 3)}, "disagree in length"),
    ({"xy": np.zeros((3, 21, 2)), "label": np.array([["a"]] * 3), "group": np.array(["g"] * 3)}, "label has shape"),
    ({"xy": np.zeros((3, 21, 2)), "label": np.array(["a", 1, None], dtype=object), "group": np.array(["g"] * 3)},
     "Python objects"),
])
def test_wrong_keypoint_files_are_refused_in_one_line(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=message) as err:
        keypoint_hands(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_file_that_is_not_an_npz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.npz"
    path.write_text("not a zip")
    with pytest.raises(UserError, match="not a readable .npz"):
        read_npz(path, {"x": 3}, "pass a real file")
    with pytest.raises(UserError, match="not found"):
        read_npz(tmp_path / "missing.npz", {"x": 3}, "pass a real file")


def test_sequence_frames_become_static_letters_as_seen(tmp_path: Path) -> None:
    n, frames = 4, 20
    x = np.zeros((n, frames, 126), np.float16)
    rng = np.random.default_rng(0)
    hand = rng.uniform(0.3, 0.7, (21, 3)).astype(np.float16)
    x[0, :, 63:126] = hand.reshape(-1)  # right-hand slot
    x[1, :, 0:63] = hand.reshape(-1)  # left-hand slot only
    x[2, :, 63:126] = hand.reshape(-1)  # a moving letter: skipped
    path = tmp_path / "letters.npz"
    np.savez(path, x=x, label=np.array(["a", "a", "j", "b"]), session=np.array(["cam", "dan", "cam", "cam"]),
             source_path=np.array(["p"] * n))
    hands = sequence_hands(path, ["a", "b", "j"], frames=(6, 12))
    assert len(hands) == 6 and hands.labels.tolist() == ["a"] * 4 + ["b"] * 2  # 2 frames of a, a, b; j left out
    assert hands.groups.tolist()[:3] == [f"{SEQUENCE_SOURCE}:session-cam"] * 2 + [f"{SEQUENCE_SOURCE}:session-dan"]
    assert hands.found.tolist() == [True] * 4 + [False] * 2  # b's recording has no hand: zeros, not found
    assert np.allclose(hands.points[0, 0], 0) and np.allclose(hands.points[2], hands.points[0], atol=1e-3)  # as seen


def test_group_sampling_caps_each_group_and_class_afresh_every_epoch() -> None:
    groups = np.array(["big"] * 100 + ["small"] * 10)
    labels = np.array([0, 1] * 50 + [0] * 10)
    rows = np.arange(110)
    gen = torch.Generator().manual_seed(0)
    cells = sampling_cells(groups, labels)
    first, second = balanced_rows(rows, cells, 8, gen), balanced_rows(rows, cells, 8, gen)
    for epoch in (first, second):
        picked = epoch.numpy()
        assert len(picked) == len(set(picked)) == 8 + 8 + 8  # big/0, big/1 capped at 8; small/0 has 10, capped
        assert np.bincount(labels[picked]).tolist() == [16, 8]
    assert set(first.tolist()) != set(second.tolist())  # a fresh draw each epoch
    assert sorted(epoch_labels(rows, cells, labels, 8).tolist()) == [0] * 16 + [1] * 8


def _run_with_keypoints(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny image run (two signers) and a keypoint collection of six repositories."""
    classes = ["a", "b", "c"]
    labels = np.repeat(np.arange(3), 8)
    groups = np.array([f"massey_asl:hand{1 + i % 2}" for i in range(len(labels))])
    paths = np.array([f"{classes[y]}/{i}.png" for i, y in enumerate(labels)])
    run = tmp_path / "run"
    Cache(np.zeros((len(labels), 4, 4, 3), np.uint8), labels, classes, np.array(["massey_asl"] * len(labels)), groups,
          paths).save(run / "cache.npz")
    lm = np.random.default_rng(1).uniform(0, 1, (len(labels), 21, 3)).astype(np.float32)
    found = np.ones(len(labels), bool)
    LandmarkCache(lm, np.zeros_like(lm), np.full(len(labels), LEFT, np.int8), found, np.zeros(len(labels), np.int8),
                  paths, [(0.5, 1)], 0.01).save(run / "landmarks.npz")
    save_splits({"train": np.arange(0, 16), "val": np.arange(16, 20), "test": np.arange(20, 24)}, run / "splits.json", 0)
    keypoints = write_keypoints(tmp_path / "keypoints.npz", {f"user{i}/repo": 3 + i for i in range(6)})
    return run, keypoints


def test_landmark_only_groups_never_straddle_two_splits_and_each_is_held_out_once(tmp_path: Path) -> None:
    run, keypoints = _run_with_keypoints(tmp_path)
    data = load_landmark_data(run, keypoints=keypoints)
    assert data.n_images == 24 and len(data.labels) == 24 + sum(3 * (3 + i) for i in range(6))
    extra = np.arange(24, len(data.labels))
    where = {k: set(data.groups[v[v >= 24]]) for k, v in data.splits.items()}
    assert not (where["train"] & where["val"]) and not (where["train"] & where["test"]) and not (where["val"] & where["test"])
    assert set().union(*where.values()) == set(data.groups[extra])
    folds = extra_folds(data, "person", k=3)
    held = [set(data.groups[f.test]) for f in folds]
    assert [len(h) for h in held] == [2, 2, 2] and set().union(*held) == set(data.groups[extra])
    for fold, groups in zip(folds, held):
        assert not groups & set(data.groups[fold.train]) and not groups & set(data.groups[fold.val])
    (source_fold,) = extra_folds(data, "source")
    assert source_fold.name == KEYPOINT_SOURCE and set(data.sources[source_fold.train]) == {"massey_asl"}


def test_hand_sets_concatenate_and_take_row_aligned() -> None:
    pts = palm_points(np.random.default_rng(0).uniform(0, 1, (4, 21, 2)))
    one = HandSet(pts, np.ones(4, bool), np.array(list("abab")), np.array(["g"] * 4), np.array(["s"] * 4))
    both = HandSet.concat([one, one.take(np.array([1, 3]))])
    assert len(both) == 6 and both.labels.tolist() == list("abab") + ["b", "b"]
    np.testing.assert_array_equal(both.points[4:], pts[[1, 3]])
