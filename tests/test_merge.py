"""merge / rename_dataset.py: case folding, collisions, bad files, idempotence, sources untouched."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from asl_tinyml.cli import main
from asl_tinyml.config import UserError
from asl_tinyml.merge import group_id, merge, read_manifest

ROOT = Path(__file__).resolve().parents[1]


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_case_folding_and_collisions(make_source, tmp_path):
    s1 = make_source("data 1", {"A": ["1.jpg", "2.JPG"], "space": ["1.jpg"]}, seed=1)
    s2 = make_source("data 2", {"a": ["1.jpg"], "Space": ["1.jpeg"]}, seed=2)
    s3 = make_source("data 3", {"A": ["1.jpg"]}, seed=3)
    out = tmp_path / "merged"
    report = merge([s1, s2, s3], out)
    assert report.n_merged == 6
    assert sorted(p.name for p in (out / "a").iterdir()) == ["1.jpg", "1_1.jpg", "1_2.jpg", "2.jpg"]
    assert sorted(p.name for p in (out / "space").iterdir()) == ["1.jpeg", "1.jpg"]
    assert not (out / "A").exists() and not (out / "Space").exists()
    rows = read_manifest(out)
    assert {r["merged_path"] for r in rows} == {f"{p.parent.name}/{p.name}" for p in out.rglob("*.jp*g")}
    by_merged = {r["merged_path"]: r for r in rows}
    assert by_merged["a/1_1.jpg"]["source"] == "data 2"
    assert Path(by_merged["a/1_1.jpg"]["original_path"]) == (s2 / "a" / "1.jpg").resolve()
    assert set(rows[0]) == {"source", "original_path", "merged_path", "class", "sha256", "width", "height", "group"}


def test_sources_left_byte_identical(make_source, tmp_path):
    src = make_source("src", {"B": ["x.jpg", "y.png"], "7": ["z.jpg"]})
    (src / "B" / "notes.txt").write_text("not an image")
    before = tree_digest(src)
    merge([src], tmp_path / "out")
    assert tree_digest(src) == before


def test_rerun_adds_nothing_and_new_source_adds_only_its_files(make_source, tmp_path):
    s1 = make_source("s1", {"c": ["1.jpg", "2.jpg"]}, seed=1)
    out = tmp_path / "out"
    merge([s1], out)
    again = merge([s1], out)
    assert again.n_merged == 0 and again.already == 2
    assert len(list((out / "c").iterdir())) == 2
    s2 = make_source("s2", {"C": ["1.jpg"], "d": ["9.jpg"]}, seed=2)
    third = merge([s1, s2], out)
    assert third.n_merged == 2 and third.already == 2
    assert len(read_manifest(out)) == 4
    assert sorted(p.name for p in (out / "c").iterdir()) == ["1.jpg", "1_1.jpg", "2.jpg"]


def test_corrupt_nonimage_unknown_and_empty_are_reported(make_source, tmp_path):
    src = make_source("src", {"e": ["good.jpg"]})
    (src / "e" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (src / "e" / "readme.txt").write_text("hello")
    (src / "e" / "fake.png").write_text("text pretending to be a png")
    (src / "weird_class").mkdir()
    (src / "f").mkdir()
    (src / "del").mkdir()
    report = merge([src], tmp_path / "out")
    assert report.n_merged == 1
    skipped = {Path(p).name: reason for p, reason in report.skipped}
    assert set(skipped) == {"broken.jpg", "readme.txt", "fake.png"}
    assert "not an image extension" in skipped["readme.txt"]
    assert "not a readable image" in skipped["broken.jpg"]
    assert {Path(u).name for u in report.unknown_folders} == {"weird_class", "del"}
    assert [Path(e).name for e in report.empty_folders] == ["f"]


def test_include_extra_merges_del_and_nothing(make_source, tmp_path):
    src = make_source("src", {"del": ["1.jpg"], "Nothing": ["2.jpg"], "a": ["3.jpg"]})
    assert merge([src], tmp_path / "o1").n_merged == 1
    assert merge([src], tmp_path / "o2", include_extra=True).n_merged == 3


def test_dry_run_writes_nothing(make_source, tmp_path):
    src = make_source("src", {"a": ["1.jpg"]})
    report = merge([src], tmp_path / "out", dry_run=True)
    assert report.n_merged == 1 and not (tmp_path / "out").exists()


def test_wrapper_folder_is_descended(make_source, tmp_path):
    src = make_source("kaggle", {"asl_alphabet_train/A": ["A1.jpg"], "asl_alphabet_train/B": ["B1.jpg"]})
    assert merge([src], tmp_path / "out").n_merged == 2


@pytest.mark.parametrize(
    "source,name,expected",
    [
        ("massey_asl", "hand3_a_dif_seg_1_cropped.jpeg", "massey_asl:hand3"),
        ("asl_alphabet_subset", "A1234.jpg", "asl_alphabet_subset:A12"),
        ("asl_alphabet_subset", "space1016.jpg", "asl_alphabet_subset:space10"),
        ("sign_language_digits", "IMG_1125.JPG", "sign_language_digits:IMG_11"),
        ("asl_users_mon95", "User10_A0.jpg", "asl_users_mon95:user10"),  # a person, whatever the letter or shot
        ("asl_users_mon95", "user3_Y9.jpg", "asl_users_mon95:user3"),
        ("asl_fingerspelling_4signers", "signer2_1045.jpg", "asl_fingerspelling_4signers:signer2"),  # not a frame block
        ("x", "photo.png", "x:photo"),
    ],
)
def test_group_ids(source, name, expected):
    assert group_id(source, name, frame_block=100) == expected


def test_missing_source_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        merge([tmp_path / "nope"], tmp_path / "out")


def test_no_class_folders_is_a_user_error(tmp_path):
    (tmp_path / "src" / "random").mkdir(parents=True)
    (tmp_path / "src" / "other").mkdir(parents=True)
    with pytest.raises(UserError, match="no class folders"):
        merge([tmp_path / "src"], tmp_path / "out")


def test_cli_one_line_error_and_exit_code(tmp_path, capsys):
    code = main(["merge", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: source") and "Traceback" not in err


def test_rename_dataset_script_defaults_to_data_n_folders(make_source, tmp_path):
    make_source("data 1", {"A": ["1.jpg"]}, seed=1)
    make_source("data 2", {"a": ["1.jpg"], "b": ["2.jpg"]}, seed=2)
    proc = subprocess.run([sys.executable, str(ROOT / "rename_dataset.py")], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "merged 3 new file(s)" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "data_merged" / "a").iterdir()) == ["1.jpg", "1_1.jpg"]
    with (tmp_path / "data_merged" / "manifest.csv").open() as f:
        assert sum(1 for _ in csv.DictReader(f)) == 3
    proc2 = subprocess.run([sys.executable, str(ROOT / "rename_dataset.py")], cwd=tmp_path, capture_output=True, text=True)
    assert "merged 0 new file(s)" in proc2.stdout
