"""Compile the reparameterize_kl kernels for a GPU target without a GPU, and read the result.

    python -m benchmarks.kernel_aot [--arch 90] [--configs 16x128:4,32x128:8]

Triton compiles to PTX and a cubin with its bundled ptxas; ``cuobjdump`` (also bundled) reports
registers and stack (local memory: spills) per kernel, and the PTX shows whether global loads
and stores are vectorized. This answers the first performance questions (spills, load width)
at no device time. Pointers are specialized as 16-byte aligned and the row stride as a
multiple of 16, as Triton's JIT does for contiguous tensors with D % 16 == 0.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

os.environ.pop("TRITON_INTERPRET", None)  # compile real kernels, before they are defined
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from vaebench.kernels import reparam_kl

DTYPES = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}


@dataclass
class Compiled:
    kernel: str
    dtype: str
    tiles: str
    warps: int
    registers: int
    stack_bytes: int
    loads: dict[str, int]
    stores: dict[str, int]
    sass_instructions: int
    shared_bytes: int  # static shared memory: a cross-warp reduction would need it
    barriers: int  # BAR instructions in the SASS: block-wide synchronizations
    sass_per_element: float  # static instructions over the elements one thread handles
    mufu: dict[str, int]  # SFU instructions (MUFU.SIN, .COS, .LG2, .EX2, .RSQ...) in the SASS
    fast_math: bool = False


def _cuobjdump(cubin: bytes, flag: str) -> str:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        return subprocess.run(
            [tool, flag, handle.name], capture_output=True, text=True, check=True
        ).stdout


def _resource_usage(cubin: bytes) -> tuple[int, int, int, int, int, dict[str, int]]:
    """Registers, stack bytes, static SASS instruction count (a proxy for arithmetic cost),
    static shared memory bytes, the number of barrier (BAR) instructions and the SFU ones."""
    usage = _cuobjdump(cubin, "--dump-resource-usage")
    registers = int(re.search(r"REG:(\d+)", usage).group(1))
    stack = int(re.search(r"STACK:(\d+)", usage).group(1))
    shared = int(re.search(r"SHARED:(\d+)", usage).group(1))
    sass_text = _cuobjdump(cubin, "-sass")
    sass = len(re.findall(r"^\s+/\*[0-9a-f]{4,}\*/", sass_text, flags=re.MULTILINE))
    barriers = len(re.findall(r"\bBAR\.", sass_text))
    mufu = dict(collections.Counter(re.findall(r"\bMUFU\.(\w+)", sass_text)))
    return registers, stack, sass, shared, barriers, mufu


def _compile(fn, signature: dict[str, str], constants: dict, arch: int, warps: int):
    pointers = [name for name, kind in signature.items() if kind.startswith("*")]
    multiples = ("D", "stride_mu_n", "stride_lv_n", "stride_gz_n", "stride_gz_s")
    aligned = pointers + [n for n in multiples if n in signature]
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    signature = {**signature, **{name: "constexpr" for name in constants}}
    source = ASTSource(fn, signature, constexprs=constants, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})


def _analyse(
    kernel: str, fn, signature: dict[str, str], constants: dict, dtype: str, warps: int, arch: int
) -> Compiled:
    compiled = _compile(fn, signature, constants, arch, warps)
    registers, stack, sass, shared, barriers, mufu = _resource_usage(compiled.asm["cubin"])
    ptx = compiled.asm["ptx"]
    tiles = f"{constants['BLOCK_N']}x{constants['BLOCK_D']}"
    per_thread = constants["BLOCK_N"] * constants["BLOCK_D"] / (32 * warps)
    return Compiled(
        kernel, dtype, tiles, warps, registers, stack, _widths(ptx, "ld"), _widths(ptx, "st"),
        sass, shared, barriers, round(sass / per_thread, 1), mufu, constants["FAST_MATH"],
    )  # fmt: skip


def _widths(ptx: str, op: str) -> dict[str, int]:
    return dict(collections.Counter(re.findall(rf"{op}\.global(?:\.nc)?(?:\.v\d)?\.b\d+", ptx)))


def forward(
    dtype: str,
    block_n: int,
    block_d: int,
    warps: int,
    arch: int,
    *,
    return_log_q: bool = False,
    rng: str = "philox",
    fast_math: bool = False,
) -> Compiled:
    t = DTYPES[dtype]
    signature = {
        "mu_ptr": f"*{t}",
        "logvar_ptr": f"*{t}",
        "eps_ptr": "*fp32",
        "z_ptr": f"*{t}",
        "kl_ptr": "*fp32",
        "log_q_ptr": "*fp32",
        "eps_out_ptr": "*fp32",
        "N": "i32",
        "D": "i32",
        "S": "i32",
        "stride_mu_n": "i32",
        "stride_lv_n": "i32",
        "key_ptr": "*i64",
    }
    constants = {
        "stride_mu_d": 1,
        "stride_lv_d": 1,
        "HAS_EPS": False,
        "RETURN_LOG_Q": return_log_q,
        "STORE_EPS": False,
        "NOISE4": rng == "philox4",
        "FAST_MATH": fast_math,
        "BLOCK_N": block_n,
        "BLOCK_D": block_d,
    }
    return _analyse("forward", reparam_kl._reparam_kl_fwd, signature, constants, dtype, warps, arch)


def backward(
    dtype: str,
    block_n: int,
    block_d: int,
    warps: int,
    arch: int,
    *,
    rng: str = "philox",
    fast_math: bool = False,
) -> Compiled:
    t = DTYPES[dtype]
    signature = {
        "mu_ptr": f"*{t}",
        "logvar_ptr": f"*{t}",
        "eps_ptr": "*fp32",
        "grad_z_ptr": f"*{t}",
        "grad_kl_ptr": "*fp32",
        "grad_log_q_ptr": "*fp32",
        "grad_mu_ptr": f"*{t}",
        "grad_logvar_ptr": f"*{t}",
        "N": "i32",
        "D": "i32",
        "S": "i32",
        "stride_mu_n": "i32",
        "stride_lv_n": "i32",
        "stride_gz_s": "i32",
        "stride_gz_n": "i32",
        "stride_glq_s": "i32",
        "stride_glq_n": "i32",
        "key_ptr": "*i64",
    }
    constants = {
        "stride_mu_d": 1,
        "stride_lv_d": 1,
        "stride_gz_d": 1,
        "stride_gkl": 1,
        "HAS_EPS": False,
        "RECOVER_EPS": False,
        "NOISE4": rng == "philox4",
        "FAST_MATH": fast_math,
        "HAS_GRAD_Z": True,
        "HAS_GRAD_KL": True,
        "HAS_GRAD_LOG_Q": False,
        "BLOCK_N": block_n,
        "BLOCK_D": block_d,
    }
    return _analyse(
        "backward", reparam_kl._reparam_kl_bwd, signature, constants, dtype, warps, arch
    )


def default_configs() -> list[tuple[int, int, int]]:
    """The tiles ``tile_sizes`` picks for D = 64 and D >= 128, with their warp counts."""
    configs = []
    for d in (64, 128):
        block_n, block_d, warps = reparam_kl.tile_sizes(1 << 20, d)
        configs.append((block_n, block_d, warps))
    return configs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch", type=int, default=90, help="SM version: 90 for H100/H200, 80 for A100"
    )
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument(
        "--configs",
        default=None,
        help="BLOCK_NxBLOCK_D:WARPS list (default: the tiles tile_sizes picks)",
    )
    parser.add_argument("--rngs", default="philox", help="in-kernel generators: philox, philox4")
    parser.add_argument(
        "--math", default="exact", help="Box-Muller math: exact, fast (SFU approximations), or both"
    )
    args = parser.parse_args(argv)
    if args.configs:
        configs = []
        for item in args.configs.split(","):
            tiles, warps = item.split(":")
            block_n, block_d = (int(v) for v in tiles.split("x"))
            configs.append((block_n, block_d, int(warps)))
    else:
        configs = default_configs()
    print(
        f"{'kernel':8} {'rng':7} {'dtype':5} {'tiles':>7} {'warps':>5} {'regs':>4} {'stack':>5} "
        f"{'SASS':>5} {'/elem':>5} {'smem':>5} {'bar':>3} {'math':5} MUFU; global loads / stores (PTX)"
    )
    maths = {"exact": [False], "fast": [True], "both": [False, True]}[args.math]
    for block_n, block_d, warps in configs:
        for rng in args.rngs.split(","):
            for dtype in args.dtypes.split(","):
                for fast in maths:
                    for kernel in (forward, backward):
                        r = kernel(
                            dtype, block_n, block_d, warps, args.arch, rng=rng, fast_math=fast
                        )
                        print(
                            f"{r.kernel:8} {rng:7} {r.dtype:5} {r.tiles:>7} {r.warps:>5} "
                            f"{r.registers:>4} {r.stack_bytes:>5} {r.sass_instructions:>5} "
                            f"{r.sass_per_element:>5} {r.shared_bytes:>5} {r.barriers:>3} "
                            f"{'fast' if fast else 'exact':5} {r.mufu}; {r.loads} / {r.stores}"
                        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
