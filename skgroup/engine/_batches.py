"""Where batches come from: arrays of cached features, or a dataset of raw inputs.

A batch source turns an epoch's order of training-row indices (from a
sampler) into ``(row indices, inputs, labels)`` on the training device:

* :class:`ArrayBatches` slices rows of an array (the fast path for cached
  features): X is wrapped without a copy when it already has the training
  dtype (read-only memory maps too), and only a batch is gathered at a time.
* :class:`LoaderBatches` runs a ``torch.utils.data.DataLoader`` over any
  map-style dataset (images, tokens) with the engine's order as its batch
  sampler, so workers, pinned memory and a collate function work, and the
  epoch stays reproducible from the sampler's seed.

Both also give the rows in order (``ordered``) for evaluation.
"""

import warnings

import numpy as np
import torch

__all__ = ["ArrayBatches", "LoaderBatches", "as_tensor", "to_device", "check_device"]


def check_device(device):
    """``torch.device(device)``, refusing a CUDA device torch cannot see."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for but torch sees no CUDA device; use device='cpu'.")
    return device


def as_tensor(X, dtype):
    """Wrap X without a copy when its dtype is already ``dtype`` (memmaps too)."""
    np_dtype = np.dtype(str(dtype).replace("torch.", ""))
    if isinstance(X, np.ndarray) and X.dtype == np_dtype and X.flags.c_contiguous:
        with warnings.catch_warnings():
            # read-only memmaps: torch warns that writes would be undefined; we never write
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(X)
    return torch.as_tensor(np.ascontiguousarray(X, dtype=np_dtype))


def to_device(value, device, non_blocking=False):
    """Move a tensor, or the tensors of a dict/list/tuple, to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, dict):
        return {k: to_device(v, device, non_blocking) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device, non_blocking) for v in value)
    if hasattr(value, "to"):  # e.g. transformers' BatchEncoding
        return value.to(device)
    return value


class ArrayBatches:
    """Batches of rows of a feature array X with encoded labels y."""

    def __init__(self, X, y, *, dtype=torch.float32, device="cpu"):
        self.X = X
        self.y = torch.as_tensor(np.asarray(y, dtype=np.int64))
        self.dtype = dtype
        self.device = check_device(device)
        np_dtype = np.dtype(str(dtype).replace("torch.", ""))
        self._wrapped = None
        if isinstance(X, np.ndarray) and X.dtype == np_dtype and X.flags.c_contiguous:
            self._wrapped = as_tensor(X, dtype)
        self._np_dtype = np_dtype
        self._y_dev = self.y.to(self.device)

    def __len__(self):
        return self.X.shape[0]

    def fingerprint(self):
        """``data.X`` (whole up to 64 MiB, else 4,096 evenly spaced rows, with shape and dtype) and
        ``data.y`` (whole), computed once; see :mod:`skgroup.engine._fingerprint`."""
        if getattr(self, "_fingerprint", None) is None:
            from ._fingerprint import array_digest, describe

            self._fingerprint = {"data.X": "sha1:" + array_digest(self.X, sample_rows=True),
                                 "data.y": describe(self.y)}
        return self._fingerprint

    def rows(self, idx):
        """Inputs of rows ``idx`` (a CPU LongTensor) on the device."""
        # numpy's fancy indexing gathers 1024 rows of 2,048 floats in ~1 ms here, torch's
        # index_select in 4-8 ms: at d = 2,048 that was most of a minibatch step
        xb = torch.from_numpy(np.ascontiguousarray(np.asarray(self.X)[idx.numpy()], dtype=self._np_dtype))
        return xb.to(self.device, non_blocking=True)

    def labels(self, idx):
        return self._y_dev[idx.to(self.device)]

    def block(self, start, stop):
        """Rows start:stop, a view when X already has the training dtype (no gather)."""
        if self._wrapped is not None:
            xb = self._wrapped[start:stop]
        else:
            xb = torch.from_numpy(np.ascontiguousarray(self.X[start:stop], dtype=self._np_dtype))
        return xb.to(self.device, non_blocking=True)

    def batches(self, order, batch_size, epoch=None):
        order = torch.as_tensor(np.asarray(order, dtype=np.int64))
        order_dev = order.to(self.device)
        # the epoch's labels in one gather; a batch takes a slice of them (a gather per batch
        # cost ~70 us a step, a tenth of a step at d = 38)
        labels = self.labels(order)
        for start in range(0, order.shape[0], batch_size):
            stop = start + batch_size
            yield order_dev[start:stop], self.rows(order[start:stop]), labels[start:stop]

    def ordered(self, batch_size, rows=None):
        """Every row (or ``rows``) once, in order, for evaluation."""
        order = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        return self.batches(order, batch_size)


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return i, self.dataset[i]


