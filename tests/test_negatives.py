"""Empty scenes: where they come from, how training shows them, and what the model learns from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from asl_tinyml.config import UserError
from asl_tinyml.hands import NUM_LANDMARKS, HandTable
from asl_tinyml.merge import merge
from asl_tinyml.negatives import (
    NEGATIVES_NAME, build_negatives, free_square, load_negatives, plain_scenes, save_negatives,
)
from asl_tinyml.train import empty_target, pixel_batches, train

from .test_train import SIZE, make_run, tiny_cfg


def test_the_free_square_is_the_largest_one_beside_the_hand() -> None:
    assert free_square((0, 0, 50), 200, 100) == (75.0, 0.0, 100.0)  # hand top-left: the square right of it
    assert free_square((150, 0, 50), 200, 100) == (25.0, 0.0, 100.0)  # top-right: left of it
    assert free_square((0, 60, 100), 100, 200) == (20.0, 0.0, 60.0)  # hand across the middle: the larger strip
    assert free_square((0, 0, 200), 200, 200)[2] == 0  # the hand fills the image: nothing is free


def test_plain_scenes_are_plain_colours_and_gradients() -> None:
    scenes = plain_scenes(9, 32, seed=1)
    assert scenes.shape == (9, 32, 32, 3) and scenes.dtype == np.uint8
    spread = scenes.astype(float).mean(axis=3).max(axis=(1, 2)) - scenes.astype(float).mean(axis=3).min(axis=(1, 2))
    assert (spread[0::3] < 60).all() and (spread[1::3] > 60).any()  # every third plain, the rest gradients
    assert np.array_equal(scenes, plain_scenes(9, 32, seed=1))


def _photo(path: Path, colour: tuple[int, int, int], hand: tuple[int, int, int] | None = None) -> Path:
    """A 100x100 photo of one colour, with a 30-pixel square of `hand` colour at its top-left corner."""
    image = np.full((100, 100, 3), colour, np.uint8)
    if hand is not None:
        image[:30, :30] = hand
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def _corner_hand() -> np.ndarray:
    """Landmarks (units of the longer side) spread over the top-left 20% of an image."""
    return np.stack([np.linspace(0.02, 0.2, NUM_LANDMARKS), np.linspace(0.02, 0.2, NUM_LANDMARKS),
                     np.zeros(NUM_LANDMARKS)], axis=1).astype(np.float32)


def test_negatives_come_from_the_empty_room_the_backgrounds_and_plain_colours(tmp_path: Path) -> None:
    source = tmp_path / "room_source"
    _photo(source / "A" / "a1.jpg", (40, 90, 200), hand=(200, 150, 120))  # blue wall, skin at the hand
    _photo(source / "B" / "b1.jpg", (40, 90, 200), hand=(200, 150, 120))
    _photo(source / "nothing" / "empty1.jpg", (30, 160, 30))
    _photo(source / "Nothing" / "empty2.png", (160, 30, 30))
    merge([source], tmp_path / "merged")
    hands = HandTable(np.array(["x", "y"]), np.stack([_corner_hand()] * 2), np.zeros((2, NUM_LANDMARKS, 3), np.float32),
                      np.zeros(2, np.int8), np.array([True, False]), np.zeros(2, np.int8), np.zeros(2, np.float32), [])
    scenes = build_negatives(tmp_path / "merged", 16, hands)
    assert len(scenes["nothing"]) == 2  # both empty-room folders, in any case
    assert sorted(tuple(int(v) for v in s[8, 8]) for s in scenes["nothing"])[0][1] > 100  # the green room, centred
    assert len(scenes["cuts"]) == 1  # one image with a found hand: one cut, away from it
    assert np.abs(scenes["cuts"][0].astype(int) - (40, 90, 200)).max() < 12  # the wall, no skin
    assert len(scenes["plain"]) > 100
    save_negatives(scenes, tmp_path / "run")
    loaded = load_negatives(tmp_path / "run", 16)
    assert loaded.shape == (2 + 1 + len(scenes["plain"]), 16, 16, 3)
    with pytest.raises(UserError, match="not 32x32"):
        load_negatives(tmp_path / "run", 32)
    assert load_negatives(tmp_path, 16) is None  # no file: training without empty scenes


def test_a_cut_showing_the_palms_colour_is_dropped(tmp_path: Path) -> None:
    """The signer's other hand is often in view: a background of the palm's colour is no empty scene."""
    _photo(tmp_path / "src" / "A" / "a1.jpg", (200, 150, 120), hand=(200, 150, 120))
    merge([tmp_path / "src"], tmp_path / "merged")
    hands = HandTable(np.array(["x"]), _corner_hand()[None], np.zeros((1, NUM_LANDMARKS, 3), np.float32),
                      np.zeros(1, np.int8), np.array([True]), np.zeros(1, np.int8), np.zeros(1, np.float32), [])
    assert len(build_negatives(tmp_path / "merged", 16, hands)["cuts"]) == 0


def test_each_batch_carries_its_share_of_empty_scenes_with_a_uniform_target() -> None:
    images = torch.randint(0, 255, (20, 3, SIZE, SIZE), dtype=torch.uint8)
    labels = torch.arange(20) % 4
    negatives = torch.zeros((5, 3, SIZE, SIZE), dtype=torch.uint8)
    sampler = DistributedSampler(range(20), num_replicas=1, rank=0, shuffle=True, seed=0)
    batches = list(pixel_batches(images, labels, sampler, 8, None, None, negatives, 0.25, empty_target(list("abcd")))(0))
    assert [len(x) for x, _ in batches] == [10, 10, 6]  # 8 signs + 2 scenes; 4 + 2
    x, y = batches[0]
    assert torch.equal(y[:8].argmax(1), labels[torch.tensor(list(sampler))[:8]])  # one-hot signs
    assert torch.allclose(y[8:], torch.full((2, 4), 0.25)) and float(x[8:].abs().max()) == 0.0
    plain = list(pixel_batches(images, labels, sampler, 8, None, None)(0))
    assert empty_target(["a", "nothing", "b"]).tolist() == [0.0, 1.0, 0.0]  # a model with a `nothing` class
    assert [len(x) for x, _ in plain] == [8, 8, 4] and plain[0][1].ndim == 1  # off: hard targets as before


def test_empty_scenes_teach_the_pixel_model_to_be_unsure_where_no_hand_is(tmp_path: Path) -> None:
    """Bars on dark noise are the signs; grey walls the empty scenes. Trained with them, the model spreads its
    probability on a grey wall it never saw and still reads the signs."""
    from asl_tinyml.inference import load_predictor

    run = make_run(tmp_path / "run", per_class=24)
    walls = np.stack([np.full((SIZE, SIZE, 3), v, np.uint8) for v in range(80, 240, 4)])
    save_negatives({"plain": walls[::2]}, run)
    unseen = walls[1::2]
    cfg = tiny_cfg(epochs=12, negatives=0.25)
    with_scenes = load_predictor(train(cfg, run, tmp_path / "with", progress=False)["checkpoint"])
    (run / NEGATIVES_NAME).unlink()
    without = load_predictor(train(cfg, run, tmp_path / "without", progress=False)["checkpoint"])
    on_walls = {name: m.predict_proba(unseen).max(axis=1) for name, m in (("with", with_scenes), ("without", without))}
    assert on_walls["with"].max() < 0.5 < on_walls["without"].mean()
    from asl_tinyml.preprocess import Cache, load_splits

    cache = Cache.load(run)
    test = load_splits(run, len(cache))["test"]
    accuracy = (with_scenes.predict_proba(cache.images[test]).argmax(axis=1) == cache.labels[test]).mean()
    assert accuracy >= 0.8
