"""Turtle-neck detector: the Gradio app (the Hugging Face Space's entry point).

Settings come from the environment (POSTURE_* variables, see webapp/settings.py and the
README); the page is built by the `webapp` package over the `posture` library. Importing
this module builds the page; `python app.py` serves it.
"""

from __future__ import annotations

import logging
import sys

from webapp import build_app, launch_options
from webapp.settings import Settings, SettingsError

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

try:
    settings = Settings.from_env()
except SettingsError as exc:
    sys.exit(f"posture app: cannot start: {exc}")

demo = build_app(settings)

if __name__ == "__main__":
    if not any(settings.checkpoints.glob("*.safetensors")):
        print(f"No bundled checkpoints in {settings.checkpoints}: the app starts without models. "
              "Upload or train one in the browser, or set POSTURE_CHECKPOINTS.")
    demo.launch(**launch_options(settings))
