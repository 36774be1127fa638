"""Hostile input, swept over the CLI, the HTTP API and the WebSocket (issue #19).

Every case ends in a correct result (exit 0), or one `error:` line naming the file or flag and the fix
(exit 2; `predict` exits 1 when no file was read); never a traceback; no byte of a source or a shipped
model changes; `/docs` needs no network.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asl_tinyml.cli import main
from asl_tinyml.config import Config, UserError
from asl_tinyml.images import BadImageError, ImageTooLargeError, load_image
from asl_tinyml.merge import MANIFEST, read_manifest

from .helpers import landmark_checkpoint, letters_npz, motion_checkpoint, tree_digest, websocket_error, write_image
from .tiny_model import CLASSES, SIZE, make_run, trained_checkpoint

pytest.importorskip("httpx2", reason="the test client needs httpx2 (pip install httpx2)")
from fastapi.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from asl_tinyml.serve import ServeSettings, create_app  # noqa: E402


# --- hostile files -------------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares `width` x `height` 1-bit pixels (a decompression bomb when large)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def dds_unknown_format() -> bytes:
    """A DDS header with a pixel format Pillow does not implement (it raises NotImplementedError)."""
    header = bytearray(120)
    struct.pack_into("<3I", header, 0, 0x1007, 32, 32)  # flags, height, width
    struct.pack_into("<4I", header, 68, 32, 0x4, int.from_bytes(b"ABCD", "little"), 0)  # DDPF_FOURCC 'ABCD'
    return b"DDS " + struct.pack("<I", 124) + bytes(header)


def jpeg_bytes(size: tuple[int, int] = (64, 48), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg_bytes((96, 96), seed=5)
    return data[: len(data) * 2 // 3]  # header intact, scan data cut: `verify()` alone accepts it


BAD_FILES = {
    "bomb.png": png_header(20_000, 20_000),
    "dds.jpg": dds_unknown_format(),
    "truncated.jpg": truncated_jpeg(),
    "text.jpg": b"not an image at all",
    "empty.png": b"",
}


# --- helpers -------------------------------------------------------------------------------------------
def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def user_error(capsys: pytest.CaptureFixture[str], *args: object, words: tuple[str, ...] = ()) -> str:
    """Run the CLI and check it failed as a user error: exit 2, one `error:` line naming `words`."""
    code, out, err = cli(capsys, *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny trained checkpoint, its float ONNX export and a run folder of the same classes."""
    from asl_tinyml.export import export_onnx

    root = tmp_path_factory.mktemp("tiny")
    ckpt = trained_checkpoint(root / "tiny.pt")
    return {"ckpt": ckpt, "onnx": export_onnx(ckpt, root / "tiny.onnx"), "run": make_run(root / "run", per_class=8)}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A source folder of three small classes."""
    root = tmp_path / "src"
    for k, cls in enumerate(["A", "b", "space"]):
        for j in range(3):
            write_image(root / cls / f"{cls}-{j}.jpg", color=(60 * k, 100, 20 * j), seed=10 * k + j)
    return root


# --- 1, 2, 14: one decoder for every bad file -----------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_load_image_turns_every_bad_file_into_a_reason(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    with pytest.raises(BadImageError):
        load_image(path, 16)
    with pytest.raises(BadImageError):
        load_image(BAD_FILES[name], 16)


def test_a_decompression_bomb_is_refused_as_too_large_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError, match="too large|megapixels"):
        load_image(png_header(20_000, 20_000), 16)
    with pytest.raises(ImageTooLargeError, match="7900x8000 pixels exceeds 16 megapixels"):
        load_image(png_header(7900, 8000), 16, max_pixels=16_000_000)


def test_fuzzed_images_decode_or_fail_with_a_reason() -> None:
    """Random byte flips, cuts and splices of eight formats: an array or BadImageError, nothing else."""
    rng = random.Random(19)
    seeds = []
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "DDS"):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buf, fmt)
        seeds.append(buf.getvalue())
    seeds += [dds_unknown_format(), png_header(300, 200)]
    outcomes = {"ok": 0, "bad": 0}
    for _ in range(400):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            op, at = rng.random(), rng.randrange(len(data))
            if op < 0.6:
                data[at] = rng.randrange(256)
            elif op < 0.8:
                del data[at:]
                if not data:
                    break
            else:
                data[at:at] = rng.choice(seeds)[: rng.randint(1, 40)]
        try:
            image = load_image(bytes(data), 16)
        except BadImageError:
            outcomes["bad"] += 1
        else:
            assert image.shape == (16, 16, 3) and image.dtype == np.uint8
            outcomes["ok"] += 1
    assert outcomes["bad"] > 50 and outcomes["ok"] > 10  # both paths were exercised


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_predict_skips_a_named_pipe_and_bad_files(tiny: dict[str, Path], tmp_path: Path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in BAD_FILES.items():
        (folder / name).write_bytes(data)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    result: dict[str, object] = {}
    worker = threading.Thread(target=lambda: result.update(zip(("code", "out", "err"), cli(
        capsys, "predict", folder, fifo, "--model", tiny["onnx"], "--json"))))
    worker.start()
    worker.join(60)
    if worker.is_alive():  # unblock a reader stuck on the pipe before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("predict blocked on a named pipe")
    rows = [json.loads(line) for line in str(result["out"]).splitlines()]
    assert result["code"] == 1 and "Traceback" not in str(result["err"])
    assert len(rows) == len(BAD_FILES) + 1 and all("error" in r for r in rows)
    assert "not a regular file (a named pipe)" in next(r["error"] for r in rows if r["file"] == str(fifo))
    assert "too large" in next(r["error"] for r in rows if r["file"].endswith("bomb.png"))


def test_evaluate_skips_bad_files_in_class_folders(tiny: dict[str, Path], tmp_path: Path, capsys) -> None:
    data = tmp_path / "photos"
    for cls in ("a", "b"):
        for j in range(2):
            write_image(data / cls / f"{j}.png", color=(220, 40, 40) if cls == "a" else (40, 200, 40), seed=j)
    for name, payload in BAD_FILES.items():
        (data / "a" / name).write_bytes(payload)
    code, out, err = cli(capsys, "evaluate", "--model", tiny["onnx"], "--data", data, "--out", tmp_path / "eval")
    assert code == 0 and "Traceback" not in err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 4 and len(metrics["skipped"]) == len(BAD_FILES)


# --- 1, 15, 10, 3, 5, 6: merge ----------------------------------------------------------------------------
def test_merge_skips_bombs_and_truncated_files_and_a_rerun_adds_nothing(source: Path, tmp_path: Path, capsys) -> None:
    for name, data in BAD_FILES.items():
        (source / "A" / name).write_bytes(data)
    before = tree_digest(source)
    out = tmp_path / "merged"
    code, text, err = cli(capsys, "merge", source, "--out", out)
    assert code == 0 and "Traceback" not in err
    assert text.count("skipped ") == len(BAD_FILES) and "truncated.jpg" in text
    rows = read_manifest(out)
    assert len(rows) == 9 and {r["merged_path"] for r in rows} == {f"{p.parent.name}/{p.name}" for p in out.glob("*/*")}
    code, text, _ = cli(capsys, "merge", source, "--out", out)
    assert code == 0 and "merged 0 new file(s)" in text and not list(out.glob("*/*_1.jpg"))
    assert tree_digest(source) == before


def test_merge_reports_label_conflicts_and_non_ascii_class_folders(source: Path, tmp_path: Path, capsys) -> None:
    (source / "b" / "copy_of_a.jpg").write_bytes((source / "A" / "A-0.jpg").read_bytes())
    write_image(source / "\u212a" / "kelvin.jpg", seed=99)  # KELVIN SIGN lower-cases to ASCII k
    code, text, _ = cli(capsys, "merge", source, "--out", tmp_path / "merged")
    assert code == 0
    assert "label conflict" in text and "copy_of_a.jpg" in text and "a/A-0.jpg (class a)" in text
    assert "non-ASCII name" in text and not (tmp_path / "merged" / "k").exists()


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_merge_never_writes_into_a_source(source: Path, where: str, capsys) -> None:
    before = tree_digest(source.parent)
    if where == "around":
        args = ("merge", source, "--out", source.parent)
    else:
        args = ("merge", source, "--out", source if where == "same" else source / "merged")
    user_error(capsys, *args, words=("--out", "source", "another --out"))
    assert tree_digest(source.parent) == before


FOREIGN_MANIFESTS = {
    "other-columns": "name,label\nx.jpg,a\n",
    "binary": b"\xff\xfe\x00\x81PK\x03\x04\x9c" * 20,
    "unknown-class": "source,original_path,merged_path,class,sha256,width,height,group\ns,/x/1.jpg,zz/1.jpg,zz,00,3,3,g\n",
}


@pytest.mark.parametrize("kind", sorted(FOREIGN_MANIFESTS))
def test_a_foreign_manifest_is_refused_by_merge_preprocess_and_eda(source: Path, tmp_path: Path, kind: str, capsys) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    content = FOREIGN_MANIFESTS[kind]
    (out / MANIFEST).write_bytes(content if isinstance(content, bytes) else content.encode())
    before = tree_digest(out)
    for args in (("merge", source, "--out", out), ("preprocess", "--merged", out, "--out", tmp_path / "run"),
                 ("eda", "--merged", out, "--run", tmp_path / "run")):
        user_error(capsys, *args, words=(str(out / MANIFEST), "not a manifest written by `asl-tinyml merge`"))
    assert tree_digest(out) == before and not (tmp_path / "run").exists()


def test_a_foreign_manifest_in_an_evaluate_folder_is_ignored(tiny: dict[str, Path], tmp_path: Path, capsys) -> None:
    data = tmp_path / "photos"
    write_image(data / "a" / "1.png", color=(220, 40, 40))
    write_image(data / "b" / "1.png", color=(40, 200, 40))
    (data / MANIFEST).write_bytes(FOREIGN_MANIFESTS["binary"])
    code, _, err = cli(capsys, "evaluate", "--model", tiny["onnx"], "--data", data, "--out", tmp_path / "eval")
    assert code == 0 and "Traceback" not in err and (tmp_path / "eval" / "metrics.json").exists()


@pytest.mark.parametrize("stage", ["merge", "preprocess", "export", "evaluate", "eda"])
@pytest.mark.parametrize("kind", ["a-file", "below-a-file"])
def test_an_output_path_that_is_a_file_is_one_line(
    stage: str, kind: str, source: Path, tiny: dict[str, Path], tmp_path: Path, capsys
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a user's file")
    out = blocker if kind == "a-file" else blocker / "sub"
    merged = tmp_path / "merged"
    if stage in ("preprocess", "eda"):
        assert main(["merge", str(source), "--out", str(merged)]) == 0
        capsys.readouterr()
    args = {
        "merge": ("merge", source, "--out", out),
        "preprocess": ("preprocess", "--merged", merged, "--out", out),
        "export": ("export", "--model", tiny["ckpt"], "--run", tiny["run"], "--out", out, "--no-tflite"),
        "evaluate": ("evaluate", "--model", tiny["onnx"], "--data", tiny["run"], "--out", out),
        "eda": ("eda", "--merged", merged, "--run", tmp_path / "none", "--out", out),
    }[stage]
    user_error(capsys, *args, words=("--out", str(blocker)))
    assert blocker.read_text() == "a user's file"


# --- 6: numeric flags -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("merge", "src", "--limit-per-class", "0"), "--limit-per-class"),
        (("merge", "src", "--limit-per-class", "-3"), "--limit-per-class"),
        (("merge", "src", "--limit-per-class", "many"), "--limit-per-class"),
        (("preprocess", "--size", "0"), "--size"),
        (("preprocess", "--size", "-64"), "--size"),
        (("preprocess", "--seed", "-1"), "--seed"),
        (("train", "--epochs", "0"), "--epochs"),
        (("train", "--batch-size", "0"), "--batch-size"),
        (("train", "--lr", "nan"), "--lr"),
        (("train", "--lr", "-0.001"), "--lr"),
        (("compress", "--epochs", "0"), "--epochs"),
        (("compress", "--sparsities", "0.5", "1.0"), "--sparsities"),
        (("export", "--float-convs", "-1"), "--float-convs"),
        (("evaluate", "--model", "m.onnx", "--data", "d", "--threads", "0"), "--threads"),
        (("predict", "x.jpg", "--topk", "0"), "--topk"),
        (("predict", "x.jpg", "--fusion-weight", "1.5"), "--fusion-weight"),
        (("bench", "--runs", "0"), "--runs"),
        (("bench", "--seconds", "inf"), "--seconds"),
        (("landmarks", "--epochs", "0"), "--epochs"),
        (("landmarks", "--pad", "-0.1"), "--pad"),
        (("serve", "--port", "70000"), "--port"),
        (("serve", "--port", "-1"), "--port"),
        (("serve", "--max-fps", "0"), "--max-fps"),
        (("serve", "--stable-frames", "0"), "--stable-frames"),
        (("pipeline", "--epochs", "0"), "--epochs"),
        (("motion", "predict", "--data", "w.npz", "--topk", "0"), "--topk"),  # issue 25 from here
        (("motion", "predict", "--data", "w.npz", "--topk", "-1"), "--topk"),
        (("motion", "evaluate", "--data", "w.npz", "--aspect", "0"), "--aspect"),
        (("motion", "evaluate", "--data", "w.npz", "--aspect", "nan"), "--aspect"),
        (("motion", "evaluate", "--data", "w.npz", "--aspect", "-1"), "--aspect"),
        (("motion", "train", "--epochs", "-1"), "--epochs"),
        (("motion", "train", "--limit", "0"), "--limit"),
        (("motion", "train", "--seed", "-1"), "--seed"),
        (("merge", "src", "--out", ""), "--out"),  # an empty path would be the current folder
        (("evaluate", "--data", ""), "--data"),
        (("export", "--out", " "), "--out"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else v,
)
def test_numeric_flags_are_checked_by_the_parser_and_named(args: tuple[str, ...], flag: str, capsys) -> None:
    line = user_error(capsys, *args, words=(f"argument {flag}", "got"))
    assert "usage:" not in line


# --- 7, 8: broken run files and config files ------------------------------------------------------------
@pytest.mark.parametrize("broken", ["empty-cache", "garbage-cache", "splits-json", "splits-keys", "splits-range"])
def test_a_broken_run_folder_is_one_line(broken: str, tiny: dict[str, Path], tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path / "run", per_class=4)
    if broken == "empty-cache":
        (run / "cache.npz").write_bytes(b"")
    elif broken == "garbage-cache":
        (run / "cache.npz").write_bytes(b"PK\x03\x04 not a zip")
    elif broken == "splits-json":
        (run / "splits.json").write_text('{"train": [0, 1')
    elif broken == "splits-keys":
        (run / "splits.json").write_text('{"train": [0]}')
    else:
        (run / "splits.json").write_text('{"train": [0], "val": [1], "test": [99999]}')
    name = "cache.npz" if "cache" in broken else "splits.json"
    for args in (("evaluate", "--model", tiny["onnx"], "--data", run), ("train", "--run", run, "--epochs", "1")):
        user_error(capsys, *args, words=(str(run / name), "re-run `asl-tinyml preprocess`"))


CONFIGS = {
    "missing": None,
    "malformed": "epochs: [1, 2\n",
    "a-list": "- epochs\n- 3\n",
    "a-string": "just words\n",
    "wrong-type": "epochs: many\n",
    "zero": "batch_size: 0\n",
    "unknown-key": "epoch: 3\n",
    "motion-epochs-zero": "motion_epochs: 0\n",
    "motion-limit-zero": "motion_limit: 0\n",
    "binary": b"\xff\xfe\x00\x81",
}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_a_bad_config_file_is_one_line(kind: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "cfg.yaml"
    content = CONFIGS[kind]
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    user_error(capsys, "train", "--run", tmp_path / "run", "--config", path, words=("--config", str(path)))
    with pytest.raises(UserError, match="--config"):
        Config.from_yaml(path)


def test_a_good_config_file_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: 3\nlr: 1\nlimit_per_class: null\nsparsities: [0, 0.5]\n")
    cfg = Config.from_yaml(path)
    assert cfg.epochs == 3 and cfg.lr == 1.0 and cfg.sparsities == [0, 0.5]


# --- 4: evaluate on one class or one image -----------------------------------------------------------------
def test_evaluate_on_one_class_writes_metrics_without_curves(tiny: dict[str, Path], tmp_path: Path, capsys) -> None:
    data = tmp_path / "photos"
    for j in range(3):
        write_image(data / "a" / f"{j}.png", color=(220, 40, 40), seed=j)
    out = tmp_path / "eval"
    code, _, err = cli(capsys, "evaluate", "--model", tiny["onnx"], "--data", data, "--out", out)
    assert code == 0 and "Traceback" not in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and "ROC curves" not in metrics["figures"] and (out / "report.md").exists()
    assert not (out / "roc_curves.png").exists()


def test_evaluate_on_a_split_of_one_image(tiny: dict[str, Path], tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path / "run", per_class=4)
    (run / "splits.json").write_text(json.dumps({"train": [0, 1], "val": [2], "test": [3]}))
    code, _, err = cli(capsys, "evaluate", "--model", tiny["ckpt"], "--data", run, "--out", tmp_path / "eval")
    assert code == 0 and "Traceback" not in err
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == 1


# --- 9: export never clobbers a shipped model ---------------------------------------------------------------
def test_export_of_a_landmark_checkpoint_writes_nothing(tiny: dict[str, Path], tmp_path: Path, capsys) -> None:
    shipped = tmp_path / "models"
    shipped.mkdir()
    for name in ("asl_fastkan.pt", "asl_fastkan.onnx", "asl_fastkan_int8.onnx", "labels.txt"):
        (shipped / name).write_bytes(f"the shipped {name}".encode())
    before = tree_digest(shipped)
    lm = landmark_checkpoint(tmp_path / "lm.pt", CLASSES)
    user_error(capsys, "export", "--model", lm, "--run", tiny["run"], "--out", shipped, "--no-tflite",
               words=(str(lm), "hand-landmark model", "asl-tinyml landmarks"))
    assert tree_digest(shipped) == before and sorted(p.name for p in shipped.iterdir()) == sorted(before)


def test_a_failing_export_leaves_the_output_folder_as_it_was(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asl_tinyml import export

    shipped = tmp_path / "models"
    shipped.mkdir()
    (shipped / "asl_fastkan.onnx").write_bytes(b"the shipped model")
    before = tree_digest(shipped)

    def broken(*args: object, **kwargs: object) -> None:
        raise UserError("quantization failed")

    monkeypatch.setattr(export, "quantize_onnx", broken)
    with pytest.raises(UserError, match="quantization failed"):
        export.export_all(tiny["ckpt"], shipped, calibration=tiny["run"], tflite=False)
    assert tree_digest(shipped) == before and sorted(p.name for p in shipped.iterdir()) == ["asl_fastkan.onnx"]


# --- 11: serve's port ---------------------------------------------------------------------------------------
def test_serve_on_a_port_in_use_is_one_line(tiny: dict[str, Path], capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        user_error(capsys, "serve", "--model", tiny["onnx"], "--port", port, words=(f"--port {port}", "in use"))


# --- HTTP ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(tiny: dict[str, Path]) -> TestClient:
    with TestClient(create_app(tiny["onnx"])) as c:
        yield c


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        (png_header(20_000, 20_000), 413, "too large"),
        (png_header(7900, 8000), 413, "7900x8000 pixels exceeds 16 megapixels"),  # 61 KB, just under the file cap
        (dds_unknown_format(), 400, "NotImplementedError"),
        (truncated_jpeg(), 400, "not a readable image"),
        (b"GIF89a" + b"\x00" * 40, 400, "not a readable image"),
    ],
    ids=["bomb", "under-the-file-cap", "dds-as-jpg", "truncated", "gif-header"],
)
def test_http_predict_refuses_hostile_images_and_keeps_serving(
    client: TestClient, payload: bytes, status: int, words: str
) -> None:
    r = client.post("/predict", files={"file": ("photo.jpg", payload, "image/jpeg")})
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert client.post("/predict", files={"file": ("ok.jpg", jpeg_bytes(), "image/jpeg")}).status_code == 200


def test_concurrent_decodes_are_bounded(tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from asl_tinyml import serve

    active, peak, lock = [0], [0], threading.Lock()
    real = serve.read_rgb

    def counting(*args: object, **kwargs: object) -> np.ndarray:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            threading.Event().wait(0.05)
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(serve, "read_rgb", counting)
    with TestClient(create_app(tiny["onnx"], settings=ServeSettings(max_decodes=2))) as c:
        threads = [threading.Thread(target=lambda: c.post("/predict", content=jpeg_bytes(), headers={"content-type": "image/jpeg"}))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert 1 <= peak[0] <= 2


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_render_without_a_network(client: TestClient, page: str) -> None:
    html = client.get(page)
    assert html.status_code == 200 and "http://" not in html.text and "https://" not in html.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert any(a.endswith(".js") for a in assets)  # Swagger UI's bundle or ReDoc, served by this app
    for url in assets:
        assert url.startswith("/") and client.get(url).status_code == 200, url


# --- 12: the WebSocket ---------------------------------------------------------------------------------------
def frame_message(**fields: object) -> str:
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes()).decode()
    return json.dumps({"type": "frame", "image": url, **fields}, allow_nan=True)


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        ("[" * 100_000 + "]" * 100_000, "bad_json", "nested too deeply"),
        ('{"type": "frame", "id": ' + "[" * 50_000 + "]" * 50_000 + "}", "bad_json", "nested too deeply"),
        (frame_message(id=float("nan")), "bad_json", "NaN"),
        (frame_message(id=float("inf")), "bad_json", "Infinity"),
        (frame_message().replace('"frame",', '"frame", "id": 1e400,'), "bad_message", "'id'"),
        (frame_message(id="x" * 1000), "bad_message", "'id'"),
        (frame_message(id={"a": 1}), "bad_message", "'id'"),
        ('{"type": "frame", "id": ' + "9" * 5000 + "}", "bad_json", "not JSON"),
        ('{"type": "frame", "image": "data:image/jpeg;base64,' + base64.b64encode(dds_unknown_format()).decode() + '"}',
         "bad_image", "not a readable image"),
        ('{"type": "classes", "classes": ["all"]}', "bad_message", "classes must be one of all"),
        ('{"type": "classes", "classes": {"all": 1}}', "bad_message", "classes must be one of all"),
        ('{"type": "frame", "image": "data:image/jpeg;base64"}', "bad_image", "a data URL needs a comma"),
    ],
    ids=["nested", "nested-id", "nan-id", "inf-id", "overflow-id", "long-id", "object-id", "huge-int", "dds-frame",
         "classes-list", "classes-object", "data-url-without-comma"],
)
def test_websocket_hostile_messages_get_an_error_and_the_socket_stays_usable(
    client: TestClient, message: str, code: str, words: str
) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        reply = websocket_error(ws, message)
        assert reply["code"] == code and words in reply["error"], reply
        ws.send_text(frame_message(id=3))
        ok = ws.receive_json()
        assert ok["type"] == "prediction" and ok["id"] == 3


def test_websocket_closes_with_1011_when_the_server_fails(tiny: dict[str, Path]) -> None:
    from asl_tinyml.inference import load_predictor

    predictor = load_predictor(tiny["onnx"])
    app = create_app(predictor)
    predictor.predict_proba = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))  # type: ignore[method-assign]
    with TestClient(app) as c, c.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_bytes(jpeg_bytes())
        assert ws.receive_json()["code"] == "internal"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1011
        assert c.get("/health").status_code == 200


# --- issue 25: the newer paths ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model file of each kind: motion (.pt and its float .onnx) and hand-landmark, plus a letters .npz."""
    from asl_tinyml.motion import export_motion_onnx

    root = tmp_path_factory.mktemp("kinds")
    motion = motion_checkpoint(root / "asl_motion_letters.pt")
    return {"motion": motion, "motion-onnx": export_motion_onnx(motion, root / "motion.onnx", None)["onnx"],
            "hand-landmark": landmark_checkpoint(root / "lm.pt", CLASSES), "letters": letters_npz(root / "letters.npz")}


