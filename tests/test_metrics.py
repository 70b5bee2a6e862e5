import numpy as np
import pytest

from skgroup.metrics import (
    EmptyCellWarning,
    MissingGroupWarning,
    UngroupedRowsWarning,
    bias_unsupervised_score,
    group_accuracies,
    group_proportions,
    make_group_labels,
    per_group_accuracy,
    worst_class_accuracy,
    worst_group_accuracy,
)

Y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
P = np.array([0, 1, 0, 1, 0, 1, 1, 0])  # wrong at rows 1 and 4
G = np.array([0, 0, 1, 1, 2, 2, 2, 1])


def test_worst_group_hand_computed():
    # group 0: rows 0,1 -> 1/2; group 1: rows 2,3,7 -> 3/3; group 2: rows 4,5,6 -> 2/3
    names, acc, counts = per_group_accuracy(Y, P, group_labels=G)
    assert names == [0, 1, 2]
    np.testing.assert_allclose(acc, [0.5, 1.0, 2 / 3])
    np.testing.assert_array_equal(counts, [2, 3, 3])
    assert worst_group_accuracy(Y, P, group_labels=G) == 0.5


def test_string_group_ids_and_single_group():
    g = np.array(["a", "a", "b", "b", "b", "b", "b", "a"])
    assert worst_group_accuracy(Y, P, group_labels=g) == pytest.approx(min(2 / 3, 4 / 5))
    assert worst_group_accuracy(Y, P, group_labels=np.zeros(8, int)) == pytest.approx(6 / 8)


def test_overlapping_groups_membership_matrix():
    M = np.zeros((8, 3), dtype=bool)
    M[[0, 1, 2], 0] = True  # 2/3 correct
    M[[1, 4], 1] = True  # 0/2 correct
    M[:, 2] = True  # 6/8 correct
    names, acc, _ = per_group_accuracy(Y, P, group_labels=M)
    np.testing.assert_allclose(acc, [2 / 3, 0.0, 0.75])
    assert worst_group_accuracy(Y, P, group_labels=M) == 0.0
    # a DataFrame of bool columns is a membership matrix too, its columns naming the groups
    pd = pytest.importorskip("pandas")
    names, acc, _ = per_group_accuracy(Y, P, group_labels=pd.DataFrame(M, columns=["x", "y", "z"]))
    assert names == ["x", "y", "z"]
    np.testing.assert_allclose(acc, [2 / 3, 0.0, 0.75])


def test_integer_2d_group_labels_are_refused_not_read_as_membership():
    # (label, attribute) pairs as rows: as a membership matrix, rows (0, 0) would fall in no group and the
    # worst-group accuracy would read 1.0, while the (label, attribute) group (0, 0) is all wrong
    y = np.array([0, 0, 1, 1])
    a = np.array([0, 1, 0, 1])
    p = np.array([1, 0, 1, 1])  # wrong only on the group (y=0, a=0)
    pairs = np.array(list(zip(y, a)))
    with pytest.raises(ValueError) as e:
        worst_group_accuracy(y, p, group_labels=list(zip(y, a)))
    msg = str(e.value)
    assert "group_labels" in msg and "as a membership matrix" in msg and "(label, attribute) pairs" in msg
    assert ".astype(bool)" in msg and "make_group_labels" in msg
    g, _ = make_group_labels(y, a)  # the fix the message gives
    assert worst_group_accuracy(y, p, group_labels=g) == 0.0
    for bad in (pairs.astype(float), pairs.astype(np.uint8), np.array([[0, 2], [1, 3], [0, 0], [1, 1]])):
        with pytest.raises(ValueError, match="make_group_labels"):
            worst_group_accuracy(y, p, group_labels=bad)
    # one column is still one id per sample
    assert worst_group_accuracy(y, p, group_labels=a[:, None]) == 0.5


