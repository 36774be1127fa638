"""The real pipeline on a small slice of ../shared/datasets (skipped where the data is absent)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from asl_tinyml.merge import default_sources, merge, read_manifest
from asl_tinyml.preprocess import Cache, load_splits, preprocess

pytestmark = pytest.mark.integration


def test_merge_and_preprocess_real_slice(data_root, tmp_path):
    sources = sorted(p for p in data_root.iterdir() if p.is_dir())
    assert {s.name for s in sources} >= {
        "asl_alphabet_subset", "massey_asl", "sign_language_digits", "asl_users_mon95", "asl_fingerspelling_4signers"
    }
    out = tmp_path / "data_merged"
    report = merge(sources, out, limit_per_class=4)
    rows = read_manifest(out)
    # 26 letters + space from the alphabet source, 36 Massey classes, 10 digit classes, 24 letters (no j, z)
    # of the seven users, 26 letters of the four signers (Space_variant is not a class); 4 files each
    assert report.n_merged == len(rows) == 4 * (27 + 36 + 10 + 24 + 26)
    assert {r["class"] for r in rows} == set("0123456789abcdefghijklmnopqrstuvwxyz") | {"space"}
    assert {r["source"] for r in rows} == {s.name for s in sources}
    assert any(u.endswith("del") for u in report.unknown_folders)
    assert any(u.endswith("Space_variant") for u in report.unknown_folders)
    assert not {r["class"] for r in rows if r["source"] == "asl_users_mon95"} & {"j", "z"}
    assert all(r["group"].startswith("massey_asl:hand") for r in rows if r["source"] == "massey_asl")
    # an evenly spaced slice reaches several Massey signers, not just the first one
    assert {r["group"] for r in rows if r["source"] == "massey_asl"} >= {"massey_asl:hand1", "massey_asl:hand2"}
    # the new sources are grouped by person: `User10_A0.jpg` -> user10, `signer3_17.jpg` -> signer3
    person = {"asl_users_mon95": r"asl_users_mon95:user\d+", "asl_fingerspelling_4signers": r"asl_fingerspelling_4signers:signer[1-4]"}
    for source, pattern in person.items():
        groups = {r["group"] for r in rows if r["source"] == source}
        assert len(groups) >= 3 and all(re.fullmatch(pattern, g) for g in groups), (source, groups)

    result = preprocess(out, tmp_path / "run", size=64)
    cache = Cache.load(result.cache_path)
    assert cache.images.shape == (len(rows), 64, 64, 3)
    per_class_cache = Counter(cache.classes[i] for i in cache.labels)
    per_class_manifest = Counter(r["class"] for r in rows)
    assert per_class_cache == per_class_manifest
    assert Counter(cache.sources.tolist()) == Counter(r["source"] for r in rows)
    splits = load_splits(tmp_path / "run")
    assert sum(len(v) for v in splits.values()) == len(rows)
    groups = {k: set(cache.groups[v]) for k, v in splits.items()}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])
    # a rerun of the merge over the same sources adds nothing
    assert merge(sources, out, limit_per_class=4).n_merged == 0
    assert np.all(cache.images.reshape(len(rows), -1).std(axis=1) > 1)  # real pictures, not blanks


def test_default_sources_are_the_shared_datasets(data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert [p.name for p in default_sources()] == sorted(p.name for p in data_root.iterdir() if p.is_dir())
