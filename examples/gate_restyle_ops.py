"""Which restyle ops of a `--gate-restyle` gate take which pictures for familiar.

A gate fitted with restyled views (`python -m posture gate MODEL --data data/train --restyle --out
OUT`) has one group per restyle op it was trained with (`--restyle-ops`; by default the seven)
beside the styles' groups. This keeps the styles' groups and a subset of the op groups (none, each
op alone, all but each op, all), sets the threshold again at the same quantile of the validation
side views (plain, and drawn by the kept ops), and counts, from the picture alone, the test set's
side views flagged per style, its pictures without a side view flagged, and the real photographs
without a person flagged (`real_photos.py`).

    python examples/gate_restyle_ops.py OUT --data data/train --test data/test \
        --wheel /tmp/wheels/scikit_image-*.whl
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

def main() -> None:
    import torch

    from examples.real_photos import gather
    from posture.calibrate import RestyledView, recorded_split
    from posture.checkpoints import load_checkpoint
    from posture.evaluate import folder_items
    from posture.fit import extract_features
    from posture.imagedata import ImageDataset, Item

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="a checkpoint whose gate was fitted with restyled views")
    p.add_argument("--data", required=True, help="the folder it was trained on")
    p.add_argument("--test", required=True, help="a test folder in the synth layout")
    p.add_argument("--wheel", type=Path, help="a scikit-image wheel for the eighteen more photographs")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()

    model, info = load_checkpoint(args.model)
    names = info.train_config.get("gate", {}).get("groups", [])
    if not any(n.startswith("restyled-") for n in names):
        raise SystemExit(f"{args.model}'s gate has no restyled groups; fit it with `posture gate --restyle`")
    cfg, (_, val) = recorded_split(info, args.data, args.model)
    val = [it for it in val if it.side_view]
    test, _ = folder_items(args.test)
    with tempfile.TemporaryDirectory() as tmp:
        photos = [path for paths in gather(Path(tmp), args.wheel).values() for path in paths]

        def features(ds: ImageDataset) -> torch.Tensor:
            return extract_features(model, ds, args.batch_size)

        size = info.input_size
        restyled = RestyledView(ImageDataset(val, size), cfg.restyle_ops)
        f_val, f_restyled = features(ImageDataset(val, size)), features(restyled)
        f_test, f_photos = features(ImageDataset(test, size)), features(ImageDataset([Item(q, -1) for q in photos], size))
    gate, head = model.heads["gate"], model.heads["side_view"]
    with torch.inference_mode():
        head_test, head_photos = head(f_test)[:, 0] < 0, head(f_photos)[:, 0] < 0

    known = restyled.ops
    subsets = {"none": [], **{op: [op] for op in known},
               **{f"all but {op}": [o for o in known if o != op] for op in known}, "all": list(known)}
    for label, ops in subsets.items():
        kept = copy.deepcopy(gate)
        groups = [i for i, n in enumerate(names) if not n.startswith("restyled-") or n[len("restyled-"):] in ops]
        kept.keep_groups(groups)
        drawn = [i for i in range(len(restyled)) if restyled.op(i) in ops]
        kept.set_threshold(torch.cat([f_val, f_restyled[drawn]]))
        with torch.inference_mode():
            flagged, photos_flagged = head_test | (kept(f_test) < 0), head_photos | (kept(f_photos) < 0)
        by = defaultdict(list)
        for it, flag in zip(test, flagged.tolist()):
            by[it.style if it.side_view else "without a side view"].append(flag)
        shares = ", ".join(f"{k} {100 * sum(v) / len(v):.1f}%" for k, v in sorted(by.items()))
        through = [q.name for q, flag in zip(photos, photos_flagged.tolist()) if not flag]
        print(f"{label}: {shares}; photographs flagged {len(photos) - len(through)} of {len(photos)},"
              f" let through: {through or 'none'}")


if __name__ == "__main__":
    main()