KIND_CASES = {  # command -> (the kind of model given, words of the reply: what the file is good for)
    "export": ("motion", "asl-tinyml motion evaluate|predict|export"),
    "compress": ("hand-landmark", "--landmark-model FILE"),
    "compress-motion": ("motion", "asl-tinyml motion"),
    "predict": ("motion", "asl-tinyml motion"),
    "evaluate": ("motion-onnx", "asl-tinyml motion"),
    "predict-landmark": ("motion", "asl-tinyml motion"),
    "motion-export": ("hand-landmark", "--landmark-model FILE"),
    "motion-evaluate": ("pixel", "asl-tinyml predict|evaluate"),
}


@pytest.mark.parametrize("case", sorted(KIND_CASES))
def test_a_model_of_another_kind_is_named_with_the_command_it_belongs_to(
    case: str, kinds: dict[str, Path], tiny: dict[str, Path], tmp_path: Path, capsys
) -> None:
    kind, uses = KIND_CASES[case]
    model = tiny["ckpt"] if kind == "pixel" else kinds[kind]
    out = tmp_path / "out"
    args = {
        "export": ("export", "--model", model, "--run", tiny["run"], "--out", out, "--no-tflite"),
        "compress": ("compress", "--model", model, "--run", tiny["run"], "--out", out),
        "compress-motion": ("compress", "--model", model, "--run", tiny["run"], "--out", out),
        "predict": ("predict", write_image(tmp_path / "a.png"), "--model", model),
        "evaluate": ("evaluate", "--model", model, "--data", tiny["run"], "--out", out),
        "predict-landmark": ("predict", write_image(tmp_path / "a.png"), "--model", tiny["onnx"], "--landmark-model", model),
        "motion-export": ("motion", "export", "--model", model, "--data", kinds["letters"], "--out", out),
        "motion-evaluate": ("motion", "evaluate", "--model", model, "--data", kinds["letters"], "--out", out),
    }[case]
    kind_name = "motion" if kind == "motion-onnx" else kind
    user_error(capsys, *args, words=(str(model), f"is a {kind_name} model", uses))
    assert not out.exists()


