"""Motion models (`asl_tinyml.motion`): features on synthetic trajectories, any window length, the session
split, export agreement, evaluate on an .npz, and the web app's landmark path fed a synthetic stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from asl_tinyml import motion as M
from asl_tinyml.motion import live as L
from asl_tinyml.config import default_sequences_dir

torch.set_num_threads(1)

FINGERS = {  # first joint index, base (x, y) and direction of each finger, in palm units (right hand, palm to camera)
    "thumb": (1, (0.35, -0.2), (0.8, -0.5)), "index": (5, (0.3, -0.9), (0.1, -1.0)),
    "middle": (9, (0.05, -1.0), (0.0, -1.0)), "ring": (13, (-0.2, -0.95), (-0.05, -1.0)),
    "pinky": (17, (-0.4, -0.85), (-0.15, -1.0)),
}


def hand_points(centre: tuple[float, float] = (0.4, 0.6), palm: float = 0.08, pinky_only: bool = False,
                mirror: bool = False) -> np.ndarray:
    """A plausible right hand (21, 3) in image units: wrist at `centre`, open, or only the pinky up (`i`)."""
    pts = np.zeros((21, 3), np.float32)
    for name, (first, base, direction) in FINGERS.items():
        length = 0.25 if (pinky_only and name not in ("pinky", "thumb")) else 0.35
        d = np.array(direction) / np.linalg.norm(direction)
        for k in range(4):
            xy = np.array(base) + d * length * k
            pts[first + k, :2] = xy
            pts[first + k, 2] = -0.02 * k
    pts[:, :2] *= palm
    if mirror:
        pts[:, 0] *= -1
    pts[:, 0] += centre[0]
    pts[:, 1] += centre[1]
    return pts


def j_path(frames: int, start: tuple[float, float] = (0.4, 0.5), size: float = 0.12) -> np.ndarray:
    """(frames, 2) wrist positions: straight down, then a hook to the signer's left (a `j`)."""
    t = np.linspace(0, 1, frames)
    x = start[0] + size * np.where(t < 0.5, 0.0, 0.6 * (1 - np.cos(np.pi * (t - 0.5))))
    y = start[1] + size * np.where(t < 0.5, 2 * t, 1.0 + 0.4 * np.sin(np.pi * (t - 0.5)))
    return np.stack([x, y], 1)


def letters_window(path: np.ndarray, left_handed: bool = False, pinky_only: bool = True) -> np.ndarray:
    """(T, 126) letters layout: the right hand (or a mirrored left hand) following `path`."""
    rows = []
    for x, y in path:
        hand = hand_points((x, y), pinky_only=pinky_only, mirror=left_handed).ravel()
        empty = np.zeros(63, np.float32)
        rows.append(np.concatenate([hand, empty] if left_handed else [empty, hand]))
    return np.array(rows, np.float32)


def words_window(path: np.ndarray) -> np.ndarray:
    """(T, 258) words layout: a still upper body (shoulders at y 0.7) and the right hand on `path`."""
    pose = np.zeros((33, 4), np.float32)
    for i, xy in {0: (0.5, 0.4), 9: (0.52, 0.47), 10: (0.48, 0.47), 11: (0.62, 0.7), 12: (0.38, 0.7),
                  13: (0.66, 0.9), 14: (0.34, 0.9), 15: (0.6, 1.0), 16: (0.4, 1.0), 19: (0.6, 1.02), 20: (0.4, 1.02)}.items():
        pose[i] = (*xy, -0.1, 1.0)
    rows = [np.concatenate([pose.ravel(), np.zeros(63, np.float32), hand_points((x, y)).ravel()]) for x, y in path]
    return np.array(rows, np.float32)


# --- features ----------------------------------------------------------------------------------------
SEEN = M.frame_width("letters") - 9  # letters: handshape features, then presence, position (2), velocities (6)


