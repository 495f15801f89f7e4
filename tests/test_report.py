"""Reports from a tiny real run, and run-to-run comparison exit codes."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import matplotlib.image
import pytest

import vaebench
from tests.helpers import NaNAfter
from vaebench.cli import main
from vaebench.config import RunConfig
from vaebench.plugins.mlp import MLPDecoder, MLPEncoder
from vaebench.present.browser import browser_missing, view_report
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
    assert 'class="text best">' not in html and re.search(r'<td class="best">[0-9.,]+</td>', html)
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
    assert '<td class="text">epochs</td>' in first_row and 'class="text best"' in first_row
    assert '<div class="scroll"><table>' in html
    markdown = md_path.read_text()
    assert markdown.rindex("## Configuration and environment") > markdown.index("## Quality")


def section_html(html: str, section: str) -> str:
    start = html.index(f'<section id="{section}">')
    return html[start : html.index("</section>", start)]


def table_rows(fragment: str) -> list[list[str]]:
    """Each body row of the fragment's tables as its cells' text (entities kept)."""
    return [
        re.findall(r"<td[^>]*>(.*?)</td>", row)
        for row in re.findall(r"<tr>(.*?)</tr>", fragment)
        if "<td" in row
    ]


def seeded_copy(source, target, iw_nll: dict[str, list[float]]):
    """A copy of run ``source`` with one row per seed for each plugin in ``iw_nll``."""
    shutil.copytree(source, target)
    path = target / "results.json"
    rows = json.loads(path.read_text())
    seeded = []
    for row in rows:
        for seed, value in enumerate(iw_nll.get(row["plugin"], [None])):
            copy = dict(row, seed=seed)
            if value is not None:
                copy["iw_nll"] = value
            seeded.append(copy)
    path.write_text(json.dumps(seeded))
    return target


def test_summary_comes_first_with_the_best_model_and_welch_figures(
    tiny_run, hostile_registry, tmp_path
):
    """The first section names data and device and ranks the models per metric; with seeds
    each difference carries the 95 % interval and p of Welch's test (scipy as reference)."""
    from scipy import stats

    good, bad = [10.0, 10.2, 10.4], [11.0, 11.5, 11.9]
    run = seeded_copy(tiny_run, tmp_path / "seeds", {"mlp": good, NASTY: bad})
    html_path, md_path = make_report([run], tmp_path / "out" / "report.html", hostile_registry)
    html = html_path.read_text()
    assert re.findall(r'<section id="([^"]+)">', html)[0] == "summary"
    summary = section_html(html, "summary")
    assert "Data synthetic (96 train" in summary and "device cpu" in summary
    assert "seeds 0, 1, 2" in summary
    rows = table_rows(summary)
    header = re.search(r"<thead>(.*?)</thead>", summary).group(1)
    assert re.findall(r"<th[^>]*>(.*?)</th>", header)[:3] == [
        "model",
        "IW-NLL (nats)",
        "this − best",
    ]
    welch = stats.ttest_ind(bad, good, equal_var=False)
    interval = welch.confidence_interval(0.95)
    assert rows[0][:3] == ["vae:mlp/normal", "10.20 ± 0.20 (n=3)", "best"]
    assert rows[1][0] == "vae:&lt;script&gt;alert(1)&lt;/script&gt;/normal"
    assert rows[1][2] == (
        f"{sum(bad) / 3 - sum(good) / 3:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}] "
        f"p {welch.pvalue:.3f}"
    )
    assert f"p {welch.pvalue:.3f}, significant at 0.05" in summary
    assert "Not finished: vae:nanny/normal (diverged at step" in summary, (
        "a diverged model is named"
    )
    # the Markdown twin follows the same order
    markdown = md_path.read_text()
    assert (
        markdown.index("## Summary")
        < markdown.index("## Quality")
        < markdown.index("## Configuration")
    )
    assert "| vae:mlp/normal | **10.20 ± 0.20 (n=3)** | best |" in markdown


