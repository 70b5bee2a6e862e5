"""A parameter-free 'backbone' for fine-tuning tests: its features are its inputs, so fine-tuning it trains
exactly what a head estimator trains on the same rows (the fine-tuning path must then match the head path
bit for bit)."""

import numpy as np
import torch

from feature_extraction import Backbone


class Vectors(Backbone):
    modality = "vector"

    def __init__(self):
        super().__init__(torch.nn.Identity(), name="vectors", identity={"family": "test"})

    def prepare(self, item):
        return item

    def collate(self, items):
        return torch.stack(items)

    def batch_to(self, batch, device, *, non_blocking=False, channels_last=False):
        return batch.to(device)

    def forward(self, x):
        return x


class Rows:
    """Feature rows as the fine-tuning path's inputs (``get(i)``)."""

    modality = "vector"

    def __init__(self, X):
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))

    def __len__(self):
        return len(self.X)

    def get(self, i):
        return self.X[i]


def finetune_like_head(method, X, y, **fit_kwargs):
    """``FineTuneClassifier(Vectors(), method=method)`` with the head estimator's training settings."""
    from skgroup.finetune import FineTuneClassifier

    return FineTuneClassifier(Vectors(), method=method, max_iter=method.max_iter, batch_size=method.batch_size,
                              learning_rate=method.learning_rate, weight_decay=0.0, l2_reg=method.l2_reg,
                              lr_schedule=method.lr_schedule, warmup=0, grad_clip=None,
                              random_state=method.random_state).fit(Rows(X), y, **fit_kwargs)
