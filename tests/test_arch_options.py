"""Architecture options (``-A``): the MLP's widths, activations, gating, initialization and
log-variance clamp against hand counts and float64 hand computations; the conv family's
channels and depth against hand parameter counts; the options end to end through the command
line, the row, config.json and a reloaded checkpoint; and a third-party family's own option.
"""

from __future__ import annotations

import json
import math
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

import vaebench
from tests.helpers import FAST_CLI, run_cli
from vaebench.config import RunConfig
from vaebench.errors import ConfigError
from vaebench.plugins.conv import ConvDecoder, ConvEncoder
from vaebench.plugins.mlp import GatedDense, MLPDecoder, MLPEncoder
from vaebench.registry import Owner

MNIST = (1, 28, 28)


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


# -- MLP: widths ------------------------------------------------------------------------------


def test_one_hidden_layer_of_400_has_the_hand_counted_parameters():
    encoder = MLPEncoder(MNIST, 40, hidden=400)
    decoder = MLPDecoder(MNIST, 40, hidden=400)
    assert count(encoder) == linear(784, 400) + linear(400, 80)
    assert count(decoder) == linear(40, 400) + linear(400, 784)
    assert count(encoder) == 346_080 and count(decoder) == 330_784


def test_two_hidden_layers_of_300():
    encoder = MLPEncoder(MNIST, 40, hidden=[300, 300])
    decoder = MLPDecoder(MNIST, 40, hidden=[300, 300])
    assert count(encoder) == linear(784, 300) + linear(300, 300) + linear(300, 80)
    assert count(decoder) == linear(40, 300) + linear(300, 300) + linear(300, 784)


def test_the_decoder_mirrors_the_encoders_widths():
    """hidden=[64, 32]: the encoder narrows 784 -> 64 -> 32, the decoder widens 32 -> 64."""
    encoder = MLPEncoder(MNIST, 8, hidden=[64, 32])
    decoder = MLPDecoder(MNIST, 8, hidden=[64, 32])
    shapes = [(m.in_features, m.out_features) for m in linears(encoder)]
    assert shapes == [(784, 64), (64, 32), (32, 16)]
    shapes = [(m.in_features, m.out_features) for m in linears(decoder)]
    assert shapes == [(8, 32), (32, 64), (64, 784)]
    z = torch.randn(3, 8)
    assert decoder(z).shape == (3, *MNIST)
    mu, logvar = encoder(torch.rand(3, *MNIST))
    assert mu.shape == logvar.shape == (3, 8)


def test_a_tuple_of_widths_is_a_list_of_widths():
    a = MLPEncoder(MNIST, 4, hidden=(20, 10))
    b = MLPEncoder(MNIST, 4, hidden=[20, 10])
    assert [m.weight.shape for m in linears(a)] == [m.weight.shape for m in linears(b)]


EXPECTED_ACTIVATION = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "none": nn.Identity,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_ACTIVATION))
def test_each_activation_is_its_module_after_every_hidden_layer(name):
    kind = EXPECTED_ACTIVATION[name]
    for net in (
        MLPEncoder((12,), 2, hidden=[6, 5], activation=name),
        MLPDecoder((12,), 2, hidden=[6, 5], activation=name),
    ):
        layers = list(net.net)
        hidden = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)][:-1]
        assert len(hidden) == 2
        for i in hidden:
            assert type(layers[i + 1]) is kind, (name, layers)
        assert isinstance(layers[-1], nn.Linear)  # the output layer has no activation


