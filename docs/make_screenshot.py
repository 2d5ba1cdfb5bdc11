"""Make docs/screenshot.png: the app on the bundled models, one example analysed, in chromium.

Run: python docs/make_screenshot.py [--example turtle_neck_cva32_webcam.jpg] [--model resnet14]
Needs Debian's chromium (or POSTURE_CHROMIUM) and the playwright package.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from webapp.launcher import running_app  # noqa: E402

CHROMIUM = os.environ.get("POSTURE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def main() -> None:
    """Start the app, click the example, wait for the verdict and the overlay, save the page."""
    from playwright.sync_api import expect, sync_playwright

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--example", default="turtle_neck_cva32_webcam.jpg", help="file name in examples/")
    parser.add_argument("--model", default="resnet14", help="bundled model to show")
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshot.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            running_app(Path(tmp), REPO / "checkpoints", REPO / "examples") as app, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(app.url)
        page.locator("#predict-model input").click()
        page.get_by_role("option", name=re.compile(rf"^{args.model}\b")).first.click()
        page.locator("#photo input[type=file]").set_input_files(str(REPO / "examples" / args.example))
        expect(page.locator("#verdict")).to_contain_text(re.compile("normal|turtle neck|No side view"))
        expect(page.locator("#overlay img")).to_be_visible()
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(500)
        page.screenshot(path=args.out, full_page=False)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
