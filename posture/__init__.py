"""posture: forward-head-posture (turtle neck) classification with Grad-CAM explanations.

The public surface, in the order data flows through it:
`load_image` -> `Predictor.predict` -> `Prediction` (probabilities, heatmap, overlay);
`build_model` / `load_checkpoint` / `save_checkpoint` for models;
`posture.synth`, `posture.train` and `posture.evaluate` for data, fine-tuning and metrics.
"""

__version__ = "0.1.0"

from posture.checkpoints import ModelInfo, load_checkpoint, read_info, save_checkpoint  # noqa: E402
from posture.errors import (  # noqa: E402
    CheckpointError,
    DatasetError,
    ImageError,
    PostureError,
    TrainingCancelled,
    WeightsError,
)
from posture.images import load_image  # noqa: E402
from posture.models import build_model, cam_layer, freeze_backbone, list_models  # noqa: E402
from posture.predict import Prediction, Predictor  # noqa: E402

__all__ = [
    "CheckpointError",
    "DatasetError",
    "ImageError",
    "ModelInfo",
    "PostureError",
    "Prediction",
    "Predictor",
    "TrainingCancelled",
    "WeightsError",
    "__version__",
    "build_model",
    "cam_layer",
    "freeze_backbone",
    "list_models",
    "load_checkpoint",
    "load_image",
    "read_info",
    "save_checkpoint",
]