BAD_SEQUENCES = {  # name -> (extra or replaced fields of letters_npz, words of the error)
    "object-arrays": ({"session": np.array([{"a": 1}, None, 2, "x"], dtype=object)}, "Python objects"),
    "label-2d": ({"label": np.array([["i"], ["j"], ["i"], ["j"]])}, "field label has shape (4, 1)"),
    "no-windows": ({"x": np.zeros((0, 12, 126), np.float16), "label": np.array([], str),
                    "session": np.array([], str)}, "holds no windows"),
    "strings": ({"x": np.full((4, 12, 126), "a")}, "not numbers"),
    "width": ({"x": np.zeros((4, 12, 99), np.float16)}, "landmark width 99"),
}


@pytest.mark.parametrize("action", ["evaluate", "predict", "train"])
@pytest.mark.parametrize("bad", sorted(BAD_SEQUENCES) + ["not-a-zip"])
def test_a_bad_sequence_file_is_one_line_for_every_motion_action(
    bad: str, action: str, kinds: dict[str, Path], tmp_path: Path, capsys
) -> None:
    path = tmp_path / f"{bad}.npz"
    if bad == "not-a-zip":
        path.write_bytes(b"garbage, not an archive")
        words = "not a readable .npz"
    else:
        fields, words = BAD_SEQUENCES[bad]
        letters_npz(path, **fields)
    model = ("--model", kinds["motion"]) if action != "train" else ("--out", tmp_path / "run", "--no-final")
    user_error(capsys, "motion", action, "--data", path, *model, words=(str(path), words))
    assert not (tmp_path / "run").exists()