def test_rolled_handshape_ignores_a_tilt_of_the_hand() -> None:
    upright = letters_window(np.repeat(j_path(1), 4, axis=0))
    tilted = upright.copy().reshape(4, 2, 21, 3)
    wrist = tilted[:, 1, :1, :2].copy()
    a = np.radians(25)
    rel = tilted[:, 1, :, :2] - wrist
    rel[..., 1] *= M.DEFAULT_ASPECT  # rotate in square units
    rot = rel @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    rot[..., 1] /= M.DEFAULT_ASPECT
    tilted[:, 1, :, :2] = rot + wrist
    f_up, f_tilt = M.sequence_features(np.stack([upright, tilted.reshape(4, -1)]))
    rolled = slice(70, 130)
    assert np.abs(f_up[:, :60] - f_tilt[:, :60]).max() > 0.1  # the plain handshape sees the tilt...
    np.testing.assert_allclose(f_up[:, rolled], f_tilt[:, rolled], atol=1e-4)  # ...the rolled one does not


def test_a_hand_drawing_a_j_moves_and_a_still_hand_does_not() -> None:
    frames = 20
    moving = letters_window(j_path(frames))
    still = letters_window(np.repeat(j_path(frames)[:1], frames, axis=0))
    f_move, f_still = M.sequence_features(np.stack([moving, still]))
    assert f_move.shape == f_still.shape == (frames, M.frame_width("letters"))
    shape = slice(0, SEEN)  # handshape features: the same in every frame, moving or not
    np.testing.assert_allclose(f_move[:, shape], np.repeat(f_move[:1, shape], frames, 0), atol=1e-4)
    np.testing.assert_allclose(f_move[:, shape], f_still[:, shape], atol=1e-4)
    assert (f_move[:, SEEN] == 1).all()  # the hand is seen
    path, velocity = f_move[:, SEEN + 1 : SEEN + 3], f_move[:, SEEN + 3 :]
    assert np.ptp(path[:, 1]) > 1.5  # the j travels more than a palm and a half down (palm units)...
    assert path[-1, 0] > path[0, 0] + 0.3  # ...then hooks sideways
    assert np.abs(velocity[1:]).sum(1).min() > 0 and np.abs(f_still[:, SEEN + 1 :]).max() < 1e-5


def test_features_ignore_where_and_how_big_the_hand_is() -> None:
    base = letters_window(j_path(20))
    shifted = base.copy()
    moved = shifted.reshape(20, 2, 21, 3)
    moved[:, 1, :, :2] = (moved[:, 1, :, :2] - 0.4) * 0.6 + 0.55  # smaller, elsewhere in the frame
    moved[:, 1, :, 2] *= 0.6  # (MediaPipe's hand depth is on the scale of x)
    np.testing.assert_allclose(M.sequence_features(base), M.sequence_features(shifted), atol=2e-4)


def test_a_left_handed_signer_reads_like_a_right_handed_one() -> None:
    path = j_path(20)
    mirrored_path = np.stack([1.0 - path[:, 0], path[:, 1]], 1)
    right = M.sequence_features(letters_window(path))
    left = M.sequence_features(letters_window(mirrored_path, left_handed=True))
    np.testing.assert_allclose(left, right, atol=2e-4)


def test_missing_frames_are_zeros_with_a_flag_and_no_velocity_jump() -> None:
    window = letters_window(j_path(20))
    window[5:8] = 0.0  # the hand was not detected
    f = M.sequence_features(window)[0]
    assert (f[5:8] == 0).all() and (f[4, SEEN] == 1) and (f[8, SEEN] == 1)
    assert (f[8, SEEN + 3 :] == 0).all()  # no velocity across the gap


def test_words_features_are_relative_to_the_shoulders() -> None:
    window = words_window(j_path(20))
    shifted = window.copy().reshape(20, -1)
    pose = shifted[:, :132].reshape(20, 33, 4)
    pose[..., 0] += 0.1
    hand = shifted[:, 195:].reshape(20, 21, 3)
    hand[..., 0] += 0.1
    a, b = M.sequence_features(np.stack([window, shifted]))
    assert a.shape == (20, M.frame_width("words"))
    np.testing.assert_allclose(a, b, atol=2e-4)


