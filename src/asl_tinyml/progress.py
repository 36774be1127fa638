"""Progress bars for long steps: drawn on a terminal, left out of logs and pipes (tqdm's automatic mode)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def bar(iterable: Iterable[Any] | None = None, *, progress: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar that draws only when stderr is a terminal (`disable=None`) and never when `progress` is off;
    a stage's plain start and end lines (`pipeline`) stand in for it in a log."""
    return tqdm(iterable, disable=None if progress else True, **kwargs)
