"""asl-tinyml: tiny, honestly measured ASL hand-sign classifiers for CPUs and microcontrollers."""

import os

# ONNX Runtime (1.29 and later) starts its telemetry when it is imported: a device id and an event queue
# under ~/.cache/Microsoft/DeveloperTools. Only this variable, set before that import, stops it; the
# `disable_telemetry_events()` call (inference.open_session) comes too late for the files. A value the
# user set is kept.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
