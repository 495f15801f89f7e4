"""Options of a component, declared by the component itself: the keyword parameters of its
factory after the positional ones. ``-D``, ``-L``, ``-P`` and ``-M`` all go through here, so a
third-party prior, likelihood, dataset or objective brings its own options and the core never
lists them. Nothing here imports torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from vaebench.errors import ConfigError

CONTEXT = (
    "seed",
    "input_shape",
    "encoder",
    "examples",
    "steps_per_epoch",
    "lr",  # an optimizer's: --lr
    "capturable",  # an optimizer's: set under --cuda-graphs
    "epochs",  # a schedule's: the run's most epochs
    "last_epoch",  # a schedule's: --resume restores it from the schedule's state
)  # passed by the core, not options


def option_names(component: Any, positional: int) -> list[str] | None:
    """The option keys a factory declares after its positional arguments (None: ``**kwargs``)."""
    params = list(inspect.signature(component.factory).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return [n for n in named[positional:] if n not in CONTEXT]


def check_option_keys(
    components: list[Any], options: dict[str, Any], flag: str, positional: int
) -> None:
    """Every key must be an option of at least one component in use: a misspelled
    ``-P componets=5`` stops the run instead of running silently with the default."""
    accepted: list[str] = []
    for component in components:
        names = option_names(component, positional)
        if names is None:
            return
        accepted += [n for n in names if n not in accepted]
    for key in options:
        if key not in accepted:
            used = ", ".join(f"{c.kind} '{c.name}'" for c in components)
            raise ConfigError(
                f"{flag} {key}: not an option of {used}; accepted: {', '.join(accepted) or 'none'}"
            )


SEQUENCE_HINTS = ("Iterable", "Sequence", "list", "tuple")


def as_declared(params: Mapping[str, inspect.Parameter], options: dict[str, Any]) -> dict[str, Any]:
    """A single value given for a parameter declared as a sequence, as a list of one
    (``-S milestones=200`` for ``MultiStepLR(milestones: Iterable[int])``)."""
    typed = dict(options)
    for key, value in options.items():
        hint = params[key].annotation if key in params else inspect.Parameter.empty
        if hint is not inspect.Parameter.empty and not isinstance(value, (list, tuple, str)):
            text = hint if isinstance(hint, str) else str(hint)
            if any(word in text for word in SEQUENCE_HINTS):
                typed[key] = [value]
    return typed


def call_factory(component: Any, *args: Any, options: dict[str, Any], flag: str, **context: Any):
    """Call a plugin factory with the context it declares and the options it declares."""
    names = option_names(component, len(args))
    params = inspect.signature(component.factory).parameters
    if names is not None:
        options = as_declared(params, {k: v for k, v in options.items() if k in names})
        context = {k: v for k, v in context.items() if k in params}
    try:
        return component.factory(*args, **context, **options)
    except (TypeError, ValueError) as exc:
        if not options:
            raise
        raise ConfigError(
            f"{flag}: {component.kind} '{component.name}' rejected {options}: {exc}"
        ) from None