@pytest.mark.parametrize("frames", [2, 15, 20, 30, 45])
def test_the_model_reads_any_window_length(frames: int) -> None:
    for kind, classes in (("letters", 28), ("words", 16)):
        model = M.make_model(kind, classes).eval()
        x = torch.randn(3, frames, M.frame_width(kind))
        with torch.no_grad():
            assert model(x).shape == (3, classes)


def test_augmentation_makes_windows_of_the_asked_length_and_keeps_missing_parts_missing() -> None:
    rng = np.random.default_rng(0)
    windows = np.stack([words_window(j_path(20)) for _ in range(8)])
    windows[:, :, 132:195] = 0.0  # no left hand anywhere
    for frames in (15, 45):
        parts, aspect = M.augment_parts(M.split_parts(windows), frames, rng)
        assert parts.left.shape[:2] == (8, frames) and parts.pose.shape[:2] == (8, frames) and aspect.shape == (8,)
        # the right hand may be mirrored into the left slot, never invented where nothing was seen
        assert (M._present(parts.left) & M._present(parts.right)).sum() == 0
        assert np.isfinite(M.sequence_features(parts, aspect)).all()


def test_time_indices_crop_stretch_and_stay_in_range() -> None:
    idx = M.time_indices(200, 20, 37, np.random.default_rng(1), M.Augment())
    assert idx.shape == (200, 37) and idx.min() >= 0 and idx.max() <= 19
    assert (np.diff(idx, axis=1) >= 0).all()  # time never runs backwards


# --- session split -----------------------------------------------------------------------------------
def test_a_held_out_session_never_leaks_into_training() -> None:
    sessions = np.array(["alex", "cam", "danial", "cam", "danial", "alex", "cam"] * 5)
    for held in ("danial", "cam"):
        train, test = M.holdout_split(sessions, held)
        assert set(sessions[test]) == {held} and held not in set(sessions[train])
        assert len(train) + len(test) == len(sessions) and not set(train) & set(test)
    with pytest.raises(Exception, match="no window of session"):
        M.holdout_split(sessions, "nobody")


def synthetic_set(path: Path, n_per: int = 6, frames: int = 20, extra_label: str | None = None) -> Path:
    """A letters .npz: `j` (a hand drawing a j) against `i` (the same hand still), two sessions."""
    rng = np.random.default_rng(0)
    x, labels, sessions = [], [], []
    for session in ("cam", "danial"):
        for k in range(n_per):
            start = (0.35 + 0.1 * rng.random(), 0.4 + 0.1 * rng.random())
            wrist = j_path(frames, start)
            x += [letters_window(wrist), letters_window(np.repeat(wrist[:1], frames, 0))]
            labels += ["j", "i"]
            sessions += [session, session]
    if extra_label:
        x.append(letters_window(j_path(frames)))
        labels.append(extra_label)
        sessions.append("cam")
    np.savez(path, x=np.array(x, np.float16), label=np.array(labels), session=np.array(sessions))
    return path


def test_training_records_folds_without_leakage_and_learns_j_from_motion(tmp_path: Path) -> None:
    data = synthetic_set(tmp_path / "letters.npz")
    m = M.train_motion(data, tmp_path / "out", None, epochs=40, batch_size=8, final=False, progress=False)
    assert [f["held_out"] for f in m["folds"]] == ["danial", "cam"]
    for fold in m["folds"]:
        assert fold["n_train"] + fold["n_test"] == m["n"]
    assert m["holdout_mean_accuracy"] >= 0.9  # motion alone separates j from i here (seeds 0-2: always 1.0)
    assert (tmp_path / "out" / "letters" / "confusion_danial.png").exists()


# --- export and evaluate -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A letters model trained briefly on the synthetic set and exported (float and int8 ONNX)."""
    root = tmp_path_factory.mktemp("motion")
    data = synthetic_set(root / "letters.npz")
    m = M.train_motion(data, root / "run", root / "models", holdouts=(), epochs=6, progress=False)
    return {"data": data, "models": root / "models", "metrics": m}


