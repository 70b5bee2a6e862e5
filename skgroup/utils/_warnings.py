"""Warnings that point at the user's line, not at skgroup's internals."""

import os
import sys
import warnings

__all__ = ["warn"]

_INTERNAL = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,  # the skgroup package
    os.path.join(os.path.dirname(warnings.__file__), "contextlib"),
)


def _internal(filename):
    if filename.startswith(_INTERNAL):
        return True
    # scikit-learn's fit wrappers (_fit_context, metadata routing) sit between the user and us
    return f"{os.sep}sklearn{os.sep}" in filename


def warn(message, category=UserWarning):
    """``warnings.warn`` with the stack level of the first frame outside skgroup and scikit-learn."""
    frame, level = sys._getframe(1), 1
    while frame is not None and _internal(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
