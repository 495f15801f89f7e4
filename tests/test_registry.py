"""Plugin discovery: built-ins, a real third-party entry point, broken and duplicate plugins."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import vaebench
from tests.helpers import FAST_CLI, run_cli, write_distribution
from vaebench.errors import ConfigError, PluginError
from vaebench.registry import Owner, Registry

GOOD_PLUGIN = """
    import torch
    from torch import nn
    import vaebench

    class TinyEncoder(nn.Module):
        def __init__(self, input_shape, latent_dim):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), 2 * latent_dim))
        def forward(self, x):
            return self.net(x).chunk(2, dim=-1)

    class TinyDecoder(nn.Module):
        def __init__(self, input_shape, latent_dim):
            super().__init__()
            self.shape = tuple(input_shape)
            self.net = nn.Linear(latent_dim, int(torch.tensor(input_shape).prod()))
        def forward(self, z):
            return self.net(z).view(z.shape[0], *self.shape)

    @vaebench.hookimpl
    def vaebench_register_encoders(register):
        register("tiny", TinyEncoder)

    @vaebench.hookimpl
    def vaebench_register_decoders(register):
        register("tiny", TinyDecoder)
"""

IMPORT_FAILS = "raise ImportError('needs a library that is not installed')\n"

HOOK_FAILS = """
    import vaebench

    @vaebench.hookimpl
    def vaebench_register_encoders(register):
        register("half", object)
        raise RuntimeError("registration blew up")
"""

CLAIMS_MLP = """
    import vaebench

    @vaebench.hookimpl
    def vaebench_register_encoders(register):
        register("mlp", lambda input_shape, latent_dim: None)
