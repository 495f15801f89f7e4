"""vaebench: train, evaluate and time VAEs assembled from plugins."""

from vaebench.hookspecs import hookimpl

__all__ = ["hookimpl"]
__version__ = "0.1.0"
