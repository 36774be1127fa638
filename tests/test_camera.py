"""End to end through the camera: held letters and empty rooms, played as Chromium's fake camera to the live page.

A YUV4MPEG2 video is built at test time from shared images: one photo a letter of Massey signer `hand3` (a
person the test's model never saw), each held a few seconds in the middle of the frame, an empty grey frame
in between, a double letter among them. Chromium plays it as its camera (`--use-file-for-fake-video-capture`,
looping) to `serve`'s page, and the page's spelled text must equal the word exactly, in the `all` and the
`letters` answer set. A loop of empty scenes (grey walls, a real empty room, plain colours) must type nothing
in 30 seconds.

The predictor: the shipped one (the main job's models/ or the set packaged with asl-tinyml) when there is one;
else one built here from Massey signers hand1 and hand2 (hand crops of the word's letters and a few others, a
convkan trained with the empty scenes of `asl_tinyml.negatives`: half of the alphabet source's empty room, the
other half is played to it); about 20 s on two idle cores. No timing is asserted: the video loops, and the test
reads the first play that begins after an empty stretch longer than any gap between letters.

Skipped without Chromium and Playwright (see tests/test_browser.py) or without ../shared/datasets.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, VIDEO_FPS, serve_in_thread, sync_api, write_y4m

from asl_tinyml.config import Config
from asl_tinyml.fusion import PIXEL_INT8, SignPredictor, load_sign_predictor
from asl_tinyml.model_sets import resolve_models
from asl_tinyml.inference import load_predictor
from asl_tinyml.merge import merge
from asl_tinyml.negatives import plain_scenes
from asl_tinyml.preprocess import Cache, preprocess
from asl_tinyml.serve import ServeSettings, create_app
from asl_tinyml.train import train

pytestmark = [
    pytest.mark.slow, pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)"),
]
WORD = "call"  # a double letter; no ASL twin of a digit (o/0, v/2, w/6, f/9), so `all` must spell it too
OTHERS = "beiy13"  # the built model's other classes: letters and digits (so `letters` restricts something)
SIGNER, TRAINERS = "hand3", ("hand1", "hand2")
PER_TRAINER = 25  # photos per class and training signer (all of them: fewer leave `c` near `l`)
FRAME = (320, 240)  # the page sends 320-pixel-wide frames: a larger video only costs decoding
HOLD, GAP, EDGE = 3.0, 1.0, 3.0  # seconds: a letter held, the empty frame between letters, before and after a play
QUIET = 2.2  # seconds without a hand that only come before a play (EDGE), never between letters (GAP)
EMPTY_SECONDS = 30  # the bar: no letter typed over 30 s of empty frames
RECORD = """
window.__replies = 0; window.__plays = []; window.__armed = false;
let lastHand = null;
const NativeSocket = window.WebSocket;
window.WebSocket = class extends NativeSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type !== "prediction") return;
      window.__replies += 1;
      const now = performance.now();
      if (lastHand === null) lastHand = now;
      if (!msg.hand) return;
      // the first hand after QUIET s without one starts a play: the text then holds none of its letters yet
      if (window.__armed && now - lastHand > QUIET_MS) window.__plays.push(msg.text);
      lastHand = now;
    });
  }
};
""".replace("QUIET_MS", str(QUIET * 1000))


def grey(value: int = 128) -> np.ndarray:
    return np.full((FRAME[1], FRAME[0], 3), value, np.uint8)


def centred(photo: Path) -> np.ndarray:
    """A photo scaled to 5/6 of the frame's height in the middle of a black frame (Massey's own background,
    which the hand crop's margin reaches past the photo's edge)."""
    canvas = Image.fromarray(grey(0))
    im = Image.open(photo).convert("RGB")
    im.thumbnail((FRAME[1] * 5 // 6,) * 2)
    canvas.paste(im, ((FRAME[0] - im.width) // 2, (FRAME[1] - im.height) // 2))
    return np.asarray(canvas)


def held(image: np.ndarray, seconds: float) -> list[np.ndarray]:
    return [image] * round(seconds * VIDEO_FPS)


def spelling_video(data_root: Path, word: str = WORD) -> list[np.ndarray]:
    """Each letter of `word` (signer SIGNER's first photo of it) held HOLD s, GAP s of empty frame between,
    EDGE s before and after."""
    frames = held(grey(), EDGE)
    for k, letter in enumerate(word):
        photo = sorted((data_root / "massey_asl" / letter).glob(f"{SIGNER}_*"))[0]
        frames += held(centred(photo), HOLD) + held(grey(), GAP if k < len(word) - 1 else EDGE)
    return frames


def empty_scenes(data_root: Path) -> list[np.ndarray]:
    """Scenes without a hand at the frame's size: grey walls, the empty room the built model never saw (every
    second photo of the alphabet source's `nothing`, from the second on), plain colours and gradients."""
    from PIL import ImageOps

    def fill(image: Image.Image) -> np.ndarray:
        return np.asarray(ImageOps.fit(image.convert("RGB"), FRAME, Image.Resampling.BILINEAR))

    rooms = sorted((data_root / "asl_alphabet_subset" / "nothing").iterdir())[1::2][::8]
    return ([grey(v) for v in (60, 128, 200, 245)] + [fill(Image.open(f)) for f in rooms]
            + [fill(Image.fromarray(p)) for p in plain_scenes(6, 96, seed=7)])


def build_predictor(data_root: Path, root: Path) -> SignPredictor:
    """A predictor trained here: Massey TRAINERS' photos of WORD's letters and OTHERS, hand-cropped, a
    convkan trained with the empty scenes of half the alphabet source's empty room (`negatives`)."""
    source = root / "massey_asl"  # the source's name makes the groups its signers
    for letter in sorted(set(WORD + OTHERS)):
        (source / letter).mkdir(parents=True)
        for signer in TRAINERS:
            photos = sorted((data_root / "massey_asl" / letter).glob(f"{signer}_*"))
            for photo in photos[:: max(1, len(photos) // PER_TRAINER)][:PER_TRAINER]:
                (source / letter / photo.name).symlink_to(photo)
    (source / "nothing").mkdir()
    for photo in sorted((data_root / "asl_alphabet_subset" / "nothing").iterdir())[::2]:
        (source / "nothing" / photo.name).symlink_to(photo)
    merge([source], root / "merged")
    run = root / "run"
    preprocess(root / "merged", run, hand_crop=True, hand_cache=root / "hands.npz")
    every = np.arange(len(Cache.load(run)))
    cfg = Config(epochs=15, batch_size=32, patience=100)
    summary = train(cfg, run, train_index=every, val_index=every, progress=False)
    return SignPredictor(load_predictor(summary["checkpoint"]))


@pytest.fixture(scope="module")
def camera_server(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The live page served with the shipped predictor (`model_sets`: the main job's or the packaged set), else
    one built from Massey signers hand1 and hand2."""
    models = resolve_models()
    if (models.path / PIXEL_INT8).exists():
        predictor = load_sign_predictor(models_dir=models.path)
    else:
        predictor = build_predictor(data_root, tmp_path_factory.mktemp("camera_model"))
    yield from serve_in_thread(create_app(predictor, settings=ServeSettings()))


def open_camera(video: Path, profile: Path) -> Iterator[object]:
    """A page of headless Chromium whose camera plays `video` in a loop, recording the page's predictions."""
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True,
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={video}"],
        )
        try:
            page = context.new_page()
            page.add_init_script(RECORD)
            yield page
        finally:
            context.close()


def text(page: object) -> str:
    return page.text_content("#text") or ""


@pytest.mark.parametrize("answers", ["all", "letters"])
def test_the_camera_spells_held_letters_exactly(camera_server: str, data_root: Path, tmp_path: Path, answers: str) -> None:
    video = write_y4m(spelling_video(data_root), tmp_path / "word.y4m")
    for page in open_camera(video, tmp_path / "profile"):
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(camera_server)
        page.wait_for_selector("#status.ok", timeout=30_000)
        page.select_option("#classes", answers)
        page.evaluate("window.__armed = true")
        page.wait_for_function("window.__plays.length > 0", timeout=120_000)  # a whole play begins
        before = page.evaluate("window.__plays[0]")  # what an earlier, partial play typed (usually nothing)
        # the text grows letter by letter to the word; a wrong letter never goes away (nothing deletes)
        whole = before + WORD
        page.wait_for_function(f"(t => t === {whole!r} || !{whole!r}.startsWith(t))(document.getElementById('text').textContent)",
                               timeout=120_000)
        assert text(page)[len(before):] == WORD, f"the page spelled {text(page)[len(before):]!r} for {WORD!r} ({answers})"
        assert errors == []


def test_thirty_seconds_of_empty_frames_type_nothing(camera_server: str, data_root: Path, tmp_path: Path) -> None:
    scenes = [frame for scene in empty_scenes(data_root) for frame in held(scene, 1.0)]
    video = write_y4m(scenes, tmp_path / "empty.y4m")
    for page in open_camera(video, tmp_path / "profile"):
        page.goto(camera_server)
        page.wait_for_selector("#status.ok", timeout=30_000)
        page.wait_for_function("window.__replies > 0", timeout=60_000)
        start = page.evaluate("window.__replies")
        typed = []
        for _ in range(EMPTY_SECONDS):
            page.wait_for_timeout(1000)
            typed.append(text(page))
        frames = page.evaluate("window.__replies") - start
        assert frames >= EMPTY_SECONDS, f"only {frames} frames answered in {EMPTY_SECONDS} s"
        assert set(typed) == {""}, f"typed {typed[-1]!r} over {EMPTY_SECONDS} s of empty frames ({frames} frames)"
