"""How many real photographs without a side view of a person each model flags as "no side view".

The photographs are the sample pictures that ship inside Python packages, so anyone can gather
the same files: ten from scikit-learn, matplotlib and gradio (landscapes, a flower, a frontal
portrait, animals, a tower, a bus, a toy) and eighteen from the scikit-image wheel (a frontal
portrait, a cat, a horse's silhouette, a rocket, a motorcycle, coffee, coins, the moon, a retina,
textures, microscopy, text). None shows a person from the side, so every one should be flagged.

    pip download scikit-image --no-deps -d /tmp/wheels     # the eighteen; skip for the ten alone
    python examples/real_photos.py --wheel /tmp/wheels/scikit_image-*.whl [--model resnet18 ...] [--no-mirror]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python examples/real_photos.py` from anywhere, without installing
    sys.path.insert(0, str(REPO))

INSTALLED = {  # package -> its files, relative to the package's folder
    "sklearn": ["datasets/images/china.jpg", "datasets/images/flower.jpg"],
    "matplotlib": ["mpl-data/sample_data/grace_hopper.jpg"],
    "gradio": ["media_assets/images/" + name for name in
               ("bus.png", "cheetah.jpg", "cheetah1.jpg", "groot.jpeg", "lion.jpg", "tower.jpg")]
              + ["test_data/cheetah2.jpg"],
}
SKIMAGE = ["astronaut.png", "brick.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png", "coins.png",
           "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
           "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png"]  # fmt: skip


def gather(dest: Path, wheel: Path | None = None) -> dict[str, list[Path]]:
    """Copy the photographs into `dest`: {"installed": [...], "scikit-image": [...]}. A package
    that is not installed, or a file it no longer ships, is a clear error."""
    dest.mkdir(parents=True, exist_ok=True)
    found: dict[str, list[Path]] = {"installed": [], "scikit-image": []}
    for package, files in INSTALLED.items():
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise SystemExit(f"{package} is not installed; pip install -r requirements-dev.txt")
        root = Path(spec.origin).parent
        for rel in files:
            if not (root / rel).is_file():
                raise SystemExit(f"{package} no longer ships {rel}")
            found["installed"].append(Path(shutil.copy(root / rel, dest / Path(rel).name)))
    if wheel is not None:
        try:
            with zipfile.ZipFile(wheel) as archive:
                for name in SKIMAGE:
                    (dest / name).write_bytes(archive.read(f"skimage/data/{name}"))
                    found["scikit-image"].append(dest / name)
        except (OSError, zipfile.BadZipFile, KeyError) as e:
            raise SystemExit(f"{wheel} is not a scikit-image wheel with its sample photographs ({e})") from None
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wheel", type=Path, help="a scikit-image wheel (pip download scikit-image --no-deps)")
    p.add_argument("--model", action="append", help="bundled name or checkpoint (default: both bundled)")
    p.add_argument("--no-mirror", dest="mirror", action="store_false",
                   help="answer from the picture alone (default: averaged with its mirror image)")
    args = p.parse_args()
    from posture import Predictor

    with tempfile.TemporaryDirectory() as tmp:
        sets = gather(Path(tmp), args.wheel)
        for name in args.model or ["resnet14", "resnet18"]:
            predictor = Predictor.from_checkpoint(name, mirror=args.mirror)
            for source, paths in sets.items():
                if not paths:
                    continue
                through = [(path.name, pred.label) for path in paths
                           if (pred := predictor.predict(path, explain=False)).side_view is not False]
                print(f"{name}, {source}: {len(paths) - len(through)} of {len(paths)} flagged;"
                      f" let through: {through or 'none'}")


if __name__ == "__main__":
    main()