class LoaderBatches:
    """Batches from a map-style dataset through a ``DataLoader``.

    Parameters
    ----------
    dataset : map-style dataset; ``dataset[i]`` is the input of row i
        (whatever ``collate_fn`` turns into a batch).
    y : array of shape (n_samples,), encoded labels.
    collate_fn : callable(list of items) -> batch inputs, default=None
        torch's default collate when None.
    transfer : callable(batch, device, non_blocking) -> batch, default=None
        Moves a collated batch to the device (e.g. normalising uint8 images
        there); default: move every tensor.
    num_workers, pin_memory, persistent_workers : DataLoader settings.
    device : training device.
    """

    def __init__(self, dataset, y, *, collate_fn=None, num_workers=0, pin_memory=False, device="cpu",
                 prefetch_factor=None, transfer=None):
        self.dataset = dataset
        self.y = torch.as_tensor(np.asarray(y, dtype=np.int64))
        if len(dataset) != self.y.shape[0]:
            raise ValueError(f"the dataset has {len(dataset)} items but y has {self.y.shape[0]} labels.")
        self.collate_fn = collate_fn
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.prefetch_factor = prefetch_factor
        self.device = check_device(device)
        self.transfer = transfer
        self._y_dev = self.y.to(self.device)

    def __len__(self):
        return len(self.dataset)

    def fingerprint(self):
        """``data.inputs`` (the dataset: by its own ``fingerprint()`` when it has one, else by its public
        attributes), ``data.collate`` and ``data.y`` (whole), computed once."""
        if getattr(self, "_fingerprint", None) is None:
            from ._fingerprint import describe

            self._fingerprint = {"data.inputs": describe(self.dataset), "data.collate": describe(self.collate_fn),
                                 "data.y": describe(self.y)}
        return self._fingerprint

    def _collate(self, items):
        idx = torch.as_tensor([i for i, _ in items], dtype=torch.int64)
        inputs = [x for _, x in items]
        batch = self.collate_fn(inputs) if self.collate_fn is not None else torch.utils.data.default_collate(inputs)
        return idx, batch

    def batches(self, order, batch_size, epoch=None):
        """Batches in ``order``; ``epoch`` reaches a dataset with ``set_epoch`` (seeded augmentation)."""
        if epoch is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        order = np.asarray(order, dtype=np.int64)
        chunks = [order[s : s + batch_size].tolist() for s in range(0, order.shape[0], batch_size)]
        kwargs = {}
        if self.num_workers > 0 and self.prefetch_factor is not None:
            kwargs["prefetch_factor"] = self.prefetch_factor
        # the loader's base seed (its workers' torch seeds) comes from a generator of its own: drawn from
        # torch's global generator it would shift the training stream (dropout, Mixup's draws) away from
        # the one ArrayBatches leaves, and a plan would train differently on a backbone than on features
        generator = torch.Generator().manual_seed(0 if epoch is None else int(epoch) + 1)
        loader = torch.utils.data.DataLoader(
            _Indexed(self.dataset),
            batch_sampler=chunks,
            collate_fn=self._collate,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and self.device.type == "cuda",
            generator=generator,
            **kwargs,
        )
        non_blocking = self.pin_memory and self.device.type == "cuda"
        for idx, inputs in loader:
            idx = idx.to(self.device)
            if self.transfer is not None:
                inputs = self.transfer(inputs, self.device, non_blocking)
            else:
                inputs = to_device(inputs, self.device, non_blocking)
            yield idx, inputs, self._y_dev[idx]

    def ordered(self, batch_size, rows=None):
        order = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        return self.batches(order, batch_size)

    def with_dataset(self, dataset):
        """The same loader settings over another dataset (e.g. the evaluation view of the inputs)."""
        out = LoaderBatches.__new__(LoaderBatches)
        out.__dict__.update(self.__dict__)
        out.dataset = dataset
        return out
