"""Bad inputs to the estimators: clear errors that name the argument and the fix, never silent answers."""

import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.model_selection import GridSearchCV

from skgroup import CVaRClassifier, ERMClassifier, GradTuneClassifier, GroupDROClassifier, worst_group_scorer
from skgroup.datasets import make_spurious_features
from skgroup.metrics import MetadataRoutingRequired


def _data(n=200):
    X, y, g = make_spurious_features(n, random_state=0)
    return X, y, g


def test_prefit_gradtune_checks_feature_names_and_count():
    X, y, _ = _data(400)
    cols = [f"f{i}" for i in range(X.shape[1])]
    df = pd.DataFrame(X, columns=cols)
    erm = ERMClassifier().fit(df.iloc[:200], y[:200])
    shuffled = df[cols[::-1]]
    with pytest.raises(ValueError, match="feature names"):
        GradTuneClassifier(estimator=erm, prefit=True, max_iter=2).fit(shuffled.iloc[200:], y[200:])
    with pytest.raises(ValueError, match="features"):
        GradTuneClassifier(estimator=erm, prefit=True, max_iter=2).fit(X[200:, :3], y[200:])


def test_huge_finite_features_under_lbfgs_give_the_divergence_hint():
    X, y, _ = _data()
    X = X.astype(np.float64)
    X[0, 0] = 1e300
    with pytest.raises(FloatingPointError, match="StandardScaler"):
        ERMClassifier(dtype="float64").fit(X, y)


@pytest.mark.parametrize("sizes", [(0,), (-3,), (2.5,), (True,)])
def test_hidden_layer_sizes_must_be_positive_ints(sizes):
    X, y, _ = _data()
    with pytest.raises(ValueError, match="hidden_layer_sizes must be a tuple of positive ints"):
        ERMClassifier(hidden_layer_sizes=sizes).fit(X, y)


def test_largest_random_state_is_accepted_everywhere():
    X, y, _ = _data(400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # capped fine-tuning sizes on 200 held-out rows
        GradTuneClassifier(random_state=2**32 - 1, max_iter=2).fit(X, y)
    ERMClassifier(random_state=2**32 - 1, early_stopping=True).fit(X, y)


def test_search_with_routing_off_says_how_to_turn_it_on():
    X, y, g = _data()
    search = GridSearchCV(ERMClassifier(), {"l2_reg": [1e-4, 1e-2]}, scoring=worst_group_scorer, cv=2)
    with sklearn.config_context(enable_metadata_routing=False):
        with pytest.raises(MetadataRoutingRequired, match="enable_metadata_routing=True"):
            search.fit(X, y, group_labels=g)


def test_divergence_from_a_huge_l2_reg_blames_l2_reg():
    X, y, _ = _data()
    with pytest.raises(FloatingPointError, match="lower l2_reg"):
        ERMClassifier(solver="sgd", l2_reg=1e6, learning_rate=0.1, max_iter=3).fit(X, y)
    with pytest.raises(FloatingPointError, match="lower learning_rate"):
        ERMClassifier(solver="sgd", l2_reg=0.0, learning_rate=1e10, max_iter=5).fit(X * 1e30, y)


def test_dataframe_input_warns_nothing():
    X, y, _ = _data()
    df = pd.DataFrame(X, columns=[f"c{i}" for i in range(X.shape[1])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for est in (CVaRClassifier(alpha=0.5, max_iter=2), GroupDROClassifier(max_iter=2), ERMClassifier()):
            est.fit(df, y).predict(df)
