"""How a prediction reads on the page: verdict heading, CVA sentence, probabilities, colour scale.

Pure functions of a `Prediction` and its model's metadata, shared by the Predict, Compare,
Monitor and Batch tabs so that every tab says the same thing the same way.
"""

from __future__ import annotations

import base64
import html
from functools import lru_cache

import numpy as np

from posture.checkpoints import ModelInfo
from posture.overlay import colorize, encode_image
from posture.predict import Prediction

__all__ = ["NO_SIDE_VIEW", "colour_scale_html", "cva_sentence", "data_url", "pretty", "probabilities",
           "verdict_markdown", "verdict_text"]

NO_SIDE_VIEW = "No side view of a person found"


def pretty(name: str) -> str:
    """A class name as people read it: "turtle_neck" -> "turtle neck"."""
    return name.replace("_", " ")


def probabilities(pred: Prediction) -> dict[str, float]:
    """Class -> probability, with readable class names, for a gr.Label."""
    return {pretty(name): p for name, p in pred.probabilities.items()}


def cva_sentence(pred: Prediction, info: ModelInfo) -> str:
    """ "CVA about 43 degrees; below 50 counts as turtle neck", or "" when the model gives no estimate."""
    if pred.cva_deg is None or pred.side_view is False:
        return ""
    return f"CVA about {round(pred.cva_deg)} degrees; below {info.cva_threshold:g} counts as turtle neck"


def verdict_text(pred: Prediction) -> str:
    """The verdict in words: the class and its probability, or that no side view was found."""
    if pred.side_view is False:
        return NO_SIDE_VIEW
    return f"{pretty(pred.label)} ({100.0 * pred.confidence:.0f}%)"


def verdict_markdown(pred: Prediction, info: ModelInfo) -> str:
    """The heading over the probabilities: verdict, then the CVA estimate or why there is no verdict."""
    if pred.side_view is False:
        return (f"## {NO_SIDE_VIEW}\nThe model sees no person from the side in this picture "
                f"(side view {100.0 * (pred.side_view_prob or 0.0):.0f}% likely), so the class "
                "probabilities below say little. Try a photo taken from the side.")
    heading = f"## {pretty(pred.label)}\n**{100.0 * pred.confidence:.0f}%** likely"
    sentence = cva_sentence(pred, info)
    return heading + (f" · {sentence}" if sentence else "")


def data_url(image, fmt: str = "jpeg") -> str:
    """An image as a data: URL, for pictures that must never be written to disk (live frames)."""
    mime = "jpeg" if fmt in ("jpeg", "jpg") else fmt
    return f"data:image/{mime};base64,{base64.b64encode(encode_image(image, fmt)).decode()}"


@lru_cache(maxsize=4)
def _gradient(colormap: str = "jet", stops: int = 11) -> str:
    colours = colorize(np.linspace(0.0, 1.0, stops, dtype=np.float32)[None, :], colormap)[0]
    return ", ".join(f"rgb({r},{g},{b}) {100 * i / (stops - 1):.0f}%" for i, (r, g, b) in enumerate(colours))


def colour_scale_html(colormap: str = "jet") -> str:
    """A legend for the heatmap colours and one sentence on how to read them."""
    return (
        '<div class="colour-scale">'
        f'<div class="colour-bar" style="background: linear-gradient(to right, {_gradient(colormap)})"></div>'
        '<div class="colour-ends"><span>low</span><span>influence on the explained class</span>'
        "<span>high</span></div>"
        "<p>Grad-CAM: warm colours mark the regions that raised the score of the explained class most; "
        "cool colours mattered little. Check that the model looked at the neck and head, not the background.</p>"
        "</div>"
    )


def escape(text: str) -> str:
    """Text for HTML built here (class names and file names come from visitors)."""
    return html.escape(text, quote=True)