def test_export_agrees_with_pytorch_and_is_small(shipped: dict[str, Path]) -> None:
    export = shipped["metrics"]["export"]
    assert export["checks"]["onnx"]["argmax_agreement"] == 1.0 and export["checks"]["onnx"]["max_abs_diff"] < 1e-4
    assert export["checks"]["onnx_int8"]["argmax_agreement"] >= 0.9  # seeds 0-2: always 1.0 (seed_margins.py)
    assert export["bytes"]["onnx_int8"] <= 64 * 1024
    assert Path(export["paths"]["onnx_int8"]).name == "asl_motion_letters_int8.onnx"
    predictor = M.MotionPredictor(export["paths"]["onnx_int8"])
    assert predictor.rule == M.thresholds("letters")  # the file carries its decision thresholds
    for frames in (15, 30, 45):  # the ONNX graph reads any window length too
        window = letters_window(j_path(frames))
        assert predictor.predict_proba(window).shape == (1, 2)


def test_evaluate_picks_the_model_by_width_and_skips_unknown_labels(shipped: dict[str, Path], tmp_path: Path) -> None:
    data = synthetic_set(tmp_path / "other.npz", n_per=2, frames=30, extra_label="k")
    m = M.evaluate_motion(data, None, tmp_path / "eval", shipped["models"])
    assert m["model"].endswith("asl_motion_letters_int8.onnx") and m["frames"] == 30
    assert m["skipped"] == {"k": 1} and m["n"] == 8
    assert {"accuracy", "macro_f1", "per_class", "confusion"} <= set(m)
    assert set(m["per_class"]["j"]) == {"precision", "recall", "f1", "support"}
    assert m["strays"]["static"] == 5 and 0.0 <= m["strays"]["rate"] <= 1.0  # the `i` and `k` recordings as j or z
    assert Path(m["figures"][0]).exists()


