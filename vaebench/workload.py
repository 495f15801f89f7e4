"""The work a run asks for, sized against its data before training.

A setting whose cost is absurd for the data (K = 10^12 importance samples, 10^9 epochs, a
timed batch of a billion images) would otherwise run for ever or die late; it stops here
with one line that states the estimated cost, before any file is written (exit 2). The
limits sit hundreds of times above the largest published protocols (K = 5000 over 10,000
test images is 5e7 decoder passes; 3,280 epochs of 50,000 images at k = 50 is 8e9).
"""

from __future__ import annotations

from vaebench.config import RunConfig
from vaebench.errors import ConfigError

MOST_PASSES = 10**11  # decoder passes per model, for training or for the IW-NLL
MOST_BATCH_BYTES = 64 * 2**30  # the inputs of one timed batch
FAST_RATE = 1e7  # decoder passes a second: a fast GPU on these networks, to state a cost


def duration(passes: float) -> str:
    """How long ``passes`` decoder passes take even at ``FAST_RATE``."""
    seconds = passes / FAST_RATE
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("hours", 3600)):
        if seconds >= size:
            return f"about {seconds / size:,.0f} {unit} even at 10 million passes a second"
    return f"about {seconds / 60:,.0f} minutes even at 10 million passes a second"


def check_workload(config: RunConfig, n_train: int, n_test: int, input_values: int) -> None:
    """Refuse, in one line with the estimated cost, work that no run could finish."""
    iw_passes = config.iw_samples * n_test
    if iw_passes > MOST_PASSES:
        raise ConfigError(
            f"--iw-samples {config.iw_samples:,} asks for {iw_passes:.1e} decoder passes per "
            f"model (K x {n_test:,} test examples), {duration(iw_passes)}; published protocols "
            "use K = 5000: lower --iw-samples"
        )
    k = int(config.model_options.get("iwae_samples", 5)) if "iwae" in config.models else 1
    train_passes = config.epochs * n_train * max(1, k)
    if train_passes > MOST_PASSES:
        times_k = f" x K = {k:,}" if k > 1 else ""
        raise ConfigError(
            f"--epochs {config.epochs:,} x {n_train:,} training examples{times_k} asks for "
            f"{train_passes:.1e} decoder passes per model, {duration(train_passes)}: lower "
            "--epochs (--patience stops a converged model early)"
        )
    biggest = max(config.timing_batch_sizes, default=0)
    batch_bytes = biggest * input_values * 4
    if batch_bytes > MOST_BATCH_BYTES:
        raise ConfigError(
            f"--timing-batch-sizes {biggest:,} needs {batch_bytes / 2**30:,.0f} GiB for one "
            f"batch of fp32 inputs alone ({input_values:,} values an example), more than any "
            f"device holds: time batches of at most {MOST_BATCH_BYTES // (input_values * 4):,}"
        )


__all__ = ["MOST_PASSES", "check_workload", "duration"]
