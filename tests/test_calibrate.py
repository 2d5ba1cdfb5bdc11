"""Temperature scaling: it softens an over-confident classifier without changing a verdict."""

from __future__ import annotations

import torch
from test_train import _colour_dataset

from posture.calibrate import calibrate_
from posture.imagedata import ImageDataset
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


def test_a_temperature_search_that_ends_in_nan_leaves_the_classifier_as_it_was(tmp_path, monkeypatch):
    """On perfectly separated logits the search can step into NaN: the weights must stay finite."""
    colours = _colour_dataset(tmp_path / "data")
    torch.manual_seed(0)
    model = build_model("resnet14").eval()
    ds = ImageDataset([(p, 0) for p in sorted(colours.glob("normal/*.png"))] +
                      [(p, 1) for p in sorted(colours.glob("turtle_neck/*.png"))], 32)
    weight, bias = model.fc.weight.detach().clone(), model.fc.bias.detach().clone()

    class DivergingSearch(torch.optim.LBFGS):
        def step(self, closure):
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(float("nan"))

    monkeypatch.setattr(torch.optim, "LBFGS", DivergingSearch)
    assert calibrate_(model, ds, batch_size=8) == 1.0
    torch.testing.assert_close(model.fc.weight, weight)
    torch.testing.assert_close(model.fc.bias, bias)
