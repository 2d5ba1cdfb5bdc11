"""Shared fixtures: tiny checkpoints and images the tests make themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from posture.checkpoints import ModelInfo, save_checkpoint
from posture.models import build_model, list_models

CLASSES = ["normal", "turtle_neck"]


def make_checkpoint(path: Path, arch: str, input_size: int = 64, seed: int = 0) -> Path:
    """Save a randomly initialised (seeded) model as a posture checkpoint."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=len(CLASSES))
    # Non-trivial BatchNorm statistics, so a round trip that dropped buffers would show.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    info = ModelInfo(arch=arch, class_names=list(CLASSES), input_size=input_size)
    return save_checkpoint(path, model, info)


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    """A folder with one tiny checkpoint per registered architecture, named after it."""
    folder = tmp_path_factory.mktemp("checkpoints")
    for seed, arch in enumerate(list_models()):
        make_checkpoint(folder / f"{arch}.safetensors", arch, seed=seed)
    return folder


def person_like(width: int = 160, height: int = 120, seed: int = 0) -> Image.Image:
    """A small structured RGB picture (blobs on a gradient): varied enough for Grad-CAM."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x / width, y / height, 0.5 * np.ones_like(x, dtype=float)], axis=-1) * 200
    for _ in range(4):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(5, 25)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.uniform(0, 255, 3)
    return Image.fromarray(img.astype(np.uint8))


@pytest.fixture
def image_file(tmp_path) -> Path:
    path = tmp_path / "person.jpg"
    person_like().save(path, quality=95)
    return path


# The app test modules each start their own app (fixture `app`); these build on it.


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through Playwright, one per test module (skipped where there is none)."""
    from app_fixtures import chromium

    with chromium() as b:
        yield b


@pytest.fixture
def client(app):
    """A fresh gradio_client on the module's app: a session of its own."""
    from gradio_client import Client

    return Client(app.url, verbose=False)


def copy_checkpoints(source: Path, folder: Path) -> Path:
    """Copy every checkpoint in `source` into `folder`; returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.safetensors"):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder
