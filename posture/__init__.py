"""posture: forward-head-posture (turtle neck) classification with Grad-CAM explanations.

The public surface, in the order data flows through it:
`load_image` -> `Predictor.predict` -> `Prediction` (probabilities, heatmap, overlay);
`build_model` / `load_checkpoint` / `save_checkpoint` for models;
`posture.synth`, `posture.train` and `posture.evaluate` for data, fine-tuning and metrics.
"""

from posture._version import __version__
from posture.checkpoints import ModelInfo, load_checkpoint, read_info, save_checkpoint
from posture.errors import (
    CheckpointError,
    DatasetError,
    ImageError,
    PostureError,
    TrainingCancelled,
    UsageError,
    WeightsError,
)
from posture.images import load_image
from posture.models import PostureNet, build_model, freeze_backbone, list_models
from posture.predict import Prediction, Predictor

__all__ = [
    "CheckpointError",
    "DatasetError",
    "ImageError",
    "ModelInfo",
    "PostureError",
    "Prediction",
    "Predictor",
    "PostureNet",
    "TrainingCancelled",
    "UsageError",
    "WeightsError",
    "__version__",
    "build_model",
    "freeze_backbone",
    "list_models",
    "load_checkpoint",
    "load_image",
    "read_info",
    "save_checkpoint",
]
