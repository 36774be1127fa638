"""load_predictor: .pt and .onnx give the same probabilities; bad model files are one-line user errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from asl_tinyml.config import UserError
from asl_tinyml.inference import load_predictor, onnx_metadata
from asl_tinyml.models import create_model, save_checkpoint

CLASSES = ["a", "b", "c", "space"]
SIZE = 16
OPTIONS = {"channels": [4, 8], "hidden": 8}


def make_checkpoint(path: Path, classes: list[str] = CLASSES, size: int = SIZE, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = create_model("convkan", len(classes), **OPTIONS).eval()
    meta = {"model": "convkan", "model_options": OPTIONS, "classes": classes, "image_size": size}
    save_checkpoint(path, model, meta)
    return path


def export_onnx(ckpt: Path, path: Path, metadata: dict[str, str] | None = None, size: int = SIZE) -> Path:
    """What the export stage does, done here with torch's TorchScript-based exporter."""
    from asl_tinyml.models import load_checkpoint

    model, meta = load_checkpoint(ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.rand(2, 3, size, size),), str(path), input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )
    proto = onnx.load(str(path))
    if metadata is None:
        metadata = onnx_metadata(meta["classes"], meta["image_size"], meta["model"])
    onnx.helper.set_model_props(proto, metadata)
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    ckpt = make_checkpoint(root / "best.pt")
    return ckpt, export_onnx(ckpt, root / "model.onnx")


def images(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_torch_predictor_gives_softmax_of_the_model(models: tuple[Path, Path]) -> None:
    from asl_tinyml.models import load_checkpoint

    pred = load_predictor(models[0], threads=1)
    assert (pred.kind, pred.classes, pred.image_size, pred.model_name) == ("torch", CLASSES, SIZE, "convkan")
    x = images(7)
    proba = pred.predict_proba(x)
    assert proba.shape == (7, 4) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)
    model, _ = load_checkpoint(models[0])
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255), dim=1).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    pred.batch_size = 3  # batching must not change the answer (eval mode: BatchNorm uses running stats)
    np.testing.assert_allclose(pred.predict_proba(x), proba, atol=1e-6)
    np.testing.assert_allclose(pred.predict_proba(x[0]), proba[:1], atol=1e-6)  # one HWC image


def test_onnx_predictor_matches_torch(models: tuple[Path, Path]) -> None:
    torch_pred, onnx_pred = load_predictor(models[0]), load_predictor(models[1], threads=1)
    assert (onnx_pred.kind, onnx_pred.classes, onnx_pred.image_size, onnx_pred.model_name) == ("onnx", CLASSES, SIZE, "convkan")
    x = images(300, seed=1)  # more than one internal batch
    np.testing.assert_allclose(onnx_pred.predict_proba(x), torch_pred.predict_proba(x), atol=1e-4)
    assert onnx_pred.predict_proba(x[:0]).shape == (0, 4)


def test_onnx_batches_split_over_cores_give_the_same_answer(models: tuple[Path, Path]) -> None:
    one, three = load_predictor(models[1], threads=1), load_predictor(models[1], threads=3)
    assert (one.workers, three.workers) == (1, 3)
    x = images(301, seed=3)  # 256 + 45: both internal batches are split, unevenly
    expected = one.predict_proba(x)
    np.testing.assert_allclose(three.predict_proba(x), expected, atol=1e-6)  # same images, rows, order
    np.testing.assert_allclose(three.predict_proba(x[:5]), expected[:5], atol=1e-6)  # too few to split: one call
    assert three._pool is not None and len(three._pool._threads) <= 3  # noqa: SLF001


def test_uint8_export_and_older_float_export_agree(models: tuple[Path, Path], tmp_path: Path) -> None:
    from asl_tinyml.export import export_onnx as export_uint8

    new = load_predictor(export_uint8(models[0], tmp_path / "u8.onnx"), threads=1)
    old = load_predictor(models[1], threads=1)
    assert new.uint8_input and not old.uint8_input
    x = images(40, seed=2)
    assert new._prepare(x).dtype == np.uint8 and old._prepare(x).dtype == np.float32  # noqa: SLF001
    np.testing.assert_allclose(new.predict_proba(x), old.predict_proba(x), atol=1e-5)


def test_onnx_metadata_keys_and_values() -> None:
    meta = onnx_metadata(["0", "a", "space"], 64, "convkan", params=123)
    assert meta == {"classes": '["0", "a", "space"]', "image_size": "64", "model": "convkan", "params": "123"}
    assert all(isinstance(v, str) for v in meta.values())


def test_missing_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.pt not found"):
        load_predictor(tmp_path / "nope.pt")


def test_unknown_extension_lists_the_accepted_ones(tmp_path: Path) -> None:
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(UserError, match=r"model\.h5.*\.pt or \.onnx"):
        load_predictor(tmp_path / "model.h5")


@pytest.mark.parametrize("name", ["junk.pt", "junk.onnx"])
def test_garbage_model_file_is_a_user_error(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"this is not a model at all")
    with pytest.raises(UserError, match=name.replace(".", r"\.")):
        load_predictor(tmp_path / name)


def test_onnx_without_metadata_is_a_user_error(models: tuple[Path, Path], tmp_path: Path) -> None:
    path = export_onnx(models[0], tmp_path / "bare.onnx", metadata={})
    with pytest.raises(UserError, match=r"lacks ONNX metadata \['classes', 'image_size'\]"):
        load_predictor(path)


def test_onnx_whose_input_shape_contradicts_metadata_is_a_user_error(models: tuple[Path, Path], tmp_path: Path) -> None:
    path = export_onnx(models[0], tmp_path / "wrong.onnx", metadata=onnx_metadata(CLASSES, 32, "convkan"))
    with pytest.raises(UserError, match=r"not \(N, 3, 32, 32\)"):
        load_predictor(path)


def test_images_of_the_wrong_size_are_a_user_error(models: tuple[Path, Path]) -> None:
    pred = load_predictor(models[0])
    with pytest.raises(UserError, match=r"expects images of shape \(N, 16, 16, 3\)"):
        pred.predict_proba(images(2, size=20))
    with pytest.raises(UserError, match="uint8"):
        pred.predict_proba(images(2).astype(np.float32))
