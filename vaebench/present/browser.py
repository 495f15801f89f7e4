"""Open a report in headless Chromium as a reader would, measure what they would see, and
take a screenshot of the first screen.

The system's Chromium (Debian's ``chromium``) is driven through Playwright's Python package;
Playwright's own browser download is never used (machines here reach no browser host). The
report tests and ``python -m vaebench.present.browser REPORT.html --png FIRST.png`` both
read this module, so the screenshots in the docs show exactly what the test checked.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

WIDTH, HEIGHT = 1280, 900  # the reader's window: a laptop screen
# Flags for a closed network and a root user (no sandbox); without the background-networking
# ones Chromium keeps dialling Google's hosts.
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str | None:
    """``$VAEBENCH_CHROMIUM``, else ``chromium`` (or ``chromium-browser``) on the PATH."""
    given = os.environ.get("VAEBENCH_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_missing() -> str | None:
    """Why no browser check can run here, or None when one can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is not installed (pip install -e '.[browser]')"
    if chromium_path() is None:
        return "no Chromium found (apt-get install chromium, or set VAEBENCH_CHROMIUM)"
    return None


@dataclass
class PageView:
    """What a reader's browser saw of one page."""

    section_tops: dict[str, float]  # each <section id>'s top, px from the page's top
    scroll_width: int  # the document's width; above the window's, the page scrolls sideways
    client_width: int
    images: int
    broken_images: list[str] = field(default_factory=list)  # alt texts of images not loaded
    console_errors: list[str] = field(default_factory=list)  # console errors and page errors
    duplicate_ids: list[str] = field(default_factory=list)  # section ids used twice
    summary_bottom: float | None = None  # where the summary's ranking table ends, px
    summary_scrolls: bool = False  # that table wider than its box (the reader scrolls it)

    @property
    def scrolls_sideways(self) -> bool:
        return self.scroll_width > self.client_width


MEASURE = """() => {
  const tops = {}, duplicates = [];
  for (const s of document.querySelectorAll('section[id]')) {
    if (s.id in tops) duplicates.push(s.id);
    tops[s.id] = s.getBoundingClientRect().top + window.scrollY;
  }
  // the summary's first table: where it ends, and whether it had to scroll in its box
  const box = document.querySelector('section#summary .scroll');
  const summary = box ? {bottom: box.getBoundingClientRect().bottom + window.scrollY,
                         scrolls: box.scrollWidth > box.clientWidth} : null;
  const images = [...document.images];
  return {
    tops,
    scrollWidth: document.documentElement.scrollWidth,
    clientWidth: document.documentElement.clientWidth,
    duplicates,
    summary,
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 40)),
  };
}"""


def view_report(
    path: Path, *, width: int = WIDTH, height: int = HEIGHT, png: Path | None = None
) -> PageView:
    """Load ``path`` (a file) at ``width`` x ``height``, wait for every image, measure, and
    write the first screen to ``png`` when given."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError(browser_missing())
    errors: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="vaebench-chromium-") as profile,
        sync_playwright() as play,
    ):
        context = play.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=list(FLAGS),
            viewport={"width": width, "height": height},
        )
        try:
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(Path(path).resolve().as_uri(), wait_until="load")
            seen = page.evaluate(MEASURE)
            if png is not None:
                Path(png).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(png), full_page=False)
        finally:
            context.close()
    return PageView(
        {k: float(v) for k, v in seen["tops"].items()},
        int(seen["scrollWidth"]),
        int(seen["clientWidth"]),
        int(seen["images"]),
        list(seen["broken"]),
        errors,
        list(seen["duplicates"]),
        seen["summary"]["bottom"] if seen["summary"] else None,
        bool(seen["summary"] and seen["summary"]["scrolls"]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vaebench.present.browser",
        description="Screenshot a report's first screen in headless Chromium and say what a "
        "reader sees (summary position, sideways scrolling, images, console errors).",
    )
    parser.add_argument("report", type=Path)
    parser.add_argument("--png", type=Path, required=True, help="where the screenshot goes")
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--height", type=int, default=HEIGHT)
    args = parser.parse_args(argv)
    why = browser_missing()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    if not args.report.is_file():
        print(f"error: {args.report}: no such report file", file=sys.stderr)
        return 2
    seen = view_report(args.report, width=args.width, height=args.height, png=args.png)
    print(
        f"{args.png}: summary from {seen.section_tops.get('summary', float('nan')):.0f} px to "
        f"{seen.summary_bottom or float('nan'):.0f} px"
        f"{' (its table scrolls sideways)' if seen.summary_scrolls else ''}, "
        f"page {seen.scroll_width} px wide in a {seen.client_width} px window, "
        f"{seen.images} images ({len(seen.broken_images)} broken), "
        f"{len(seen.console_errors)} console errors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
