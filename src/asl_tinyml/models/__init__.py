"""Model registry: `create_model(name, num_classes, **options)`, and checkpoint save/load."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..config import UserError
from .efficientnet import EfficientNetLite0
from .fastkan import FastKAN, FastKANLayer
from .landmark import LandmarkFastKAN
from .motion import MotionFastKAN
from .pixels import CONVKAN_V1, ConvKAN, PixelFastKAN

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a model constructor available to `create_model(name, ...)`."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = fn
        return fn

    return wrap


# Constructors are registered as they are, so their signatures hold the defaults `architecture_options` records.
register("fastkan")(PixelFastKAN)
register("convkan")(ConvKAN)
register("landmark_fastkan")(LandmarkFastKAN)
register("efficientnet_lite0")(EfficientNetLite0)
register("motion_fastkan")(MotionFastKAN)
LEGACY_OPTIONS: dict[str, dict[str, Any]] = {"convkan": CONVKAN_V1}  # defaults of checkpoints that did not record them


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build a registered model by name."""
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; choose one of {list_models()}")
    try:
        return _REGISTRY[name](num_classes, **options)
    except TypeError as exc:  # an option the constructor does not take
        raise UserError(f"model {name!r} rejected its options {sorted(options)}: {exc}") from exc


def architecture_options(name: str) -> dict[str, Any]:
    """The constructor defaults of a registered model (but the class count and image side), recorded in
    every checkpoint so that a later change of defaults never changes what an old checkpoint rebuilds."""
    params = inspect.signature(_REGISTRY[name]).parameters
    return {k: list(v.default) if isinstance(v.default, tuple) else v.default
            for k, v in params.items() if k not in ("num_classes", "image_size") and v.default is not v.empty}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any], **extra: Any) -> None:
    """Save weights with everything needed to rebuild and feed the model; loadable with weights_only=True.

    `meta` holds at least `model` (registry name), `model_options`, `classes` and `image_size`; the
    options are completed with the architecture defaults the model was built with (`architecture_options`).
    """
    missing = {"model", "model_options", "classes", "image_size"} - set(meta)
    if missing:
        raise ValueError(f"checkpoint meta lacks {sorted(missing)}")
    if meta["model"] in _REGISTRY:
        meta = {**meta, "model_options": architecture_options(str(meta["model"])) | dict(meta["model_options"])}
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": meta, "state_dict": model.state_dict(), **extra}, path)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint: (model in eval mode, meta)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model file {path} not found; train one with `asl-tinyml train` or pass --model")
    if path.suffix.lower() == ".onnx":
        raise UserError(f"{path} is an ONNX export, not a checkpoint; pass the .pt it was exported from")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        meta = ckpt["meta"]
        options = dict(meta["model_options"])
        if "pretrained" in options:  # the checkpoint's weights replace ImageNet ones: never load those again
            options["pretrained"] = False
        if meta["model"] in _REGISTRY and not set(architecture_options(meta["model"])) <= set(options):
            options = LEGACY_OPTIONS.get(meta["model"], {}) | options  # saved before options were recorded
        model = create_model(meta["model"], len(meta["classes"]), **options)
        model.load_state_dict(ckpt["state_dict"])
    except UserError:
        raise
    except Exception as exc:  # a foreign or damaged file
        raise UserError(f"{path} is not an asl-tinyml checkpoint ({type(exc).__name__}); pass a best.pt from a run") from exc
    return model.eval(), meta


__all__ = [
    "ConvKAN", "EfficientNetLite0", "FastKAN", "FastKANLayer", "LandmarkFastKAN", "MotionFastKAN", "PixelFastKAN",
    "architecture_options", "count_parameters", "create_model", "list_models", "load_checkpoint", "register",
    "save_checkpoint",
]
