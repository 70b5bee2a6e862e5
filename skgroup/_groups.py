"""Group labels: validation and the (label, attribute) numbering.

Group labels come in two shapes and every consumer in skgroup accepts both:

* 1-D: one group id per sample (ints or strings), disjoint groups;
* 2-D boolean membership matrix of shape (n_samples, n_groups), for
  overlapping groups (CivilComments-WILDS evaluates 16 overlapping identity
  groups, and a comment can mention several): a numpy bool array or a
  pandas DataFrame of bool columns.

A 2-D array of integers (or floats) is refused: it may be a 0/1 membership
matrix or one (label, attribute) pair per row, and the two readings give
different numbers (pairs read as membership put the rows (0, 0) in no group
and score the others as if they were groups). A single column is one id per
sample. Rows of a membership matrix that belong to no group are not scored
and count in no group's loss: an :class:`UngroupedRowsWarning` says how many.

Internally both are turned into a :class:`GroupMembership`, a boolean matrix
plus the group names, so a metric or an objective needs one code path.
"""

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["GroupMembership", "UngroupedRowsWarning", "check_group_labels", "make_group_labels"]


class UngroupedRowsWarning(UserWarning):
    """Some rows of a membership matrix belong to no group: no group's accuracy or loss counts them."""


@dataclass(frozen=True)
class GroupMembership:
    """Boolean membership matrix (n_samples, n_groups) with group names."""

    matrix: np.ndarray
    names: tuple
    disjoint: bool

    @property
    def n_groups(self):
        return self.matrix.shape[1]

    @property
    def counts(self):
        return self.matrix.sum(axis=0)

    def ids(self):
        """Column index of each sample's group (disjoint groups only)."""
        if not self.disjoint:
            raise ValueError("Overlapping groups have no single id per sample.")
        return self.matrix.argmax(axis=1)


def check_group_labels(group_labels, n_samples, *, name="group_labels"):
    """Validate ``group_labels`` for ``n_samples`` rows and return a membership.

    Raises a ValueError that names the argument and the expected shapes for a
    wrong length, a wrong number of dimensions, NaN ids, ids of mixed types
    or a 2-D array that is not boolean (a 2-D integer array could be a 0/1
    membership matrix or (label, attribute) pairs; the error shows both
    readings and both fixes). Rows of a membership matrix in no group raise
    an :class:`UngroupedRowsWarning`.
    """
    if group_labels is None:
        raise ValueError(
            f"{name} is required: pass one group id per sample (1-D) or a boolean "
            "membership matrix of shape (n_samples, n_groups)."
        )
    names = None
    if hasattr(group_labels, "columns") and getattr(group_labels, "ndim", 1) == 2:
        names = tuple(str(c) for c in group_labels.columns)
        arr = _frame_to_array(group_labels, name)
    else:
        arr = np.asarray(group_labels)
    if arr.ndim == 2 and arr.shape[1] == 1 and arr.dtype != bool:
        arr = arr.ravel()
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be 1-D (one group id per sample) or a 2-D boolean membership "
            f"matrix (n_samples, n_groups); got an array with shape {arr.shape}."
        )
    if arr.shape[0] != n_samples:
        raise ValueError(
            f"{name} has {arr.shape[0]} rows but there are {n_samples} samples: "
            f"pass exactly one {name} entry per sample (rows of X)."
        )
    if arr.ndim == 1:
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN or infinite group ids.")
            if not np.all(arr == np.round(arr)):
                raise ValueError(
                    f"{name} holds non-integer floats; group ids must be ints or strings."
                )
        if arr.dtype == object and any(v is None for v in arr):
            raise ValueError(f"{name} contains None as a group id.")
        try:
            uniq, inv = np.unique(arr, return_inverse=True)
        except TypeError:  # e.g. str and int ids in an object array: unorderable
            types = sorted({type(v).__name__ for v in arr})
            raise ValueError(
                f"{name} mixes group ids of types {', '.join(types)}, which cannot be compared or "
                f"sorted: give every id one type, e.g. all strings (np.asarray({name}).astype(str)) "
                "or all ints."
            ) from None
        matrix = np.zeros((n_samples, len(uniq)), dtype=bool)
        matrix[np.arange(n_samples), inv.ravel()] = True
        return GroupMembership(matrix, tuple(u.item() if hasattr(u, "item") else u for u in uniq), True)
    if arr.dtype != bool:
        raise ValueError(_ambiguous_2d_message(arr, name))
    if names is None:
        names = tuple(range(arr.shape[1]))
    in_none = int(np.count_nonzero(~arr.any(axis=1)))
    if in_none:
        warnings.warn(
            f"{in_none} of the {n_samples} rows of {name} belong to no group (all-False rows of the "
            "membership matrix): they are not scored in any group's accuracy and count in no group's "
            "loss. Add a column for them (e.g. an 'other' group) if they should count, or leave those "
            "rows out.",
            UngroupedRowsWarning,
            stacklevel=_caller_stacklevel(),
        )
    disjoint = bool(np.all(arr.sum(axis=1) <= 1))
    return GroupMembership(np.ascontiguousarray(arr), names, disjoint)


def _caller_stacklevel():
    """stacklevel of the first frame outside skgroup, so a warning points at the user's call."""
    import sys

    level, frame = 2, sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("skgroup."):
        level += 1
        frame = frame.f_back
    return level


