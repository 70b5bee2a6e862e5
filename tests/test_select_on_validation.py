"""select_on_validation: group labels reach only what requests them; splits may lack them.

Before the fix it always passed ``group_labels`` to ``GridSearchCV``, which
raised "not routed to any object" with a label-free scorer and an estimator
that does not train on group labels, and splits without group labels raised
AttributeError.
"""

import numpy as np
import pytest
import sklearn
from sklearn.utils import Bunch

from skgroup import ERMClassifier, GroupDROClassifier
from skgroup.datasets import make_spurious_benchmark
from skgroup.metrics import bias_unsupervised_scorer, worst_class_accuracy, worst_class_scorer
from skgroup.model_selection import select_on_validation


@pytest.fixture(scope="module")
def data():
    return make_spurious_benchmark(400, 200, 10, random_state=0)


@pytest.mark.parametrize("scoring", [worst_class_scorer, "accuracy"], ids=["worst_class", "accuracy"])
def test_label_free_scorers_with_group_labels_present(data, scoring):
    best, search = select_on_validation(ERMClassifier(), {"l2_reg": [1e-3, 1e-1]}, data.train, data.val,
                                        scoring=scoring)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert best.l2_reg == search.best_params_["l2_reg"]
    assert not sklearn.get_config()["enable_metadata_routing"]


def test_bias_unsupervised_scorer_through_score_params(data):
    biased = ERMClassifier().fit(data.train.X, data.train.y)
    params = {"y_pred_biased": (biased.predict(data.train.X), biased.predict(data.val.X))}
    _, search = select_on_validation(ERMClassifier(), {"l2_reg": [1e-3, 1e-1]}, data.train, data.val,
                                     scoring=bias_unsupervised_scorer, score_params=params)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


@pytest.mark.parametrize("form", ["tuple", "bunch", "dict"])
def test_splits_without_group_labels(data, form):
    def make(split):
        if form == "tuple":
            return split.X, split.y
        cls = Bunch if form == "bunch" else dict
        return cls(X=split.X, y=split.y)

    best, search = select_on_validation(ERMClassifier(), {"l2_reg": [1e-3, 1e-1]}, make(data.train),
                                        make(data.val), scoring=worst_class_scorer)
    expected = max(worst_class_accuracy(data.val.y, ERMClassifier(l2_reg=c).fit(data.train.X, data.train.y)
                                        .predict(data.val.X)) for c in (1e-3, 1e-1))
    assert search.cv_results_["mean_test_score"].max() == pytest.approx(expected)


def test_group_estimator_gets_training_labels_even_when_validation_has_none(data):
    # Group DRO requests group_labels for fit: the training rows' reach it; val has none
    best, _ = select_on_validation(GroupDROClassifier(max_iter=2, batch_size=64, random_state=0),
                                   {"l2_reg": [1e-2]}, data.train, (data.val.X, data.val.y), scoring="accuracy")
    assert best.group_names_ == (0, 1, 2, 3)  # trained on the 4 groups, not on the 2 classes
    best, _ = select_on_validation(GroupDROClassifier(max_iter=2, batch_size=64, random_state=0),
                                   {"l2_reg": [1e-2]}, (data.train.X, data.train.y), (data.val.X, data.val.y),
                                   scoring="accuracy")
    assert best.group_names_ == (0, 1)  # no group labels anywhere: the classes are the groups


def test_worst_group_scorer_without_labels_names_the_fix(data):
    with pytest.raises(ValueError, match="worst_class_scorer"):
        select_on_validation(ERMClassifier(), {"l2_reg": [1e-3]}, data.train, (data.val.X, data.val.y))
    with pytest.raises(ValueError, match=r"\(X, y\)"):
        select_on_validation(ERMClassifier(), {"l2_reg": [1e-3]}, data.train, (data.val.X,))