def test_the_default_is_two_relu_layers_of_256_with_the_old_parameter_names():
    """Checkpoints of vaebench's earlier fixed MLP load into the default MLP unchanged."""
    encoder, decoder = MLPEncoder(MNIST, 16), MLPDecoder(MNIST, 16)
    assert {k: tuple(v.shape) for k, v in encoder.state_dict().items()} == {
        "net.1.weight": (256, 784),
        "net.1.bias": (256,),
        "net.3.weight": (256, 256),
        "net.3.bias": (256,),
        "net.5.weight": (32, 256),
        "net.5.bias": (32,),
    }
    assert {k: tuple(v.shape) for k, v in decoder.state_dict().items()} == {
        "net.0.weight": (256, 16),
        "net.0.bias": (256,),
        "net.2.weight": (256, 256),
        "net.2.bias": (256,),
        "net.4.weight": (784, 256),
        "net.4.bias": (784,),
    }
    # The old network, written out: its weights load strictly and give the same outputs.
    old_encoder = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, 32),
    )  # fmt: skip
    old_decoder = nn.Sequential(
        nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 784)
    )
    encoder.load_state_dict({f"net.{k}": v for k, v in old_encoder.state_dict().items()})
    decoder.load_state_dict({f"net.{k}": v for k, v in old_decoder.state_dict().items()})
    x, z = torch.rand(2, *MNIST), torch.randn(2, 16)
    mu, logvar = encoder(x)
    torch.testing.assert_close(torch.cat([mu, logvar], 1), old_encoder(x))
    torch.testing.assert_close(decoder(z), old_decoder(z).view(2, *MNIST))


# -- MLP: gating --------------------------------------------------------------------------------


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


@pytest.mark.parametrize(("activation", "act"), [("none", lambda a: a), ("tanh", np.tanh)])
def test_a_gated_layer_is_act_of_h_times_sigmoid_of_g(activation, act):
    encoder = MLPEncoder((1, 3, 4), 2, hidden=[5], activation=activation, gated=True).double()
    layer = encoder.net[1]
    assert isinstance(layer, GatedDense)
    x = torch.randn(7, 1, 3, 4, dtype=torch.float64)
    flat = _np(x).reshape(7, 12)
    h = flat @ _np(layer.h.weight).T + _np(layer.h.bias)
    g = flat @ _np(layer.g.weight).T + _np(layer.g.bias)
    gated = act(h) * _sigmoid(g)
    np.testing.assert_allclose(_np(layer(x.flatten(1))), gated, rtol=1e-12, atol=1e-14)
    out = encoder.net[2]
    expected = gated @ _np(out.weight).T + _np(out.bias)
    mu, logvar = encoder(x)
    np.testing.assert_allclose(_np(mu), expected[:, :2], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(_np(logvar), expected[:, 2:], rtol=1e-12, atol=1e-14)


def test_gated_layers_double_the_hidden_parameters_and_mirror_in_the_decoder():
    encoder = MLPEncoder((12,), 2, hidden=[6, 5], gated=True)
    decoder = MLPDecoder((12,), 2, hidden=[6, 5], gated=True)
    assert count(encoder) == 2 * linear(12, 6) + 2 * linear(6, 5) + linear(5, 4)
    assert count(decoder) == 2 * linear(2, 5) + 2 * linear(5, 6) + linear(6, 12)
    gates = [m for m in decoder.net if isinstance(m, GatedDense)]
    assert [(m.h.in_features, m.h.out_features) for m in gates] == [(2, 5), (5, 6)]
    assert [(m.g.in_features, m.g.out_features) for m in gates] == [(2, 5), (5, 6)]


# -- MLP: initialization --------------------------------------------------------------------------


def test_he_init_draws_normal_weights_of_std_sqrt_2_over_fan_in():
    encoder = MLPEncoder((1000,), 4, hidden=500, init="he")
    wide, out = linears(encoder)
    w = wide.weight.detach().double()
    std = math.sqrt(2 / 1000)
    # 500,000 draws: the sample std is within 0.5% of the true one (about 5 standard errors).
    assert w.std().item() == pytest.approx(std, rel=0.01)
    assert abs(w.mean().item()) < 5 * std / math.sqrt(w.numel())
    # Normal, not uniform: a uniform weight of this std never exceeds sqrt(3) std.
    assert w.abs().max().item() > 3.5 * std
    # The output layer too (4,000 draws), at its own fan-in.
    assert out.weight.std().item() == pytest.approx(math.sqrt(2 / 500), rel=0.08)
    # Biases keep torch's initialization: uniform within 1 / sqrt(fan_in).
    assert wide.bias.abs().max().item() <= 1 / math.sqrt(1000)


def test_he_init_reaches_the_decoder_and_the_gates():
    decoder = MLPDecoder((800,), 4, hidden=400, gated=True, init="he")
    h, g, out = linears(decoder)
    for layer in (h, g):
        assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / 4), rel=0.08)
    assert out.weight.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.02)


