"""What a run tells its user interface: progress, each finished model, and (for trackers) a
report. The runner and evaluation call it; the CLI's console reporter and the report module
implement it, so no module below them draws anything.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any


class Reporter:
    """What the runner tells the user interface (this one stays silent; the CLI draws bars)."""

    def progress(self, description: str, total: int) -> AbstractContextManager[Any]:
        """A bar for ``total`` units of work (training steps, examples of the IW-NLL)."""
        return nullcontext()

    def advance(self, amount: int = 1) -> None:
        pass

    def finished(self, row: dict[str, Any]) -> None:
        pass

    def report(self, out: Path, registry: Any) -> list[Path]:
        """Files drawn from the finished run for its trackers (a report). The runner draws
        none itself: a caller that wants one (the CLI, a sweep cell) makes it here."""
        return []
