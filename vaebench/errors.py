"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class VaebenchError(Exception):
    """An input or environment problem the user can fix; the message says what and how."""


class PluginError(VaebenchError):
    """A plugin failed to load or register, or two plugins claim the same name."""


class DataError(VaebenchError):
    """A dataset could not be read or is not usable."""


class ConfigError(VaebenchError):
    """A setting is invalid or names something that does not exist."""


def first_line(exc: BaseException, limit: int = 120) -> str:
    """An exception's first message line, cut to ``limit``: libraries' messages run to pages,
    a user-facing error is one line."""
    return (str(exc).splitlines() or [type(exc).__name__])[0][:limit]
