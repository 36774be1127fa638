"""Speller: sequences of fake per-frame predictions -> the expected typed text."""

from __future__ import annotations

import numpy as np
import pytest

from asl_tinyml.spelling import Speller, SpellingConfig, apply_label, spell

CLASSES = ["0", "1", "a", "b", "h", "i", "l", "o", "space", "del", "nothing"]
FAST = SpellingConfig(window=1, threshold=0.6, stable_frames=3, release_frames=2)


def frame(label: str | None, prob: float = 0.9) -> np.ndarray | None:
    """One frame's probabilities: `prob` on `label`, the rest spread evenly (None: no hand)."""
    if label is None:
        return None
    p = np.full(len(CLASSES), (1 - prob) / (len(CLASSES) - 1))
    p[CLASSES.index(label)] = prob
    return p


def hold(label: str | None, n: int, prob: float = 0.9) -> list[np.ndarray | None]:
    return [frame(label, prob) for _ in range(n)]


def test_a_sign_held_long_enough_is_committed_once() -> None:
    assert spell(CLASSES, hold("h", 3), FAST) == "h"
    assert spell(CLASSES, hold("h", 2), FAST) == ""  # one frame short
    assert spell(CLASSES, hold("h", 30), FAST) == "h"  # holding on does not repeat it


def test_a_word_from_distinct_letters() -> None:
    frames = hold("h", 4) + hold("i", 4)
    assert spell(CLASSES, frames, FAST) == "hi"


def test_a_repeated_letter_needs_a_gap_between() -> None:
    held = hold("h", 3) + hold("o", 3) + hold("l", 6) + hold("l", 6) + hold("o", 3)
    assert spell(CLASSES, held, FAST) == "holo"  # the second l was never released: no gap
    gap_no_hand = hold("l", 3) + hold(None, 2) + hold("l", 3)
    assert spell(CLASSES, gap_no_hand, FAST) == "ll"
    gap_low_conf = hold("l", 3) + hold("l", 2, prob=0.3) + hold("l", 3)
    assert spell(CLASSES, gap_low_conf, FAST) == "ll"
    gap_nothing = hold("l", 3) + hold("nothing", 2, prob=0.99) + hold("l", 3)
    assert spell(CLASSES, gap_nothing, FAST) == "ll"


def test_a_gap_shorter_than_release_frames_does_not_allow_a_repeat() -> None:
    frames = hold("l", 3) + hold(None, 1) + hold("l", 3)
    assert spell(CLASSES, frames, FAST) == "l"


def test_a_different_committed_label_releases_the_previous_one() -> None:
    frames = hold("a", 3) + hold("b", 3) + hold("a", 3)
    assert spell(CLASSES, frames, FAST) == "aba"


def test_space_and_delete_labels() -> None:
    frames = hold("h", 3) + hold("i", 3) + hold("space", 3) + hold("o", 3) + hold("del", 3) + hold("a", 3)
    assert spell(CLASSES, frames, FAST) == "hi a"
    # del needs a release to delete twice, like any repeated label
    twice = hold("a", 3) + hold("b", 3) + hold("del", 3) + hold(None, 2) + hold("del", 3)
    assert spell(CLASSES, twice, FAST) == ""
    assert spell(CLASSES, hold("del", 5), FAST) == ""  # deleting from empty text is harmless


def test_digits_are_typed_as_characters() -> None:
    assert spell(CLASSES, hold("1", 3) + hold("0", 3), FAST) == "10"


def test_below_threshold_never_commits() -> None:
    assert spell(CLASSES, hold("a", 50, prob=0.55), FAST) == ""
    assert spell(CLASSES, hold("a", 3, prob=0.6), FAST) == "a"  # the threshold is inclusive


def test_interrupted_hold_restarts_the_count() -> None:
    frames = hold("a", 2) + hold("b", 1) + hold("a", 2)
    assert spell(CLASSES, frames, FAST) == ""
    assert spell(CLASSES, frames + hold("a", 1), FAST) == "a"


def test_smoothing_suppresses_a_single_flicker() -> None:
    cfg = SpellingConfig(window=3, threshold=0.5, stable_frames=5, release_frames=2)
    frames = hold("a", 3) + [frame("b", 0.95)] + hold("a", 3)  # one misread frame in the middle
    assert spell(CLASSES, frames, cfg) == "a"
    unsmoothed = SpellingConfig(window=1, threshold=0.5, stable_frames=5, release_frames=2)
    assert spell(CLASSES, frames, unsmoothed) == ""


