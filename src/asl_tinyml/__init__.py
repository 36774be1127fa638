"""asl-tinyml: tiny, honestly measured ASL hand-sign classifiers for CPUs and microcontrollers."""

__version__ = "0.1.0"