"""


def write_tiny(root):
    """The well-behaved third-party plugin, installed under ``root``."""
    return write_distribution(
        root, "vaebench-tiny", "0.3", "vaebench_tiny", GOOD_PLUGIN, {"tiny": "vaebench_tiny"}
    )


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    root = write_tiny(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    yield root
    sys.modules.pop("vaebench_tiny", None)


def test_builtins_are_registered_with_their_owner(registry: Registry):
    assert registry.families() == ["conv", "mlp"]
    assert registry.names("prior") == ["flow", "mog", "normal", "vamp"]
    assert registry.names("model") == ["ae", "dae", "iwae", "sae", "vae"]
    assert {"digits", "synthetic"} <= set(registry.names("dataset"))
    assert registry.names("likelihood") == ["bernoulli", "categorical", "dlogistic", "gaussian"]
    assert registry.names("task") == [
        "cifar10",
        "dynamic-mnist",
        "fashion-mnist",
        "omniglot",
        "static-mnist",
    ]
    owner = registry.get("encoder", "conv").owner
    assert owner.distribution == "vaebench" and owner.plugin == "vaebench.plugins.builtins"


def test_factories_registered_by_path_import_on_first_use(registry: Registry):
    class ByPath:
        @vaebench.hookimpl
        def vaebench_register_priors(self, register):
            register("lazy-normal", "vaebench.plugins.priors:StandardNormalPrior")
            register("missing", "vaebench_no_such_module:Prior")

    registry.add_plugin(ByPath(), Owner("by-path", "1.0", "bypath"))
    from vaebench.plugins.priors import StandardNormalPrior

    assert registry.get("prior", "lazy-normal").factory is StandardNormalPrior
    with pytest.raises(
        PluginError, match=r"prior 'missing' from by-path 1.0 \(bypath\): cannot import"
    ):
        _ = registry.get("prior", "missing").factory


def test_a_factory_that_is_neither_callable_nor_a_path_drops_the_plugin(registry: Registry):
    class Bad:
        @vaebench.hookimpl
        def vaebench_register_priors(self, register):
            register("fine", "vaebench.plugins.priors:VampPrior")
            register("bad", "not a path")

    registry.add_plugin(Bad(), Owner("bad", "1.0", "bad"))
    assert "fine" not in registry.names("prior")
    assert "neither callable nor a 'module:attr' import path" in registry.warnings[-1]


def test_listing_plugins_imports_no_torch():
    code = (
        "import sys, contextlib, io\n"
        "from vaebench.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['plugins', '--json']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_lists_the_available_ones(registry: Registry):
    with pytest.raises(
        ConfigError, match=r"unknown prior 'gauss'; available: flow, mog, normal, vamp"
    ):
        registry.get("prior", "gauss")


def test_third_party_entry_point_is_discovered(registry: Registry, third_party):
    registry.load_entry_points()
    assert "tiny" in registry.families()
    owner = registry.get("decoder", "tiny").owner
    assert (owner.distribution, owner.version, owner.plugin) == ("vaebench-tiny", "0.3", "tiny")
    assert registry.warnings == []


def test_broken_plugins_warn_once_and_the_rest_survive(registry: Registry, tmp_path, monkeypatch):
    root = tmp_path / "site"
    write_distribution(
        root,
        "vaebench-broken",
        "1.0",
        "vaebench_broken",
        IMPORT_FAILS,
        {"broken": "vaebench_broken"},
    )
    write_distribution(
        root, "vaebench-half", "2.0", "vaebench_half", HOOK_FAILS, {"half": "vaebench_half"}
    )
    write_tiny(root / "b")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.syspath_prepend(str(root / "b"))
    monkeypatch.delenv("VAEBENCH_STRICT_PLUGINS", raising=False)
    registry.load_entry_points()
    assert "tiny" in registry.families()
    assert "half" not in registry.names("encoder"), (
        "a failing plugin's partial registrations must be dropped"
    )
    assert len(registry.warnings) == 2
    broken = next(w for w in registry.warnings if "broken" in w)
    assert "vaebench-broken 1.0" in broken and "ImportError" in broken and "\n" not in broken
    half = next(w for w in registry.warnings if "half" in w)
    assert "vaebench-half 2.0" in half and "registration blew up" in half


def test_strict_mode_makes_a_broken_plugin_fatal(registry: Registry, tmp_path, monkeypatch):
    root = write_distribution(
        tmp_path / "site",
        "vaebench-broken",
        "1.0",
        "vaebench_broken",
        IMPORT_FAILS,
        {"broken": "vaebench_broken"},
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("VAEBENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"vaebench-broken 1\.0"):
        registry.load_entry_points()


def test_duplicate_name_names_both_owners(registry: Registry, tmp_path, monkeypatch):
    root = write_distribution(
        tmp_path / "site",
        "vaebench-copycat",
        "0.1",
        "vaebench_copycat",
        CLAIMS_MLP,
        {"copycat": "vaebench_copycat"},
    )
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(PluginError) as info:
        registry.load_entry_points()
    message = str(info.value)
    assert (
        "encoder 'mlp'" in message
        and "vaebench 0.1.0" in message
        and "vaebench-copycat 0.1" in message
    )


def test_plugins_command_lists_third_party_and_warns_about_broken(tmp_path):
    root = tmp_path / "site"
    write_tiny(root)
    write_distribution(
        root / "x",
        "vaebench-broken",
        "1.0",
        "vaebench_broken",
        IMPORT_FAILS,
        {"broken": "vaebench_broken"},
    )
    path = f"{root}:{root / 'x'}"
    done = run_cli(
        "plugins", "--json", env_extra={"PYTHONPATH": path, "VAEBENCH_STRICT_PLUGINS": "0"}
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    tiny = [r for r in rows if r["name"] == "tiny"]
    assert {r["kind"] for r in tiny} == {"encoder", "decoder"}
    assert all(r["distribution"] == "vaebench-tiny" and r["version"] == "0.3" for r in tiny)
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "vaebench-broken 1.0" in warnings[0]

    strict = run_cli("plugins", env_extra={"PYTHONPATH": path, "VAEBENCH_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2
    assert "Traceback" not in strict.stderr and "vaebench-broken" in strict.stderr


@pytest.mark.slow
def test_third_party_plugin_trains_end_to_end(tmp_path):
    root = write_tiny(tmp_path / "site")
    out = tmp_path / "run"
    done = run_cli(
        "run",
        "--plugins",
        "tiny",
        *FAST_CLI,
        "--out",
        str(out),
        "--quiet",
        env_extra={"PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr
    assert "tiny" in (out / "results.csv").read_text()