def test_one_seed_says_there_are_no_error_bars(tiny_run, hostile_registry, tmp_path):
    html = make_report([tiny_run], tmp_path / "r.html", hostile_registry)[0].read_text()
    summary = section_html(html, "summary")
    assert "One seed per model: differences carry no error bars" in summary
    assert "95 % interval" not in summary


def test_per_run_timings_once_per_run_not_in_every_model_row(tiny_run, hostile_registry, tmp_path):
    """The reparam+KL figure is one measurement per run: the per-run section shows it once per
    run; the model tables leave it out; the results files keep the column."""
    second = tmp_path / "run-b"
    shutil.copytree(tiny_run, second)
    html = make_report([tiny_run, second], tmp_path / "r.html", hostile_registry)[0].read_text()
    rows = json.loads((tiny_run / "results.json").read_text())
    figure = f"{rows[0]['reparam_kl_torch_samples_per_s']:,.0f}"
    assert "reparam+KL torch samples/s" not in section_html(html, "throughput")
    per_run = section_html(html, "per-run")
    assert [r[0] for r in table_rows(per_run)[:2]] == ["run-a", "run-b"]
    assert per_run.count(figure) == 2, "once per run"
    assert "reparam_kl_torch_samples_per_s" in (tiny_run / "results.csv").read_text()


@pytest.mark.parametrize("example", ["digits-conv-mlp", "static-mnist-vae-pythae-2x400"])
def test_committed_run_folders_still_render(example, registry, tmp_path):
    """Older run folders (rows without the mode columns, no checkpoints) render, summary
    first; a recipe run puts literature, reproduction and its own figure side by side."""
    run = tmp_path / example
    shutil.copytree(Path(__file__).parent.parent / "examples" / example, run)
    html = make_report([run], tmp_path / "r.html", registry)[0].read_text()
    summary = section_html(html, "summary")
    if example.startswith("static-mnist"):
        published = table_rows(summary)[-1]
        assert published[3:] == ["89.90", "89.78", "90.24", "+0.34", "+0.46"]
        assert "recipe pythae-vae" in published[1]
    else:
        assert "IW-NLL (nats)" in summary and "published model" not in summary


def needs_browser() -> None:
    """Skip where no headless Chromium exists, with the reason; CI sets
    VAEBENCH_REQUIRE_BROWSER so that a missing browser fails instead."""
    why = browser_missing()
    if why and os.environ.get("VAEBENCH_REQUIRE_BROWSER"):
        pytest.fail(f"VAEBENCH_REQUIRE_BROWSER is set, but {why}")
    if why:
        pytest.skip(why)


def assert_reads_well(page) -> None:
    assert page.summary_bottom < 900, "the summary's ranking is on the first screen"
    assert not page.summary_scrolls, "and fits its width"
    assert not page.scrolls_sideways, (page.scroll_width, page.client_width)
    assert page.images > 0 and not page.broken_images
    assert not page.console_errors
    assert not page.duplicate_ids


def test_the_browser_check_sees_what_a_reader_would(tmp_path):
    """The measure bites: a page wider than the window, a broken image, a script error and a
    summary below the first screen are each seen."""
    needs_browser()
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><body><div style="height:1200px"></div>'
        '<section id="summary"><div class="scroll" style="overflow-x:auto">'
        '<div style="width:3000px">wide</div></div></section><div style="width:2000px;height:10px"></div>'
        '<section id="summary"></section>'
        '<img alt="gone" src="missing.png"><script>console.error("boom"); nope();</script>'
        "</body></html>"
    )
    page = view_report(bad)
    assert page.summary_bottom >= 1200 and page.summary_scrolls and page.scrolls_sideways
    assert page.broken_images == ["gone"] and page.duplicate_ids == ["summary"]
    assert any("boom" in e for e in page.console_errors)
    assert any("nope" in e for e in page.console_errors)


