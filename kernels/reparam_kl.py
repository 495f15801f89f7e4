"""Fused Triton kernels for z = mu + exp(logvar / 2) * eps and KL(N(mu, exp(logvar)) || N(0, I)).

One pass over the inputs replaces the dozen small PyTorch kernels of the reference:

* forward: read ``mu`` and ``logvar`` once, draw ``eps`` with Philox inside the kernel (or read
  an injected ``eps``), write ``z`` and the per-row ``kl`` (and ``log_q`` when asked);
* backward: read ``mu``, ``logvar``, ``grad_z``, ``grad_kl`` (and ``grad_log_q``), regenerate
  the very same ``eps`` from ``(seed, element index)``, write ``grad_mu`` and ``grad_logvar``.

No noise tensor is ever stored. The Philox counter of an element is its linear index
``s * N * D + n * D + d`` in the ``(S, N, D)`` output, so the noise does not depend on tile
sizes or launch geometry. The Philox key is a 64-bit integer that lives on the device (a
one-element int64 tensor the kernels load): it is drawn by torch's generator with no host
sync, so ``torch.compile`` sees no ``.item()`` and a captured CUDA graph draws a fresh key,
hence fresh noise, at every replay. Arithmetic is fp32 whatever the input dtype; ``z`` and the
gradients are stored in the input dtype, ``kl`` and ``log_q`` in fp32. IEEE semantics follow
``reference.py`` exactly (no clamping).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice as cuda_libdevice

from vaebench.kernels import triton_interpreting

LOG_2PI = math.log(2 * math.pi)


@triton.jit
def _box_muller(i1, i2, FAST_MATH: tl.constexpr):
    """Two standard normals from two random 32-bit integers.

    The exact path is Triton's own (``tl.pair_uniform_to_normal``: log, sin and cos with full
    range reduction). ``FAST_MATH`` keeps that very log, so the radius r = sqrt(-2 ln u1) is
    bit for bit the exact path's, and replaces only sin and cos by the SFU approximations
    (``sin.approx``, ``cos.approx``) on an angle kept in [-pi, pi), where their absolute
    error is below 2^-20.9 (PTX ISA). The normals then differ from the exact ones by at most
    r * 2^-20.9 <= 3.2e-6 (r <= sqrt(-2 ln 1e-7) = 5.68), tails included. An approximate log
    would not do: ``lg2.approx``'s error is absolute, so near u1 = 1 (r -> 0) the relative
    error of r grows like 1/r and log2(u1) > 0 gives NaN. The GPU session measures the
    agreement (``benchmarks.gpu_session``, step ``correctness``).
    """
    u1 = tl.maximum(1.0e-7, tl.uint_to_uniform_float(i1))
    u2 = tl.uint_to_uniform_float(i2)
    if FAST_MATH:
        r = tl.sqrt(-2.0 * tl.log(u1))  # what tl.pair_uniform_to_normal computes
        # The exact path's angle 2 pi u2, less pi (into [-pi, pi)): cos and sin change sign.
        theta = 6.283185307179586 * u2 - 3.141592653589793
        n1, n2 = -r * cuda_libdevice.fast_cosf(theta), -r * cuda_libdevice.fast_sinf(theta)
    else:
        n1, n2 = tl.pair_uniform_to_normal(u1, u2)
    return n1, n2


@triton.jit
def _normal4(seed, rows, col_start, D, BLOCK_D: tl.constexpr, FAST_MATH: tl.constexpr):
    """One Philox call per 4 columns: element (r, c) is lane c % 4 of randn4x(seed, r * ceil(D/4) + c // 4).

    Four normals from one 128-bit Philox draw (two Box-Muller pairs) instead of one per
    element: a quarter of the Philox work and half the transcendentals. ``rows`` are global
    row indices (``sample * N + n``); ``col_start`` is a multiple of 4.
    """
    groups = col_start // 4 + tl.arange(0, BLOCK_D // 4)
    keys = rows[:, None] * ((D + 3) // 4) + groups[None, :]
    i1, i2, i3, i4 = tl.randint4x(seed, keys)  # what tl.randn4x draws, then Box-Muller
    n1, n2 = _box_muller(i1, i2, FAST_MATH)
    n3, n4 = _box_muller(i3, i4, FAST_MATH)
    return tl.interleave(tl.interleave(n1, n3), tl.interleave(n2, n4))


@triton.jit
def _noise(
    eps_ptr,
    seed,
    offsets,
    mask,
    rows,
    col_start,
    D,
    HAS_EPS: tl.constexpr,
    NOISE4: tl.constexpr,
    FAST_MATH: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """The standard-normal noise of a tile: injected, or Philox keyed by element index."""
    if HAS_EPS:
        eps = tl.load(eps_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    elif NOISE4:
        eps = _normal4(seed, rows, col_start, D, BLOCK_D, FAST_MATH)
    else:
        i1, i2, _, _ = tl.randint4x(seed, offsets)  # what tl.randn draws, then Box-Muller
        eps, _ = _box_muller(i1, i2, FAST_MATH)
    return eps


@triton.jit
def _reparam_kl_fwd(
    mu_ptr,
    logvar_ptr,
    eps_ptr,
    z_ptr,
    kl_ptr,
    log_q_ptr,
    eps_out_ptr,
    N,
    D,
    S,
    stride_mu_n,
    stride_mu_d,
    stride_lv_n,
    stride_lv_d,
    key_ptr,
    HAS_EPS: tl.constexpr,
    RETURN_LOG_Q: tl.constexpr,
    STORE_EPS: tl.constexpr,
    NOISE4: tl.constexpr,
    FAST_MATH: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program: BLOCK_N rows of one sample, looping over the columns in BLOCK_D steps. One
    # launch axis (up to 2^31 - 1 programs: K = 100000 samples fit), samples varying fastest,
    # so the S programs that re-read the same mu and logvar rows run together and hit L2.
    seed = tl.load(key_ptr)  # the 64-bit Philox key, read on the device
    pid = tl.program_id(0)
    row_block = pid // S
    sample = (pid % S).to(tl.int64)
    rows = row_block * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    kl_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    eps_sq_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    logvar_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)

    for col_start in range(0, D, BLOCK_D):
        cols = (col_start + tl.arange(0, BLOCK_D)).to(tl.int64)  # 64-bit before any product
        tile_ok = row_ok[:, None] & (cols < D)[None, :]
        mu_offsets = rows64[:, None] * stride_mu_n + cols[None, :] * stride_mu_d
        lv_offsets = rows64[:, None] * stride_lv_n + cols[None, :] * stride_lv_d
        out_offsets = (rows64 + sample * N)[:, None] * D + cols[None, :]

        mu = tl.load(mu_ptr + mu_offsets, mask=tile_ok, other=0.0).to(tl.float32)
        logvar = tl.load(logvar_ptr + lv_offsets, mask=tile_ok, other=0.0).to(tl.float32)
        eps = _noise(
            eps_ptr,
            seed,
            out_offsets,
            tile_ok,
            rows64 + sample * N,
            col_start,
            D,
            HAS_EPS,
            NOISE4,
            FAST_MATH,
            BLOCK_D,
        )
        if STORE_EPS:  # the "store" variant: keep the noise for the backward pass
            tl.store(eps_out_ptr + out_offsets, eps, mask=tile_ok)

        var = tl.exp(logvar)
        z = mu + tl.exp(0.5 * logvar) * eps
        tl.store(z_ptr + out_offsets, z.to(z_ptr.dtype.element_ty), mask=tile_ok)

        kl_terms = mu * mu + var - logvar - 1.0
        kl_acc += tl.sum(tl.where(tile_ok, kl_terms, 0.0), axis=1)
        if RETURN_LOG_Q:
            eps_sq_acc += tl.sum(tl.where(tile_ok, eps * eps, 0.0), axis=1)
            logvar_acc += tl.sum(tl.where(tile_ok, logvar, 0.0), axis=1)

    if sample == 0:
        tl.store(kl_ptr + rows, 0.5 * kl_acc, mask=row_ok)
    if RETURN_LOG_Q:
        log_q = -0.5 * (eps_sq_acc + logvar_acc + D * 1.8378770664093453)  # log(2 pi)
        tl.store(log_q_ptr + rows64 + sample * N, log_q, mask=row_ok)


@triton.jit
def _reparam_kl_bwd(
    mu_ptr,
    logvar_ptr,
    eps_ptr,
    grad_z_ptr,
    grad_kl_ptr,
    grad_log_q_ptr,
    grad_mu_ptr,
    grad_logvar_ptr,
    N,
    D,
    S,
    stride_mu_n,
    stride_mu_d,
    stride_lv_n,
    stride_lv_d,
    stride_gz_s,
    stride_gz_n,
    stride_gz_d,
    stride_gkl,
    stride_glq_s,
    stride_glq_n,
    key_ptr,
    HAS_EPS: tl.constexpr,
    RECOVER_EPS: tl.constexpr,
    NOISE4: tl.constexpr,
    FAST_MATH: tl.constexpr,
    HAS_GRAD_Z: tl.constexpr,
    HAS_GRAD_KL: tl.constexpr,
    HAS_GRAD_LOG_Q: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # Elementwise over one (BLOCK_N, BLOCK_D) tile, summing the S samples' contributions:
    #   dz/dmu = 1      dz/dlogvar = 0.5 * std * eps
    #   dkl/dmu = mu    dkl/dlogvar = 0.5 * (exp(logvar) - 1)
    #   dlog_q/dmu = 0  dlog_q/dlogvar = -0.5            (log_q = -0.5 (eps^2 + logvar + log 2 pi))
    # With RECOVER_EPS, eps_ptr holds the forward's z and std * eps = z - mu needs no noise.
    # One launch axis (CUDA caps axes 1 and 2 at 65,535), column blocks varying fastest.
    seed = tl.load(key_ptr)  # the forward's key
    pid = tl.program_id(0)
    col_blocks = tl.cdiv(D, BLOCK_D)
    col_start = (pid % col_blocks) * BLOCK_D
    rows = (pid // col_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = col_start + tl.arange(0, BLOCK_D)
    row_ok = rows < N
    tile_ok = row_ok[:, None] & (cols < D)[None, :]
    rows64, cols64 = rows.to(tl.int64), cols.to(tl.int64)  # 64-bit before any product

    mu = tl.load(
        mu_ptr + rows64[:, None] * stride_mu_n + cols64[None, :] * stride_mu_d,
        mask=tile_ok,
        other=0.0,
    ).to(tl.float32)
    logvar = tl.load(
        logvar_ptr + rows64[:, None] * stride_lv_n + cols64[None, :] * stride_lv_d,
        mask=tile_ok,
        other=0.0,
    ).to(tl.float32)
    half_std = 0.5 * tl.exp(0.5 * logvar)

    grad_mu = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    grad_logvar = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    if HAS_GRAD_KL:
        grad_kl = tl.load(grad_kl_ptr + rows64 * stride_gkl, mask=row_ok, other=0.0).to(tl.float32)[
            :, None
        ]
        grad_mu += grad_kl * mu
        grad_logvar += grad_kl * 0.5 * (tl.exp(logvar) - 1.0)
    # Per-sample offsets advance by addition in int64: no sample * stride product can wrap.
    sample_rows = rows64  # global row index sample * N + n of the (S, N, D) output
    gz_offsets = rows64[:, None] * stride_gz_n + cols64[None, :] * stride_gz_d
    glq_offsets = rows64 * stride_glq_n
    for _ in range(0, S):
        if HAS_GRAD_Z:
            out_offsets = sample_rows[:, None] * D + cols64[None, :]
            if RECOVER_EPS:
                z = tl.load(eps_ptr + out_offsets, mask=tile_ok, other=0.0).to(tl.float32)
                dz_dlogvar = 0.5 * (z - mu)
            else:
                eps = _noise(
                    eps_ptr,
                    seed,
                    out_offsets,
                    tile_ok,
                    sample_rows,
                    col_start,
                    D,
                    HAS_EPS,
                    NOISE4,
                    FAST_MATH,
                    BLOCK_D,
                )
                dz_dlogvar = half_std * eps
            grad_z = tl.load(grad_z_ptr + gz_offsets, mask=tile_ok, other=0.0).to(tl.float32)
            grad_mu += grad_z
            grad_logvar += grad_z * dz_dlogvar
        if HAS_GRAD_LOG_Q:
            glq = tl.load(grad_log_q_ptr + glq_offsets, mask=row_ok, other=0.0)
            grad_logvar -= 0.5 * glq.to(tl.float32)[:, None]
        sample_rows += N
        gz_offsets += stride_gz_s
        glq_offsets += stride_glq_s

    out_offsets = rows64[:, None] * D + cols64[None, :]
    tl.store(grad_mu_ptr + out_offsets, grad_mu.to(grad_mu_ptr.dtype.element_ty), mask=tile_ok)
    tl.store(
        grad_logvar_ptr + out_offsets,
        grad_logvar.to(grad_logvar_ptr.dtype.element_ty),
        mask=tile_ok,
    )


def tile_sizes(n: int, d: int) -> tuple[int, int, int]:
    """``(BLOCK_N, BLOCK_D, num_warps)``.

    On a GPU: 1024 elements a program over 4 warps (8 per thread), a column block of at most
    128 (loops beyond). Larger tiles spill: compiled for sm_90, 32x128 with 4 warps needs 255
    registers and 96 bytes of stack in the fp32 forward (Philox and Box-Muller state per
    element); 8x128 needs 72 registers and no spills (the exact backward keeps 8 bytes of
    stack for libdevice's large-angle sin/cos reduction, never entered; fast math none),
    measured with ``python -m benchmarks.kernel_aot``.
    Under the interpreter each program costs Python overhead, so tiles are large and few.
    """
    if triton_interpreting():
        block_d = min(triton.next_power_of_2(d), 256)
        block_n = min(triton.next_power_of_2(n), max(1, 65536 // block_d))
        return block_n, block_d, 4
    block_d = min(triton.next_power_of_2(d), 128)
    block_n = min(triton.next_power_of_2(n), max(1, 1024 // block_d))
    return block_n, block_d, 4


RNGS = ("philox", "philox4")
NOISE_MODES = ("regenerate", "store", "recover")


@dataclass(frozen=True)
class Variant:
    """How a call draws and keeps its noise: what benchmarks vary (the defaults are the op).

    ``noise``: ``regenerate`` (default) saves only ``mu`` and ``logvar`` (and an injected
    ``eps``) and redraws the noise in the backward kernel; ``store`` writes the drawn noise to
    an fp32 buffer and reads it back (one more tensor written and read); ``recover`` saves
    ``z`` and uses std * eps = z - mu (no Philox in the backward, but ``z`` is read in the
    input dtype, so in bf16 the logvar gradient inherits z's rounding). ``rng``: ``philox``
    (one draw per element) or ``philox4`` (one draw per 4 elements; another, equally valid
    stream). ``fast_math``: Box-Muller on the SFU approximations (CUDA only). ``tiles``
    overrides ``(BLOCK_N, BLOCK_D)``.
    """

    noise: str = "regenerate"
    rng: str = "philox"
    fast_math: bool = False
    tiles: tuple[int, int] | None = None

    def check(self, injected: bool) -> None:
        if self.noise not in NOISE_MODES:
            raise ValueError(
                f"unknown noise mode '{self.noise}'; available: {', '.join(NOISE_MODES)}"
            )
        if self.rng not in RNGS:
            raise ValueError(f"unknown rng '{self.rng}'; available: {', '.join(RNGS)}")
        if injected and (self.noise, self.rng, self.fast_math) != ("regenerate", "philox", False):
            raise ValueError("noise and rng variants draw the noise; eps supplies it: give one")
        if self.fast_math and triton_interpreting():
            raise ValueError(
                "fast_math uses the GPU's approximate log2/sin/cos instructions, which the "
                "CPU interpreter cannot run; use it on CUDA"
            )

    def launch_tiles(self, n: int, d: int) -> tuple[int, int, int]:
        """``tile_sizes`` unless overridden; philox4 needs BLOCK_D % 4 == 0."""
        block_n, block_d, warps = tile_sizes(n, d)
        if self.tiles is not None:
            block_n, block_d = self.tiles
        if self.rng == "philox4":
            if self.tiles is None:
                block_d = max(block_d, 4)
            elif block_d % 4:
                raise ValueError(f"rng 'philox4' needs BLOCK_D divisible by 4, got {block_d}")
        return block_n, block_d, warps

    def as_op_args(self) -> tuple[str, str, bool, int, int]:
        """The custom op's plain arguments (0, 0: default tiles)."""
        block_n, block_d = self.tiles or (0, 0)
        return self.noise, self.rng, self.fast_math, block_n, block_d

    @classmethod
    def from_op_args(cls, noise: str, rng: str, fast_math: bool, block_n: int, block_d: int):
        return cls(noise, rng, fast_math, (block_n, block_d) if block_n else None)


DEFAULT = Variant()


def z_shape(n: int, d: int, samples: int) -> tuple[int, ...]:
    # With one sample the outputs are (N, D) and (N,) themselves, never slices of a (1, ...)
    # buffer: a slice's backward would allocate zeros and copy the gradient into them.
    return (samples, n, d) if samples > 1 else (n, d)


def log_q_shape(n: int, samples: int, return_log_q: bool) -> tuple[int, ...]:
    return ((samples, n) if samples > 1 else (n,)) if return_log_q else (0,)  # (0,): no data


def _on_device(tensor: torch.Tensor):
    """Launch on the inputs' device, not the current one (Triton launches on the current)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def launch_forward(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor | None,
    key: torch.Tensor,
    samples: int,
    return_log_q: bool,
    variant: Variant = DEFAULT,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``z``, ``kl``, ``log_q`` (a placeholder without ``return_log_q``) and the stored noise
    (``noise="store"`` only, else None). ``key``: the int64 Philox key on ``mu``'s device."""
    n, d = mu.shape
    z = torch.empty(z_shape(n, d, samples), device=mu.device, dtype=mu.dtype)
    kl = torch.empty(n, device=mu.device, dtype=torch.float32)
    log_q = torch.empty(
        log_q_shape(n, samples, return_log_q), device=mu.device, dtype=torch.float32
    )
    stored = None
    if variant.noise == "store":
        stored = torch.empty((samples, n, d), device=mu.device, dtype=torch.float32)
    if n == 0 or d == 0:  # nothing to launch: sums over no columns are 0, as in the reference
        kl.zero_()
        log_q.zero_()
        return z, kl, log_q, stored
    block_n, block_d, warps = variant.launch_tiles(n, d)
    grid = (triton.cdiv(n, block_n) * samples,)
    with _on_device(mu):
        _reparam_kl_fwd[grid](
            mu,
            logvar,
            eps if eps is not None else z,  # an unused pointer when eps is drawn in-kernel
            z,
            kl,
            log_q,
            stored if stored is not None else z,
            n,
            d,
            samples,
            mu.stride(0),
            mu.stride(1),
            logvar.stride(0),
            logvar.stride(1),
            key,
            HAS_EPS=eps is not None,
            RETURN_LOG_Q=return_log_q,
            STORE_EPS=stored is not None,
            NOISE4=variant.rng == "philox4",
            FAST_MATH=variant.fast_math,
            BLOCK_N=block_n,
            BLOCK_D=block_d,
            num_warps=warps,
        )
    return z, kl, log_q, stored


def launch_backward(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    noise_source: torch.Tensor | None,
    key: torch.Tensor,
    samples: int,
    grad_z: torch.Tensor | None,
    grad_kl: torch.Tensor | None,
    grad_log_q: torch.Tensor | None,
    recover: bool = False,
    variant: Variant = DEFAULT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both gradients. ``noise_source``: the injected or stored noise, or with ``recover`` the
    forward's ``z``; None when the kernel redraws the noise from ``key``."""
    n, d = mu.shape
    grad_mu = torch.empty((n, d), device=mu.device, dtype=mu.dtype)
    grad_logvar = torch.empty((n, d), device=mu.device, dtype=logvar.dtype)
    if n == 0 or d == 0:
        return grad_mu, grad_logvar
    block_n, block_d, warps = variant.launch_tiles(n, d)
    gz = grad_z if grad_z is not None else grad_mu
    gz_strides = (0,) * (3 - gz.dim()) + gz.stride() if grad_z is not None else (0, 0, 0)
    gkl = grad_kl if grad_kl is not None else grad_mu
    glq = grad_log_q if grad_log_q is not None else grad_mu
    glq_strides = (0,) * (2 - glq.dim()) + glq.stride() if grad_log_q is not None else (0, 0)
    grid = (triton.cdiv(n, block_n) * triton.cdiv(d, block_d),)
    with _on_device(mu):
        _reparam_kl_bwd[grid](
            mu,
            logvar,
            noise_source if noise_source is not None else grad_mu,
            gz,
            gkl,
            glq,
            grad_mu,
            grad_logvar,
            n,
            d,
            samples,
            mu.stride(0),
            mu.stride(1),
            logvar.stride(0),
            logvar.stride(1),
            *gz_strides,
            gkl.stride(0) if grad_kl is not None else 0,
            *glq_strides,
            key,
            HAS_EPS=noise_source is not None and not recover,
            RECOVER_EPS=recover,
            NOISE4=variant.rng == "philox4",
            FAST_MATH=variant.fast_math,
            HAS_GRAD_Z=grad_z is not None,
            HAS_GRAD_KL=grad_kl is not None,
            HAS_GRAD_LOG_Q=grad_log_q is not None,
            BLOCK_N=block_n,
            BLOCK_D=block_d,
            num_warps=warps,
        )
    return grad_mu, grad_logvar


# Autograd, shared by the two ways in: ``ReparamKL`` (eager) and the custom op (compile).
def _save(ctx, mu, logvar, eps, key, z, stored, samples, return_log_q, variant) -> None:
    recover = variant.noise == "recover"
    noise_source = z if recover else stored if stored is not None else eps
    ctx.save_for_backward(mu, logvar, noise_source, key)
    ctx.samples, ctx.return_log_q, ctx.variant, ctx.recover = (
        samples,
        return_log_q,
        variant,
        recover,
    )
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros


def _noise_of(ctx, mu: torch.Tensor, noise_source: torch.Tensor | None, key: torch.Tensor):
    """The forward's noise as an ``(S, N, D)`` fp32 tensor: injected or stored, else drawn
    again from the saved key (the forward kernel on zeros returns exactly its eps)."""
    n, d = mu.shape
    if noise_source is not None and not ctx.recover:
        return noise_source.reshape(ctx.samples, n, d)
    zeros = torch.zeros((n, d), device=mu.device, dtype=torch.float32)
    redraw = dataclasses.replace(ctx.variant, noise="regenerate")
    with torch.no_grad():
        eps = launch_forward(zeros, zeros, None, key, ctx.samples, False, redraw)[0]
    return eps.reshape(ctx.samples, n, d)


def _differentiable_gradients(ctx, mu, logvar, eps, grad_z, grad_kl, grad_log_q):
    """``grad_mu`` and ``grad_logvar`` in differentiable torch operations (``create_graph``):
    the kernel's formulas (see ``_reparam_kl_bwd``) on the forward's noise, in fp32."""
    n, d = mu.shape
    mu_c, logvar_c = mu.float(), logvar.float()
    grad_mu = torch.zeros((n, d), device=mu.device, dtype=torch.float32)
    grad_logvar = torch.zeros((n, d), device=mu.device, dtype=torch.float32)
    if grad_z is not None:
        gz = grad_z.float().reshape(ctx.samples, n, d)
        grad_mu = grad_mu + gz.sum(0)
        grad_logvar = grad_logvar + 0.5 * torch.exp(0.5 * logvar_c) * (gz * eps.float()).sum(0)
    if grad_kl is not None:
        grad_mu = grad_mu + grad_kl.float()[:, None] * mu_c
        grad_logvar = grad_logvar + grad_kl.float()[:, None] * 0.5 * (torch.exp(logvar_c) - 1)
    if grad_log_q is not None:
        glq = grad_log_q.float().reshape(ctx.samples, n)
        grad_logvar = grad_logvar - 0.5 * glq.sum(0)[:, None]
    return grad_mu.to(mu.dtype), grad_logvar.to(logvar.dtype)


def _eps_gradient(ctx, logvar, eps, grad_z, grad_log_q) -> torch.Tensor:
    """d/d eps of z = mu + std * eps and of log_q = -0.5 * sum(eps^2 + ...), per sample."""
    n, d = logvar.shape
    grad = torch.zeros((ctx.samples, n, d), device=eps.device, dtype=torch.float32)
    if grad_z is not None:
        std = torch.exp(0.5 * logvar.float())
        grad = grad + grad_z.float().reshape(ctx.samples, n, d) * std
    if grad_log_q is not None:
        grad = grad - grad_log_q.float().reshape(ctx.samples, n, 1) * eps.float()
    return grad.to(eps.dtype)


def _gradients(ctx, grad_z, grad_kl, grad_log_q, launch) -> tuple[torch.Tensor | None, ...]:
    """``grad_mu``, ``grad_logvar``, ``grad_eps``: the kernel when no graph of the gradient is
    asked for, differentiable torch operations on the same noise when it is (``create_graph``:
    second derivatives and Hessian-vector products), so both agree with the reference."""
    mu, logvar, noise_source, key = ctx.saved_tensors
    if not ctx.return_log_q:
        grad_log_q = None  # the placeholder output of a call without log_q
    if grad_z is None and grad_kl is None and grad_log_q is None:
        return None, None, None
    wants_eps = ctx.needs_input_grad[2]
    if torch.is_grad_enabled():  # the backward is being differentiated
        # The noise only where a formula reads it (an injected eps is only reshaped).
        reads_noise = grad_z is not None or wants_eps
        eps = _noise_of(ctx, mu, noise_source, key) if reads_noise else None
        grads = _differentiable_gradients(ctx, mu, logvar, eps, grad_z, grad_kl, grad_log_q)
    else:
        eps = noise_source if wants_eps else None
        grads = launch(
            mu, logvar, noise_source, key, ctx.samples, grad_z, grad_kl, grad_log_q, ctx.recover,
            ctx.variant,
        )  # fmt: skip
    grad_eps = _eps_gradient(ctx, logvar, eps, grad_z, grad_log_q) if wants_eps else None
    return (*grads, grad_eps)


class ReparamKL(torch.autograd.Function):
    """The eager path: an autograd.Function around the two launches.

    Its Python dispatch costs about 15 us a call on the CPU against 57 us for the custom op
    (measured on this project's 2-core machine), so eager code keeps it; ``torch.compile``
    traces the custom op instead (``reparam_kl_op``), which it sees as one opaque node.
    """

    @staticmethod
    def forward(ctx, mu, logvar, eps, key, samples, return_log_q, variant):
        z, kl, log_q, stored = launch_forward(mu, logvar, eps, key, samples, return_log_q, variant)
        _save(ctx, mu, logvar, eps, key, z, stored, samples, return_log_q, variant)
        if not return_log_q:
            ctx.mark_non_differentiable(log_q)
        return z, kl, log_q

    @staticmethod
    def backward(ctx, grad_z, grad_kl, grad_log_q):
        return (*_gradients(ctx, grad_z, grad_kl, grad_log_q, launch_backward), *(None,) * 4)


# The custom op: what ``torch.compile`` traces. It takes what a user passes and nothing else;
# the benchmark variants run eagerly (``benchmarks.kernel_variants``).
@torch.library.custom_op("vaebench::reparam_kl", mutates_args=())
def reparam_kl_op(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor | None,
    key: torch.Tensor,
    samples: int,
    return_log_q: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``z``, ``kl`` and ``log_q`` (a placeholder without ``return_log_q``)."""
    z, kl, log_q, _ = launch_forward(mu, logvar, eps, key, samples, return_log_q)
    return z, kl, log_q


@reparam_kl_op.register_fake
def _(mu, logvar, eps, key, samples, return_log_q):
    n, d = mu.shape
    return (
        mu.new_empty(z_shape(n, d, samples)),
        mu.new_empty(n, dtype=torch.float32),
        mu.new_empty(log_q_shape(n, samples, return_log_q), dtype=torch.float32),
    )


def _op_setup_context(ctx, inputs, output) -> None:
    mu, logvar, eps, key, samples, return_log_q = inputs
    z, _, log_q = output
    _save(ctx, mu, logvar, eps, key, z, None, samples, return_log_q, DEFAULT)
    ctx.mark_non_differentiable(*(() if return_log_q else (log_q,)))


def _launch_backward_op(mu, logvar, noise_source, key, samples, gz, gkl, glq, recover, variant):
    return reparam_kl_backward_op(mu, logvar, noise_source, key, samples, gz, gkl, glq)


def _op_backward(ctx, grad_z, grad_kl, grad_log_q):
    return (*_gradients(ctx, grad_z, grad_kl, grad_log_q, _launch_backward_op), None, None, None)


reparam_kl_op.register_autograd(_op_backward, setup_context=_op_setup_context)


@torch.library.custom_op("vaebench::reparam_kl_backward", mutates_args=())
def reparam_kl_backward_op(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    noise_source: torch.Tensor | None,
    key: torch.Tensor,
    samples: int,
    grad_z: torch.Tensor | None,
    grad_kl: torch.Tensor | None,
    grad_log_q: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``grad_mu`` and ``grad_logvar`` (``launch_backward`` as an op, for compiled graphs)."""
    return launch_backward(mu, logvar, noise_source, key, samples, grad_z, grad_kl, grad_log_q)


@reparam_kl_backward_op.register_fake
def _(mu, logvar, *_):
    return torch.empty_like(mu, memory_format=torch.contiguous_format), torch.empty_like(
        logvar, memory_format=torch.contiguous_format
    )


KEY_RANGE = 2**62  # drawn keys: 62 bits (inductor's randint lowering computes high - low in int64)


def draw_key(device: torch.device, seed: int | None) -> torch.Tensor:
    """The call's 64-bit Philox key as a one-element int64 tensor on ``device``.

    Drawn by torch's generator on that device (``torch.manual_seed`` fixes it; a CUDA graph
    replays the draw with a fresh value) or filled from ``seed``; neither syncs the host.
    """
    if seed is not None:
        if not -(2**63) <= seed < 2**63:
            raise ValueError(f"seed must fit in 64 bits, got {seed}")
        return torch.full((1,), seed, dtype=torch.int64, device=device)
    return torch.randint(0, KEY_RANGE, (1,), dtype=torch.int64, device=device)


def check_dtype(mu: torch.Tensor) -> None:
    if mu.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(
            f"the triton backend takes fp32, fp16 or bf16 inputs, got {mu.dtype}; "
            "use the torch or compile backend"
        )


def apply(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor | None,
    seed: int | None,
    samples: int,
    return_log_q: bool,
    variant: Variant = DEFAULT,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The triton path once the arguments are checked: eagerly through ``ReparamKL``, under
    ``torch.compile`` through the custom op (so ``fullgraph=True`` holds)."""
    key = draw_key(mu.device, 0 if eps is not None else seed)
    if eps is not None:
        eps = eps.reshape(samples, *mu.shape).contiguous()  # once: both kernels index it flat
    if torch.compiler.is_compiling():
        if variant != DEFAULT:
            raise ValueError("kernel variants run eagerly; torch.compile traces the default op")
        return reparam_kl_op(mu, logvar, eps, key, samples, return_log_q)
    return ReparamKL.apply(mu, logvar, eps, key, samples, return_log_q, variant)
