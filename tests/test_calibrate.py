"""Temperature scaling: it softens an over-confident classifier without changing a verdict."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from test_train import _colour_dataset

from posture.calibrate import calibrate_, fit_gate_
from posture.imagedata import Augment, ImageDataset
from posture.models import build_model


def test_calibration_changes_probabilities_not_verdicts(tmp_path):
    colours = _colour_dataset(tmp_path / "data")
    torch.manual_seed(0)
    model = build_model("resnet14").eval()
    with torch.no_grad():
        model.fc.weight.mul_(50.0)  # wildly over-confident
    ds = ImageDataset([(p, 0) for p in sorted(colours.glob("normal/*.png"))] +
                      [(p, 1) for p in sorted(colours.glob("turtle_neck/*.png"))], 32)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        before = model(x)
    t = calibrate_(model, ds, batch_size=8)
    with torch.no_grad():
        after = model(x)
    assert t > 1.0  # softened
    assert torch.equal(before.argmax(1), after.argmax(1))
    torch.testing.assert_close(after, before / t, rtol=1e-4, atol=1e-4)


def test_the_gate_knows_the_forms_of_picture_training_showed(tmp_path):
    """Trained with --restyle, the gate fits restyled side views as groups of their own and sets its
    threshold over them too: restyled pictures pass; a plainly trained gate flags many of them."""
    colours = _colour_dataset(tmp_path / "data", per_class=24)
    items = [(p, c) for c, name in enumerate(["normal", "turtle_neck"]) for p in sorted(colours.glob(f"{name}/*.png"))]
    fit_items, val_items, new_items = items[0::3], items[1::3], items[2::3]
    restyled = replace(Augment.none(), restyle=1.0)
    torch.manual_seed(0)
    plain_model = build_model("resnet14").eval()
    formed_model = copy.deepcopy(plain_model)
    plain = fit_gate_(plain_model, ImageDataset(fit_items, 32), ImageDataset(val_items, 32), 8)
    formed = fit_gate_(formed_model, ImageDataset(fit_items, 32, augment=replace(Augment(), restyle=0.3)),
                       ImageDataset(val_items, 32), 8)
    assert plain["groups"] == [] and plain["forms"] == []
    assert formed["groups"] == ["side views", "side views (restyled)"] and formed["forms"] == ["restyle"]
    assert formed["n_fit"] == len(fit_items) and formed["n_threshold"] == 2 * len(val_items)
    assert formed_model.heads["gate"].means.shape[0] == 2

    def flagged(model, augment):
        ds = ImageDataset(new_items, 32, augment=augment, seed=5)
        with torch.no_grad():
            pooled = model.pool(model.forward_features(torch.stack([ds[i][0] for i in range(len(ds))])))
        return float((model.heads["gate"](pooled) <= 0).float().mean())

    assert flagged(plain_model, restyled) > 0.3
    assert flagged(formed_model, restyled) < flagged(plain_model, restyled) / 2
    assert flagged(formed_model, None) <= 0.2  # plain pictures still pass
