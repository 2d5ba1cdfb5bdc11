"""Start-up: `import posture`, `python -m posture --help`, and `python app.py` to the first answered /predict.

Run: python benchmarks/bench_startup.py [--runs 3]
Writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, app_checkpoints, machine, phone_jpeg, start_app, stop_app, wait_until_answering, write_result


def seconds(cmd: list[str]) -> float:
    """Wall seconds of one subprocess run (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def first_prediction(tmp: Path, photo: Path, model: str) -> dict:
    """Seconds from launching the app to its /config answering and to the first /predict answer."""
    from gradio_client import Client, handle_file

    app = start_app(tmp / f"app-{model}", app_checkpoints(tmp / "ckpt"))
    try:
        wait_until_answering(app)
        up = time.perf_counter() - app.launched_at
        client = Client(app.url, verbose=False)
        *_, details = client.predict(handle_file(str(photo)), model, None, 0.5, api_name="/predict")
        first = time.perf_counter() - app.launched_at
        start = time.perf_counter()
        client.predict(handle_file(str(photo)), model, None, 0.5, api_name="/predict")
        second = time.perf_counter() - start
    finally:
        stop_app(app)
    return {"model": model, "server_up_s": round(up, 2), "first_prediction_s": round(first, 2),
            "second_prediction_s": round(second, 2), "label": details["label"]}


def main() -> None:
    """Print and save median start-up times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    py = sys.executable
    imports = [seconds([py, "-c", "import posture"]) for _ in range(args.runs)]
    helps = [seconds([py, "-m", "posture", "--help"]) for _ in range(args.runs)]
    bare = [seconds([py, "-c", "import torch, torchvision"]) for _ in range(args.runs)]
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "phone.jpg"
        photo.write_bytes(phone_jpeg())
        apps = [first_prediction(Path(tmp), photo, "resnet18") for _ in range(max(1, args.runs - 1))]
    result = {
        "machine": machine(),
        "import_posture_s": round(statistics.median(imports), 2),
        "cli_help_s": round(statistics.median(helps), 2),
        "import_torch_torchvision_s": round(statistics.median(bare), 2),
        "app_to_first_prediction_s": round(statistics.median(a["first_prediction_s"] for a in apps), 2),
        "app_runs": apps,
    }
    write_result("startup", result)
    for k, v in result.items():
        if k != "machine":
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
