"""Progress bars for long steps: drawn on a terminal or in a notebook, left out of logs and pipes (tqdm's
automatic mode)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def bar(iterable: Iterable[Any] | None = None, *, progress: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar that draws when stderr is a terminal (`disable=None`) or in a Jupyter kernel, and never when
    `progress` is off; a stage's plain start and end lines (`pipeline`) stand in for it in a log."""
    if not progress:
        disable: bool | None = True
    else:
        disable = False if in_notebook() else None
    return tqdm(iterable, disable=disable, **kwargs)


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's shell there is a `ZMQInteractiveShell`)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"
