"""Load: 20 concurrent visitors predicting with explanations while the app trains a model.

Starts `python app.py` on 127.0.0.1, starts a small training run through its /train API
(a synthetic dataset uploaded as a .zip), then lets N visitors (one gradio_client each)
send R /predict calls of a 12 MP phone photo each. A script, not a timed test.

Run: python benchmarks/load_test.py [--visitors 20] [--requests 5] [--epochs 30]
Writes benchmarks/results/load.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from _common import app_checkpoints, machine, phone_jpeg, start_app, stop_app, synthetic_set, wait_until_answering, write_result


def zip_dataset(folder: Path, out: Path) -> Path:
    """Zip a class-per-folder dataset (images only) with its name as the top-level entry."""
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(folder.glob("*/*.jpg")):
            zf.write(path, Path(folder.name) / path.relative_to(folder))
    return out


def main() -> None:
    """Print and save latency percentiles, errors and whether training ran during the load."""
    from gradio_client import Client, handle_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=20)
    parser.add_argument("--requests", type=int, default=5, help="predictions per visitor")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (it is cancelled at the end)")
    parser.add_argument("--model", default="resnet18")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photo = tmp / "phone.jpg"
        photo.write_bytes(phone_jpeg())
        archive = zip_dataset(synthetic_set(400, seed=3), tmp / "data.zip")
        app = start_app(tmp / "app", app_checkpoints(tmp / "ckpt"))
        url = app.url
        try:
            wait_until_answering(app)
            trainer = Client(url, verbose=False)
            trainer.predict(handle_file(str(archive)), api_name="/check_zip")
            job = trainer.submit("resnet14", "scratch", "automatic", args.epochs, "automatic", 16, "128", 0.2, 0,
                                 api_name="/train")
            time.sleep(3.0)  # let training get going
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()

            def visitor(i: int) -> None:
                try:
                    client = Client(url, verbose=False)
                except Exception as exc:  # noqa: BLE001 - counted and reported, not raised
                    with lock:
                        errors.extend([f"visitor {i}: connect: {exc}"] * args.requests)
                    return
                for _ in range(args.requests):
                    start = time.perf_counter()
                    try:
                        *_, details = client.predict(handle_file(str(photo)), args.model, None, 0.5,
                                                     api_name="/predict")
                        assert details["label"], details
                        with lock:
                            latencies.append(time.perf_counter() - start)
                    except Exception as exc:  # noqa: BLE001 - counted and reported, not raised
                        with lock:
                            errors.append(f"visitor {i}: {type(exc).__name__}: {exc}"[:300])

            start = time.perf_counter()
            threads = [threading.Thread(target=visitor, args=(i,)) for i in range(args.visitors)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            training_still_running = not job.done()
            if training_still_running:
                trainer.predict(api_name="/cancel_training")
            try:
                training_outcome = str(job.result(timeout=300)[0])[:200]
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                training_outcome = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            stop_app(app)
    lat = sorted(latencies)
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None  # noqa: E731
    result = {
        "machine": machine(), "visitors": args.visitors, "requests_each": args.requests, "model": args.model,
        "photo": "4000x3000 JPEG q90, EXIF orientation 6",
        "answered": len(lat), "errors": len(errors), "error_samples": errors[:5],
        "p50_s": pct(0.5), "p95_s": pct(0.95), "max_s": round(lat[-1], 2) if lat else None,
        "mean_s": round(statistics.mean(lat), 2) if lat else None,
        "wall_s": round(wall, 1), "throughput_per_s": round(len(lat) / wall, 2),
        "training_running_throughout": training_still_running, "training_outcome": training_outcome,
    }
    write_result("load", result)
    for k, v in result.items():
        if k != "machine":
            print(f"{k}: {v}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
