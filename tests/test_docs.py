"""The documentation stays true to the repository: the files it names exist, its commands parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from posture.__main__ import get_args_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "checkpoints/README.md", "examples/README.md", "benchmarks/README.md"]
# A path into one of the repository's own folders, as the docs write them (`examples/x.jpg`).
REPO_PATH = re.compile(r"(?<![\w/$.-])((?:examples|checkpoints|benchmarks|posture|tests|docs|\.ci)/[\w./-]*\w)")


def _commands(text: str) -> list[str]:
    """The runnable `python -m posture ...` lines of a document's code blocks, continuations joined.

    Usage synopses (with `[optional]` parts or `a|b` alternatives) are not commands and are skipped.
    """
    lines, joined = text.splitlines(), []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1].rstrip() + " " + lines[i].strip()
        if line.startswith("python -m posture ") and not re.search(r"[\[|]", line):
            joined.append(line)
        i += 1
    return joined


@pytest.mark.parametrize("doc", DOCS)
def test_every_repository_path_a_document_names_exists(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    named = {m.rstrip(".") for m in REPO_PATH.findall(text)}
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{doc} names files that do not exist: {missing}"


def test_the_path_check_sees_a_missing_file():
    assert REPO_PATH.findall("run `examples/nobody_here.jpg`, then `$HOME/examples/x`") == ["examples/nobody_here.jpg"]


def test_every_command_the_model_card_shows_is_accepted_by_the_cli():
    doc = "checkpoints/README.md"
    commands = _commands((ROOT / doc).read_text(encoding="utf-8"))
    assert len(commands) >= 10, f"the reproduce commands of {doc} were not found"
    parser = get_args_parser()
    for command in commands:
        argv = shlex.split(command)[3:]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{doc}: the CLI rejects `{command}` (exit {exc.code})")


def test_the_command_check_rejects_an_unknown_option():
    (command,) = _commands("    python -m posture evaluate --model m.safetensors \\\n        --data d --no-such-flag\n")
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(shlex.split(command)[3:])


MODELS = ("resnet14", "resnet18")
# The model card's summary table: row label (its start) -> how the row shows a checkpoint's test metrics.
CARD_ROWS = {
    "explained layer": lambda t: f"`{t['layer']}`",
    "**test accuracy**": lambda t: f"**{t['accuracy']:.3f}**",
    "test ROC-AUC": lambda t: f"{t['roc_auc']:.3f}",
    "test ECE": lambda t: f"{t['ece']:.3f}",
    "test confusion": lambda t: f"`{t['confusion']}`",
    "CVA mean absolute error": lambda t: f"{t['cva_mae']:.2f} degrees ({t['cva_within_5']:.0%})",
    'side views flagged "no side view"': lambda t: f"{t['side_view']['side_views_flagged']:.1%}",
    "pictures without a side view flagged (of": lambda t: f"{t['side_view']['without_flagged']:.1%}",
    "Grad-CAM mass inside": lambda t: f"{t['cam_mass_in_box']:.3f}",
    "pointing game": lambda t: f"{t['pointing_game']:.3f}",
}


README_ROWS = {  # the README's table of the bundled models, shown rounded
    "accuracy on 5,600 side views": lambda t: f"{t['accuracy']:.1%} ({t['ece']:.3f})",
    "CVA mean absolute error": lambda t: f"{t['cva_mae']:.1f} degrees",
    "side views wrongly flagged": lambda t: (f"{t['side_view']['side_views_flagged']:.1%} "
                                             f"({max(s['side_view']['side_views_flagged'] for s in t['by_style'].values()):.1%})"),
    "pictures without a side view flagged (1,400": lambda t: f"{t['side_view']['without_flagged']:.1%} / ",
    "Grad-CAM mass in the head-and-neck box": lambda t: f"{t['cam_mass_in_box']:.2f}, {t['pointing_game']:.2f} (`{t['layer']}`)",
}


def table_mismatches(doc: str, rows: dict, tests: dict[str, dict]) -> list[str]:
    """Where a document's table rows (label start -> how a row shows a checkpoint's test metrics,
    one column per model in `MODELS` order) differ from the metrics recorded in the checkpoints
    (`tests`: model name -> `read_info(...).metrics["test"]`)."""
    problems, cells = [], {}
    for line in doc.splitlines():
        if not line.startswith("| "):
            continue
        parts = [c.strip() for c in line.strip().strip("|").split("|")]
        for label in rows:
            if parts[0].startswith(label):
                cells[label] = parts[1:]
    for label, show in rows.items():
        if label not in cells:
            problems.append(f"no row {label!r}")
            continue
        for model, cell in zip(MODELS, cells[label]):
            if not cell.startswith(show(tests[model])):
                problems.append(f"{label} of {model}: the document says {cell!r}, the checkpoint {show(tests[model])!r}")
    return problems


def _style_row(style: str, s: dict) -> str:
    """A row of the model card's per-style table, as a style's recorded metrics show it."""
    return (f"| {style} | {s['n']} | {s['accuracy']:.3f} | {s['ece']:.3f} | {s['cva_mae']:.2f} | "
            f"{s['side_view']['side_views_flagged']:.3f} | {s['cam_mass_in_box']:.3f} | {s['pointing_game']:.3f} |")


def card_mismatches(card: str, tests: dict[str, dict]) -> list[str]:
    """Where the model card's summary and per-style tables differ from the checkpoints' test metrics."""
    problems = table_mismatches(card, CARD_ROWS, tests)
    section = card.split("## Per style", 1)[-1].split("\n## ", 1)[0]
    for model in MODELS:
        table = section.split(f"\n{model}:\n", 1)[-1].strip().split("\n\n", 1)[0]
        shown = {row.split("|")[1].strip(): row for row in table.splitlines()[2:]}
        for style, s in tests[model]["by_style"].items():
            if shown.get(style) != _style_row(style, s):
                problems.append(f"{model}, {style}: the card says {shown.get(style)!r}, the checkpoint {_style_row(style, s)!r}")
    return problems


def _recorded_tests() -> dict[str, dict]:
    from posture.checkpoints import read_info
    return {m: read_info(ROOT / "checkpoints" / f"{m}.safetensors").metrics["test"] for m in MODELS}


def test_the_model_cards_test_figures_are_the_ones_the_bundled_checkpoints_record():
    assert card_mismatches((ROOT / "checkpoints/README.md").read_text(encoding="utf-8"), _recorded_tests()) == []


def test_the_readmes_figures_of_the_bundled_models_are_the_ones_their_checkpoints_record():
    assert table_mismatches((ROOT / "README.md").read_text(encoding="utf-8"), README_ROWS, _recorded_tests()) == []


def test_the_figure_check_sees_a_stale_figure():
    tests = _recorded_tests()
    tests["resnet18"] = {**tests["resnet18"], "accuracy": tests["resnet18"]["accuracy"] - 0.01}
    style = next(iter(tests["resnet14"]["by_style"]))
    tests["resnet14"]["by_style"] = {**tests["resnet14"]["by_style"],
                                     style: {**tests["resnet14"]["by_style"][style], "n": 1}}
    problems = card_mismatches((ROOT / "checkpoints/README.md").read_text(encoding="utf-8"), tests)
    assert len(problems) == 2
    assert problems[0].startswith("**test accuracy** of resnet18") and problems[1].startswith(f"resnet14, {style}")
    readme = table_mismatches((ROOT / "README.md").read_text(encoding="utf-8"), README_ROWS, tests)
    assert [p.split(":")[0] for p in readme] == ["accuracy on 5,600 side views of resnet18"]


def test_the_real_photographs_the_card_counts_are_gathered_from_installed_packages_and_the_wheel(tmp_path):
    """`examples/real_photos.py` finds the ten photographs in installed packages and the eighteen in
    a scikit-image wheel, and every file it copies is a picture the predictor can read."""
    import importlib.util
    import zipfile

    from PIL import Image

    from posture import load_image

    spec = importlib.util.spec_from_file_location("real_photos", ROOT / "examples" / "real_photos.py")
    real_photos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real_photos)
    wheel = tmp_path / "scikit_image-0-py3-none-any.whl"  # the wheel's layout, with pictures of our own
    with zipfile.ZipFile(wheel, "w") as archive:
        for i, name in enumerate(real_photos.SKIMAGE):
            picture = tmp_path / f"p{i}{Path(name).suffix}"
            Image.new("RGB", (40 + i, 30), (i * 10, 80, 120)).save(picture)
            archive.write(picture, f"skimage/data/{name}")
    found = real_photos.gather(tmp_path / "out", wheel)
    assert len(found["installed"]) == 10 and len(found["scikit-image"]) == 18
    assert len({p.name for paths in found.values() for p in paths}) == 28  # no file overwrites another
    for path in found["installed"] + found["scikit-image"][:3]:
        assert min(load_image(path).size) > 0
    assert load_image(found["scikit-image"][5]).size == (45, 30)  # the wheel's own file, not another
    assert len(real_photos.gather(tmp_path / "ten")["scikit-image"]) == 0
    with pytest.raises(SystemExit, match="not a scikit-image wheel"):
        real_photos.gather(tmp_path / "bad", tmp_path / "p0.png")


def test_the_restyle_ops_example_says_when_a_gate_has_no_restyled_groups(tmp_path):
    """`examples/gate_restyle_ops.py` on a gate fitted on the styles alone (the bundled resnet14's)
    stops with what to do instead, before it reads any data."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, ROOT / "examples" / "gate_restyle_ops.py", ROOT / "checkpoints" / "resnet14.safetensors",
                        "--data", tmp_path / "none", "--test", tmp_path / "none"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "has no restyled groups" in r.stderr and "gate --restyle" in r.stderr
    assert "Traceback" not in r.stderr
