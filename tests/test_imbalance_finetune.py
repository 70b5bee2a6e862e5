"""The class-imbalance methods as FineTuneClassifier(method=...): the same plans as on cached features."""

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from feature_extraction import Backbone  # noqa: E402
from feature_extraction._testing import make_tiny_bert, random_sentences  # noqa: E402
from skgroup import (  # noqa: E402
    BalancedSoftmaxClassifier,
    CBLossClassifier,
    FocalClassifier,
    LDAMClassifier,
)
from skgroup.finetune import FineTuneClassifier  # noqa: E402


class Vectors(Backbone):
    """A parameter-free 'backbone' whose features are its inputs: fine-tuning it trains a head."""

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
    modality = "vector"

    def __init__(self, X):
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))

    def __len__(self):
        return len(self.X)

    def get(self, i):
        return self.X[i]


def imbalanced(n0=500, n1=60, d=8, seed=0):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(size=(n0, d)) - 0.7, rng.normal(size=(n1, d)) + 0.7]).astype(np.float32)
    return X, np.r_[np.zeros(n0, int), np.ones(n1, int)]


COMMON = dict(solver="adamw", max_iter=3, batch_size=64, learning_rate=1e-2, random_state=4)


@pytest.mark.parametrize("method", [
    FocalClassifier(**COMMON, gamma=2.0),
    CBLossClassifier(**COMMON, beta=0.999),
    CBLossClassifier(**COMMON, beta=0.999, loss="focal"),
    LDAMClassifier(**COMMON),  # two stages: 2 epochs of LDAM, then 1 re-weighted
    BalancedSoftmaxClassifier(**COMMON),
], ids=["focal", "cb", "cb_focal", "ldam_drw", "balanced_softmax"])
def test_plans_train_exactly_what_the_head_estimators_train(method):
    # on a frozen (here: parameter-free) backbone the fine-tuning path reproduces the head estimator
    # bit for bit: same losses, weights, stages and loop
    X, y = imbalanced()
    head = method.fit(X, y)
    ft = FineTuneClassifier(Vectors(), method=method, max_iter=3, batch_size=64, learning_rate=1e-2,
                            weight_decay=0.0, l2_reg=method.l2_reg, lr_schedule="constant", warmup=0,
                            grad_clip=None, random_state=4).fit(Rows(X), y)
    np.testing.assert_array_equal(ft.model_.head.weight.detach().numpy(), head.coef_)
    assert ft.loss_curve_ == head.loss_curve_
    assert not ft.get_metadata_routing().fit.requests["group_labels"]  # no group labels in training
    if isinstance(method, LDAMClassifier):
        assert ft.method_.n_iter_before_drw_ == head.n_iter_before_drw_ == 2


def test_ldam_drw_fine_tunes_a_tiny_bert_in_two_stages(tmp_path):
    bert = make_tiny_bert(tmp_path / "bert")
    texts = random_sentences(100, seed=0)
    y = np.array([int("no" in t.split() or "never" in t.split()) for t in texts])
    assert 0 < y.sum() < 50  # the positive class is the minority
    ft = FineTuneClassifier(str(bert), method=LDAMClassifier(max_margin=0.3), max_iter=3, batch_size=16,
                            learning_rate=1e-3, random_state=0)
    ft.fit(texts[:80], y[:80], X_val=texts[80:], y_val=y[80:])
    assert ft.method_.n_iter_before_drw_ == 2  # floor(0.8 * 3) epochs of LDAM, then the re-weighted one
    assert ft.n_iter_ == 1 and ft.validation_scores_["accuracy"].shape == (1,)  # the re-weighted stage validates
    np.testing.assert_allclose(ft.predict_proba(texts[:4]).sum(1), 1, rtol=1e-5)
