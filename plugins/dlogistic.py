"""A discretized mixture of logistics p(x|z) for n-bit images (``--likelihood dlogistic``).

The observation model of PixelCNN++ (Salimans et al., 2017), also used by VDVAE and NVAE:
the usual choice for reporting bits/dim on 8-bit images such as CIFAR-10. Options:
``-L mixtures=10`` (components per pixel, >= 1) and ``-L bins=256`` (intensity levels: 256
for 8-bit data, 32 for 5-bit, ...).

Data and bins. A value x in [0, 1] falls in bin k = round(x * (bins - 1)), which is mapped to
the centre c = 2k / (bins - 1) - 1 in [-1, 1] with half-width h = 1 / (bins - 1). A logistic
component with mean mu and scale s gives the bin the mass F(c + h) - F(c - h), F the logistic
CDF; the lowest bin also takes the left tail (mass F(c + h)) and the highest the right tail
(mass 1 - F(c - h)), so the masses of all bins sum to exactly 1.

Pixels and channels. Data of shape (C, *spatial) has C channels per pixel (an image
(C, H, W) has H*W pixels); flat data (D,) is read as D one-channel pixels. Every pixel has
its own mixture over ``mixtures`` components; within a component the channels are
independent logistics, except for C == 3 (RGB), where, as in PixelCNN++, the means of later
channels depend linearly on the earlier channels' values:
mu_g += a * c_r, mu_b += b * c_r + g * c_g, with a, b, g = tanh of three decoder outputs per
component. For C != 3 (grey, 2 or 4 channels, flat data) the channels of a pixel share the
mixture weights and are independent given the component.

Parameter layout (``param_shape``). Per pixel the decoder returns
P = mixtures * (1 + 2C + (3 if C == 3 else 0)) values along the channel axis, in blocks:
``[0, M)`` mixture logits (index m); ``M + ch*M + m`` means; ``M + C*M + ch*M + m``
log-scales (clamped below at -7); for C == 3, ``M + 2*C*M + j*M + m`` the coupling
pre-activations (j = 0: a, 1: b, 2: g). So (C, H, W) gives (P, H, W) (10*M channels for
RGB, as in PixelCNN++), (C, *spatial) gives (P, *spatial), and flat (D,) gives (3*M*D,),
read as (3*M, D).

Numerics. Each bin's log-mass is evaluated in log space: for the interior bins
log(F(c + h) - F(c - h)) = log sigmoid(u) + log sigmoid(-v) + log(1 - exp(-(u - v))), with
u = (c + h - mu) / s and v = (c - h - mu) / s, which is exact and neither cancels nor
underflows where both CDF values are close to 0 or to 1 (far tails, tiny scales). Only where
the standardized bin width 2h / s is itself negligible (below e^-15, huge scales) the last
term is replaced by log(2h / s) - h / s: the mid-point density times the bin width, as
PixelCNN++ does, here accurate to float64 precision (error below (2h / s)^2 / 24). ``log_prob`` computes in float32 (float64 when the
parameters are float64, e.g. for ``gradcheck``) and returns (B,) nats summed over every
value. Memory: it materializes O(B * mixtures * C * prod(spatial)) floats (a few tensors of
that size, no dimension over the bins), like the decoder's output itself.

``mean(params)`` is the mixture-weighted mean of each component's logistic clipped to
[-1, 1] (closed form; the clipping is what the edge bins do), mapped to [0, 1]: the discrete
mean up to the rounding to bins. For RGB the coupling of a component is applied to the
expected values of its earlier channels (exact while those are not clipped, since the
coupling is linear; an approximation otherwise).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

MIN_LOG_SCALE = -7.0
SMALL_LOG_WIDTH = -15.0  # log(2h / s) below this: log(1 - exp(-w)) by its series in w


def _int_option(name: str, value: object, minimum: int) -> int:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and math.isfinite(value) and float(value) == int(value) and int(value) >= minimum:
        return int(value)
    raise ValueError(f"dlogistic: {name} must be an integer >= {minimum}, got {value!r}")


def _layout(input_shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """(channels, spatial shape) of the data: flat (D,) is D one-channel pixels."""
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"dlogistic: needs a non-empty input shape of positive sizes, got {shape}")
    if len(shape) == 1:
        return 1, shape
    return shape[0], shape[1:]


class DiscretizedLogisticMixture(nn.Module):
    """Discretized mixture of logistics per pixel, with RGB channel coupling (see the module)."""

    def __init__(self, input_shape: tuple[int, ...], mixtures: int = 10, bins: int = 256) -> None:
        super().__init__()
        self.mixtures = _int_option("mixtures", mixtures, 1)
        self.bins = _int_option("bins", bins, 2)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.channels, self.spatial = _layout(self.input_shape)
        self.coupled = self.channels == 3

    def per_pixel(self, channels: int) -> int:
        """Decoder outputs per pixel: logits, means, log-scales (and coupling for RGB)."""
        return self.mixtures * (1 + 2 * channels + (3 if channels == 3 else 0))

    def param_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        channels, spatial = _layout(input_shape)
        if len(tuple(input_shape)) == 1:
            return (self.per_pixel(1) * spatial[0],)
        return (self.per_pixel(channels), *spatial)

    def _split(self, params: torch.Tensor):
        """logits (N, M, *S), means and log-scales (N, C, M, *S), coupling (N, 3, M, *S)."""
        n, m, c = params.shape[0], self.mixtures, self.channels
        expected = (n, *self.param_shape(self.input_shape))
        if tuple(params.shape) != expected:
            raise ValueError(
                f"dlogistic: params of shape {tuple(params.shape)}, expected {expected}"
            )
        p = params.reshape(n, self.per_pixel(c), *self.spatial)
        logits = p[:, :m]
        means = p[:, m : m + c * m].unflatten(1, (c, m))
        log_scales = p[:, m + c * m : m + 2 * c * m].unflatten(1, (c, m)).clamp(min=MIN_LOG_SCALE)
        coupling = None
        if self.coupled:
            coupling = torch.tanh(p[:, m + 2 * c * m :].unflatten(1, (3, m)))
        return logits, means, log_scales, coupling

    @staticmethod
    def _couple(means: torch.Tensor, coupling: torch.Tensor, red, green) -> torch.Tensor:
        """Means (N, 3, M, *S) with the RGB coupling applied, given red and green values."""
        mu_r = means[:, 0]
        mu_g = means[:, 1] + coupling[:, 0] * red
        mu_b = means[:, 2] + coupling[:, 1] * red + coupling[:, 2] * green
        return torch.stack([mu_r, mu_g, mu_b], dim=1)

    @staticmethod
    def _dtype(params: torch.Tensor) -> torch.dtype:
        return torch.float64 if params.dtype == torch.float64 else torch.float32

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        dtype = self._dtype(params)
        logits, means, log_scales, coupling = self._split(params.to(dtype))
        n = params.shape[0]
        if x.shape[0] != n:  # importance samples: params (K * B), x (B), sample-major
            if n % x.shape[0]:
                raise ValueError(
                    f"dlogistic: params batch {n} is not a multiple of x's {x.shape[0]}"
                )
            x = x.repeat(n // x.shape[0], *([1] * (x.dim() - 1)))
        top = self.bins - 1
        k = (x.to(dtype).clamp(0, 1) * top).round().reshape(n, self.channels, *self.spatial)
        centre = (2.0 * k / top - 1.0).unsqueeze(2)  # (N, C, 1, *S)
        if coupling is not None:
            means = self._couple(means, coupling, centre[:, 0], centre[:, 1])
        half = 1.0 / top
        inv_scale = torch.exp(-log_scales)
        upper = (centre - means + half) * inv_scale  # standardized bin edges
        lower = (centre - means - half) * inv_scale
        log_cdf_upper = F.logsigmoid(upper)  # log F(c + h): the lowest bin
        log_sf_lower = F.logsigmoid(-lower)  # log (1 - F(c - h)): the highest bin
        log_width = math.log(2.0 * half) - log_scales  # log(u - v) = log(2h / s)
        small = log_width < SMALL_LOG_WIDTH
        width = torch.where(small, torch.ones_like(log_width), log_width.exp())
        # log(1 - exp(-w)) = log(w) - w/2 + O(w^2): the mid-point density times the bin width
        series = log_width - 0.5 * log_width.exp()  # log_width <= log(2) + 7: no overflow
        log_1m_exp = torch.where(small, series, torch.log(-torch.expm1(-width)))
        interior = log_cdf_upper + log_sf_lower + log_1m_exp
        k = k.unsqueeze(2)
        log_bin = torch.where(
            k == 0, log_cdf_upper, torch.where(k == top, log_sf_lower, interior)
        )  # (N, C, M, *S)
        per_component = log_bin.sum(1) + F.log_softmax(logits, dim=1)  # (N, M, *S)
        return torch.logsumexp(per_component, dim=1).reshape(n, -1).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        dtype = self._dtype(params)
        logits, means, log_scales, coupling = self._split(params.to(dtype))
        if coupling is None:
            expected = _clipped_logistic_mean(means, log_scales)  # (N, C, M, *S)
        else:
            red = _clipped_logistic_mean(means[:, 0], log_scales[:, 0])
            green = _clipped_logistic_mean(means[:, 1] + coupling[:, 0] * red, log_scales[:, 1])
            mu_b = means[:, 2] + coupling[:, 1] * red + coupling[:, 2] * green
            blue = _clipped_logistic_mean(mu_b, log_scales[:, 2])
            expected = torch.stack([red, green, blue], dim=1)
        weights = torch.softmax(logits, dim=1).unsqueeze(1)  # (N, 1, M, *S)
        expected = (weights * expected).sum(2)  # (N, C, *S) in [-1, 1] units
        return ((expected + 1.0) / 2.0).clamp(0, 1).reshape(params.shape[0], *self.input_shape)


def _clipped_logistic_mean(mu: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """E[clip(X, -1, 1)] for X ~ Logistic(mu, s): -1 + s * (softplus(u) - softplus(v)) with
    u = (mu + 1) / s, v = (mu - 1) / s, in two forms that stay exact where the other does not.

    s <= 1: mu + s * softplus(-u) - s * softplus(v) (no large terms that cancel).
    s > 1: -1 + 2 * sigmoid(v) * r(w) * g(q), w = u - v = 2 / s, q = sigmoid(v) * expm1(w),
    r(w) = expm1(w) / w and g(q) = log1p(q) / q (both -> 1 at 0): no overflow however large s.
    Each form is evaluated on scales clamped to its own side, so gradients stay finite.
    """
    small = log_scale <= 0
    s = log_scale.clamp(max=0.0).exp()
    near = mu + s * (F.softplus(-(mu + 1) / s) - F.softplus((mu - 1) / s))
    inv = torch.exp(-log_scale.clamp(min=0.0))
    w = 2.0 * inv
    sig = torch.sigmoid((mu - 1) * inv)
    q = sig * torch.expm1(w)
    tiny_w, tiny_q = w < 1e-4, q < 1e-4
    r = torch.where(tiny_w, 1 + w / 2, torch.expm1(w) / torch.where(tiny_w, 1.0, w))
    g = torch.where(tiny_q, 1 - q / 2, torch.log1p(q) / torch.where(tiny_q, 1.0, q))
    wide = -1 + 2 * sig * r * g
    return torch.where(small, near, wide)
