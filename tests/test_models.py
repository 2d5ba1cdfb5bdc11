"""Architectures, parameter counts, the registry and backbone weight loading."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18 as tv_resnet18

from posture.errors import UsageError, WeightsError
from posture.models import (
    ARCHS,
    AUX_HEADS,
    build_model,
    count_parameters,
    cva_from_head,
    cva_to_head,
    freeze_backbone,
    list_models,
)
from posture.pretrained import IMAGENET_ENV


def test_resnet14_parameter_count():
    assert count_parameters(build_model("resnet14", num_classes=2)) == 174_738


def test_resnet18_parameter_counts_frozen_and_not():
    model = build_model("resnet18", num_classes=2, weights=None)
    assert count_parameters(model) == 11_177_538
    freeze_backbone(model)
    assert count_parameters(model, trainable_only=True) == 1_026
    freeze_backbone(model, False)
    assert count_parameters(model, trainable_only=True) == 11_177_538


def test_resnet14_structure_matches_the_design():
    m = build_model("resnet14")
    assert [b.conv1.out_channels for b in (*m.layer1, *m.layer2, *m.layer3)] == [16, 16, 32, 32, 64, 64]
    assert [b.conv1.stride[0] for b in (*m.layer1, *m.layer2, *m.layer3)] == [1, 1, 2, 1, 2, 1]
    # A projection shortcut only where stride or width changes; no conv has a bias.
    assert [not isinstance(b.shortcut, torch.nn.Identity) for b in (*m.layer1, *m.layer2, *m.layer3)] == [
        False, False, True, False, True, False]
    assert all(c.bias is None for c in m.modules() if isinstance(c, torch.nn.Conv2d))


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [32, 64, 97])
def test_any_input_size_gives_logits_and_the_head_sees_the_last_stage(name, size):
    model = build_model(name, num_classes=3).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2, 3)
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), logits)
        torch.testing.assert_close(model.fc(model.pool(model.forward_features(x))), logits)


@pytest.mark.parametrize("name", list_models())
def test_the_default_cam_layer_is_the_last_conv_stage(name):
    model = build_model(name)
    feats = {}
    model.cam_layer().register_forward_hook(lambda m, i, o: feats.setdefault("out", o))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 64, 64))
    assert feats["out"].shape[1] == model.fc.in_features
    assert model.cam_layers[-1] == ARCHS[name].cam_layers[-1]


@pytest.mark.parametrize("name", list_models())
def test_every_layer_splits_the_model_into_backbone_and_rest(name):
    model = build_model(name, heads=AUX_HEADS).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole = model.forward_outputs(x)
        for layer in model.cam_layers:
            rest = model.outputs_from_features(model.forward_after(model.forward_features(x, upto=layer), layer))
            torch.testing.assert_close(rest.logits, whole.logits)
            torch.testing.assert_close(rest.cva_deg, whole.cva_deg)
            torch.testing.assert_close(rest.side_view_logit, whole.side_view_logit)
    sizes = [model.forward_features(x, upto=layer).shape[-1] for layer in model.cam_layers]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) > 1  # earlier layers are finer
    with pytest.raises(UsageError, match="no layer"):
        model.cam_layer("stem")
    with pytest.raises(UsageError, match="no layer"):
        model.forward_features(x, upto="layer9")


@pytest.mark.parametrize("name", list_models())
def test_auxiliary_heads_are_optional_and_trainable_with_the_classifier(name):
    plain = build_model(name)
    assert plain.head_names == [] and plain.eval().forward_outputs(torch.randn(1, 3, 32, 32)).cva_deg is None
    model = build_model(name, heads=["side_view", "cva"])
    assert model.head_names == ["cva", "side_view"]  # registry order, whatever the request's
    out = model.eval().forward_outputs(torch.randn(3, 3, 32, 32))
    assert out.cva_deg.shape == (3,) and out.side_view_logit.shape == (3,)
    freeze_backbone(model)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc", "heads"}
    with pytest.raises(UsageError, match="unknown auxiliary head"):
        build_model(name, heads=["age"])


def test_cva_head_scale_round_trips():
    deg = torch.tensor([25.0, 50.0, 70.0])
    torch.testing.assert_close(cva_from_head(cva_to_head(deg)), deg)
    assert float(cva_to_head(torch.tensor(50.0))) == 0.0


def test_resnet18_at_output_stride_16_has_a_twice_as_fine_last_stage_with_the_same_weights():
    coarse, fine = build_model("resnet18"), build_model("resnet18", output_stride=16)
    assert (coarse.output_stride, fine.output_stride) == (32, 16)
    fine.load_state_dict(coarse.state_dict())  # every tensor keeps its shape
    x = torch.randn(1, 3, 128, 128)
    assert coarse.eval().forward_features(x).shape == (1, 512, 4, 4)
    assert fine.eval().forward_features(x).shape == (1, 512, 8, 8)
    assert fine.forward_features(x, upto="layer3").shape[-2:] == (8, 8)
    assert fine.set_output_stride(32).forward_features(x).shape[-2:] == (4, 4)  # and back
    with torch.no_grad():
        assert torch.equal(fine(x), coarse(x))


def test_an_output_stride_the_architecture_lacks_is_refused():
    assert build_model("resnet14", output_stride=4).output_stride == 4
    with pytest.raises(UsageError, match="output stride"):
        build_model("resnet14", output_stride=16)
    with pytest.raises(UsageError, match="32 or 16"):
        build_model("resnet18", output_stride=8)


def test_unknown_model_and_too_few_classes_are_refused():
    with pytest.raises(ValueError, match="resnet14"):
        build_model("vgg16")
    with pytest.raises(ValueError, match="at least 2"):
        build_model("resnet14", num_classes=1)
    with pytest.raises(ValueError, match="from scratch"):
        build_model("resnet14", weights="imagenet")


def test_local_torchvision_state_dict_gives_exactly_those_backbone_weights(tmp_path):
    torch.manual_seed(123)
    reference = tv_resnet18()
    path = tmp_path / "resnet18-local.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("resnet18", num_classes=2, weights=str(path))
    ref_state, state = reference.state_dict(), model.state_dict()
    for key, value in ref_state.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(state[key], value), key
    assert state["fc.weight"].shape == (2, 512)


def test_a_local_copy_is_the_offline_path_to_imagenet_weights(tmp_path, monkeypatch):
    torch.manual_seed(7)
    reference = tv_resnet18()
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(reference.state_dict(), path)
    monkeypatch.setenv(IMAGENET_ENV, str(tmp_path / "ignored.pth"))  # the CLI's and the app's, not the library's
    model = build_model("resnet18", num_classes=2, weights="imagenet", imagenet_file=path)
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    from posture.pretrained import imagenet_available

    assert imagenet_available(path) and not imagenet_available(tmp_path / "nope.pth")


def test_missing_imagenet_weights_say_how_to_provide_them(tmp_path):
    with pytest.raises(WeightsError) as err:
        build_model("resnet18", weights="imagenet", imagenet_file=tmp_path / "nope.pth")
    assert IMAGENET_ENV in str(err.value) and "--init" in str(err.value)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightsError, match="do not fit"):
        build_model("resnet18", weights=str(path))
