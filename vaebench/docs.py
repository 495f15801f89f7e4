"""Keep the documentation's generated tables (run options, result columns) in step with the code.

A page in ``docs/`` holds a generated table between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``, NAME one of ``BLOCKS``. ``python -m vaebench.docs [DOCS_DIR]`` rewrites
every such block in every ``*.md`` file under ``DOCS_DIR`` (default: ``docs``) with what the
code says now; ``mkdocs build`` (the hook in ``docs/hooks.py``) and a test fail when a page
and the code disagree.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path

from vaebench.config import options_markdown
from vaebench.schema import columns_markdown

BLOCKS = {"columns": columns_markdown, "options": options_markdown}
FIX = "python -m vaebench.docs"


def pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {name}:start -->\n)(.*?)(<!-- {name}:end -->)", re.S)


def render(text: str) -> str:
    """``text`` with every generated block replaced by what the code says now."""
    for name, make in BLOCKS.items():
        text = pattern(name).sub(lambda m, make=make: m.group(1) + make() + "\n" + m.group(3), text)
    return text


def blocks_in(text: str) -> list[str]:
    """The names of the generated blocks ``text`` holds."""
    return [name for name in BLOCKS if pattern(name).search(text)]


def pages(root: Path | str = "docs") -> list[Path]:
    """Every Markdown file under ``root`` that holds a generated block, in path order."""
    return [p for p in sorted(Path(root).rglob("*.md")) if blocks_in(p.read_text())]


def stale(paths: Iterable[Path]) -> list[Path]:
    """Those of ``paths`` whose generated blocks differ from what the code says now."""
    return [p for p in paths if render(text := p.read_text()) != text]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else "docs")
    if not root.is_dir():
        print(f"vaebench.docs: {root} is not a folder (give the docs folder)", file=sys.stderr)
        return 2
    for path in stale(pages(root)):
        path.write_text(render(path.read_text()))
        print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