def test_glorot_init_is_uniform_within_the_xavier_bound():
    decoder = MLPDecoder((600,), 4, hidden=[300], init="glorot")
    _, wide = linears(decoder)  # 300 -> 600
    bound = math.sqrt(6 / (300 + 600))
    w = wide.weight.detach().double()
    assert w.abs().max().item() <= bound
    # Reaches the bound (torch's default stops at 1 / sqrt(300), 71% of it).
    assert w.abs().max().item() > 0.99 * bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)


def test_default_init_is_torchs():
    encoder = MLPEncoder((600,), 4, hidden=[300])
    wide = linears(encoder)[0]
    assert wide.weight.abs().max().item() <= 1 / math.sqrt(600)
    assert wide.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 600), rel=0.02)


# -- MLP: log-variance clamp ----------------------------------------------------------------------


def _twins(**clamp):
    """An encoder with the clamp and the same network without it."""
    clamped = MLPEncoder((6,), 3, hidden=[8], **clamp)
    free = MLPEncoder((6,), 3, hidden=[8])
    free.load_state_dict(clamped.state_dict())
    return clamped, free


def test_logvar_min_and_max_clamp_the_logvar_and_leave_mu_alone():
    clamped, free = _twins(logvar_min=-6, logvar_max=2)
    x = 1000 * torch.randn(64, 6)  # large inputs: raw log-variances far outside [-6, 2]
    mu, logvar = clamped(x)
    raw_mu, raw_logvar = free(x)
    assert raw_logvar.max() > 2 and raw_logvar.min() < -6  # the clamp has work to do
    assert raw_mu.abs().max() > 6
    torch.testing.assert_close(mu, raw_mu, rtol=0, atol=0)
    torch.testing.assert_close(logvar, raw_logvar.clamp(-6, 2), rtol=0, atol=0)
    assert (logvar == 2).any() and (logvar == -6).any()


def test_one_sided_clamps():
    clamped, free = _twins(logvar_max=2.5)
    x = 1000 * torch.randn(64, 6)
    logvar, raw = clamped(x)[1], free(x)[1]
    assert raw.min() < -100  # no lower bound: passes through
    torch.testing.assert_close(logvar, raw.clamp(max=2.5), rtol=0, atol=0)
    clamped, free = _twins(logvar_min=-4)
    logvar, raw = clamped(x)[1], free(x)[1]
    assert raw.max() > 100
    torch.testing.assert_close(logvar, raw.clamp(min=-4), rtol=0, atol=0)


def test_no_clamp_by_default():
    encoder = MLPEncoder((6,), 3, hidden=[8])
    _, logvar = encoder(1000 * torch.randn(64, 6))
    assert logvar.abs().max() > 100


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"hidden": 0}, "hidden"),
        ({"hidden": -3}, "hidden"),
        ({"hidden": []}, "hidden"),
        ({"hidden": [32, 0]}, "hidden"),
        ({"hidden": 2.5}, "hidden"),
        ({"hidden": True}, "hidden"),
        ({"activation": "swish"}, "activation must be one of relu, tanh"),
        ({"init": "x"}, "init must be one of default, he, glorot"),
        ({"gated": "yes"}, "gated must be true or false"),
        ({"gated": 1}, "gated"),
    ],
)
@pytest.mark.parametrize("cls", [MLPEncoder, MLPDecoder])
def test_bad_mlp_options_raise_value_error(cls, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        cls((12,), 2, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"logvar_min": 2, "logvar_max": 2},
        {"logvar_min": 3, "logvar_max": -1},
        {"logvar_min": float("nan")},
        {"logvar_max": float("inf")},
        {"logvar_min": "low"},
        {"logvar_max": True},
    ],
)
def test_bad_logvar_bounds_raise_value_error(kwargs):
    with pytest.raises(ValueError, match="logvar_m"):
        MLPEncoder((12,), 2, **kwargs)


# -- conv: channels and depth ---------------------------------------------------------------------


def conv3(c_in: int, c_out: int) -> int:
    return 9 * c_in * c_out + c_out