def test_cli_motion_evaluate_json(shipped: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from asl_tinyml.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["motion", "evaluate", "--data", str(shipped["data"]), "--models-dir", str(shipped["models"]), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 24 and 0 <= out["accuracy"] <= 1
    words = tmp_path / "words.npz"
    np.savez(words, x=np.zeros((2, 20, 258), np.float16), label=np.array(["hello", "idle"]))
    assert main(["motion", "evaluate", "--data", str(words), "--models-dir", str(shipped["models"])]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((2, 20, 99), np.float16), label=np.array(["a", "b"]))
    assert main(["motion", "evaluate", "--data", str(bad)]) == 2
    assert "landmark width 99" in capsys.readouterr().err


# --- live --------------------------------------------------------------------------------------------
class FixedPredictor:
    """A stand-in motion model that always says `label` (or, on frames without a hand, idle)."""

    def __init__(self, kind: str, classes: list[str], label: str) -> None:
        self.kind, self.classes, self.label = kind, classes, label
        self.rule = {"idle_below": 0.0, "motion_below": 0.0}
        self.width = M.LETTERS_WIDTH if kind == "letters" else M.WORDS_WIDTH
        self.windows: list[int] = []

    def predict_proba(self, windows: np.ndarray, aspect: float = M.DEFAULT_ASPECT) -> np.ndarray:
        assert windows.shape[-1] == self.width
        self.windows.append(windows.shape[1])
        p = np.zeros((len(windows), len(self.classes)), np.float32)
        seen = np.abs(windows[:, -1, -126:]).sum() > 0
        p[:, self.classes.index(self.label if seen else "idle")] = 1.0
        return p


def test_the_stream_keeps_a_rolling_window_and_commits_once_per_sign() -> None:
    letters = FixedPredictor("letters", ["i", "idle", "j"], "j")
    stream = M.MotionStream(letters, None, M.LiveConfig(window=20, min_frames=10, stable=3, smooth=1))
    row = words_window(j_path(1))[0]
    commits = [stream.push(row)["commit"] for _ in range(40)]
    assert commits.count("j") == 1  # held: typed once
    assert max(letters.windows) <= 20 and min(letters.windows) >= 10
    for _ in range(3):
        stream.push(np.zeros(258, np.float32))  # the hand drops: the next j may be typed again
    assert [stream.push(row)["commit"] for _ in range(20)].count("j") == 1


def test_only_j_and_z_are_typed_from_the_letters_model() -> None:
    stream = M.MotionStream(FixedPredictor("letters", ["a", "idle", "j"], "a"), None,
                            M.LiveConfig(min_frames=2, stable=1, smooth=1))
    row = words_window(j_path(1))[0]
    assert all(stream.push(row)["commit"] is None for _ in range(10))


@pytest.fixture
def motion_app(tmp_path: Path):
    from asl_tinyml.serve import ServeSettings, create_app
    from tests.test_serve import build_model  # the tiny pixel model of the serve tests

    trackers: list[object] = []

    class FakeTracker:
        """Stands in for MediaPipe: every camera frame shows the right hand on a j path."""

        def __init__(self) -> None:
            self.closed, self.n = False, 0
            trackers.append(self)

        def process(self, rgb: np.ndarray) -> np.ndarray:
            self.n += 1
            return words_window(j_path(30))[self.n % 30]

        def close(self) -> None:
            self.closed = True

    models = M.MotionModels(
        FixedPredictor("letters", ["i", "idle", "j", "z"], "j"), FixedPredictor("words", ["hello", "idle", "tea"], "tea"),
        M.LiveConfig(window=16, min_frames=8, stable=2, smooth=1), tracker_factory=FakeTracker,
    )
    app = create_app(build_model(tmp_path)[1], settings=ServeSettings(max_fps=1000), motion=models)
    return app, trackers


def test_websocket_landmark_stream_types_j_and_words(motion_app) -> None:
    from fastapi.testclient import TestClient

    app, _ = motion_app
    frames = words_window(j_path(30))
    with TestClient(app) as c, c.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        assert hello["motion"]["modes"] == ["letters", "words"] and hello["motion"]["mode"] == "letters"
        replies = []
        for row in frames[:12]:
            ws.send_json({"type": "landmarks", "values": row.tolist(), "aspect": 0.75})
            replies.append(ws.receive_json())
        assert all(r["type"] == "motion" for r in replies)
        assert replies[0]["motion"]["top"] == [] and replies[8]["motion"]["top"][0]["label"] == "j"
        assert [r["motion"]["commit"] for r in replies].count("j") == 1 and replies[-1]["text"] == "j"
        ws.send_json({"type": "mode", "mode": "words"})
        assert ws.receive_json()["mode"] == "words"
        for row in frames[:12]:
            ws.send_json({"type": "landmarks", "values": row.tolist()})
            last = ws.receive_json()
        assert last["text"] == "j tea "
        ws.send_json({"type": "landmarks", "values": [1.0, 2.0]})
        assert ws.receive_json()["code"] == "bad_message"
        ws.send_json({"type": "mode", "mode": "sentences"})
        assert ws.receive_json()["code"] == "bad_message"


def test_camera_frames_go_through_one_tracker_per_connection_closed_on_disconnect(motion_app) -> None:
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    app, trackers = motion_app
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (120, 90, 60)).save(buf, "JPEG")
    with TestClient(app) as c:
        with c.websocket_connect("/ws") as ws:
            ws.receive_json()
            for _ in range(10):
                ws.send_bytes(buf.getvalue())
                reply = ws.receive_json()
            assert reply["type"] == "prediction" and len(reply["top"]) == 3
            assert "mediapipe_ms" in reply["motion"] and reply["motion"]["hand"]
            assert reply["text"] == "j"  # the tracker's j path, typed once (the window starts afresh after it)
        assert len(trackers) == 1 and trackers[0].n == 10
        assert trackers[0].closed


def test_without_motion_models_landmark_messages_get_a_clear_error(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from asl_tinyml.serve import create_app
    from tests.test_serve import build_model

    with TestClient(create_app(build_model(tmp_path)[1])) as c, c.websocket_connect("/ws") as ws:
        assert "motion" not in ws.receive_json()
        ws.send_json({"type": "landmarks", "values": [0.0] * 258})
        assert ws.receive_json()["code"] == "no_motion"


@pytest.mark.slow
def test_holistic_tracker_on_a_frame_without_a_person() -> None:
    pytest.importorskip("mediapipe")
    with M.HolisticTracker() as tracker:
        row = tracker.process(np.zeros((240, 320, 3), np.uint8))
    assert row.shape == (258,) and not row.any()


# --- real data ---------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow
def test_real_sequences_slice_trains_exports_and_evaluates(tmp_path: Path) -> None:
    folder = default_sequences_dir()
    if folder is None or not (folder / "letters.npz").exists():
        pytest.skip("no ../shared/sequences/sign_sequences (or $ASL_TINYML_SEQUENCES)")
    for name in ("letters", "words"):
        m = M.train_motion(folder / f"{name}.npz", tmp_path / "run", tmp_path / "models", epochs=2, limit=4,
                           progress=False)
        assert [f["held_out"] for f in m["folds"]] == ["danial", "cam"]
        assert m["export"]["bytes"]["onnx_int8"] <= 64 * 1024
        assert m["export"]["checks"]["onnx"]["argmax_agreement"] == 1.0
        assert (tmp_path / "models" / f"asl_motion_{name}_int8.onnx").exists()
    raw = M.load_sequences(folder / "letters.npz")
    rows = np.flatnonzero(np.isin(raw.labels, ["j", "z", "a"]))[::10]
    sliced = tmp_path / "slice.npz"
    np.savez(sliced, x=raw.x[rows][:, np.r_[0:20, 19:9:-1]], label=raw.labels[rows])  # 30-frame windows
    m = M.evaluate_motion(sliced, None, tmp_path / "eval", tmp_path / "models")
    assert m["frames"] == 30 and m["n"] == len(rows)


def test_holistic_results_become_rows_in_the_shared_layout() -> None:
    from types import SimpleNamespace as NS

    def points(n: int, base: float, visibility: bool = False) -> NS:
        return NS(landmark=[NS(x=base + i, y=base + i + 0.5, z=-1.0, **({"visibility": 0.9} if visibility else {}))
                            for i in range(n)])

    row = M.holistic_row(NS(pose_landmarks=points(33, 0.0, True), left_hand_landmarks=None,
                            right_hand_landmarks=points(21, 100.0)))
    assert row.shape == (258,)
    assert row[:4].tolist() == [0.0, 0.5, -1.0, pytest.approx(0.9)]
    assert not row[132:195].any()  # no left hand: zeros, as in the recordings
    assert row[195:198].tolist() == [100.0, 100.5, -1.0]
    assert M.holistic_row(NS(pose_landmarks=None, left_hand_landmarks=None, right_hand_landmarks=None)).sum() == 0


def test_transplant_keeps_the_path_and_takes_the_donors_handshape() -> None:
    from asl_tinyml.hands import canonical_points

    target = M.split_parts(letters_window(j_path(20), pinky_only=False)[None])
    donor = M.split_parts(letters_window(np.repeat([[0.7, 0.3]], 20, axis=0), pinky_only=True)[None]).right
    for keep_turn in (False, True):
        parts = target.copy()
        M.transplant_motion(parts, np.array([0]), donor, np.random.default_rng(0), keep_turn)
        np.testing.assert_allclose(parts.right[0, :, 0], target.right[0, :, 0], atol=1e-6)  # the same wrist path
        np.testing.assert_allclose(canonical_points(parts.right[0], 0), canonical_points(donor[0], 0), atol=1e-4)


def test_a_window_no_sign_wins_outright_counts_as_idle_when_asked() -> None:
    classes = ["hello", "idle", "tea"]
    proba = np.array([[0.45, 0.15, 0.40], [0.8, 0.1, 0.1], [0.3, 0.2, 0.5]])
    assert M.decide(proba, classes).tolist() == [0, 0, 2]
    assert M.decide(proba, classes, idle_below=0.5).tolist() == [1, 0, 2]
    assert M.decide(proba, ["hello", "tea", "x"], idle_below=0.5).tolist() == [0, 0, 2]  # no idle class: unchanged
    m = M.score(np.array(["idle", "hello", "tea"]), proba, classes, idle_below=0.5)
    assert m["accuracy"] == 1.0


# --- only a hand in view: the hand detector stands in for Holistic ----------------------------------------
def detected(centre: tuple[float, float], width: int = 320, height: int = 240, handedness: int | None = None) -> object:
    """MediaPipe Hands' answer on a `width` x `height` camera frame for the person's right hand (`i` shape) with
    its wrist at `centre` (image units): landmarks in units of the longer side, labelled as on a mirrored image."""
    from asl_tinyml.hands import LEFT, HandResult

    pts = hand_points(centre, pinky_only=True) * np.array([width, height, width], np.float32) / max(width, height)
    return HandResult(True, pts, handedness=LEFT if handedness is None else handedness)


class NoBody:
    """Holistic with nobody in the frame: no pose, and so no hands either."""

    def process(self, rgb: np.ndarray) -> np.ndarray:
        return np.zeros(258, np.float32)

    def close(self) -> None:
        pass


def test_the_detectors_hand_is_put_in_image_units_in_the_persons_own_slot() -> None:
    from asl_tinyml.hands import RIGHT

    row = L.detector_row(detected((0.4, 0.6)), 320, 240)
    assert row.shape == (258,) and not row[:195].any()  # no pose, no left hand
    assert np.allclose(row[195:].reshape(21, 3), hand_points((0.4, 0.6), pinky_only=True), atol=1e-6)
    left = L.detector_row(detected((0.4, 0.6), handedness=RIGHT), 320, 240)  # Hands' "Right": the left hand
    assert left[132:195].any() and not left[195:].any()
    assert not L.detector_row(detected((0.4, 0.6)).__class__(False), 320, 240).any()


def test_with_no_body_in_view_letters_read_the_detectors_hand_and_words_say_why() -> None:
    models = M.MotionModels(
        FixedPredictor("letters", ["i", "idle", "j", "z"], "j"), FixedPredictor("words", ["hello", "idle", "tea"], "tea"),
        M.LiveConfig(window=16, min_frames=8, stable=2, smooth=1), tracker_factory=NoBody,
    )
    session = M.LiveSession(models)
    frame = np.zeros((240, 320, 3), np.uint8)
    outs = [session.image(frame, detected(tuple(xy))) for xy in j_path(12)]
    assert all(o["hand"] and o["hand_source"] == L.DETECTOR for o in outs)
    assert [o["commit"] for o in outs].count("j") == 1
    nothing = session.image(frame, detected((0.4, 0.6)).__class__(False))
    assert not nothing["hand"] and nothing["hand_source"] is None and nothing["note"] is None
    session.set_mode("words")
    words = [session.image(frame, detected(tuple(xy))) for xy in j_path(12)]
    assert not any(o["hand"] or o["commit"] for o in words) and words[-1]["note"] == L.NO_BODY_FOR_WORDS


def test_camera_frames_with_only_a_hand_in_view_type_j(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the WebSocket: Holistic sees no body, the static path's hand detector sees the hand drawing a
    j, and the letters motion model types it; the reply says where the hand came from."""
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from asl_tinyml.fusion import SignPredictor
    from asl_tinyml.serve import ServeSettings, create_app
    from tests.test_serve import build_model

    path = iter(j_path(30))

    def predict_hand(self: SignPredictor, image: np.ndarray) -> tuple[np.ndarray, object]:
        probs = np.full(len(self.classes), 1.0 / len(self.classes), np.float32)
        return probs, detected(tuple(next(path)), image.shape[1], image.shape[0])

    monkeypatch.setattr(SignPredictor, "predict_hand", predict_hand)
    models = M.MotionModels(FixedPredictor("letters", ["i", "idle", "j", "z"], "j"), None,
                            M.LiveConfig(window=16, min_frames=8, stable=2, smooth=1), tracker_factory=NoBody)
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (120, 90, 60)).save(buf, "JPEG")
    app = create_app(build_model(tmp_path)[1], settings=ServeSettings(max_fps=1000), motion=models)
    with TestClient(app) as c, c.websocket_connect("/ws") as ws:
        ws.receive_json()
        replies = []
        for _ in range(12):
            ws.send_bytes(buf.getvalue())
            replies.append(ws.receive_json())
    assert all(r["motion"]["hand"] and r["motion"]["hand_source"] == "hand detector" for r in replies)
    assert replies[-1]["text"] == "j"
