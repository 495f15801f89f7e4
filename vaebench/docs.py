"""Keep the README's generated tables (result columns, run options) in step with the code.

``python -m vaebench.docs`` rewrites each block between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``; a test fails when the README and the code disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from vaebench.config import options_markdown
from vaebench.schema import columns_markdown

BLOCKS = {"columns": columns_markdown, "options": options_markdown}


def pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {name}:start -->\n)(.*?)(<!-- {name}:end -->)", re.S)


def render(text: str) -> str:
    """``text`` with every generated block replaced by what the code says now."""
    for name, make in BLOCKS.items():
        text = pattern(name).sub(lambda m, make=make: m.group(1) + make() + "\n" + m.group(3), text)
    return text


if __name__ == "__main__":
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    readme.write_text(render(readme.read_text()))
