"""Reports from a tiny real run, and run-to-run comparison exit codes."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import matplotlib.image
import pytest

import vaebench
from tests.helpers import NaNAfter
from vaebench.cli import main
from vaebench.config import RunConfig
from vaebench.plugins.mlp import MLPDecoder, MLPEncoder
from vaebench.present.report import make_report
from vaebench.registry import Owner
from vaebench.resolve import resolve_config
from vaebench.runner import run

NASTY = "<script>alert(1)</script>"
SECTIONS = (
    "configuration",
    "quality",
    "families",
    "throughput",
    "training-curves",
    "quality-chart",
    "throughput-chart",
    "kl-per-dimension",
    "reconstructions",
    "prior-samples",
    "interpolations",
)
FAST = {
    "dataset": "synthetic",
    "dataset_options": {"n_train": 96, "n_test": 32},
    "iw_samples": 4,
    "timing_min_time": 0.01,
}


class HostilePlugins:
    @vaebench.hookimpl
    def vaebench_register_encoders(self, register):
        register(NASTY, MLPEncoder)
        register("nanny", NaNAfter)

    @vaebench.hookimpl
    def vaebench_register_decoders(self, register):
        register(NASTY, MLPDecoder)
        register("nanny", MLPDecoder)


@pytest.fixture
def hostile_registry(registry):
    registry.add_plugin(HostilePlugins(), Owner("tests", "0", "hostile"))
    return registry


@pytest.fixture
def tiny_run(hostile_registry, tmp_path):
    out = tmp_path / "run-a"
    config = resolve_config(
        RunConfig(plugins=["mlp", NASTY, "nanny"], epochs=2, out=str(out), **FAST), hostile_registry
    )
    run(config, hostile_registry)
    return out


def decoded_images(html: str) -> list:
    blobs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    return [matplotlib.image.imread(io.BytesIO(base64.b64decode(b)), format="png") for b in blobs]


def test_report_has_every_section_and_escapes_plugin_names(tiny_run, hostile_registry, tmp_path):
    html_path, md_path = make_report([tiny_run], tmp_path / "out" / "report.html", hostile_registry)
    html = html_path.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html, section
    assert NASTY not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    images = decoded_images(html)
    # families chart, curves, 2 bar charts, KL map, then 3 pictures for each of the 2 finished models
    assert len(images) == 5 + 3 * 2
    assert all(img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50 for img in images)
    assert "diverged at step" in html, "a diverged model is shown as diverged, not left out"
    markdown = md_path.read_text()
    for title in (
        "Quality",
        "Throughput",
        "Training curves",
        "Test reconstructions",
        "Samples decoded from the prior",
    ):
        assert title in markdown
    pictures = re.findall(r"\]\((report_figures/[^)]+\.png)\)", markdown)
    assert len(pictures) == len(images)
    for picture in pictures:
        assert matplotlib.image.imread(md_path.parent / picture).size > 0


def test_report_puts_runs_side_by_side(tiny_run, hostile_registry, tmp_path):
    second = tmp_path / "run-b"
    shutil.copytree(tiny_run, second)
    html_path, _ = make_report([tiny_run, second], tmp_path / "both.html", hostile_registry)
    html = html_path.read_text()
    assert "run-a: vae:mlp/normal" in html and "run-b: vae:mlp/normal" in html
    assert '<td class="best">' in html
    assert "reparam+KL torch samples/s" in html, "the kernel timing of each backend is reported"


def test_report_command_and_its_errors(tiny_run, tmp_path, capsys):
    assert main(["report", str(tiny_run)]) == 0
    assert (tiny_run / "report.html").is_file() and (tiny_run / "report.md").is_file()
    # plugins missing at report time (the hostile ones): pictures say so, the report still renders
    assert "cannot redraw" in (tiny_run / "report.html").read_text()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def planted(source, target, edit, *, plugin="mlp"):
    """A copy of run ``source`` whose rows for ``plugin`` (all rows for None) ``edit`` changes."""
    shutil.copytree(source, target)
    path = target / "results.json"
    rows = json.loads(path.read_text())
    for row in rows:
        if plugin is None or row["plugin"] == plugin:
            edit(row)
    path.write_text(json.dumps(rows))
    return target


def test_compare_exit_codes(tiny_run, tmp_path, capsys):
    assert main(["compare", str(tiny_run), str(tiny_run)]) == 0

    worse = planted(tiny_run, tmp_path / "worse-nll", lambda r: r.update(iw_nll=r["iw_nll"] + 1.5))
    assert main(["compare", str(tiny_run), str(worse)]) == 1
    assert main(["compare", str(tiny_run), str(worse), "--max-nll-increase", "2"]) == 0

    slower = planted(
        tiny_run,
        tmp_path / "slower",
        lambda r: r.update(train_samples_per_s=0.8 * r["train_samples_per_s"]),
    )
    assert main(["compare", str(tiny_run), str(slower)]) == 1
    assert main(["compare", str(tiny_run), str(slower), "--max-slowdown", "25%"]) == 0

    broken = planted(tiny_run, tmp_path / "broken", lambda r: r.update(status="diverged at step 1"))
    assert main(["compare", str(tiny_run), str(broken)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION vae:mlp/normal: now diverged at step 1" in out

    assert main(["compare", str(tiny_run), str(tmp_path / "missing")]) == 2
    other = planted(
        tiny_run, tmp_path / "other", lambda r: r.update(prior="elsewhere"), plugin=None
    )
    assert main(["compare", str(tiny_run), str(other)]) == 2
    assert "no model (model:plugin/prior) in common" in capsys.readouterr().err


def test_configuration_comes_last_folded_with_differing_settings_first(
    tiny_run, hostile_registry, tmp_path
):
    """The answer first: the configuration dump is the last section, closed under its title in
    the HTML, and across runs the settings that differ lead its table, highlighted."""
    import shutil

    other = tmp_path / "run-b"
    shutil.copytree(tiny_run, other)
    config = json.loads((other / "config.json").read_text())
    config["epochs"] = 7
    (other / "config.json").write_text(json.dumps(config))
    html_path, md_path = make_report(
        [tiny_run, other], tmp_path / "out" / "report.html", hostile_registry
    )
    html = html_path.read_text()
    sections = re.findall(r'<section id="([^"]+)">', html)
    assert sections[-1] == "configuration" and sections[0] != "configuration"
    last = html[html.index('<section id="configuration">') :]
    assert last.startswith('<section id="configuration"><details><summary>')
    table = last[last.index("<tbody>") :]
    first_row = re.search(r"<tr>(.*?)</tr>", table).group(1)
    assert "<td>epochs</td>" in first_row and 'class="best"' in first_row
    assert '<div class="scroll"><table>' in html
    markdown = md_path.read_text()
    assert markdown.rindex("## Configuration and environment") > markdown.index("## Quality")