def test_rows_in_no_group_of_a_membership_matrix_warn():
    M = np.zeros((8, 2), dtype=bool)
    M[:3, 0] = True
    M[3:6, 1] = True  # rows 6 and 7 in no group
    with pytest.warns(UngroupedRowsWarning, match=r"2 of the 8 rows .*no group.*not scored"):
        worst_group_accuracy(Y, P, group_labels=M)
    pd = pytest.importorskip("pandas")
    with pytest.warns(UngroupedRowsWarning, match="2 of the 8 rows"):
        group_accuracies(Y, P, group_labels=pd.DataFrame(M, columns=["a", "b"]))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        worst_group_accuracy(Y, P, group_labels=np.ones((8, 2), dtype=bool))  # every row grouped: no warning


def test_empty_group_is_ignored_with_a_warning_never_a_silent_one():
    M = np.zeros((8, 2), dtype=bool)
    M[:4, 0] = True  # rows 0-3: 3/4
    with pytest.warns(MissingGroupWarning, match=r"\[1\]"), pytest.warns(UngroupedRowsWarning):
        assert worst_group_accuracy(Y, P, group_labels=M) == 0.75
    with pytest.raises(ValueError, match="Every group"):
        with pytest.warns(MissingGroupWarning), pytest.warns(UngroupedRowsWarning, match="8 of the 8 rows"):
            worst_group_accuracy(Y, P, group_labels=np.zeros((8, 2), dtype=bool))


def test_expected_group_missing_warns():
    with pytest.warns(MissingGroupWarning, match="3"):
        worst_group_accuracy(Y, P, group_labels=G, expected_groups=[0, 1, 2, 3])


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([0, 1, 2]), "has 3 rows but there are 8"),
        (np.zeros((8, 2, 2)), "1-D"),
        (np.array([0.0, 1, 2, np.nan, 0, 1, 2, 0]), "NaN"),
        (np.full((8, 2), 0.5), "boolean"),
        (np.zeros((8, 2), dtype=object), "boolean"),
        (None, "group_labels is required"),
    ],
)
def test_bad_group_labels(bad, match):
    with pytest.raises(ValueError, match=match):
        worst_group_accuracy(Y, P, group_labels=bad)


def test_length_mismatch_of_predictions():
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        worst_group_accuracy(Y, P[:5], group_labels=G)


def test_worst_class_accuracy():
    # class 0 recall: rows 0,1,2,7 -> 3/4; class 1: rows 3,4,5,6 -> 3/4
    assert worst_class_accuracy(Y, P) == 0.75
    assert worst_class_accuracy([0, 0, 1], [0, 0, 0]) == 0.0


def test_bias_unsupervised_score_hand_computed():
    b = np.array([0, 0, 1, 1, 1, 0, 1, 0])
    # cells (y,b): (0,0) rows 0,1,7 -> 2/3; (0,1) row 2 -> 1; (1,1) rows 3,4,6 -> 2/3; (1,0) row 5 -> 1
    expected = np.mean([2 / 3, 1.0, 2 / 3, 1.0])
    assert bias_unsupervised_score(Y, P, y_pred_biased=b) == pytest.approx(expected)
    # empty cells are skipped, not counted as 0 or 1, and a warning names them
    with pytest.warns(EmptyCellWarning, match=r"cells \[\(0, 1\), \(1, 0\)\].*2 non-empty cells of 4"):
        assert bias_unsupervised_score(Y, P, y_pred_biased=Y) == pytest.approx(np.mean([3 / 4, 3 / 4]))


def test_bias_unsupervised_score_warns_for_a_biased_model_that_predicts_one_class():
    # a biased model that always predicts class 0 leaves the cells (0, 1) and (1, 1) empty
    with pytest.warns(EmptyCellWarning, match=r"\(0, 1\), \(1, 1\)"):
        score = bias_unsupervised_score(Y, P, y_pred_biased=np.zeros_like(Y))
    assert score == pytest.approx(np.mean([3 / 4, 3 / 4]))
    # labels of any type: the cells are named by them
    names = np.array(["a", "b"])
    with pytest.warns(EmptyCellWarning, match=r"\('a', 'b'\)"):
        bias_unsupervised_score(names[Y], names[P], y_pred_biased=names[Y])


