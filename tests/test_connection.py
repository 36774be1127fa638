"""The WebSocket protocol on its own (`serve.Connection`): one method per message kind, called directly,
without an app or a socket."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

pytest.importorskip("fastapi")

from asl_tinyml import motion as M
from asl_tinyml.serve import BadMessage, Connection, ServeSettings, Service, read_message

from .test_motion import FixedPredictor, j_path, words_window
from .test_serve import build_model, image_bytes


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Service:
    return Service.load(build_model(tmp_path_factory.mktemp("connection"))[1], ServeSettings(max_fps=1000))


def motion_service(service: Service, fps: float = 1000) -> Service:
    """`service` with stand-in letters and words models (no MediaPipe)."""
    models = M.MotionModels(
        FixedPredictor("letters", ["i", "idle", "j", "z"], "j"), FixedPredictor("words", ["hello", "idle", "tea"], "tea"),
        M.LiveConfig(window=16, min_frames=8, stable=2, smooth=1),
    )
    return Service(service.predictor, ServeSettings(max_fps=fps), service.classes, service.masks, service.default_mask,
                   service.decoding, models)


def say(connection: Connection, message: dict[str, Any] | str | bytes) -> dict[str, Any]:
    """The reply to one message: a dict is sent as JSON text, a str as text, bytes as binary."""
    if isinstance(message, bytes):
        return asyncio.run(connection.receive({"type": "websocket.receive", "bytes": message}))
    text = message if isinstance(message, str) else json.dumps(message)
    return asyncio.run(connection.receive({"type": "websocket.receive", "text": text}))


def test_read_message_takes_json_objects_with_a_string_type_only() -> None:
    assert read_message('{"type": "ping", "x": 1}') == {"type": "ping", "x": 1}
    for text, code in (("not json", "bad_json"), ('{"type": NaN}', "bad_json"), ("[" * 100_000, "bad_json"),
                       ("[1]", "bad_message"), ('{"type": 3}', "bad_message"), ("", "bad_json")):
        with pytest.raises(BadMessage) as caught:
            read_message(text)
        assert caught.value.reply["type"] == "error" and caught.value.reply["code"] == code, text


def test_hello_and_the_text_editing_kinds(service: Service) -> None:
    connection = Connection(service)
    hello = connection.hello()
    assert hello["type"] == "hello" and hello["classes"] == service.classes and "motion" not in hello
    assert hello["answer_sets"] == list(service.masks) and hello["text"] == ""
    assert say(connection, {"type": "ping"}) == {"type": "pong"}
    assert say(connection, {"type": "space"})["text"] == " "
    assert say(connection, {"type": "backspace"})["text"] == ""
    connection.speller.text = "ab"
    assert say(connection, {"type": "clear"})["text"] == ""
    reply = say(connection, {"type": "sing"})
    assert reply["code"] == "bad_message" and "ping" in reply["error"] and "landmarks" not in reply["error"]


def test_answer_sets_are_per_connection(service: Service) -> None:
    first, second = Connection(service), Connection(service)
    assert say(first, {"type": "classes", "classes": "letters"}) == {"type": "classes", "classes": "letters"}
    assert first.mask is service.masks["letters"] and second.mask is service.default_mask
    assert say(first, {"type": "classes", "classes": "emoji"})["code"] == "bad_message"


def test_frames_as_bytes_or_data_urls_echo_their_id(service: Service) -> None:
    connection = Connection(service)
    data = image_bytes()
    by_bytes = say(connection, data)
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    by_url = say(connection, {"type": "frame", "image": url, "id": 7})
    assert by_bytes["type"] == by_url["type"] == "prediction" and by_url["id"] == 7 and "id" not in by_bytes
    assert by_bytes["top"] == by_url["top"] and len(by_url["top"]) == 3
    assert say(connection, {"type": "frame"})["code"] == "bad_message"
    assert say(connection, {"type": "frame", "image": url, "id": [1]})["code"] == "bad_message"
    assert say(connection, {"type": "frame", "image": "data:image/jpeg;base64,@@"})["code"] == "bad_image"
    assert say(connection, b"not an image")["code"] == "bad_image"
    assert say(connection, b"x" * (service.settings.max_frame_bytes + 1))["code"] == "too_large"


def test_frames_past_the_rate_are_dropped(service: Service) -> None:
    connection = Connection(motion_service(service, fps=2))
    row = words_window(j_path(1))[0].tolist()
    replies = [say(connection, {"type": "landmarks", "values": row}) for _ in range(3)]
    assert [r["type"] for r in replies] == ["motion", "motion", "error"] and replies[2]["code"] == "rate_limited"


def test_without_motion_models_mode_and_landmarks_are_refused(service: Service) -> None:
    connection = Connection(service)
    assert connection.live is None
    assert say(connection, {"type": "mode", "mode": "words"})["code"] == "no_motion"
    assert say(connection, {"type": "landmarks", "values": [0.0] * 258})["code"] == "no_motion"
    connection.close()  # nothing to release


def test_landmarks_type_j_then_a_word_and_close_releases_the_tracker(service: Service) -> None:
    connection = Connection(motion_service(service))
    assert connection.hello()["motion"]["mode"] == "letters"
    frames = words_window(j_path(30))
    replies = [say(connection, {"type": "landmarks", "values": row.tolist(), "aspect": 0.75}) for row in frames[:12]]
    assert [r["motion"]["commit"] for r in replies].count("j") == 1 and replies[-1]["text"] == "j"
    assert say(connection, {"type": "mode", "mode": "words"})["mode"] == "words"
    for row in frames[:12]:
        last = say(connection, {"type": "landmarks", "values": row.tolist()})
    assert last["text"] == "j tea "
    assert say(connection, {"type": "mode", "mode": "sentences"})["code"] == "bad_message"
    bad = [{"values": [1.0, 2.0]}, {"values": "x"}, {"values": [0.0] * 258, "aspect": 50}]
    assert all(say(connection, {"type": "landmarks", **m})["code"] == "bad_message" for m in bad)

    class Tracker:
        closed = False

        def close(self) -> None:
            self.closed = True

    connection.live.tracker = tracker = Tracker()
    connection.close()
    assert tracker.closed and connection.live.tracker is None

