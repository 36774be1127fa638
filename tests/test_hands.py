"""The hand-centred inputs: crop boxes, the detection cache, sequence frames, viewpoint augmentation, answer
restriction and twin-aware scoring, and the shipped predictor that `predict` uses with no --model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asl_tinyml import hands as hands_module
from asl_tinyml.answers import NO_HAND_LABEL, class_mask, restrict_proba, twin_of
from asl_tinyml.cli import main
from asl_tinyml.config import UserError
from asl_tinyml.evaluate import compute_metrics
from asl_tinyml.fusion import load_sign_predictor
from asl_tinyml.hands import NUM_LANDMARKS, HandResult, HandTable, cached_hands, hand_box, hand_crop
from asl_tinyml.landmarks import augment_points, export_landmark_onnx
from asl_tinyml.models import create_model, save_checkpoint

from .tiny_model import CLASSES, OPTIONS, SIZE


def _box_landmarks(left: float, top: float, right: float, bottom: float, longer: int) -> np.ndarray:
    """21 landmarks spread over a pixel box, in units of the image's longer side (as `HandDetector` gives)."""
    xs, ys = np.linspace(left, right, NUM_LANDMARKS), np.linspace(bottom, top, NUM_LANDMARKS)
    return np.stack([xs / longer, ys / longer, np.zeros(NUM_LANDMARKS)], axis=1).astype(np.float32)


def test_hand_crop_is_the_square_around_the_landmarks() -> None:
    image = np.full((100, 200, 3), 255, np.uint8)  # a white 200x100 photo, the "hand" a red block off-centre
    image[30:70, 120:160] = (255, 0, 0)
    lm = _box_landmarks(120, 30, 159, 69, longer=200)
    tight = hand_crop(image, lm, 32, margin=0.0)
    assert (tight[..., 1] < 60).mean() > 0.9  # almost all red: the crop is the block
    loose = hand_crop(image, lm, 32, margin=0.25)
    assert (loose[12:20, 12:20, 1] < 60).all() and (loose[0, :, 1] > 200).all()  # red centre, white border
    centre = hand_crop(image, None, 32)  # no hand: the centre square, where the block is only partly
    assert 0.05 < (centre[..., 1] < 60).mean() < 0.5


def test_hand_box_stays_inside_the_image_and_never_exceeds_its_longer_side() -> None:
    lm = _box_landmarks(0, 0, 10, 10, longer=200)  # a hand in the top-left corner
    left, top, side = hand_box(lm, 200, 100, margin=0.5)
    assert (left, top) == (0.0, 0.0) and side == pytest.approx(20)
    huge = _box_landmarks(0, 0, 199, 99, longer=200)
    left, top, side = hand_box(huge, 200, 100, margin=0.5)
    assert side == 200 and left == 0 and top == pytest.approx(49.5 - 100)  # taller than the image: centred on the hand
    crop = hand_crop(np.zeros((100, 200, 3), np.uint8), huge, 16, margin=0.5)
    assert crop.shape == (16, 16, 3)


