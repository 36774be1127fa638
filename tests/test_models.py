"""Model registry, the FastKAN layer and checkpoint round trips."""

from __future__ import annotations

import math

import pytest
import torch

from asl_tinyml.config import UserError
from asl_tinyml.models import (
    FastKANLayer,
    count_parameters,
    create_model,
    list_models,
    load_checkpoint,
    save_checkpoint,
)
from asl_tinyml.models.fastkan import RadialBasis


def test_radial_basis_values_on_the_grid() -> None:
    rbf = RadialBasis(grid_min=-2.0, grid_max=2.0, num_grids=5)  # centres -2..2, width 1
    out = rbf(torch.tensor([0.0, 0.5]))
    assert out.shape == (2, 5)
    assert torch.allclose(out[0], torch.tensor([math.exp(-4), math.exp(-1), 1.0, math.exp(-1), math.exp(-4)]))
    assert torch.allclose(out[1, 2], torch.tensor(math.exp(-0.25)))  # half a width from the centre


def test_fastkan_layer_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    layer = FastKANLayer(6, 4, num_grids=8)
    assert layer.spline.weight.shape == (4, 6 * 8)
    x = torch.randn(5, 6, requires_grad=True)
    y = layer(x)
    assert y.shape == (5, 4)
    assert layer(torch.randn(2, 3, 6)).shape == (2, 3, 4)  # leading dimensions pass through
    y.square().sum().backward()
    for p in (layer.spline.weight, layer.base.weight, layer.norm.weight, x):
        assert p.grad is not None and p.grad.abs().sum() > 0
    no_base = FastKANLayer(6, 4, use_base=False)
    assert no_base.base is None and no_base(torch.randn(3, 6)).shape == (3, 4)


@pytest.mark.parametrize("name", ["fastkan", "convkan"])  # the image models
def test_every_model_maps_images_to_logits(name: str) -> None:
    model = create_model(name, 7, image_size=32).eval()
    with torch.no_grad():
        logits = model(torch.rand(3, 3, 32, 32))
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()


def test_unknown_model_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown model 'resnet'.*convkan"):
        create_model("resnet", 37)


def test_convkan_is_the_small_default() -> None:
    assert {"convkan", "fastkan"} <= set(list_models())
    convkan = count_parameters(create_model("convkan", 37, image_size=64))
    assert convkan < 250_000
    assert convkan * 20 < count_parameters(create_model("fastkan", 37, image_size=64))


def test_convkan_mid_blocks_add_residual_blocks_at_the_second_to_last_width() -> None:
    base, mid = create_model("convkan", 37), create_model("convkan", 37, mid_blocks=1)
    width = 96  # channels[-2]: the 8x8 stage of a 64x64 input
    added = width * 9 + 2 * width + width * width + 2 * width  # depthwise 3x3, BN, pointwise 1x1, BN
    assert count_parameters(mid) - count_parameters(base) == added
    x = torch.rand(2, 3, 64, 64)
    assert mid.eval()(x).shape == (2, 37)
    assert mid.features[:5](x).shape == base.features[:5](x).shape == (2, width, 8, 8)  # stem (3) + two blocks
    assert mid.features[5].block[3].in_channels == width  # the new residual's pointwise conv


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path) -> None:
    torch.manual_seed(1)
    model = create_model("convkan", 5, image_size=32)
    model.train()
    model(torch.rand(8, 3, 32, 32))  # move BatchNorm running statistics off their defaults
    model.eval()
    meta = {"model": "convkan", "model_options": {"image_size": 32}, "classes": list("abcde"), "image_size": 32, "epoch": 3}
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, meta, extra_value=torch.tensor([1.0]))
    raw = torch.load(path, weights_only=True)
    assert raw["meta"]["epoch"] == 3 and raw["extra_value"].item() == 1.0
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta["classes"] == list("abcde") and not loaded.training
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_checkpoints_record_the_architecture_and_older_ones_still_load(tmp_path) -> None:
    from asl_tinyml.models.pixels import CONVKAN_V1

    meta = {"model": "convkan", "model_options": {"image_size": 32}, "classes": list("abc"), "image_size": 32}
    save_checkpoint(tmp_path / "new.pt", create_model("convkan", 3), meta)
    options = torch.load(tmp_path / "new.pt", weights_only=True)["meta"]["model_options"]
    assert options["pool_first"] is True and options["channels"] == [16, 48, 96, 192] and options["image_size"] == 32
    # a checkpoint written before options were recorded: the v1 layers, only `image_size` in its options
    old = create_model("convkan", 3, **CONVKAN_V1).eval()
    torch.save({"meta": meta, "state_dict": old.state_dict()}, tmp_path / "old.pt")
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(old(x), loaded(x))


def test_checkpoint_errors_are_user_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not an asl-tinyml checkpoint"):
        load_checkpoint(junk)
    with pytest.raises(ValueError, match="lacks"):
        save_checkpoint(tmp_path / "x.pt", create_model("convkan", 3), {"model": "convkan"})
