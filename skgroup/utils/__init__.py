"""Utilities for estimator authors: shared docstrings and the domain check suite."""

from ._docstrings import PARAM_DOCS, fill_doc

__all__ = ["PARAM_DOCS", "fill_doc"]
