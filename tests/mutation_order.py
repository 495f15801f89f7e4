"""A pytest plugin for ``tox -e mutation``: each mutant's tests run fastest first.

mutmut runs a mutant's tests with ``-x`` in collection order, so a mutant that a 0.01 s unit
test kills may first wait for a minute of end-to-end runs. mutmut records every test's
duration in ``mutmut-stats.json`` (in the folder it runs the tests from); ordering by it makes
a killed mutant cost its quickest killing test. A surviving mutant runs every test either way.
Loaded only by ``[tool.mutmut] pytest_add_cli_args``; plain ``pytest`` never sees it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

STATS = Path("mutmut-stats.json")


def _durations() -> dict[str, float]:
    try:
        return json.loads(STATS.read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return {}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return  # the stats, clean and forced-fail passes keep pytest's order
    durations = _durations()
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
