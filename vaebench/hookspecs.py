"""The plugin contract: one hook per kind of component, each handed a ``register`` callback.

Third-party distributions expose a module (or object) through the entry-point group
``vaebench`` and implement any of these hooks with ``@vaebench.hookimpl``. Each hook is
called once per plugin with ``register(name, factory)``; the core records which
distribution every name came from, so ``vaebench plugins`` can show it and duplicate
names can be reported with both owners. A factory may be given as a ``"module:attr"`` import
path instead of an object: it is imported on first use, so listing plugins stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "vaebench"
ENTRY_POINT_GROUP = "vaebench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[str, Callable[..., Any]], None]


@hookspec
def vaebench_register_encoders(register: Register) -> None:
    """Register encoder families.

    ``factory(input_shape: tuple[int, ...], latent_dim: int, <options>) -> torch.nn.Module``.
    The module maps a batch ``(B, *input_shape)`` to ``(mu, logvar)``, each of shape
    ``(B, latent_dim)``: the mean and log-variance of the diagonal Gaussian posterior q(z|x).

    Architecture options: every keyword parameter after the two positional ones is an option
    of the family (``--arch-option KEY=VALUE``, ``-A``), shared by the encoder and the decoder
    of the same name; each receives the keys it declares. A key neither declares stops the run
    before training, naming the accepted ones; raise ``ValueError`` for a bad value (it
    becomes one line naming the family). Give every option a default, and say in the
    docstring what it means: ``vaebench plugins`` lists them. The options are recorded in the
    row, the config and every checkpoint, so a report can rebuild the model.
    """


@hookspec
def vaebench_register_decoders(register: Register) -> None:
    """Register decoder families.

    ``factory(input_shape: tuple[int, ...], latent_dim: int, <options>) -> torch.nn.Module``.
    The module maps ``(B, latent_dim)`` to the likelihood's parameters of shape
    ``(B, *input_shape)`` (logits for Bernoulli, means for Gaussian). A ``--plugins NAME``
    selects the encoder and the decoder registered under the same NAME; their options
    (``-A``) are declared as the encoder's are.
    """


@hookspec
def vaebench_register_priors(register: Register) -> None:
    """Register priors p(z).

    ``factory(latent_dim: int, *, <context>, <options>) -> prior``. The prior offers
    ``log_prob(z) -> (B,)`` (summed over latent dimensions) and ``sample(n) -> (n, latent_dim)``,
    in the manner of ``torch.distributions``. Make it a ``torch.nn.Module`` when it has
    learnable parameters: they are trained with the model. Context: the keyword parameters
    ``input_shape``, ``encoder`` and ``examples`` (a few training inputs; what a VampPrior
    needs) are passed when the factory declares them. Every other keyword parameter is an
    option (``--prior-option KEY=VALUE``): a key the factory does not declare stops the run
    before training, naming the accepted ones (a factory taking ``**kwargs`` receives
    everything, unchecked). Raise ``ValueError`` for a bad option value.

    Optional: ``standard_normal = True`` when the prior is exactly N(0, I), so the fused
    reparameterization + KL kernel gives the closed-form KL; or ``kl(mu, logvar) -> (B,)`` for
    another closed form. Otherwise the KL is the Monte Carlo estimate log q(z|x) - log p(z).
    """


@hookspec
def vaebench_register_datasets(register: Register) -> None:
    """Register datasets by name.

    ``factory(seed: int, <options>) -> vaebench.data.Dataset``. The keyword parameters are
    the ``--dataset-option KEY=VALUE`` options (values parsed as int, float or string),
    checked by name like a prior's; raise ``vaebench.errors.DataError`` with a one-line
    message for bad option values or data.
    """


@hookspec
def vaebench_register_likelihoods(register: Register) -> None:
    """Register observation models p(x|z).

    ``factory(input_shape: tuple[int, ...], <options>) -> likelihood``: an object (an
    ``nn.Module`` when it has learnable parameters) with ``log_prob(params, x) -> (B,)``
    summed over all data dimensions, in nats, and ``mean(params) -> (B, *input_shape)`` for
    reconstructions. Its keyword parameters are the ``--likelihood-option KEY=VALUE`` options,
    checked by name like a prior's. A likelihood
    that needs more than one parameter per value offers ``param_shape(input_shape)``; the
    decoder is then built for that shape instead of the input shape. It may also offer
    ``log_prob_samples(params, x) -> (B, S)`` for ``(B, S, *param_shape)`` params of S samples
    per example and ``(B, *input_shape)`` x, the IW-NLL's layout: without it x is repeated per
    sample and ``log_prob`` called.
    """


@hookspec
def vaebench_register_models(register: Register) -> None:
    """Register training objectives (``--model``): what the encoder and decoder are trained for.

    ``factory(**options) -> objective``: the factory's keyword parameters are the objective's
    options, set with ``-M KEY=VALUE`` (``--beta`` and friends are aliases), checked before
    training (an unknown key stops the run; a ``ValueError`` names a bad value). A parameter
    named ``steps_per_epoch`` receives the number of optimizer steps per epoch (warm-ups in
    epochs become steps); ``**options`` accepts any key. The objective has
    ``variational: bool`` (True when q(z|x) is a distribution, so ELBO metrics apply) and
    ``loss(model, x, step) -> (scalar loss, {"recon": (B,), "kl": (B,) or absent})`` where
    ``model`` is a ``vaebench.model.VAE`` and ``step`` counts optimizer steps from 0. The
    terms are unweighted: for a variational objective returning both, ``recon + kl`` is the
    per-example negative ELBO (what validation and early stopping read; without them the
    model's own ``loss_terms`` is evaluated).
    """


@hookspec
def vaebench_register_optimizers(register: Register) -> None:
    """Register optimizers (``--optimizer NAME``): a paper's own update rule, without touching
    the core.

    ``factory(params, lr: float, <options>) -> torch.optim.Optimizer``: a ``torch.optim``
    class fits as it is (the built-ins are ``torch.optim.Adam`` and friends). Every keyword
    parameter after ``params`` and ``lr`` is an option (``--optimizer-option KEY=VALUE``,
    ``-O``), checked by name; a bad value raises ``ValueError``. A parameter named
    ``capturable`` is set to True under ``--cuda-graphs`` (an optimizer without one cannot be
    captured, and the run says so before training). The optimizer's ``state_dict`` must hold
    all its state: ``--resume`` restores it from there.
    """


@hookspec
def vaebench_register_schedules(register: Register) -> None:
    """Register learning-rate schedules (``--lr-schedule NAME``), stepped once per epoch.

    ``factory(optimizer, <context>, <options>) -> scheduler``: a
    ``torch.optim.lr_scheduler`` class fits as it is. Context: ``epochs`` (the most epochs
    of the run) is passed when the factory declares it and the user gave no such option
    (``CosineAnnealingLR``'s ``T_max`` defaults to it). Other keyword parameters are options
    (``--schedule-option KEY=VALUE``, ``-S``). The scheduler offers ``step()`` (or
    ``step(metric)`` when it declares ``metrics``: it then reads the validation figure early
    stopping reads) and ``state_dict``/``load_state_dict`` for ``--resume``.
    """


@hookspec
def vaebench_register_executors(register: Register) -> None:
    """Register sweep executors (``vaebench sweep --executor NAME``).

    ``factory(workers: int, **options) -> executor``: an object shaped like
    ``concurrent.futures.Executor`` (``submit(fn, *args) -> Future``, usable as a context
    manager that waits and cleans up on exit). ``fn`` and its arguments are picklable; the
    worker runs each cell in a temporary folder of its own and returns the run's files, which
    the driver writes into the sweep folder: remote workers need no shared filesystem.
    ``options`` holds ``address`` (``--ray-address``) and any future executor settings.
    """


@hookspec
def vaebench_register_trackers(register: Register) -> None:
    """Register experiment trackers (``vaebench run --track NAME``).

    ``factory(out: Path, uri: str | None) -> tracker``, called before training (import the
    tracking library here: an ImportError becomes one line naming what to install). The
    tracker offers ``start(name, settings)`` once per run, ``log_model(record)`` after each
    model is trained, evaluated and timed (a ``vaebench.tracking.ModelRecord``: label,
    settings, final metrics, per-epoch history, checkpoint, image views on demand) and
    ``finish(artifacts)`` with the run's files. Any exception it raises is one warning and
    the tracker is dropped; the run goes on.
    """


@hookspec
def vaebench_register_tasks(register: Register) -> None:
    """Register versioned benchmark tasks (``vaebench run --task NAME``).

    ``factory() -> vaebench.tasks.Task``; a task written as a TOML file (the format of the
    built-ins in ``vaebench/tasks/``) registers as
    ``functools.partial(vaebench.tasks.task_from_file, path)``. Its ``[data] format`` names a
    built-in reader (amat, idx, omniglot, cifar10) or a ``"module:function"`` taking
    ``(task, files)`` (role -> path) and returning a ``vaebench.data.Dataset``.
    """