def test_the_hand_cache_detects_each_content_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_detect(files, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append([Path(f).name for f in files])
        return [HandResult(True, np.full((NUM_LANDMARKS, 3), i, np.float32), handedness=0, attempt=0) for i, _ in enumerate(files)]

    monkeypatch.setattr(hands_module, "detect_files", fake_detect)
    cache = tmp_path / "hands.npz"
    table = cached_hands(["a.png", "b.png", "c.png"], ["h1", "h2", "h1"], cache)
    assert calls == [["a.png", "b.png"]]  # c.png has a.png's content
    assert table.keys.tolist() == ["h1", "h2", "h1"] and np.array_equal(table.landmarks[0], table.landmarks[2])
    again = cached_hands(["b.png", "d.png"], ["h2", "h3"], cache)
    assert calls[-1] == ["d.png"] and again.found.all()
    assert len(HandTable.load(cache, hands_module.attempts_for())) == 3
    assert len(HandTable.load(cache, [(0.0, 1)])) == 0  # detections made with other settings are not reused
    assert len(HandTable.load(tmp_path / "new.npz", hands_module.attempts_for())) == 0  # none yet: detect all
    (tmp_path / "broken.npz").write_bytes(b"not an npz")  # another file: refused, never overwritten
    with pytest.raises(UserError, match="is not a hand cache"):
        HandTable.load(tmp_path / "broken.npz", hands_module.attempts_for())


def test_answers_restricted_to_letters_or_digits_tell_twins_apart() -> None:
    classes = ["0", "2", "o", "v", "space"]
    proba = np.array([[0.5, 0.1, 0.3, 0.05, 0.05], [0.1, 0.5, 0.1, 0.2, 0.1]], np.float32)
    letters = restrict_proba(proba, class_mask(classes, "letters"))
    assert [classes[i] for i in letters.argmax(1)] == ["o", "v"]
    assert np.allclose(letters.sum(1), 1.0) and (letters[:, :2] == 0).all()
    digits = restrict_proba(proba, class_mask(classes, "digits"))
    assert [classes[i] for i in digits.argmax(1)] == ["0", "2"]
    assert np.array_equal(restrict_proba(proba, class_mask(classes, "all")), proba / proba.sum(1, keepdims=True))
    with pytest.raises(UserError, match="knows no digits"):
        class_mask(["a", "b"], "digits")
    with pytest.raises(UserError, match="--classes must be one of"):
        class_mask(classes, "words")


def test_twin_aware_accuracy_counts_a_handshape_twin_as_right() -> None:
    classes = ["0", "6", "f", "o", "w"]
    assert [classes[i] for i in twin_of(classes)] == ["o", "w", "f", "0", "6"]  # 9 is absent: f has no twin here
    y_true = np.array([0, 3, 1, 2])  # 0, o, 6, f
    y_pred = np.array([3, 3, 4, 3])  # o (twin), o, w (twin), o (wrong)
    m = compute_metrics(y_true, y_pred, None, classes, np.array(["s"] * 4))
    assert m["accuracy"] == 0.25 and m["twin_aware_accuracy"] == 0.75
    assert m["per_source"]["s"]["twin_aware_accuracy"] == 0.75


def test_viewpoint_augmentation_turns_the_hand_without_changing_its_shape() -> None:
    points = torch.randn(64, 21, 3)
    rotated = augment_points(points, torch.Generator().manual_seed(0), degrees=35, roll=20, scale=0.0, noise=0.0)
    dist = torch.cdist(points, points)
    assert torch.allclose(torch.cdist(rotated, rotated), dist, atol=1e-4)  # a rigid turn about the wrist
    assert (rotated - points).abs().max() > 0.1
    stretched = augment_points(points, torch.Generator().manual_seed(0), degrees=0, roll=0, scale=0.15, noise=0.0)
    ratio = stretched / points
    assert ratio.min() >= 0.85 - 1e-5 and ratio.max() <= 1.15 + 1e-5


# --- the shipped predictor ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/ as the pipeline ships it: a pixel model (on hand crops; unsure of everything) and a landmark
    model recording its fusion weight, both ONNX."""
    from asl_tinyml.export import export_onnx

    root = tmp_path_factory.mktemp("shipped")
    torch.manual_seed(0)
    pixel = create_model("convkan", len(CLASSES), **OPTIONS).eval()
    for p in pixel.parameters():  # an unsure model: every class equally likely on every image
        p.data.zero_()
    save_checkpoint(root / "pixel.pt", pixel, {"model": "convkan", "model_options": OPTIONS, "classes": CLASSES,
                                               "image_size": SIZE, "crop": "hand"})
    export_onnx(root / "pixel.pt", root / "models" / "asl_fastkan_int8.onnx")
    options = {"in_features": 50, "hidden": 8, "num_grids": 4}
    landmark = create_model("landmark_fastkan", len(CLASSES), **options).eval()
    save_checkpoint(root / "lm.pt", landmark, {"model": "landmark_fastkan", "model_options": options, "classes": CLASSES,
                                               "image_size": None, "input": "landmarks", "features": {"depth": False}})
    export_landmark_onnx(root / "lm.pt", root / "models" / "asl_landmarks_int8.onnx", fusion_weight=0.8)
    return root / "models"


def test_the_shipped_default_is_the_fused_hand_cropped_predictor(shipped: Path, tmp_path: Path) -> None:
    predictor = load_sign_predictor(models_dir=shipped)
    assert predictor.landmark is not None and predictor.weight == 0.8 and predictor.pixel.crop == "hand"
    alone = load_sign_predictor(shipped / "asl_fastkan_int8.onnx")  # an explicit --model: pixels alone
    assert alone.landmark is None and alone.needs_hands  # it still looks for the hand to crop to
    with pytest.raises(UserError, match="no shipped model in .*asl-tinyml pipeline"):
        load_sign_predictor(models_dir=tmp_path / "empty")


def test_predict_without_a_model_says_no_hand_found_on_a_blank_photo(
    shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("mediapipe")
    Image.new("RGB", (320, 240), (128, 128, 128)).save(tmp_path / "blank.jpg")
    assert main(["predict", str(tmp_path / "blank.jpg"), "--models-dir", str(shipped), "--json"]) == 0
    row = __import__("json").loads(capsys.readouterr().out)
    assert row["hand"] is False and row["label"] == NO_HAND_LABEL and len(row["labels"]) == 3
    assert main(["predict", str(tmp_path / "blank.jpg"), "--models-dir", str(shipped)]) == 0
    assert f"blank.jpg  {NO_HAND_LABEL}  " in capsys.readouterr().out


@pytest.mark.integration
def test_a_real_hand_is_found_cropped_and_fused(shipped: Path, data_root: Path) -> None:
    pytest.importorskip("mediapipe")
    photo = sorted((data_root / "massey_asl" / "b").iterdir())[0]
    predictor = load_sign_predictor(models_dir=shipped)
    result = predictor.predict_files([photo])
    assert result.found.tolist() == [True] and result.errors == [None]
    assert result.crops.shape == (1, SIZE, SIZE, 3) and np.isclose(result.proba.sum(), 1.0, atol=1e-5)
