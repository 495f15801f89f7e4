"""Build-time checks and helpers of the documentation site (``hooks:`` and mkdocstrings in mkdocs.yml).

- ``on_page_markdown``: fails the build when a page's generated table (``<!-- NAME:start -->``
  ... ``<!-- NAME:end -->``) differs from what the code says now; ``python -m vaebench.docs``
  regenerates it.
- ``on_files``: publishes the examples' report screenshots (``examples/*/first-screen.png``)
  at the same paths on the site, so the pages show the files committed beside the runs
  rather than copies.
- ``KernelsAsSubpackage``: a griffe extension that loads the folder ``kernels/`` as
  ``vaebench.kernels``, as ``[tool.setuptools.package-dir]`` installs it, so mkdocstrings can
  document the kernel API under its public name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import griffe
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

from vaebench import docs


def on_page_markdown(markdown: str, *, page: Any, **kwargs: Any) -> str:
    fresh = docs.render(markdown)
    if fresh != markdown:
        stale = [
            name
            for name in docs.blocks_in(markdown)
            if docs.pattern(name).search(markdown)[0] != docs.pattern(name).search(fresh)[0]
        ]
        raise PluginError(
            f"docs/{page.file.src_uri}: the generated {' and '.join(stale)} table differs from "
            f"the code; run `{docs.FIX}` and commit the result"
        )
    return markdown


def on_files(files: Files, *, config: Any) -> Files:
    root = Path(config["docs_dir"]).parent
    for shot in sorted(root.glob("examples/*/first-screen.png")):
        uri = shot.relative_to(root).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(shot)))
    return files


class KernelsAsSubpackage(griffe.Extension):
    """Attach the top-level ``kernels`` package to ``vaebench`` as ``vaebench.kernels``."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "vaebench" or "kernels" in pkg.members:
            return
        kernels = loader.load("kernels", try_relative_path=False)
        loader.modules_collection.del_member("kernels")
        pkg.set_member("kernels", kernels)
