"""Screenshot the summary panel (first modality section's summary) of a participant report.

Usage: ``python tests/browser/summary_screenshot.py REPORT.html OUT.png [--width 1100]``. Regenerates
``docs/images/summary.png`` from a phantom case, e.g.::

    strokeperf-phantom /tmp/ph/bids --participant demo --seed 5   # or strokeperf.phantom API
    strokeperf /tmp/ph/bids /tmp/ph/out participant
    python tests/browser/summary_screenshot.py /tmp/ph/out/sub-demo.html docs/images/summary.png
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import cdp  # noqa: E402

#: The summary panel: from the section heading to the end of the profile table.
PANEL_JS = """(() => {
  const s = document.querySelector('section[data-modality]');
  const top = s.querySelector('h2').getBoundingClientRect().top + window.scrollY;
  const end = s.querySelector('table.profiles').getBoundingClientRect().bottom + window.scrollY;
  return {x: 0, y: top - 8, width: document.documentElement.clientWidth, height: end - top + 16};
})()"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1100, help="viewport width in CSS pixels")
    args = parser.parse_args(argv)
    ok, message = cdp.ensure_chromium()
    if not ok:
        print(message, file=sys.stderr)
        return 1
    browser = cdp.Browser(width=args.width, height=900)
    try:
        browser.open(args.report)
        clip = browser.evaluate(PANEL_JS)
        data = browser.call("Page.captureScreenshot",
                            {"format": "png", "captureBeyondViewport": True,
                             "clip": {**clip, "scale": 1}}, session=True)["data"]
    finally:
        browser.close()
    from PIL import Image  # matplotlib's own dependency: re-encode with an optimised palette

    image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        args.out, optimize=True)
    print(f"{args.out}: {image.size[0]} x {image.size[1]} px, {args.out.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
