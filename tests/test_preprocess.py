"""preprocess: every image mode to RGB, EXIF rotation, huge images, the cache, grouped splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from asl_tinyml.config import UserError
from asl_tinyml.images import load_image
from asl_tinyml.merge import merge, read_manifest
from asl_tinyml.preprocess import Cache, grouped_split, load_splits, preprocess, to_float

from .helpers import write_image


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1"])
def test_every_mode_becomes_rgb_uint8(tmp_path, mode):
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    path = write_image(tmp_path / f"x.{fmt.lower()}", size=(40, 30), mode=mode, fmt=fmt)
    arr = load_image(path, 16)
    assert arr.shape == (16, 16, 3) and arr.dtype == np.uint8


def test_grayscale_keeps_intensity(tmp_path):
    path = tmp_path / "g.png"
    Image.new("L", (20, 20), 77).save(path)
    assert np.all(load_image(path, 8) == 77)


def test_rgba_transparent_pixels_become_black(tmp_path):
    path = tmp_path / "t.png"
    Image.new("RGBA", (10, 10), (255, 255, 255, 0)).save(path)
    assert np.all(load_image(path, 8) == 0)


def test_exif_rotation_is_applied(tmp_path):
    """A landscape photo stored with orientation 6 (rotate 90 CW) must come out portrait-ordered."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red, right half blue
    arr[:, 20:] = (0, 0, 255)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif, quality=95)
    out = load_image(path, 20).astype(int)
    # after a 90 degree clockwise turn the left (red) half is on top, blue at the bottom
    assert out[2, 10, 0] > 200 and out[2, 10, 2] < 60
    assert out[17, 10, 2] > 200 and out[17, 10, 0] < 60


def test_huge_image_is_downscaled(tmp_path):
    path = write_image(tmp_path / "big.jpg", size=(3024, 3024), color=(10, 200, 10))
    arr = load_image(path, 64)
    assert arr.shape == (64, 64, 3)
    assert abs(int(arr[..., 1].mean()) - 200) < 15


def test_unreadable_file_raises_value_error(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(path, 64)


def test_to_float_scales_to_unit_interval():
    x = np.array([[[[0, 128, 255]]]], np.uint8)
    y = to_float(x)
    assert y.shape == (1, 3, 1, 1) and y.dtype == np.float32
    assert y.min() == 0.0 and y.max() == 1.0


def _tiny_merged(make_source, tmp_path: Path) -> Path:
    layout = {c: [f"hand{h}_{c}_v_seg_{k}.jpg" for h in (1, 2, 3) for k in range(2)] for c in ("a", "b", "c")}
    s1 = make_source("massey", layout, seed=1)
    s2 = make_source("video", {c.upper(): [f"{c.upper()}{n}.jpg" for n in range(0, 2000, 100)] for c in ("a", "b", "c")}, seed=2)
    out = tmp_path / "merged"
    merge([s1, s2], out)
    return out


def test_preprocess_cache_round_trip_and_grouped_splits(make_source, tmp_path):
    merged = _tiny_merged(make_source, tmp_path)
    result = preprocess(merged, tmp_path / "run", size=16, seed=3)
    cache = Cache.load(tmp_path / "run")
    rows = read_manifest(merged)
    assert len(cache) == len(rows) == result.n_images == 18 + 60
    assert cache.images.shape == (78, 16, 16, 3) and cache.images.dtype == np.uint8
    assert cache.classes == ["a", "b", "c"]
    assert Counter(cache.classes[i] for i in cache.labels) == Counter(r["class"] for r in rows)
    splits = load_splits(tmp_path / "run")
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(78))
    seen: dict[str, str] = {}
    for name, idx in splits.items():
        for g in cache.groups[idx]:
            assert seen.setdefault(g, name) == name, f"group {g} in two splits"
    # Massey has three signers: each one lives in exactly one split
    massey_splits = {name for name, idx in splits.items() for g in cache.groups[idx] if "hand" in g}
    assert "train" in massey_splits


