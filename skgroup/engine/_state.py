"""Training state that a checkpoint holds, saved so that a killed run resumes exactly.

A checkpoint is a dict of tensors and plain Python values written with
``torch.save`` to a temporary file and renamed into place (a kill never
leaves a half-written checkpoint), and read back with
``torch.load(weights_only=True)``: loading a checkpoint never unpickles
arbitrary objects. numpy arrays are stored as tensors or lists.
"""

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "to_plain"]

FORMAT_VERSION = 1


def to_plain(value):
    """numpy scalars and arrays -> Python numbers, lists or tensors (weights_only-safe)."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_checkpoint(state, path):
    """Write ``state`` atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"format_version": FORMAT_VERSION, **to_plain(state)}, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(
            f"Cannot read the checkpoint {path}: {exc}. Delete it to start the run afresh."
        ) from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} is not a skgroup training checkpoint (format {FORMAT_VERSION}); delete it "
            "or point the checkpoint elsewhere."
        )
    return state
