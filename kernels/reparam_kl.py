"""Fused Triton kernels for z = mu + exp(logvar / 2) * eps and KL(N(mu, exp(logvar)) || N(0, I)).

One pass over the inputs replaces the dozen small PyTorch kernels of the reference:

* forward: read ``mu`` and ``logvar`` once, draw ``eps`` with Philox inside the kernel (or read
  an injected ``eps``), write ``z`` and the per-row ``kl`` (and ``log_q`` when asked);
* backward: read ``mu``, ``logvar``, ``grad_z``, ``grad_kl`` (and ``grad_log_q``), regenerate
  the very same ``eps`` from ``(seed, element index)``, write ``grad_mu`` and ``grad_logvar``.

No noise tensor is ever stored. The Philox counter of an element is its linear index
``s * N * D + n * D + d`` in the ``(S, N, D)`` output, so the noise does not depend on tile
sizes or launch geometry. Arithmetic is fp32 whatever the input dtype; ``z`` and the
gradients are stored in the input dtype, ``kl`` and ``log_q`` in fp32. IEEE semantics follow
``reference.py`` exactly (no clamping).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from vaebench.kernels import triton_interpreting
from vaebench.kernels.api import check_inputs

LOG_2PI = math.log(2 * math.pi)


@triton.jit
def _normal4(seed, rows, col_start, D, BLOCK_D: tl.constexpr):
    """One Philox call per 4 columns: element (r, c) is lane c % 4 of randn4x(seed, r * ceil(D/4) + c // 4).

    Four normals from one 128-bit Philox draw (two Box-Muller pairs) instead of one per
    element: a quarter of the Philox work and half the transcendentals. ``rows`` are global
    row indices (``sample * N + n``); ``col_start`` is a multiple of 4.
    """
    groups = col_start // 4 + tl.arange(0, BLOCK_D // 4)
    keys = rows[:, None] * ((D + 3) // 4) + groups[None, :]
    n1, n2, n3, n4 = tl.randn4x(seed, keys)
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
    BLOCK_D: tl.constexpr,
):
    """The standard-normal noise of a tile: injected, or Philox keyed by element index."""
    if HAS_EPS:
        eps = tl.load(eps_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    elif NOISE4:
        eps = _normal4(seed, rows, col_start, D, BLOCK_D)
    else:
        eps = tl.randn(seed, offsets)
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
    seed,
    HAS_EPS: tl.constexpr,
    RETURN_LOG_Q: tl.constexpr,
    STORE_EPS: tl.constexpr,
    NOISE4: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program: BLOCK_N rows of one sample, looping over the columns in BLOCK_D steps. One
    # launch axis (up to 2^31 - 1 programs: K = 100000 samples fit), samples varying fastest,
    # so the S programs that re-read the same mu and logvar rows run together and hit L2.
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
    seed,
    HAS_EPS: tl.constexpr,
    RECOVER_EPS: tl.constexpr,
    NOISE4: tl.constexpr,
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
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
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
                    tl.program_id(1) * BLOCK_D,
                    D,
                    HAS_EPS,
                    NOISE4,
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
    element); 8x128 needs 72 registers and no stack (``python -m benchmarks.kernel_aot``).
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


def launch_tiles(n: int, d: int, tiles: tuple[int, int] | None, rng: str) -> tuple[int, int, int]:
    """The tiles of a launch: ``tile_sizes`` unless overridden; philox4 needs BLOCK_D % 4 == 0."""
    block_n, block_d, warps = tile_sizes(n, d)
    if tiles is not None:
        block_n, block_d = tiles
    if rng == "philox4":
        if tiles is None:
            block_d = max(block_d, 4)
        elif block_d % 4:
            raise ValueError(f"rng 'philox4' needs BLOCK_D divisible by 4, got {block_d}")
    return block_n, block_d, warps


def launch_forward(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor | None,
    seed: int,
    samples: int,
    return_log_q: bool,
    tiles: tuple[int, int] | None = None,
    eps_out: torch.Tensor | None = None,
    rng: str = "philox",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, d = mu.shape
    block_n, block_d, warps = launch_tiles(n, d, tiles, rng)
    # With one sample the outputs are (N, D) and (N,) themselves, never slices of a (1, ...)
    # buffer: a slice's backward would allocate zeros and copy the gradient into them.
    z = torch.empty((samples, n, d) if samples > 1 else (n, d), device=mu.device, dtype=mu.dtype)
    kl = torch.empty(n, device=mu.device, dtype=torch.float32)
    log_shape = ((samples, n) if samples > 1 else (n,)) if return_log_q else (1,)
    log_q = torch.empty(log_shape, device=mu.device, dtype=torch.float32)
    eps_arg = eps if eps is not None else z  # an unused pointer when eps is drawn in-kernel
    grid = (triton.cdiv(n, block_n) * samples,)
    _reparam_kl_fwd[grid](
        mu,
        logvar,
        eps_arg,
        z,
        kl,
        log_q,
        eps_out if eps_out is not None else z,
        n,
        d,
        samples,
        mu.stride(0),
        mu.stride(1),
        logvar.stride(0),
        logvar.stride(1),
        seed,
        HAS_EPS=eps is not None,
        RETURN_LOG_Q=return_log_q,
        STORE_EPS=eps_out is not None,
        NOISE4=rng == "philox4",
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=warps,
    )
    return z, kl, log_q


def launch_backward(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor | None,
    seed: int,
    samples: int,
    grad_z: torch.Tensor | None,
    grad_kl: torch.Tensor | None,
    grad_log_q: torch.Tensor | None,
    tiles: tuple[int, int] | None = None,
    z: torch.Tensor | None = None,
    rng: str = "philox",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both gradients; ``z`` (the forward's output) selects the recover-noise variant."""
    n, d = mu.shape
    block_n, block_d, warps = launch_tiles(n, d, tiles, rng)
    grad_mu = torch.empty((n, d), device=mu.device, dtype=mu.dtype)
    grad_logvar = torch.empty((n, d), device=mu.device, dtype=logvar.dtype)
    gz = grad_z if grad_z is not None else grad_mu
    gz_strides = (0,) * (3 - gz.dim()) + gz.stride() if grad_z is not None else (0, 0, 0)
    gkl = grad_kl if grad_kl is not None else grad_mu
    glq = grad_log_q if grad_log_q is not None else grad_mu
    glq_strides = (0,) * (2 - glq.dim()) + glq.stride() if grad_log_q is not None else (0, 0)
    grid = (triton.cdiv(n, block_n), triton.cdiv(d, block_d))
    _reparam_kl_bwd[grid](
        mu,
        logvar,
        z if z is not None else eps if eps is not None else grad_mu,
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
        seed,
        HAS_EPS=eps is not None,
        RECOVER_EPS=z is not None,
        NOISE4=rng == "philox4",
        HAS_GRAD_Z=grad_z is not None,
        HAS_GRAD_KL=grad_kl is not None,
        HAS_GRAD_LOG_Q=grad_log_q is not None,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=warps,
    )
    return grad_mu, grad_logvar


NOISE_MODES = ("regenerate", "store", "recover")


class ReparamKL(torch.autograd.Function):
    """Differentiable in ``mu`` and ``logvar``.

    ``noise="regenerate"`` (default) saves only ``mu`` and ``logvar`` (and an injected
    ``eps``) and redraws the noise in the backward kernel. Two variants are kept for
    benchmarking the trade-off: ``store`` writes the drawn noise to an fp32 buffer and reads it
    back (one more tensor written and read); ``recover`` saves ``z`` and uses
    std * eps = z - mu (no Philox in the backward, but ``z`` is read in the input dtype, so in
    bf16 the logvar gradient inherits z's rounding).
    """

    @staticmethod
    def forward(ctx, mu, logvar, eps, seed, samples, return_log_q, tiles, noise, rng):
        eps_out = None
        if noise == "store":
            eps_out = torch.empty((samples, *mu.shape), device=mu.device, dtype=torch.float32)
        z, kl, log_q = launch_forward(
            mu, logvar, eps, seed, samples, return_log_q, tiles, eps_out, rng
        )
        saved_z = z if noise == "recover" else None
        ctx.save_for_backward(mu, logvar, eps if eps_out is None else eps_out, saved_z)
        ctx.seed, ctx.samples, ctx.tiles, ctx.rng = seed, samples, tiles, rng
        ctx.return_log_q = return_log_q
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros
        if not return_log_q:
            ctx.mark_non_differentiable(log_q)
        return z, kl, log_q

    @staticmethod
    @once_differentiable  # the kernels' gradients are not themselves differentiable: say so
    def backward(ctx, grad_z, grad_kl, grad_log_q):
        mu, logvar, eps, z = ctx.saved_tensors
        if not ctx.return_log_q:
            grad_log_q = None  # the placeholder output of a call without log_q
        if grad_z is None and grad_kl is None and grad_log_q is None:
            return (None,) * 9
        grad_mu, grad_logvar = launch_backward(
            mu,
            logvar,
            eps,
            ctx.seed,
            ctx.samples,
            grad_z,
            grad_kl,
            grad_log_q,
            ctx.tiles,
            z,
            ctx.rng,
        )
        return grad_mu, grad_logvar, None, None, None, None, None, None, None


def new_seed() -> int:
    """A Philox seed from torch's default generator, so ``torch.manual_seed`` fixes the noise."""
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


def reparameterize_kl_variant(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    eps: torch.Tensor | None = None,
    seed: int | None = None,
    samples: int = 1,
    return_log_q: bool = False,
    noise: str = "regenerate",
    rng: str = "philox",
    tiles: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Internal, for benchmarks and tests: the triton path plus the variants they measure.

    With the defaults it is exactly ``reparameterize_kl(..., backend="triton")``, whose
    public signature leaves the variants out. ``noise`` picks from ``NOISE_MODES`` (see
    ``ReparamKL``); ``rng`` the in-kernel generator: ``philox`` (one draw per element) or
    ``philox4`` (one draw per 4 elements; another, equally valid stream); ``tiles``
    overrides ``(BLOCK_N, BLOCK_D)``. noise and rng only vary drawn noise: errors with eps.
    """
    check_inputs(mu, logvar, eps, seed, samples)
    if noise not in NOISE_MODES:
        raise ValueError(f"unknown noise mode '{noise}'; available: {', '.join(NOISE_MODES)}")
    if rng not in RNGS:
        raise ValueError(f"unknown rng '{rng}'; available: {', '.join(RNGS)}")
    if eps is not None and (noise, rng) != ("regenerate", "philox"):
        raise ValueError("noise and rng variants draw the noise; eps supplies it: give one")
    if mu.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(
            f"the triton backend takes fp32, fp16 or bf16 inputs, got {mu.dtype}; "
            "use the torch or compile backend"
        )
    if seed is None:
        seed = new_seed() if eps is None else 0
    if eps is not None:
        eps = eps.reshape(samples, *mu.shape).contiguous()  # once: both kernels index it flat
    z, kl, log_q = ReparamKL.apply(
        mu, logvar, eps, int(seed), samples, return_log_q, tiles, noise, rng
    )
    return (z, kl, log_q) if return_log_q else (z, kl)