def test_splits_are_deterministic_per_seed(make_source, tmp_path):
    merged = _tiny_merged(make_source, tmp_path)
    preprocess(merged, tmp_path / "r1", size=8, seed=5)
    preprocess(merged, tmp_path / "r2", size=8, seed=5)
    a, b = load_splits(tmp_path / "r1"), load_splits(tmp_path / "r2")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_missing_manifest_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="run `asl-tinyml merge` first"):
        preprocess(tmp_path, tmp_path / "run")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 30), st.integers(0, 1)), min_size=30, max_size=300),
    st.integers(0, 10_000),
)
def test_grouped_split_never_leaks_a_group(items, seed):
    labels = np.array([c for c, _, _ in items])
    groups = np.array([f"s{s}:g{g}" for _, g, s in items])
    sources = np.array([f"s{s}" for _, _, s in items])
    if len(np.unique(groups)) < 3:
        return
    splits = grouped_split(labels, groups, sources, seed=seed)
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(len(items)))
    sets = [set(groups[idx]) for idx in splits.values()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(splits["train"]) >= len(splits["test"])


def test_person_ids_follow_the_file_names_and_one_person_sources() -> None:
    from asl_tinyml.preprocess import person_ids

    groups = np.array(["massey_asl:hand3", "asl_users_mon95:user10", "asl_fingerspelling_4signers:signer2",
                       "sign_sequences:session-cam", "asl_alphabet_subset:A12", "sign_language_digits:IMG_11"])
    sources = np.array([g.split(":")[0] for g in groups])
    assert person_ids(groups, sources).tolist() == [
        "massey_asl:hand3", "asl_users_mon95:user10", "asl_fingerspelling_4signers:signer2",
        "sign_sequences:session-cam", "asl_alphabet_subset", "",  # one-person source; unnamed students
    ]


def test_person_folds_hold_every_person_out_once_and_never_train_on_them() -> None:
    from asl_tinyml.preprocess import person_folds

    persons = np.array(["a:hand1"] * 4 + ["a:hand2"] * 4 + ["b:user3"] * 2 + [""] * 6)
    splits = {"train": np.array([0, 1, 4, 5, 10, 11, 12]), "val": np.array([2, 6, 13]), "test": np.array([8, 9, 14, 15])}
    folds = person_folds(persons, splits, k=2)
    assert [f.name for f in folds] == ["people1", "people2"]
    held = [set(persons[f.test]) for f in folds]
    assert held[0] | held[1] == {"a:hand1", "a:hand2", "b:user3"} and not held[0] & held[1]  # each person once
    for f, h in zip(folds, held):
        assert not np.isin(persons[np.union1d(f.train, f.val)], list(h)).any()
    # largest first into the lightest fold (hand1, hand2, then user3 into fold 1); other people's val/test
    # images train too, unknown people's rows stay where the splits put them
    assert folds[0].test.tolist() == [0, 1, 2, 3, 8, 9] and folds[0].train.tolist() == [4, 5, 6, 7, 10, 11, 12]
    with pytest.raises(UserError, match="at least two known people"):
        person_folds(np.array(["", "a:hand1"]), splits)


def test_source_folds_score_only_the_classes_the_other_sources_hold() -> None:
    from asl_tinyml.preprocess import source_folds

    sources = np.array(["letters"] * 4 + ["mixed"] * 4 + ["digits"] * 4)
    labels = np.array([10, 11, 10, 11, 10, 11, 0, 1, 0, 1, 0, 2])  # digit class 2 exists in "digits" only
    splits = {"train": np.array([0, 1, 4, 5, 6, 7, 8, 9]), "val": np.array([2, 10]), "test": np.array([3, 11])}
    folds = {f.name: f for f in source_folds(sources, labels, splits)}
    assert set(folds) == {"letters", "mixed", "digits"}
    digits = folds["digits"]
    assert digits.test.tolist() == [8, 9, 10]  # class 2 (row 11) is unknown to the training sources
    assert (sources[np.union1d(digits.train, digits.val)] != "digits").all()
    assert folds["letters"].val.tolist() == [10, 11]  # others' val and test select the model