def test_sequences_of_object_arrays_for_the_landmark_model_are_one_line(tmp_path: Path, capsys) -> None:
    from asl_tinyml.landmarks import LandmarkCache
    from asl_tinyml.preprocess import Cache

    run = make_run(tmp_path / "run", per_class=4)
    paths = Cache.load(run).paths
    n = len(paths)
    LandmarkCache(np.random.default_rng(0).random((n, 21, 3), np.float32), np.zeros((n, 21, 3), np.float32),
                  np.zeros(n, np.int8), np.ones(n, bool), np.zeros(n, np.int8), paths, [(0.5, 1)], 0.01
                  ).save(run / "landmarks.npz")
    bad = letters_npz(tmp_path / "letters.npz", session=np.array([{"a": 1}, None, 2, "x"], dtype=object))
    user_error(capsys, "landmarks", "--run", run, "--reuse", "--train", "--epochs", "1", "--sequences", bad,
               "--keypoints", "", words=(str(bad), "Python objects"))


def test_motion_evaluate_names_a_garbage_onnx_and_windows_of_no_known_class(
    kinds: dict[str, Path], tmp_path: Path, capsys
) -> None:
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"\x08\x01 not a protobuf" * 10)
    user_error(capsys, "motion", "evaluate", "--data", kinds["letters"], "--model", garbage,
               words=(str(garbage), "not a valid ONNX model"))
    other = letters_npz(tmp_path / "other.npz", labels=("k", "k"))
    user_error(capsys, "motion", "evaluate", "--data", other, "--model", kinds["motion"],
               words=(str(other), "labels: k", "classes: i, j"))