def _frame_to_array(frame, name):
    """A DataFrame as an array: bool columns (numpy or pandas' nullable 'boolean' without NA) as bool."""
    dtypes = [str(t) for t in frame.dtypes]
    if dtypes and all(t in ("bool", "boolean") for t in dtypes):
        if frame.isna().to_numpy().any():
            raise ValueError(
                f"{name} is a membership DataFrame with missing values: fill them (True / False) "
                "so that every row's groups are known."
            )
        return frame.to_numpy(dtype=bool)
    return np.asarray(frame)


def _fmt_row(row):
    return "(" + ", ".join(str(v.item() if hasattr(v, "item") else v) for v in row) + ")"


def _ambiguous_2d_message(arr, name, limit=6):
    """The error for a 2-D non-boolean ``group_labels``: both readings, both fixes."""
    kind = {"i": "an integer", "u": "an integer", "f": "a float"}.get(arr.dtype.kind, f"a {arr.dtype}")
    lines = [
        f"A 2-D {name} must be a boolean membership matrix of shape (n_samples, n_groups); got "
        f"{kind} array of shape {arr.shape}, which could mean two different things, so it is refused:"
    ]
    numeric = arr.dtype.kind in "iuf"
    if numeric and np.isin(arr, (0, 1)).all():
        member = arr.astype(bool)
        per_row = member.sum(axis=1)
        lines.append(
            f"  as a membership matrix: groups with counts {member.sum(axis=0).tolist()}, "
            f"{int(np.count_nonzero(per_row == 0))} row(s) in no group (not scored), "
            f"{int(np.count_nonzero(per_row > 1))} row(s) in several groups;"
        )
    else:
        lines.append("  as a membership matrix: impossible, it holds values other than 0 and 1;")
    try:
        rows, counts = np.unique(arr, axis=0, return_counts=True)
        shown = ", ".join(f"{_fmt_row(r)} x {c}" for r, c in zip(rows[:limit], counts[:limit]))
        more = f", ... ({len(rows)} in all)" if len(rows) > limit else ""
        lines.append(f"  as (label, attribute) pairs: {len(rows)} groups, {shown}{more}.")
    except TypeError:  # object arrays of unorderable values
        lines.append("  as (label, attribute) pairs: one group per distinct row.")
    lines.append(
        f"Fix: for a membership matrix pass {name}.astype(bool) (or a DataFrame of bool columns); for "
        "(label, attribute) pairs pass 1-D ids, group_labels, pairs = skgroup.make_group_labels(y, a)."
    )
    return "\n".join(lines)


def make_group_labels(y, attributes, *, label_values=None, attribute_values=None):
    """Number the (label, spurious attribute) pairs as groups.

    The numbering is stable: it depends only on the sorted sets of label values
    and attribute values, never on which pairs occur, so a split missing a
    pair numbers the others exactly as the full data does. A split missing a
    whole label or attribute value would shift the ranks: pass the full
    ``label_values`` / ``attribute_values`` to pin the numbering.
    ``group = label_rank * n_attribute_values + attribute_rank``; for a binary
    label and a binary attribute (CelebA Blond_Hair x Male) that is
    0 = (0, 0), 1 = (0, 1), 2 = (1, 0), 3 = (1, 1), the Group DRO convention.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels.
    attributes : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Spurious attribute(s). Several columns are combined into one attribute
        value per distinct row.
    label_values, attribute_values : array-like, default=None
        All possible values (rows for several attribute columns); default
        the values present.

    Returns
    -------
    group_labels : ndarray of shape (n_samples,), int64
    pairs : list of tuples
        ``pairs[g]`` is the ``(label, attribute)`` of group ``g``; for several
        attribute columns the attribute is itself a tuple.
    """
    y = np.asarray(y)
    a = np.asarray(attributes)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D; got shape {y.shape}.")
    if a.shape[0] != y.shape[0]:
        raise ValueError(
            f"attributes has {a.shape[0]} rows but y has {y.shape[0]}: pass one "
            "attribute value (or row) per sample."
        )
    if a.ndim not in (1, 2):
        raise ValueError(f"attributes must be 1-D or 2-D; got shape {a.shape}.")
    y_values, y_rank = _ranks(y, label_values, "label_values")
    if a.ndim == 1:
        a_values, a_rank = _ranks(a, attribute_values, "attribute_values")
        a_keys = [v.item() if hasattr(v, "item") else v for v in a_values]
    else:
        a_values, a_rank = _ranks(a, attribute_values, "attribute_values", axis=0)
        a_keys = [tuple(v.item() if hasattr(v, "item") else v for v in row) for row in a_values]
    groups = y_rank.ravel().astype(np.int64) * len(a_keys) + a_rank.ravel()
    pairs = [
        (yv.item() if hasattr(yv, "item") else yv, ak) for yv in y_values for ak in a_keys
    ]
    return groups, pairs


def _ranks(values, universe, name, axis=None):
    """Sorted distinct values and each row's rank among them."""
    if universe is None:
        uniq, rank = np.unique(values, axis=axis, return_inverse=True)
        return uniq, rank.ravel()
    uniq = np.unique(np.asarray(universe), axis=axis)
    both, rank = np.unique(np.concatenate([uniq, values]), axis=axis, return_inverse=True)
    if len(both) != len(uniq):
        raise ValueError(f"{name} misses values present in the data; list every possible value.")
    return uniq, rank.ravel()[len(uniq):]
