"""What an estimator's ``fit`` accepts, read from its signature."""

import inspect

__all__ = ["fit_takes"]


def fit_takes(estimator, name):
    """Whether ``estimator.fit`` has a parameter ``name`` (False when its signature cannot be read)."""
    try:
        return name in inspect.signature(estimator.fit).parameters
    except (TypeError, ValueError):
        return False