def test_motion_train_refuses_a_held_out_session_the_file_lacks(kinds: dict[str, Path], tmp_path: Path, capsys) -> None:
    user_error(capsys, "motion", "train", "--data", kinds["letters"], "--out", tmp_path / "run", "--no-final",
               "--holdout", "nobody", words=(str(kinds["letters"]), "no session nobody", "alex, cam", "--holdout"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("folder", ["empty", "self-link", "hidden-only"])
def test_predict_on_a_folder_without_files_says_why(folder: str, tiny: dict[str, Path], tmp_path: Path, capsys) -> None:
    path = tmp_path / "photos"
    path.mkdir()
    if folder == "self-link":
        (path / "me").symlink_to(path / "me")
    elif folder == "hidden-only":
        write_image(path / ".thumb.png")
    code, out, err = cli(capsys, "predict", path, "--model", tiny["onnx"])
    assert code == 1 and "Traceback" not in err and err.strip() == "0 classified, 1 failed"
    reason = {"empty": "it is empty", "self-link": "1 link(s) that loop", "hidden-only": "1 hidden"}[folder]
    assert out.strip().startswith(f"{path}  error: no file to classify in this folder") and reason in out, out


def test_preprocess_never_overwrites_a_file_that_is_not_a_hand_cache(source: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("mediapipe", reason="hand crops need the landmarks extra")
    merged = tmp_path / "merged"
    assert main(["merge", str(source), "--out", str(merged)]) == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    user_error(capsys, "preprocess", "--merged", merged, "--out", tmp_path / "run", "--hand-crop", "--hand-cache", notes,
               words=(str(notes), "not a hand cache", "--hand-cache"))
    assert notes.read_text() == "my notes"


def test_rename_dataset_refuses_an_empty_out(source: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    script = Path(__file__).resolve().parents[1] / "rename_dataset.py"
    done = subprocess.run([sys.executable, str(script), str(source), "--out", ""], cwd=work, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: argument --out: must be a path, got ''"), done.stderr
    assert not list(work.iterdir())


# --- offline: ONNX Runtime telemetry ----------------------------------------------------------------------
def test_onnx_runtime_writes_no_telemetry_queue(tiny: dict[str, Path], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "CI")}
    env |= {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / ".cache"), "PYTHONPATH": os.pathsep.join(sys.path)}
    code = "import asl_tinyml.inference as i, sys; i.load_predictor(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(tiny["onnx"])], env=env, check=True, timeout=120)
    assert not [p for p in tmp_path.rglob("*") if "onnxruntime" in str(p).lower() or "Microsoft" in str(p)]


# --- the sweep does not break the good path ---------------------------------------------------------------
def test_merge_preprocess_evaluate_still_work_end_to_end(source: Path, tiny: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert cli(capsys, "merge", source, "--out", tmp_path / "m")[0] == 0
    assert cli(capsys, "preprocess", "--merged", tmp_path / "m", "--out", tmp_path / "r", "--size", SIZE)[0] == 0
    with np.load(tmp_path / "r" / "cache.npz") as cache:
        assert cache["images"].shape == (9, SIZE, SIZE, 3)
