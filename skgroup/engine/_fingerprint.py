"""What a checkpoint records about the run that wrote it, so that no other run resumes it.

A checkpoint holds the state of one training run; resumed by a run that
differs in anything that shapes training (a learning rate, the labels, the
row order, a method's parameter, the starting weights), it would return the
old run's model as the new one's. :meth:`Trainer.fingerprint
<skgroup.engine.Trainer.fingerprint>` describes a run as a flat dict of
named fields, each a plain value (numbers, strings) or a digest of one;
:func:`differences` names the fields two descriptions disagree on.

What is hashed, and how:

* numbers, strings and small containers: as they are;
* arrays and tensors: dtype, shape and the bytes. Labels, group
  memberships, sample weights and samplers' indices are hashed whole. A
  feature matrix (``data.X``) above :data:`FULL_HASH_BYTES` is hashed on
  :data:`SAMPLED_ROWS` evenly spaced rows plus its shape and dtype (a
  change confined to rows outside the sample is not seen there; a
  reordering of the rows shows in the labels unless it only swaps rows of
  one class). Tensors of more than :data:`FULL_HASH_ELEMENTS` elements
  (a backbone's weights) are hashed on a strided sample of their entries
  plus their float64 sum and sum of squares;
* modules: every state-dict entry's name and tensor;
* objectives, samplers, penalties and other objects: their class and
  their public attributes, recursively (an object with a ``fingerprint()``
  method, e.g. a dataset of :mod:`feature_extraction`, by that; a
  scikit-learn estimator by its parameters; a function by its name and the
  values it closes over). An object of none of these kinds counts by its
  class only.
"""

import hashlib
import types

import numpy as np
import torch

__all__ = ["digest", "describe", "array_digest", "object_fields", "differences", "FINGERPRINT_VERSION"]

#: Bumped whenever what the fingerprint covers changes: a checkpoint of another version is refused.
FINGERPRINT_VERSION = 2
#: Feature matrices up to this size are hashed whole.
FULL_HASH_BYTES = 64 << 20
#: Rows hashed of a larger feature matrix.
SAMPLED_ROWS = 4096
#: Tensors up to this many elements are hashed whole.
FULL_HASH_ELEMENTS = 1 << 20
_SAMPLED_ELEMENTS = 1 << 16


def _new():
    return hashlib.sha1(usedforsecurity=False)


def array_digest(a, *, sample_rows=False):
    """Digest of a numpy array (or anything ``np.asarray`` takes): dtype, shape and bytes.

    ``sample_rows``: an array above :data:`FULL_HASH_BYTES` is hashed on
    :data:`SAMPLED_ROWS` evenly spaced rows (the first and last included).
    """
    h = _new()
    _feed_array(h, a, sample_rows)
    return h.hexdigest()[:20]


def _feed_array(h, a, sample_rows=False):
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    h.update(f"ndarray{a.dtype.str}{a.shape};".encode())
    if a.dtype.kind == "O":
        for v in a.ravel().tolist():
            _feed(h, v, set())
        return
    if sample_rows and a.ndim >= 1 and a.nbytes > FULL_HASH_BYTES and a.shape[0] > SAMPLED_ROWS:
        a = a[np.unique(np.linspace(0, a.shape[0] - 1, SAMPLED_ROWS).astype(np.int64))]
        h.update(b"rows-sampled;")
    h.update(memoryview(np.ascontiguousarray(a)).cast("B"))


