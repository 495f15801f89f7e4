"""The documentation: generated tables in step with the code, a short README whose links
resolve, and a site that builds with ``mkdocs build --strict`` (as CI runs it)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.helpers import REPO
from vaebench import docs

DOCS = REPO / "docs"
README = REPO / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
SITE_PACKAGES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "griffe")


def site_tools_missing() -> list[str]:
    missing = []
    for name in SITE_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_docs_blocks_are_fresh():
    pages = docs.pages(DOCS)
    assert {name for page in pages for name in docs.blocks_in(page.read_text())} == set(
        docs.BLOCKS
    ), "every generated table has a page in docs/"
    assert docs.stale(pages) == [], f"docs out of date: run {docs.FIX}"


def test_the_generator_rewrites_a_stale_block_and_leaves_the_rest(tmp_path):
    page = DOCS / "reference" / "options.md"
    fresh = page.read_text()
    stale = fresh.replace("| `--lr` |", "| `--learning-rate` |")
    assert stale != fresh
    (tmp_path / "sub").mkdir()
    copy = tmp_path / "sub" / "options.md"
    copy.write_text(stale)
    (tmp_path / "plain.md").write_text("# no generated block here\n")
    assert docs.pages(tmp_path) == [copy]
    assert docs.stale([copy]) == [copy]
    assert docs.main([str(tmp_path)]) == 0
    assert copy.read_text() == fresh
    assert (tmp_path / "plain.md").read_text() == "# no generated block here\n"
    assert docs.main([str(tmp_path / "nowhere")]) == 2


def test_the_site_build_fails_on_a_stale_table():
    if missing := site_tools_missing():
        pytest.skip(f"the docs extra is not installed (missing {', '.join(missing)})")
    from mkdocs.exceptions import PluginError

    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = SimpleNamespace(file=SimpleNamespace(src_uri="reference/options.md"))
    fresh = (DOCS / "reference" / "options.md").read_text()
    assert hooks.on_page_markdown(fresh, page=page) == fresh
    stale = fresh.replace("| `--lr` |", "| `--learning-rate` |")
    with pytest.raises(PluginError, match=r"reference/options\.md.*python -m vaebench\.docs"):
        hooks.on_page_markdown(stale, page=page)


def test_readme_is_short_and_keeps_the_quickstart():
    text = README.read_text()
    lines = text.count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move detail into docs/"
    assert "vaebench run --plugins conv,mlp" in text
    assert "python -m pytest" in text
    assert docs.blocks_in(text) == [], "the generated tables live in docs/"


def test_every_relative_link_in_the_readme_resolves():
    text = README.read_text()
    prose = FENCE.sub("", text)
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", prose, re.M)}
    targets = LINK.findall(prose)
    assert targets, "the README links to the docs"
    broken = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        if not path:
            if anchor not in anchors:
                broken.append(target)
        elif not (REPO / path).resolve().exists():
            broken.append(target)
    assert broken == []
    assert any(t.startswith("docs/") for t in targets)


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    if missing := site_tools_missing():
        pytest.skip(
            f"mkdocs build needs the docs extra: pip install -e '.[docs]' (missing {', '.join(missing)})"
        )
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site / "index.html").is_file()
    kernels = (site / "api" / "kernels" / "index.html").read_text()
    assert 'id="vaebench.kernels.api.reparameterize_kl"' in kernels
    hookspecs = (site / "api" / "hookspecs" / "index.html").read_text()
    assert 'id="vaebench.hookspecs.vaebench_register_encoders"' in hookspecs
    assert not Path(site / "hooks.py").exists()
