"""EDA: every figure is a real PNG, the summary matches the manifest, missing inputs are handled."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from asl_tinyml import eda
from asl_tinyml.config import UserError
from asl_tinyml.merge import merge
from asl_tinyml.preprocess import Cache, load_splits, preprocess

ALL_FIGURES = {
    "class_counts.png", "image_sizes.png", "sample_grid.png", "brightness.png", "split_sizes.png", "split_sources.png",
}


def _image(path: Path, size: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))  # distinct content: merge drops duplicates
    pixels = np.clip(rng.normal(value, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def _sources(root: Path) -> list[Path]:
    """Three tiny sources shaped like the real ones: signers, video frames, numbered photos."""
    massey, alphabet, digits = root / "massey", root / "alphabet", root / "digits"
    for cls in ("a", "b", "1"):
        for hand in (1, 2, 3):
            for k in range(2):
                _image(massey / cls / f"hand{hand}_{cls}_bot_seg_{k}_cropped.jpeg", (40, 40), 30 + 10 * k)
    for cls in ("A", "B", "space"):
        for frame in (1, 2, 150, 151, 420):
            _image(alphabet / cls / f"{cls}{frame}.jpg", (30, 30), 120 + frame % 7)
    for cls in ("0", "1"):
        for n in range(4):
            _image(digits / cls / f"IMG_{n * 200 + 5}.JPG", (20, 20), 170)
    _image(digits / "1" / "IMG_999.JPG", (300, 300), 180)  # one big photo, like the real 3024 px ones
    return [massey, alphabet, digits]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eda")
    merged, run = root / "merged", root / "run"
    merge(_sources(root / "raw"), merged)
    preprocess(merged, run, size=16)
    return merged, run


def test_run_eda_writes_every_figure(data: tuple[Path, Path], tmp_path: Path) -> None:
    merged, run = data
    figures = eda.run_eda(merged, run, tmp_path / "eda")
    assert {p.name for p in figures} == ALL_FIGURES
    for path in figures:
        assert path.parent == tmp_path / "eda"
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert 400 <= im.width <= 4000 and 300 <= im.height <= 4000, (path.name, im.size)


def test_run_eda_without_cache_draws_manifest_figures(
    data: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    merged, _ = data
    with caplog.at_level(logging.WARNING, logger="asl_tinyml.eda"):
        figures = eda.run_eda(merged, tmp_path / "no_run", tmp_path / "eda")
    assert [p.name for p in figures] == ["class_counts.png", "image_sizes.png"]
    assert all(p.exists() for p in figures)
    assert "cache.npz" in caplog.text and "preprocess" in caplog.text


def test_missing_manifest_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no manifest\.csv in .*empty.*asl-tinyml merge"):
        eda.run_eda(tmp_path / "empty", tmp_path / "run", tmp_path / "eda")
    assert not (tmp_path / "eda").exists()


def test_summary_matches_manifest(data: tuple[Path, Path]) -> None:
    merged, run = data
    manifest = pd.read_csv(merged / "manifest.csv", dtype={"class": str})
    table = eda.summary(merged, run)
    assert table.loc["massey", "images"] == 18 and table.loc["alphabet", "images"] == 15
    assert table.loc["digits", "images"] == 9
    assert table.loc["total", "images"] == len(manifest) == 42
    assert table.loc["total", "classes"] == 5  # 0, 1, a, b, space
    assert table.loc["massey", "groups"] == 3  # one per signer
    assert table.loc["digits", "max_side_px"] == 300 and table.loc["total", "min_side_px"] == 20
    assert (table.loc["total", ["train", "val", "test"]].sum()) == len(manifest)
    assert 0 < table.loc["massey", "mean_brightness"] < table.loc["digits", "mean_brightness"] < 255


def test_summary_without_run_has_manifest_numbers_only(data: tuple[Path, Path]) -> None:
    merged, _ = data
    table = eda.summary(merged)
    assert "train" not in table.columns and "mean_brightness" not in table.columns
    assert list(table.index) == ["alphabet", "digits", "massey", "total"]


def test_split_helpers_count_and_detect_leaks(data: tuple[Path, Path]) -> None:
    _, run = data
    cache, splits = Cache.load(run), load_splits(run)
    counts = eda.split_counts(cache, splits)
    assert counts.loc["total", "total"] == len(cache)
    assert counts.loc[["train", "val", "test"], "massey"].sum() == 18
    assert eda.groups_across_splits(cache.groups, splits) == []
    leaky = dict(splits, test=np.concatenate([splits["test"], splits["train"][:1]]))
    assert eda.groups_across_splits(cache.groups, leaky) == [str(cache.groups[splits["train"][0]])]


def test_pick_samples_mixes_sources(data: tuple[Path, Path]) -> None:
    _, run = data
    cache = Cache.load(run)
    chosen = eda.pick_samples(cache, per_class=4)
    one = chosen["1"]  # class 1 exists in massey and digits
    assert len(one) == 4 and len(set(one)) == 4
    assert set(cache.sources[one]) == {"massey", "digits"}
    assert all(cache.classes[cache.labels[i]] == name for name, idx in chosen.items() for i in idx)


def test_class_order_is_canonical() -> None:
    assert eda.class_order(["space", "b", "1", "a", "0", "zz"]) == ["0", "1", "a", "b", "space", "zz"]