def test_state_reports_candidate_progress_and_commit() -> None:
    sp = Speller(CLASSES, FAST)
    s1 = sp.update(frame("h"))
    assert (s1.label, s1.candidate, s1.committed, s1.text) == ("h", "h", None, "")
    assert s1.progress == pytest.approx(1 / 3) and s1.prob == pytest.approx(0.9)
    sp.update(frame("h"))
    s3 = sp.update(frame("h"))
    assert (s3.committed, s3.text, s3.held, s3.progress) == ("h", "h", "h", 1.0)
    s4 = sp.update(frame("h"))
    assert s4.committed is None and s4.text == "h"
    gap = sp.update(None)
    assert (gap.label, gap.candidate, gap.progress) == (None, None, 0.0)
    d = s3.to_dict()
    assert d["text"] == "h" and d["committed"] == "h" and set(d) >= {"label", "prob", "progress", "held"}


def test_clear_and_manual_edits() -> None:
    sp = Speller(CLASSES, FAST)
    for p in hold("a", 3):
        sp.update(p)
    assert sp.edit("space").text == "a "
    assert sp.edit("b").text == "a b"
    assert sp.edit("del").text == "a "
    assert sp.clear().text == "" and sp.state.held is None
    for p in hold("a", 3):  # after a clear the same sign can be typed again at once
        sp.update(p)
    assert sp.text == "a"


def test_text_is_capped_at_max_length() -> None:
    cfg = SpellingConfig(window=1, threshold=0.5, stable_frames=1, release_frames=1, max_length=3)
    frames = [f for label in "abab" for f in (frame(label), None)]
    assert spell(CLASSES, frames, cfg) == "bab"


def test_apply_label_without_a_del_class() -> None:
    cfg = SpellingConfig()
    assert apply_label("ab", "space", cfg) == "ab "
    assert apply_label("ab", "del", cfg) == "a"
    assert apply_label("ab", "nothing", cfg) == "ab"
    assert spell(["a", "b", "space"], [[0.9, 0.05, 0.05]] * 8, cfg) == "a"


def test_bad_frames_and_configs_are_rejected() -> None:
    sp = Speller(CLASSES, FAST)
    with pytest.raises(ValueError, match="expected 11 probabilities"):
        sp.update([0.5, 0.5])
    with pytest.raises(ValueError, match="stable_frames must be at least 1"):
        SpellingConfig(stable_frames=0)
    with pytest.raises(ValueError, match="threshold must be in"):
        SpellingConfig(threshold=1.5)
    with pytest.raises(ValueError, match="at least one class"):
        Speller([])


def replay(word: str, fps: float, hold: float = 2.5, gap: float = 1.0, miss_every: int = 0) -> list[np.ndarray | None]:
    """The frames the page sends for `word` signed at `fps`: each letter held `hold` seconds, no hand for `gap`
    seconds between (None); with `miss_every`, every such frame of a hold misses its detection."""
    frames: list[np.ndarray | None] = [None] * round(gap * fps)
    for letter in word:
        held = [frame(letter) for _ in range(round(hold * fps))]
        if miss_every:
            held = [None if (k + 1) % miss_every == 0 else f for k, f in enumerate(held)]
        frames += held + [None] * round(gap * fps)
    return frames


@pytest.mark.parametrize("fps", [4, 6, 8, 10, 12, 15])
def test_a_double_letter_is_typed_twice_at_the_pages_frame_rates(fps: int) -> None:
    """The page sends 4-15 frames a second, fewer on a busy server: a hand dropped for a second between two
    holds of the same letter types it twice, with the default knobs."""
    assert spell(CLASSES, replay("hallo", fps)) == "hallo"
    if fps >= 6:  # a shorter drop: at least release_frames frames without a hand
        assert spell(CLASSES, replay("hallo", fps, gap=0.6)) == "hallo"


@pytest.mark.parametrize("fps", [8, 12])
def test_missed_detections_within_a_hold_type_nothing_twice_and_block_nothing(fps: int) -> None:
    """A detection missed every fourth frame neither restarts a held sign's count nor releases it."""
    assert spell(CLASSES, replay("hallo", fps, miss_every=4)) == "hallo"
    two_missed = hold("l", 5) + [None, None] + hold("l", 10)
    assert spell(CLASSES, two_missed) == "l"  # 2 < release_frames: the same hold, typed once


def test_a_frame_without_a_hand_pauses_the_count_and_a_gap_clears_the_average() -> None:
    cfg = SpellingConfig(window=4, threshold=0.6, stable_frames=4, release_frames=3)
    assert spell(CLASSES, hold("a", 2) + [None] + hold("a", 2), cfg) == "a"  # 2 + 2 steady frames
    # after a gap the average holds no trace of the letter before: the next letter is steady at once
    sp = Speller(CLASSES, cfg)
    for p in hold("a", 4) + [None] * 3:
        sp.update(p)
    state = sp.update(frame("b"))
    assert (state.label, state.candidate, state.prob) == ("b", "b", pytest.approx(0.9))