def test_bias_unsupervised_score_full_table_does_not_warn():
    import warnings

    b = np.array([0, 0, 1, 1, 1, 0, 1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bias_unsupervised_score(Y, P, y_pred_biased=b)


def test_make_group_labels_stable_numbering_and_way_back():
    y = np.array([1, 0, 1, 0])
    a = np.array(["m", "f", "f", "f"])
    g, pairs = make_group_labels(y, a)
    assert pairs == [(0, "f"), (0, "m"), (1, "f"), (1, "m")]
    np.testing.assert_array_equal(g, [3, 0, 2, 0])
    assert [pairs[i] for i in g] == list(zip(y.tolist(), a.tolist()))
    # a subset missing label 0 keeps the full numbering once the values are pinned
    g2, _ = make_group_labels(y[[0, 2]], a[[0, 2]], label_values=[0, 1], attribute_values=["f", "m"])
    np.testing.assert_array_equal(g2, [3, 2])
    with pytest.raises(ValueError, match="label_values misses"):
        make_group_labels(y, a, label_values=[0])
    g3, pairs3 = make_group_labels(np.array([0, 1]), np.array([[0, 1], [1, 0]]))
    assert pairs3[0] == (0, (0, 1))
    with pytest.raises(ValueError, match="attributes has 3 rows"):
        make_group_labels(y, a[:3])


def test_group_report_counts_weights_and_bootstrap():
    rep = group_accuracies(Y, P, group_labels=G, group_weights={0: 0.5, 1: 0.25, 2: 0.25},
                           confidence_level=0.9, n_bootstrap=4000, random_state=0)
    assert rep.worst_group == 0 and rep.worst_group_accuracy == 0.5
    assert rep.accuracy == pytest.approx(6 / 8)
    assert rep.weighted_accuracy == pytest.approx(0.5 * 0.5 + 0.25 * 1 + 0.25 * 2 / 3)
    assert np.all(rep.ci_low <= rep.accuracies) and np.all(rep.accuracies <= rep.ci_high)
    # a group with all correct has a degenerate interval; the 2-sample group a wide one
    assert rep.ci_low[1] == rep.ci_high[1] == 1.0
    assert rep.ci_high[0] - rep.ci_low[0] >= 0.5
    assert rep.worst_group_ci[0] <= 0.5
    text = str(rep)
    assert "worst-group accuracy" in text and "90% interval" in text
    assert len(rep.to_dict()) == 3


def test_bootstrap_interval_matches_binomial_width():
    rng = np.random.RandomState(0)
    y = np.zeros(400, int)
    p = (rng.rand(400) < 0.2).astype(int)  # ~80% accuracy in one group of 400
    rep = group_accuracies(y, p, group_labels=np.zeros(400, int), confidence_level=0.95, random_state=0)
    acc = rep.accuracies[0]
    half = 1.96 * np.sqrt(acc * (1 - acc) / 400)
    assert rep.ci_high[0] - rep.ci_low[0] == pytest.approx(2 * half, rel=0.1)


def test_group_proportions_and_bad_weights():
    props = group_proportions(G)
    assert props == {0: 2 / 8, 1: 3 / 8, 2: 3 / 8}
    with pytest.raises(ValueError, match="3 non-empty groups"):
        group_accuracies(Y, P, group_labels=G, group_weights=[1, 2])
    with pytest.raises(ValueError, match="confidence_level"):
        group_accuracies(Y, P, group_labels=G, confidence_level=95)


@pytest.mark.parametrize(
    "metric",
    [
        lambda t, p: worst_group_accuracy(t, p, group_labels=[0, 1]),
        lambda t, p: worst_class_accuracy(t, p),
        lambda t, p: bias_unsupervised_score(t, p, y_pred_biased=[0, 1]),
        lambda t, p: group_accuracies(t, p, group_labels=[0, 1]),
        lambda t, p: per_group_accuracy(t, p, group_labels=[0, 1]),
    ],
)
def test_mixed_label_types_are_refused_as_sklearn_does(metric):
    # string labels against integer predictions would score 0.0 silently
    with pytest.raises(ValueError, match="Mix of label input types"):
        metric(np.array(["a", "b"]), np.array([0, 1]))
    with pytest.raises(ValueError, match="Mix of label input types"):
        metric(np.array([0, 1]), np.array(["a", "b"]))
    metric(np.array(["a", "b"]), np.array(["b", "b"]))  # same types are fine


def test_non_finite_or_negative_group_weights_are_refused():
    for bad in ([np.nan, 1, 1], [np.inf, 1, 1], [-1, 1, 1], {0: np.nan, 1: 1}, {0: -0.5, 1: 1, 2: 1}):
        with pytest.raises(ValueError, match="group_weights"):
            group_accuracies(Y, P, group_labels=G, group_weights=bad)
    rep = group_accuracies(Y, P, group_labels=G, group_weights=[0, 1, 1])  # a zero weight is fine
    assert rep.weighted_accuracy == pytest.approx((1 + 2 / 3) / 2)


def test_n_bootstrap_must_be_a_positive_int():
    for bad in (0, -5, 2.5):
        with pytest.raises(ValueError, match=r"n_bootstrap.*confidence_level=None"):
            group_accuracies(Y, P, group_labels=G, confidence_level=0.9, n_bootstrap=bad)
    rep = group_accuracies(Y, P, group_labels=G, confidence_level=0.9, n_bootstrap=np.int64(100), random_state=0)
    assert rep.ci_low is not None


def test_group_ids_of_mixed_types_are_refused_naming_group_labels():
    with pytest.raises(ValueError, match=r"group_labels mixes.*str.*int"):
        worst_group_accuracy([0, 1], [0, 1], group_labels=np.array(["a", 1], dtype=object))
    with pytest.raises(ValueError, match=r"group_labels mixes"):
        group_proportions(np.array(["a", 1, 2.0], dtype=object))


def test_paired_bootstrap_matches_the_report_and_the_metrics():
    from skgroup.metrics import paired_bootstrap

    rng = np.random.RandomState(0)
    n = 3000
    g = rng.randint(0, 4, n)
    y = rng.randint(0, 2, n)
    correct = rng.rand(3, n) < np.array([0.9, 0.8, 0.6, 0.7])[g]
    pred = np.where(correct[0], y, 1 - y)
    point, reps = paired_bootstrap(correct, g, n_bootstrap=2000, random_state=0)
    assert reps.shape == (2000, 3)
    assert point[0] == pytest.approx(worst_group_accuracy(y, pred, group_labels=g))
    # the same stratified bootstrap as group_accuracies' interval (binomial draws there)
    report = group_accuracies(y, pred, group_labels=g, confidence_level=0.95, random_state=1)
    np.testing.assert_allclose(np.percentile(reps[:, 0], [2.5, 97.5]), report.worst_group_ci, atol=0.01)
    # group sizes are kept: a model right everywhere scores 1 in every replicate
    _, ones = paired_bootstrap(np.ones((1, n), bool), g, n_bootstrap=50, random_state=0)
    assert np.all(ones == 1)
    # 'mean' over cells is the bias-unsupervised score, one cell the accuracy
    b = rng.randint(0, 2, n)
    point, _ = paired_bootstrap(correct[:1], y * 2 + b, reduce="mean", n_bootstrap=10, random_state=0)
    assert point[0] == pytest.approx(bias_unsupervised_score(y, pred, y_pred_biased=b))
    point, _ = paired_bootstrap(correct, np.zeros(n), reduce="mean", n_bootstrap=10, random_state=0)
    np.testing.assert_allclose(point, correct.mean(axis=1))
    # overlapping groups: rows resampled together, the same point estimate
    member = np.eye(4, dtype=bool)[g]
    member[:50, 0] = True
    point, reps = paired_bootstrap(correct[:1], member, n_bootstrap=200, random_state=0)
    assert point[0] == pytest.approx(worst_group_accuracy(y, pred, group_labels=member))
    assert np.isfinite(reps).all()
    with pytest.raises(ValueError, match="reduce"):
        paired_bootstrap(correct, g, reduce="max")


def test_group_weights_naming_no_evaluated_group_or_missing_one_are_refused():
    # '1' is not the group 1: it would be dropped and group 1 weighted 0, giving 1.0
    with pytest.raises(ValueError, match=r"group_weights.*'1'"):
        group_accuracies([0, 1, 0, 1], [0, 1, 1, 1], group_labels=[0, 0, 1, 1], group_weights={0: .5, "1": .5})
    with pytest.raises(ValueError, match=r"group_weights.*no weight.*\[2\]"):
        group_accuracies(Y, P, group_labels=G, group_weights={0: 0.5, 1: 0.5})
    rep = group_accuracies(Y, P, group_labels=G, group_weights={0: 0.5, 1: 0.5, 2: 0.0})  # 0 leaves one out
    assert rep.weighted_accuracy == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)


def test_too_few_bootstrap_replicates_for_the_level_are_refused():
    with pytest.raises(ValueError, match=r"n_bootstrap=1.*confidence_level=0.95.*200"):
        group_accuracies(Y, P, group_labels=G, confidence_level=0.95, n_bootstrap=1)
    group_accuracies(Y, P, group_labels=G, n_bootstrap=1)  # no interval asked: nothing to refuse


@pytest.mark.parametrize("metric", [
    lambda t, p: worst_group_accuracy(t, p, group_labels=[0, 0, 1, 1]),
    lambda t, p: worst_class_accuracy(t, p),
    lambda t, p: group_accuracies(t, p, group_labels=[0, 0, 1, 1]),
    lambda t, p: bias_unsupervised_score(t, p, y_pred_biased=[0, 1, 0, 1]),
])
@pytest.mark.parametrize("which", ["y_true", "y_pred"])
def test_labels_mixing_ints_and_strings_are_a_value_error_naming_the_argument(metric, which):
    mixed = np.array([1, "a", 1, "a"], dtype=object)
    same = np.array(["1", "a", "1", "a"], dtype=object)
    args = (mixed, same) if which == "y_true" else (same, mixed)
    with pytest.raises(ValueError, match=rf"{which} mixes labels of types int, str"):
        metric(*args)


def test_confidence_level_must_be_a_number():
    for bad in ("0.95", True, [0.9]):
        with pytest.raises(ValueError, match=r"confidence_level must be a number in \(0, 1\)"):
            group_accuracies(Y, P, group_labels=G, confidence_level=bad)


def test_expected_groups_of_another_type_than_the_group_ids_are_an_error():
    # '0' is not the group 0: every expected group would be reported missing while all are there
    with pytest.raises(ValueError, match=r"expected_groups.*'0'.*str.*int"):
        worst_group_accuracy(Y, P, group_labels=G, expected_groups=["0", "1", "2"])
    with pytest.raises(ValueError, match=r"expected_groups"):
        group_accuracies(Y, P, group_labels=G, expected_groups=["0", "1", "2"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        worst_group_accuracy(Y, P, group_labels=G, expected_groups=[0, 1, 2])


def test_bias_unsupervised_score_with_biased_predictions_in_another_coding():
    # the docstring allows any coding of the classes: the cells are (class, biased prediction) all the same
    b = np.array([0, 0, 1, 1, 1, 0, 1, 0])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 4 cells, all filled: no "12 empty cells"
        coded = bias_unsupervised_score(Y, P, y_pred_biased=np.array(["x", "y"])[b])
    assert coded == pytest.approx(bias_unsupervised_score(Y, P, y_pred_biased=b))
    with pytest.warns(EmptyCellWarning, match=r"never predicts 1 of the 2 classes"):  # one value for 2 classes
        bias_unsupervised_score(Y, P, y_pred_biased=np.full(8, "x"))
    with pytest.raises(ValueError, match=r"y_pred_biased takes 3 values.*2 classes"):
        bias_unsupervised_score(Y, P, y_pred_biased=np.array(["x", "y", "z", "x", "y", "z", "x", "y"]))
