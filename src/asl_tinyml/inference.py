"""One predictor for every model file: a `.pt` checkpoint (PyTorch) or an `.onnx` export (onnxruntime).

Both take the uint8 NHWC images that `preprocess.load_image` and `Cache.images` produce and return
softmax probabilities, so evaluation, prediction and benchmarks never care which kind they hold.
ONNX exports take those uint8 NHWC images as they are (the scaling to [0, 1] and the NCHW transpose are
in the graph); older exports with a float NCHW input still load.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

from .config import UserError, usable_cores
from .preprocess import to_float
from .progress import bar

MODEL_EXTENSIONS = (".pt", ".onnx")
ONNX_INPUT = "input"
ONNX_OUTPUT = "logits"
META_CLASSES = "classes"
META_IMAGE_SIZE = "image_size"
META_MODEL = "model"
META_PARAMS = "params"
META_INPUT = "input"  # "landmarks", "motion" or, for a pixel model, "uint8_nhwc" (absent: float NCHW)
META_CROP = "crop"  # "hand": the pixel model was trained on hand crops (`hands.hand_crop`); else "centre"
META_CROP_MARGIN = "crop_margin"
LANDMARK_INPUT = "landmarks"
MOTION_INPUT = "motion"  # a motion model: landmark windows (N, T, F) (`asl_tinyml.motion`)
UINT8_INPUT = "uint8_nhwc"
MODEL_KINDS = {None: "pixel", UINT8_INPUT: "pixel", LANDMARK_INPUT: "hand-landmark", MOTION_INPUT: "motion"}
MODEL_USES = {  # where each kind of model file goes
    "pixel": "`asl-tinyml predict|evaluate|export|compress --model FILE`",
    "hand-landmark": "--landmark-model FILE next to a pixel --model (export it with `asl-tinyml landmarks --reuse "
                     "--train --export DIR`)",
    "motion": "`asl-tinyml motion evaluate|predict|export --model FILE`",
}


def check_model_kind(path: str | Path, input_meta: Any, wanted: str, given_to: str) -> None:
    """A UserError when the model file `path`, by its metadata `input`, is not a `wanted` model (pixel,
    hand-landmark or motion): it names the file's kind, what it was given to and where that kind goes."""
    kind = MODEL_KINDS.get(input_meta, f"{input_meta!r}-input")
    if kind != wanted:
        uses = MODEL_USES.get(kind, "the command that made it")
        raise UserError(f"{path} is a {kind} model, but {given_to} takes a {wanted} model; use it with {uses}")


def onnx_metadata(classes: list[str], image_size: int, model_name: str, params: int | None = None) -> dict[str, str]:
    """The `metadata_props` an exported ONNX model carries so that `load_predictor` can use it alone."""
    meta = {META_CLASSES: json.dumps(list(classes)), META_IMAGE_SIZE: str(int(image_size)), META_MODEL: model_name}
    if params is not None:
        meta[META_PARAMS] = str(int(params))
    return meta


class Predictor(ABC):
    """A loaded model: `classes`, `image_size`, `kind` ("torch" or "onnx"), and `predict_proba`."""

    kind: str

    def __init__(
        self, path: Path, classes: list[str], image_size: int, model_name: str | None,
        params: int | None, meta: dict[str, Any], batch_size: int = 256,
    ) -> None:
        self.path = path
        self.classes = classes
        self.image_size = image_size
        self.model_name = model_name
        self.params = params
        self.meta = meta
        self.batch_size = batch_size
        self.crop = str(meta.get(META_CROP, "centre"))  # what the model was trained on: "hand" or "centre"
        self.crop_margin = float(meta.get(META_CROP_MARGIN, 0.25))

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> what `_logits` takes (float32 NCHW in [0, 1], unless the model scales in-graph)."""
        return to_float(images)

    @abstractmethod
    def _logits(self, batch: np.ndarray) -> np.ndarray:
        """A `_prepare`d batch -> logits (N, C)."""

    def _check(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        s = self.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise UserError(
                f"{self.path} expects images of shape (N, {s}, {s}, 3), got {images.shape}; "
                f"preprocess them with load_image(path, {s})"
            )
        if images.dtype != np.uint8:
            raise UserError(f"{self.path} expects uint8 images (0-255), got {images.dtype}")
        return images

    def predict_proba(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        """uint8 (N, S, S, 3) (or one (S, S, 3) image) -> softmax probabilities (N, C) float32."""
        images = self._check(images)
        starts = range(0, len(images), self.batch_size)
        out = [
            softmax(self._logits(self._prepare(images[i : i + self.batch_size])).astype(np.float64), axis=1)
            for i in bar(starts, progress=progress and len(starts) > 1, desc="predict", unit="batch", leave=False)
        ]
        if not out:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class indices (N,) into `classes`."""
        return self.predict_proba(images).argmax(axis=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path}, {self.model_name}, {len(self.classes)} classes, {self.image_size}px)"