def _feed_tensor(h, t):
    t = t.detach()
    h.update(f"tensor{t.dtype}{tuple(t.shape)};".encode())
    if t.is_sparse or t.layout != torch.strided:
        t = t.to_dense()
    flat = t.reshape(-1)
    if flat.numel() > FULL_HASH_ELEMENTS:
        step = max(1, flat.numel() // _SAMPLED_ELEMENTS)
        sample = flat[::step]
        stats = torch.stack([torch.sum(flat, dtype=torch.float64),
                             torch.sum(flat.to(torch.float64) ** 2)]) if flat.is_floating_point() else None
        h.update(b"sampled;")
        flat = sample
        if stats is not None:
            h.update(stats.cpu().numpy().tobytes())
    flat = flat.cpu()
    if flat.dtype == torch.bfloat16:
        flat = flat.view(torch.int16)
    h.update(memoryview(np.ascontiguousarray(flat.numpy())).cast("B"))


def _qualname(obj):
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _public(obj):
    return {k: v for k, v in vars(obj).items() if not k.startswith("_") and not k.startswith("last_")}


def _feed(h, value, seen):
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        h.update(f"{type(value).__name__}:{value!r};".encode())
        return
    if isinstance(value, np.generic):
        _feed(h, value.item(), seen)
        return
    if isinstance(value, np.ndarray):
        _feed_array(h, value)
        return
    if isinstance(value, torch.Tensor):
        _feed_tensor(h, value)
        return
    if isinstance(value, (torch.dtype, torch.device, np.dtype, type)):
        h.update(f"{type(value).__name__}:{value};".encode())
        return
    if hasattr(value, "__fspath__"):
        h.update(f"path:{value.__fspath__()};".encode())
        return
    key = id(value)
    if key in seen:
        h.update(b"<cycle>;")
        return
    seen = seen | {key}
    if isinstance(value, dict):
        h.update(f"dict{len(value)}{{".encode())
        for k in sorted(value, key=str):
            h.update(f"{k!s}=".encode())
            _feed(h, value[k], seen)
        h.update(b"}")
        return
    if isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}{len(value)}[".encode())
        for v in value:
            _feed(h, v, seen)
        h.update(b"]")
        return
    if isinstance(value, (set, frozenset)):
        h.update(f"set[{','.join(sorted(digest(v) for v in value))}];".encode())
        return
    h.update(f"<{_qualname(value)}>".encode())
    if isinstance(value, torch.nn.Module):
        for name, t in value.state_dict().items():
            h.update(f"{name}=".encode())
            _feed_tensor(h, t)
        return
    fingerprint = getattr(value, "fingerprint", None)
    if callable(fingerprint) and not isinstance(value, type):
        try:
            own = fingerprint()
        except TypeError:  # a fingerprint method that wants arguments: not this protocol
            own = None
        if own is not None:
            _feed(h, own, seen)
            return
    if isinstance(value, types.MethodType):
        h.update(f"method:{value.__func__.__qualname__};".encode())
        _feed(h, value.__self__, seen)
        return
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        h.update(f"function:{getattr(value, '__module__', '')}.{value.__qualname__};".encode())
        cells = [c.cell_contents for c in (getattr(value, "__closure__", None) or ()) if _filled(c)]
        _feed(h, [cells, getattr(value, "__defaults__", None), getattr(value, "__kwdefaults__", None)], seen)
        return
    if hasattr(value, "get_params") and callable(value.get_params):
        _feed(h, value.get_params(deep=False), seen)
        return
    if hasattr(value, "__dict__"):
        _feed(h, _public(value), seen)


def _filled(cell):
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def digest(value):
    """A short hex digest of ``value`` (see the module docstring for what is hashed)."""
    h = _new()
    _feed(h, value, set())
    return h.hexdigest()[:20]


def describe(value):
    """``value`` itself when it is a plain scalar (readable in a message), else its digest."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return "nan"  # NaN != NaN would make a run differ from itself
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return "sha1:" + digest(value)


def object_fields(prefix, obj, depth=0):
    """``{prefix: class, prefix.attr: describe(value), ...}``: an object field by field.

    So that a message can say ``objective.eta`` differs rather than
    ``objective``.
    """
    if obj is None:
        return {prefix: None}
    if not _composite(obj):
        return {prefix: describe(obj)}
    out = {prefix: _qualname(obj)}
    for k, v in sorted(_public(obj).items()):
        if depth < 3 and _composite(v):  # an objective's loss, reduction: named field by field too
            out.update(object_fields(f"{prefix}.{k}", v, depth + 1))
        elif depth < 3 and isinstance(v, (list, tuple)) and v and all(_composite(x) for x in v):
            for i, x in enumerate(v):
                out.update(object_fields(f"{prefix}.{k}[{i}]", x, depth + 1))
        else:
            out[f"{prefix}.{k}"] = describe(v)
    return out


def _composite(obj):
    """An object described field by field (not a module, a function, an array or a plain value)."""
    return (hasattr(obj, "__dict__") and not isinstance(obj, (torch.nn.Module, types.FunctionType, types.MethodType,
                                                              np.ndarray, torch.Tensor, type)))


def differences(old, new):
    """``[(field, old value, new value)]`` for every field the two descriptions disagree on."""
    old, new = old or {}, new or {}
    missing = object()
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, missing), new.get(k, missing)
        if a != b:
            out.append((k, None if a is missing else a, None if b is missing else b))
    return out