def test_report_reads_well_in_headless_chromium(tiny_run, hostile_registry, tmp_path):
    """A report of two runs, one with a model label of 300 unbroken characters, opened at
    1280 x 900: summary on the first screen, no sideways scrolling, every image loaded, no
    console errors; the screenshot is a real PNG of that size."""
    needs_browser()
    long_name = planted(tiny_run, tmp_path / "long", lambda r: r.update(plugin="x" * 300))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        html_path, _ = make_report([tiny_run, long_name], tmp_path / "r.html", hostile_registry)
    assert not [w for w in caught if "layout not applied" in str(w.message)], "labels fit"
    page = view_report(html_path, png=tmp_path / "first.png")
    assert_reads_well(page)
    assert matplotlib.image.imread(tmp_path / "first.png").shape[:2] == (900, 1280)


@pytest.mark.parametrize("example", ["digits-modes", "digits-seeds"])
def test_committed_example_reports_read_well_in_headless_chromium(example):
    """The reports the docs link to (and their screenshots) are of the current layout."""
    needs_browser()
    report = Path(__file__).parent.parent / "examples" / example / "report.html"
    page = view_report(report)
    assert_reads_well(page)
    assert "summary" in page.section_tops and list(page.section_tops)[-1] == "configuration"


@pytest.mark.parametrize("example", ["digits-modes", "digits-seeds"])
def test_committed_example_reports_are_what_the_code_draws_now(example, registry, tmp_path):
    """The committed report's sections, in order, and its summary table are exactly what the
    report code makes of the committed run folder today (so the screenshots are current)."""
    source = Path(__file__).parent.parent / "examples" / example
    run = tmp_path / example
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("checkpoints", "report*"))
    fresh = make_report([run], tmp_path / "r.html", registry)[0].read_text()
    committed = (source / "report.html").read_text()
    ids = re.compile(r'<section id="([^"]+)">')
    assert ids.findall(committed) == ids.findall(fresh)
    assert table_rows(section_html(committed, "summary")) == table_rows(
        section_html(fresh, "summary")
    )


def test_summary_of_runs_without_a_bound_or_without_a_finished_model(
    tiny_run, hostile_registry, tmp_path
):
    """The AE family has no IW-NLL or ELBO: the summary ranks reconstruction; a run where no
    model finished says so; a model with one seed of three diverged is named with its count."""

    def autoencoder(row):
        row.update(family="ae", model="ae", iw_nll=None, neg_elbo=None, bpd=None)

    ae = planted(tiny_run, tmp_path / "ae", autoencoder, plugin=None)
    html = make_report([ae], tmp_path / "ae.html", hostile_registry)[0].read_text()
    summary = section_html(html, "summary")
    header = re.findall(r"<th[^>]*>(.*?)</th>", summary)
    assert header[1] == "recon (nats)" and "IW-NLL (nats)" not in header

    dead = planted(tiny_run, tmp_path / "dead", lambda r: r.update(status="failed: x"), plugin=None)
    html = make_report([dead], tmp_path / "dead.html", hostile_registry)[0].read_text()
    summary = section_html(html, "summary")
    assert "No model finished: nothing to rank." in summary and "Not finished:" in summary

    partial = seeded_copy(tiny_run, tmp_path / "partial", {"mlp": [10.0, 10.1, 10.2]})
    rows = json.loads((partial / "results.json").read_text())
    next(r for r in rows if r["plugin"] == "mlp" and r["seed"] == 2)["status"] = (
        "diverged at step 3"
    )
    (partial / "results.json").write_text(json.dumps(rows))
    html = make_report([partial], tmp_path / "p.html", hostile_registry)[0].read_text()
    summary = section_html(html, "summary")
    assert "vae:mlp/normal (ok 2/3; seed 2: diverged at step 3)" in summary
    assert "(one seed on a side: no interval)" in summary, "mlp has 2 seeds, the other model 1"
