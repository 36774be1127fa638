"""Progress bars: on a terminal or in a notebook, never in a log."""

from __future__ import annotations


def test_progress_bars_draw_on_a_terminal_only(monkeypatch) -> None:
    import io
    import sys

    from asl_tinyml.progress import bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    log, terminal = io.StringIO(), Terminal()
    assert list(bar(range(3), file=log)) == [0, 1, 2] and log.getvalue() == ""  # a log: nothing
    list(bar(range(3), file=terminal, desc="work"))
    assert "work" in terminal.getvalue() and "3/3" in terminal.getvalue()
    off = Terminal()
    list(bar(range(3), file=off, progress=False))
    assert off.getvalue() == ""
    import types

    class ZMQInteractiveShell:  # IPython's shell in a Jupyter kernel
        pass

    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))  # imported, not a kernel: a log
    quiet = io.StringIO()
    list(bar(range(3), file=quiet))
    assert quiet.getvalue() == ""
    kernel = types.SimpleNamespace(get_ipython=ZMQInteractiveShell)
    monkeypatch.setitem(sys.modules, "IPython", kernel)  # a notebook kernel: drawn in the cell
    notebook = io.StringIO()
    list(bar(range(3), file=notebook))
    assert "3/3" in notebook.getvalue()
