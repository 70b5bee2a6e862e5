"""Tidy tables: a pandas DataFrame when pandas imports, else a dict of columns.

Every analysis function returns one row per observation (a group, an
(epoch, group) pair, a sample...) and one column per variable. Without
pandas the same table is a ``dict`` mapping column names to equal-length
numpy arrays, in the same column order; the plot functions accept both.
"""

import numpy as np

__all__ = ["make_table", "table_columns"]


def _pandas():
    try:
        import pandas
    except ImportError:
        return None
    return pandas


def make_table(columns):
    """DataFrame (pandas installed) or dict of numpy arrays, from ``{name: values}``."""
    cols = {}
    lengths = set()
    for name, values in columns.items():
        arr = np.asarray(values)
        if arr.ndim != 1:  # e.g. a column of tuples: keep them as 1-D objects
            arr = np.empty(len(values), dtype=object)
            arr[:] = list(values)
        cols[name] = arr
        lengths.add(arr.shape[0])
    if len(lengths) > 1:  # a bug of ours, never a user error
        raise RuntimeError(f"table columns have different lengths: {sorted(lengths)}")
    pd = _pandas()
    if pd is None:
        return cols
    return pd.DataFrame(cols)


def table_columns(table, required=(), *, name="table"):
    """Columns of a tidy table (DataFrame, dict of columns, or list of row dicts).

    Raises a ValueError naming the missing columns.
    """
    if hasattr(table, "columns") and hasattr(table, "reset_index"):
        frame = table
        if any(n is not None for n in getattr(frame.index, "names", [None])):
            frame = frame.reset_index()
        cols = {str(c): frame[c].to_numpy() for c in frame.columns}
    elif isinstance(table, dict):
        cols = {str(k): np.asarray(v) for k, v in table.items()}
    elif isinstance(table, (list, tuple)) and table and isinstance(table[0], dict):
        keys = list(table[0])
        cols = {k: np.asarray([row[k] for row in table]) for k in keys}
    else:
        raise TypeError(
            f"{name} must be a pandas DataFrame or a dict of columns (as the "
            f"skgroup.analysis functions return); got {type(table).__name__}."
        )
    missing = [c for c in required if c not in cols]
    if missing:
        raise ValueError(
            f"{name} lacks the columns {missing}; it has {list(cols)}. Pass the table "
            "returned by the matching skgroup.analysis function."
        )
    return cols