class TorchPredictor(Predictor):
    kind = "torch"

    def __init__(self, path: Path, threads: int | None = None, batch_size: int = 256) -> None:
        import torch

        from .models import count_parameters, load_checkpoint

        if threads:
            torch.set_num_threads(threads)  # process-wide in torch
        self.model, meta = load_checkpoint(path)
        check_model_kind(path, meta.get("input"), "pixel", "--model")
        super().__init__(
            path, list(meta["classes"]), int(meta["image_size"]), meta.get("model"),
            count_parameters(self.model), meta, batch_size,
        )

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(batch)).numpy()


def open_session(
    path: str | Path, threads: int | None = 1, fix: str = "export one with `asl-tinyml export`"
) -> tuple[Any, dict[str, str]]:
    """An ONNX Runtime CPU session on `threads` intra-op threads (None: its default) and the file's custom
    metadata; a file it cannot read is a UserError naming the file and `fix`."""
    import onnxruntime as ort

    ort.disable_telemetry_events()  # also when onnxruntime was imported before asl_tinyml (see __init__)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own InvalidProtobuf/Fail/... types
        raise UserError(f"{path} is not a valid ONNX model ({type(exc).__name__}); {fix}") from exc
    return session, dict(session.get_modelmeta().custom_metadata_map)


class OnnxPredictor(Predictor):
    """An ONNX Runtime session that spreads a batch over `threads` cores by images, not within layers.

    The session itself runs on one thread; a batch of at least two images per core is cut into slices of
    at most `SLICE` images that `threads` workers run at once (`InferenceSession.run` is thread-safe and
    releases the GIL). On small convolutions whole slices per core use the cores better than ONNX Runtime's
    intra-op threads splitting each layer, and small slices keep each core's activations in its cache.
    """

    SLICE = 16

    kind = "onnx"

    def __init__(self, path: Path, threads: int | None = None, batch_size: int = 256) -> None:
        self.workers = max(1, threads or usable_cores())
        self._pool: ThreadPoolExecutor | None = None
        self.session, props = open_session(path)
        check_model_kind(path, props.get(META_INPUT), "pixel", "--model")
        missing = [k for k in (META_CLASSES, META_IMAGE_SIZE) if k not in props]
        if missing:
            raise UserError(f"{path} lacks ONNX metadata {missing}; export it with `asl-tinyml export`")
        try:
            classes = [str(c) for c in json.loads(props[META_CLASSES])]
            image_size = int(props[META_IMAGE_SIZE])
        except (ValueError, TypeError) as exc:
            raise UserError(f"{path} has unreadable ONNX metadata ({exc}); re-export it with `asl-tinyml export`") from exc
        self.input = self.session.get_inputs()[0]
        self.uint8_input = self.input.type == "tensor(uint8)"
        expected = [image_size, image_size, 3] if self.uint8_input else [3, image_size, image_size]
        if len(self.input.shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(self.input.shape[1:], expected)):
            raise UserError(
                f"{path} takes input of shape {self.input.shape}, not (N, {', '.join(map(str, expected))}) as its "
                "metadata says; re-export it with `asl-tinyml export`"
            )
        params = int(props[META_PARAMS]) if props.get(META_PARAMS, "").isdigit() else None
        super().__init__(path, classes, image_size, props.get(META_MODEL), params, props, batch_size)
        n_out = self.session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(classes):
            raise UserError(f"{path} outputs {n_out} logits but its metadata lists {len(classes)} classes; re-export it")

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(images) if self.uint8_input else to_float(images)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input.name: batch})[0]

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        if self.workers < 2 or len(batch) < 2 * self.workers:
            return self._run(batch)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="asl-onnx")
        pieces = max(self.workers, -(-len(batch) // self.SLICE))
        return np.concatenate(list(self._pool.map(self._run, np.array_split(batch, pieces))))


def load_predictor(path: str | Path, threads: int | None = None, batch_size: int = 256) -> Predictor:
    """Load a `.pt` checkpoint or an `.onnx` export; `threads` sets the CPU threads it may use."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model file {path} not found; pass a best.pt from `asl-tinyml train` or an .onnx from `asl-tinyml export`")
    suffix = path.suffix.lower()
    if suffix == ".pt":
        return TorchPredictor(path, threads, batch_size)
    if suffix == ".onnx":
        return OnnxPredictor(path, threads, batch_size)
    raise UserError(f"{path} is neither a checkpoint nor an ONNX model; pass a file ending in {' or '.join(MODEL_EXTENSIONS)}")