# Spatial sizes a 16x16 image passes through, by depth (halving while both sides are >= 8).
SIZES_16 = {0: [16], 1: [16, 8], 2: [16, 8, 4], 3: [16, 8, 4]}


def conv_encoder_count(channels: int, sizes: list[int], latent: int) -> int:
    total, c = conv3(1, channels), channels
    for _ in sizes[1:]:
        total += conv3(c, 2 * c)
        c *= 2
    return total + linear(c * sizes[-1] ** 2, 2 * latent)


def conv_decoder_count(channels: int, sizes: list[int], latent: int) -> int:
    c = channels * 2 ** (len(sizes) - 1)
    total = linear(latent, c * sizes[-1] ** 2)
    for _ in sizes[1:]:
        total += conv3(c, c // 2)
        c //= 2
    return total + conv3(c, 1)


@pytest.mark.parametrize("channels", [4, 8])
@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_conv_channels_and_depth_set_the_parameter_count(channels, depth):
    shape, latent = (1, 16, 16), 3
    encoder = ConvEncoder(shape, latent, channels=channels, depth=depth)
    decoder = ConvDecoder(shape, latent, channels=channels, depth=depth)
    assert count(encoder) == conv_encoder_count(channels, SIZES_16[depth], latent)
    assert count(decoder) == conv_decoder_count(channels, SIZES_16[depth], latent)
    x = torch.rand(2, *shape)
    mu, logvar = encoder(x)
    assert mu.shape == logvar.shape == (2, latent)
    assert decoder(mu).shape == (2, *shape)


def test_conv_defaults_are_32_channels_and_three_downsamples():
    """The defaults are the earlier fixed network's: its checkpoints still load."""
    shape = (1, 64, 64)  # 64 -> 32 -> 16 -> 8: three stride-2 stages
    sizes = [64, 32, 16, 8]
    assert count(ConvEncoder(shape, 5)) == conv_encoder_count(32, sizes, 5)
    assert count(ConvDecoder(shape, 5)) == conv_decoder_count(32, sizes, 5)
    explicit = ConvEncoder(shape, 5, channels=32, depth=3)
    assert list(ConvEncoder(shape, 5).state_dict()) == list(explicit.state_dict())


def test_conv_depth_zero_keeps_the_full_resolution():
    encoder = ConvEncoder((3, 9, 7), 4, channels=2, depth=0)
    decoder = ConvDecoder((3, 9, 7), 4, channels=2, depth=0)
    assert not any(isinstance(m, nn.Upsample) for m in decoder.modules())
    assert [m.stride for m in encoder.modules() if isinstance(m, nn.Conv2d)] == [(1, 1)]
    assert encoder.head.in_features == 2 * 9 * 7
    mu, _ = encoder(torch.rand(5, 3, 9, 7))
    assert decoder(mu).shape == (5, 3, 9, 7)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"channels": 0}, "channels must be a whole number >= 1"),
        ({"channels": -8}, "channels"),
        ({"channels": 2.5}, "channels"),
        ({"channels": True}, "channels"),
        ({"channels": "8"}, "channels"),
        ({"depth": -1}, "depth must be a whole number >= 0"),
        ({"depth": 1.0}, "depth"),
        ({"depth": False}, "depth"),
    ],
)
@pytest.mark.parametrize("cls", [ConvEncoder, ConvDecoder])
def test_bad_conv_options_raise_value_error(cls, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        cls((1, 16, 16), 2, **kwargs)


# -- the command line end to end ---------------------------------------------------------------


def _row(out):
    (row,) = json.loads((out / "results.json").read_text())
    return row


def test_arch_options_run_end_to_end_and_reload(vaebench_cli, tmp_path, registry):
    from vaebench.checkpoints import load_checkpoint, model_views

    out = tmp_path / "run"
    args = ("-A", "hidden=32", "-A", "activation=tanh")
    done = vaebench_cli("run", "--plugins", "mlp", *FAST_CLI, *args, "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    row = _row(out)
    assert row["status"] == "ok"
    assert row["arch_options"] == "hidden=32 activation=tanh"
    # synthetic 8x8 images, 16 latents, one hidden layer of 32: counted by hand
    assert row["parameters"] == linear(64, 32) + linear(32, 32) + linear(16, 32) + linear(32, 64)
    config = json.loads((out / "config.json").read_text())
    assert config["arch_options"] == {"hidden": 32, "activation": "tanh"}
    # The checkpoint rebuilds the same network (the report's path): no shape errors.
    checkpoint = out / row["checkpoint"]
    spec, state, _ = load_checkpoint(checkpoint)
    assert spec.arch_options == {"hidden": 32, "activation": "tanh"}
    assert state["encoder.net.1.weight"].shape == (32, 64)
    views = model_views(registry, checkpoint)
    assert views.reconstructions.shape == views.originals.shape
    assert np.isfinite(views.samples).all()


def test_a_list_of_widths_from_the_command_line(vaebench_cli, tmp_path):
    out = tmp_path / "run"
    args = ("-A", "hidden=12,8", "-A", "gated=true", "--epochs", "1")
    done = vaebench_cli("run", "--plugins", "mlp", *FAST_CLI, *args, "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    row = _row(out)
    assert row["arch_options"] == "hidden=12,8 gated=True"
    expected = 2 * (linear(64, 12) + linear(12, 8) + linear(16, 8) + linear(8, 12))
    assert row["parameters"] == expected + linear(8, 32) + linear(12, 64)
    assert json.loads((out / "config.json").read_text())["arch_options"] == {
        "hidden": [12, 8],
        "gated": True,
    }


def test_an_unknown_arch_key_stops_the_run_naming_the_accepted_keys(vaebench_cli, tmp_path):
    out = tmp_path / "run"
    done = vaebench_cli("run", "--plugins", "mlp", *FAST_CLI, "-A", "colour=3", "--out", str(out))
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("vaebench: error: -A colour: not an option of encoder 'mlp'")
    assert "accepted: hidden, activation, gated, init, logvar_min, logvar_max" in line
    assert not out.exists()


def test_an_mlp_key_is_refused_for_the_conv_family(vaebench_cli, tmp_path):
    out = tmp_path / "run"
    done = vaebench_cli("run", "--plugins", "conv", *FAST_CLI, "-A", "hidden=3", "--out", str(out))
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "-A hidden: not an option of encoder 'conv', decoder 'conv'" in line
    assert "accepted: channels, depth" in line
    assert not out.exists()


BAD_VALUES = [
    (("-A", "activation=swish"), "swish"),
    (("-A", "hidden=0"), "hidden"),
    (("-A", "logvar_min=3", "-A", "logvar_max=1"), "logvar_min must be < logvar_max"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_VALUES)
def test_a_bad_arch_value_fails_in_one_line_without_a_traceback(
    vaebench_cli, tmp_path, args, needle
):
    done = vaebench_cli(
        "run", "--plugins", "mlp", *FAST_CLI, *args, "--out", str(tmp_path / "run"), "-q"
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert needle in line and "-A" in line


@pytest.mark.parametrize(("args", "needle"), BAD_VALUES)
def test_a_bad_arch_value_stops_the_run_before_anything_is_written(
    vaebench_cli, tmp_path, args, needle
):
    out = tmp_path / "run"
    done = vaebench_cli("run", "--plugins", "mlp", *FAST_CLI, *args, "--out", str(out))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("vaebench: error:") and needle in line
    assert not out.exists()


def test_conv_channels_and_depth_from_the_command_line(vaebench_cli, tmp_path):
    out = tmp_path / "run"
    args = ("-A", "channels=8", "-A", "depth=1", "--epochs", "1")
    done = vaebench_cli("run", "--plugins", "conv", *FAST_CLI, *args, "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    row = _row(out)
    assert row["status"] == "ok" and row["arch_options"] == "channels=8 depth=1"
    sizes = [8, 4]  # synthetic 8x8 images, one stride-2 stage
    expected = conv_encoder_count(8, sizes, 16) + conv_decoder_count(8, sizes, 16)
    assert row["parameters"] == expected


# -- a third-party family declares its own options ------------------------------------------------


class TinyEncoder(nn.Module):
    calls: ClassVar[list[dict]] = []

    def __init__(self, input_shape, latent_dim, width: int = 4):
        super().__init__()
        TinyEncoder.calls.append({"width": width})
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.Linear(width, 2 * latent_dim)
        )

    def forward(self, x):
        return self.net(x).chunk(2, dim=-1)


class TinyDecoder(nn.Module):
    calls: ClassVar[list[dict]] = []

    def __init__(self, input_shape, latent_dim, width: int = 4, bias: bool = True):
        super().__init__()
        TinyDecoder.calls.append({"width": width, "bias": bias})
        self.shape = tuple(input_shape)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, width, bias=bias),
            nn.Linear(width, math.prod(input_shape), bias=bias),
        )

    def forward(self, z):
        return self.net(z).view(z.shape[0], *self.shape)


class TinyFamily:
    @vaebench.hookimpl
    def vaebench_register_encoders(self, register):
        register("tiny", TinyEncoder)

    @vaebench.hookimpl
    def vaebench_register_decoders(self, register):
        register("tiny", TinyDecoder)


@pytest.fixture
def tiny_registry(registry):
    TinyEncoder.calls, TinyDecoder.calls = [], []
    registry.add_plugin(TinyFamily(), Owner("tiny-family", "1.0", "tiny"))
    return registry


FAST = {
    "dataset": "synthetic",
    "dataset_options": {"n_train": 32, "n_test": 16},
    "iw_samples": 2,
    "timing_min_time": 0.01,
    "epochs": 1,
}


def test_a_third_party_family_receives_the_options_it_declares(tiny_registry, tmp_path):
    from vaebench.checkpoints import model_views
    from vaebench.resolve import resolve_config
    from vaebench.runner import run

    config = RunConfig(
        plugins=["tiny"], arch_options={"width": 5, "bias": False}, out=str(tmp_path), **FAST
    )
    (row,) = run(resolve_config(config, tiny_registry), tiny_registry)
    assert row["status"] == "ok", row["status"]
    # Each half of the model gets the keys it declares, and only those.
    assert TinyEncoder.calls[-1] == {"width": 5}
    assert TinyDecoder.calls and all(c == {"width": 5, "bias": False} for c in TinyDecoder.calls)
    assert row["parameters"] == linear(64, 5) + linear(5, 32) + 16 * 5 + 5 * 64
    views = model_views(tiny_registry, tmp_path / row["checkpoint"])  # rebuilt with width 5
    assert views.reconstructions.shape == views.originals.shape


def test_a_key_only_one_half_declares_is_accepted(tiny_registry, tmp_path):
    from vaebench.resolve import resolve_config

    config = RunConfig(plugins=["tiny"], arch_options={"bias": False}, out=str(tmp_path), **FAST)
    assert resolve_config(config, tiny_registry).arch_options == {"bias": False}


@pytest.mark.parametrize("key", ["hidden", "depth", "colour"])
def test_a_key_the_third_party_family_does_not_declare_is_refused(tiny_registry, tmp_path, key):
    from vaebench.resolve import resolve_config

    config = RunConfig(plugins=["tiny"], arch_options={key: 3}, out=str(tmp_path), **FAST)
    with pytest.raises(ConfigError) as caught:
        resolve_config(config, tiny_registry)
    assert str(caught.value) == (
        f"-A {key}: not an option of encoder 'tiny', decoder 'tiny'; accepted: width, bias"
    )
    assert not list(tmp_path.iterdir())


def test_vaebench_plugins_lists_the_declared_options_on_request():
    listed = json.loads(run_cli("plugins", "--json", "--options").stdout)
    options = {(r["kind"], r["name"]): r["options"] for r in listed}
    assert options["encoder", "mlp"] == "hidden, activation, gated, init, logvar_min, logvar_max"
    assert options["decoder", "conv"] == "channels, depth"
    assert "norm_eps" in options["optimizer", "adamnormgrad"]
    assert "lr" not in options["optimizer", "adam"].split(", ")  # --lr is its own flag
    assert options["schedule", "multistep"] == "milestones, gamma"  # last_epoch: resume's
    plain = json.loads(run_cli("plugins", "--json").stdout)
    assert "options" not in plain[0]  # without --options no factory is imported
