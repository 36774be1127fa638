"""landmarks: normalisation invariances, MediaPipe on images without a hand, the cache, the model, real hands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asl_tinyml.cli import main
from asl_tinyml.config import UserError
from asl_tinyml.hands import (
    LEFT,
    NO_HAND,
    PALM_MCPS,
    RIGHT,
    FeatureRecipe,
    canonical_points,
    pad_image,
)
from asl_tinyml.landmarks import LandmarkCache, detection_rates, train_landmark_model
from asl_tinyml.models import count_parameters, create_model
from asl_tinyml.preprocess import Cache

from .helpers import write_image


def normalize_landmarks(landmarks: np.ndarray, hand: np.ndarray | int, **recipe: bool) -> np.ndarray:
    return FeatureRecipe(**recipe).normalize(landmarks, hand)


def _hands(n: int, seed: int = 0) -> np.ndarray:
    """Random but hand-sized landmark sets in image units (N, 21, 3)."""
    rng = np.random.default_rng(seed)
    return (0.5 + 0.2 * rng.standard_normal((n, 21, 3))).astype(np.float32)


# --- normalisation -----------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    shift=st.tuples(*[st.floats(-5, 5)] * 3),
    scale=st.floats(0.05, 20),
    seed=st.integers(0, 1000),
)
def test_features_invariant_to_translation_and_scale(shift, scale, seed):
    lm = _hands(3, seed)
    hand = np.array([LEFT, RIGHT, LEFT])
    moved = lm * np.float32(scale) + np.array(shift, dtype=np.float32)
    np.testing.assert_allclose(normalize_landmarks(moved, hand), normalize_landmarks(lm, hand), atol=2e-4)


def test_canonical_points_put_the_wrist_at_the_origin_with_unit_palm():
    pts = canonical_points(_hands(4), np.array([LEFT, RIGHT, LEFT, RIGHT]))
    assert np.allclose(pts[:, 0], 0.0)
    assert np.allclose(np.linalg.norm(pts[:, list(PALM_MCPS)], axis=2).mean(axis=1), 1.0, atol=1e-5)


def test_the_label_mirror_maps_the_other_hand_onto_the_same_features():
    lm = _hands(5, seed=3)
    mirrored = lm.copy()
    mirrored[..., 0] = 1.0 - mirrored[..., 0]  # the same pose by the other hand, in image coordinates
    same = normalize_landmarks(lm, LEFT, mirror=True)
    np.testing.assert_allclose(normalize_landmarks(mirrored, RIGHT, mirror=True), same, atol=1e-5)
    assert not np.allclose(normalize_landmarks(mirrored, LEFT, mirror=True), same, atol=1e-3)  # unmirrored they differ
    unmirrored = normalize_landmarks(mirrored, RIGHT, mirror=False)
    np.testing.assert_allclose(unmirrored, normalize_landmarks(mirrored, LEFT, mirror=False))


def test_the_handedness_free_model_gives_a_hand_and_its_mirror_image_one_answer():
    import torch

    recipe = FeatureRecipe()  # the default: points as seen, the model symmetric
    assert not recipe.mirror and recipe.symmetric
    lm = _hands(6, seed=4)
    mirrored = lm.copy()
    mirrored[..., 0] = 1.0 - mirrored[..., 0]
    torch.manual_seed(0)
    model = create_model("landmark_fastkan", 37, in_features=recipe.size, mirror_dims=recipe.mirror_dims).eval()
    a, b = normalize_landmarks(lm, RIGHT), normalize_landmarks(mirrored, LEFT)  # MediaPipe's label is ignored
    assert not np.allclose(a, b, atol=1e-3)
    with torch.no_grad():
        out_a, out_b = model(torch.from_numpy(a)), model(torch.from_numpy(b))
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=1e-5)
    asymmetric = create_model("landmark_fastkan", 37, in_features=recipe.size).eval()
    with torch.no_grad():
        assert not torch.allclose(asymmetric(torch.from_numpy(a)), asymmetric(torch.from_numpy(b)), atol=1e-4)


def test_feature_vector_shape_and_single_hand_input():
    lm = _hands(2)
    assert normalize_landmarks(lm, LEFT).shape == (2, FeatureRecipe().size) == (2, 50)  # x, y of 20 points + 10
    assert normalize_landmarks(lm, LEFT, distances=False).shape == (2, 40)
    assert normalize_landmarks(lm, LEFT, depth=True).shape == (2, 70)
    np.testing.assert_allclose(normalize_landmarks(lm[0], LEFT), normalize_landmarks(lm, LEFT)[:1])
    # the default keeps x and y of the canonical points: MediaPipe's depth transfers badly between cameras
    xy, xyz = normalize_landmarks(lm, LEFT), normalize_landmarks(lm, LEFT, depth=True)
    np.testing.assert_allclose(xy[:, :40].reshape(2, 20, 2), xyz[:, :60].reshape(2, 20, 3)[..., :2], atol=1e-6)


def test_feature_recipes_round_trip_and_old_files_keep_their_depth():
    recipe = FeatureRecipe(depth=False)
    assert FeatureRecipe.from_meta(recipe.to_meta()) == recipe
    old = FeatureRecipe.from_meta({"mirror": True, "distances": True})  # written before `depth` and `symmetric`
    assert old.depth and old.mirror and not old.symmetric


def test_pad_image_adds_a_black_border_of_the_given_fraction():
    img = np.full((40, 20, 3), 200, np.uint8)
    out, border = pad_image(img, 0.5)
    assert border == 20 and out.shape == (80, 60, 3)
    assert out[:20].max() == 0 and np.all(out[20:60, 20:40] == 200)
    assert pad_image(img, 0.0)[0] is img


# --- model -------------------------------------------------------------------------------------------
def test_landmark_model_is_tiny_and_maps_features_to_logits():
    import torch

    model = create_model("landmark_fastkan", 37, in_features=FeatureRecipe().size)
    params = count_parameters(model)
    assert params < 20_000 and params < 32 * 1024  # int8: one byte a weight
    assert model.input_kind == "landmarks"
    assert model(torch.zeros(5, FeatureRecipe().size)).shape == (5, 37)


def test_train_landmark_model_learns_separable_poses():
    rng = np.random.default_rng(0)
    protos = _hands(4, seed=1)
    labels = np.repeat(np.arange(4), 60)
    lm = protos[labels] + 0.01 * rng.standard_normal((len(labels), 21, 3)).astype(np.float32)
    points = canonical_points(lm, LEFT)
    idx = rng.permutation(len(labels))
    tr, va = idx[:180], idx[180:]
    model, history = train_landmark_model(points, labels, tr, va, num_classes=4, epochs=25, patience=25, seed=0)
    assert history[-1]["epoch"] <= 25
    assert max(h["val_acc"] for h in history) >= 0.95  # seeds 0-9: always 1.0 (benchmarks/seed_margins.py)


# --- MediaPipe ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mediapipe():
    return pytest.importorskip("mediapipe")


def test_no_hand_in_noise_or_a_broken_file(tmp_path, mediapipe):
    from asl_tinyml.hands import extract_landmarks, image_features

    noise = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    plain = write_image(tmp_path / "plain.png", color=(30, 140, 60), size=(64, 48))
    landmarks, handedness, found = extract_landmarks([noise, broken, plain])
    assert found.tolist() == [False, False, False]
    assert landmarks.shape == (3, 21, 3) and not landmarks.any()
    assert handedness.tolist() == [NO_HAND] * 3
    features, hand = image_features([noise])
    assert features.shape == (1, FeatureRecipe().size) and not features.any() and not hand.any()


def _tiny_run(tmp_path: Path) -> tuple[Path, Path]:
    merged, run = tmp_path / "merged", tmp_path / "run"
    paths = [f"{c}/{k}.png" for c in ("a", "b") for k in range(2)]
    for k, p in enumerate(paths):
        write_image(merged / p, color=(40 * k, 90, 200), size=(48, 48), seed=k)
    Cache(
        images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.array([0, 0, 1, 1]), classes=["a", "b"],
        sources=np.array(["s1", "s1", "s2", "s2"]), groups=np.array(["g1", "g2", "g3", "g4"]), paths=np.array(paths),
    ).save(run / "cache.npz")
    return merged, run


def test_landmark_cache_counts_images_without_a_hand(tmp_path, mediapipe, capsys):
    merged, run = _tiny_run(tmp_path)
    assert main(["landmarks", "--merged", str(merged), "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "hand found in 0/4 images" in out
    lm = LandmarkCache.load(run, Cache.load(run))
    assert len(lm) == 4 and not lm.found.any() and lm.paths.tolist() == Cache.load(run).paths.tolist()
    rates = detection_rates(run)
    assert rates["by_source"].loc["s1", "images"] == 2 and rates["by_source"].loc["all", "rate"] == 0.0
    assert set(rates["by_class"].index) == {"a", "b", "all"}


def test_landmark_cache_must_match_the_run(tmp_path, mediapipe):
    merged, run = _tiny_run(tmp_path)
    with pytest.raises(UserError, match="asl-tinyml landmarks"):
        LandmarkCache.load(run)
    assert main(["landmarks", "--merged", str(tmp_path / "nowhere"), "--run", str(run)]) == 2
    main(["landmarks", "--merged", str(merged), "--run", str(run)])
    other = Cache.load(run)
    other.paths = other.paths[::-1]
    with pytest.raises(UserError, match="does not match"):
        LandmarkCache.load(run, other)


@pytest.mark.integration
def test_mediapipe_finds_real_hands(data_root, mediapipe):
    from asl_tinyml.hands import extract_landmarks

    files = []
    picks = (("massey_asl", ("a", "b", "5", "l", "y")), ("sign_language_digits", ("2", "3", "4", "5", "7")))
    for source, classes in picks:
        for c in classes:
            folder = data_root / source / c
            if folder.is_dir():
                files.append(sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[0])
    if len(files) < 8:
        pytest.skip(f"too few real images under {data_root}")
    landmarks, handedness, found = extract_landmarks(files)
    assert found.mean() >= 0.8, f"hands found in only {found.sum()}/{len(files)}"
    hit = landmarks[found]
    assert np.all((hit[..., :2] > -0.2) & (hit[..., :2] < 1.2))  # inside the (unpadded) image
    assert set(handedness[found].tolist()) <= {LEFT, RIGHT}


def synthetic_landmark_run(run: Path) -> Path:
    """A run folder of 3 classes x 3 signers x 30 images whose landmarks separate the classes; 1 in 10 without a
    hand. Splits: 180 train, 45 val, 45 test."""
    from asl_tinyml.preprocess import save_splits

    rng = np.random.default_rng(0)
    n_per, classes = 30, ["a", "b", "c"]
    labels = np.repeat(np.arange(3), n_per * 3)  # 3 signers x 30 images per class
    groups = np.array([f"massey_asl:hand{1 + (i // n_per) % 3}" for i in range(len(labels))])
    protos = _hands(3, seed=5)
    lm = protos[labels] + 0.01 * rng.standard_normal((len(labels), 21, 3)).astype(np.float32)
    found = rng.random(len(labels)) > 0.1
    paths = np.array([f"{classes[y]}/{i}.png" for i, y in enumerate(labels)])
    sources = np.array(["massey_asl"] * len(labels))
    Cache(np.zeros((len(labels), 4, 4, 3), np.uint8), labels, classes, sources, groups, paths).save(run / "cache.npz")
    LandmarkCache(
        np.where(found[:, None, None], lm, 0), np.zeros_like(lm), np.where(found, LEFT, NO_HAND).astype(np.int8),
        found, np.where(found, 0, -1).astype(np.int8), paths, [(0.5, 1)], 0.01,
    ).save(run / "landmarks.npz")
    idx = rng.permutation(len(labels))
    splits = {"train": np.sort(idx[:180]), "val": np.sort(idx[180:225]), "test": np.sort(idx[225:])}
    save_splits(splits, run / "splits.json", 0)
    return run


def test_train_and_leave_people_out_on_a_synthetic_landmark_run(tmp_path):
    """train_landmarks/landmark_folds: found-only training, a loadable checkpoint, misses scored as errors."""
    import json

    from asl_tinyml.landmarks import landmark_folds, train_landmarks
    from asl_tinyml.models import load_checkpoint

    run = synthetic_landmark_run(tmp_path / "run")
    classes, splits = ["a", "b", "c"], json.loads((run / "splits.json").read_text())
    found = LandmarkCache.load(run).found
    metrics = train_landmarks(run, epochs=20, patience=20, progress=False)
    test = metrics["test"]
    assert set(test) == {"images", "hand_found", "detection_rate", "accuracy", "macro_f1", "end_to_end_accuracy"}
    assert test["images"] == 45 and test["hand_found"] == int(found[splits["test"]].sum())
    assert test["accuracy"] >= 0.95  # seeds 0-9: always 1.0 (benchmarks/seed_margins.py)
    assert test["end_to_end_accuracy"] <= test["detection_rate"] + 1e-9  # a missed hand is never right
    model, meta = load_checkpoint(run / "train" / "landmark_fastkan" / "best.pt")
    assert meta["input"] == "landmarks" and meta["classes"] == classes 
    assert json.loads((run / "train" / "landmark_fastkan" / "metrics.json").read_text())["params"] < 20_000

    rows = landmark_folds(run, "person", epochs=10, patience=10, progress=False)
    assert [r["fold"] for r in rows] == ["people1", "people2", "people3"]
    assert all(r["images"] == 90 for r in rows) and all(r["accuracy"] >= 0.85 for r in rows)  # seeds: min 0.96
    lopo = run / "train" / "landmark_fastkan-lopo"
    assert json.loads((lopo / "folds.json").read_text()) == rows
    _, meta = load_checkpoint(lopo / "people2" / "best.pt")  # every fold's model is kept, for the fused predictor
    assert meta["metrics"]["fold"] == "people2" and meta["input"] == "landmarks"
