"""LISA: domains read from group labels, the pair selection rules, the transform by hand, its Beta draws,
the estimator's errors, the fine-tuning path, and the effect on spurious features."""

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from skgroup import ERMClassifier, LISAClassifier
from skgroup.datasets import make_spurious_benchmark, make_spurious_features
from skgroup.estimators._lisa import LISATransform, cut_box, domains_from_groups, lisa_partners
from skgroup.metrics import make_group_labels, worst_group_accuracy


# -- domains ------------------------------------------------------------------------------------
def test_domains_of_make_group_labels_numbering_are_the_attribute_even_with_missing_cells():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    a = np.array([0, 2, 1, 2, 0, 1, 2])
    groups, _ = make_group_labels(y, a, attribute_values=[0, 1, 2])
    # cells (0, 1) and (1, 0) are absent: ranks within a class would misnumber class 1
    domains, reading = domains_from_groups(groups, y)
    assert reading == "make_group_labels" and domains.tolist() == a.tolist()


def test_domains_of_other_numberings_are_ranks_within_the_class():
    y = np.array([0, 0, 1, 1, 2, 2])
    a = np.array([0, 1, 0, 1, 1, 0])
    attribute_major = a * 3 + y  # the numbering of skgroup's own three-class check data
    domains, reading = domains_from_groups(attribute_major, y)
    assert reading == "rank within class" and domains.tolist() == a.tolist()
    names = np.array(["dark_f", "dark_m", "blond_f", "blond_m", "red_m", "red_f"], dtype=object)
    domains, reading = domains_from_groups(names, y)
    assert reading == "rank within class" and domains.tolist() == a.tolist()


def test_groups_that_are_the_classes_are_one_domain():
    y = np.array([0, 1, 1, 0, 2])
    domains, reading = domains_from_groups(y, y)
    assert reading == "make_group_labels" and domains.tolist() == [0] * 5


# -- pair selection -----------------------------------------------------------------------------
def _batch(m=60, seed=0):
    rng = np.random.RandomState(seed)
    return torch.as_tensor(rng.randint(0, 3, m)), torch.as_tensor(rng.randint(0, 3, m))


@pytest.mark.parametrize("intra_label", [True, False])
def test_every_partner_obeys_the_rule(intra_label):
    y, d = _batch()
    partner, has = lisa_partners(y, d, intra_label, torch.rand(y.shape[0], dtype=torch.float64))
    for i in range(y.shape[0]):
        eligible = [j for j in range(y.shape[0])
                    if ((y[j] == y[i] and d[j] != d[i]) if intra_label else (d[j] == d[i] and y[j] != y[i]))]
        assert bool(has[i]) == bool(eligible)
        assert int(partner[i]) in eligible if eligible else int(partner[i]) == i


def test_rows_without_an_eligible_row_keep_themselves():
    y = torch.tensor([0, 0, 1, 1])
    d = torch.tensor([0, 0, 0, 1])  # class 0 has one domain: no intra-label partner for rows 0, 1
    partner, has = lisa_partners(y, d, True, torch.tensor([0.9, 0.1, 0.5, 0.5], dtype=torch.float64))
    assert has.tolist() == [False, False, True, True] and partner.tolist() == [0, 1, 3, 2]
    partner, has = lisa_partners(y, d, False, torch.tensor([0.9, 0.1, 0.5, 0.5], dtype=torch.float64))
    # intra-domain: domain 0 holds both labels; row 3 (domain 1) is alone
    assert has.tolist() == [True, True, True, False] and partner[3] == 3 and partner[2] in (0, 1)


def test_partners_are_uniform_among_the_eligible_rows():
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    d = torch.tensor([0, 1, 1, 2, 0, 1])
    # row 0 (y=0, d=0), intra-label: rows 1, 2, 3, each with probability 1/3
    gen = torch.Generator().manual_seed(0)
    picks = [int(lisa_partners(y, d, True, torch.rand(6, generator=gen, dtype=torch.float64))[0][0])
             for _ in range(3000)]
    counts = np.bincount(picks, minlength=6)
    assert counts[[0, 4, 5]].sum() == 0
    assert stats.chisquare(counts[1:4]).pvalue > 0.01


# -- the transform by hand ----------------------------------------------------------------------
def test_transform_mixes_each_row_with_its_partner_and_its_own_lambda():
    m = 12
    y = torch.tensor([0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1])
    domains = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0])
    xb = torch.eye(m, dtype=torch.float64)
    for p_sel, intra_label in ((1.0, True), (0.0, False)):
        torch.manual_seed(1)
        transform = LISATransform(domains, alpha=2.0, p_sel=p_sel)
        mixed, targets = transform(xb, y, torch.arange(m))
        assert transform.last_intra_label is intra_label
        lam = targets.lam
        for i in range(m):
            off = [j for j in range(m) if j != i and mixed[i, j] != 0]
            (j,) = off  # every row here has an eligible partner
            assert mixed[i, i] == pytest.approx(float(lam[i]), abs=1e-15)
            assert mixed[i, j] == pytest.approx(1 - float(lam[i]), abs=1e-15)
            if intra_label:
                assert y[j] == y[i] and domains[j] != domains[i]
            else:
                assert domains[j] == domains[i] and y[j] != y[i]
            assert targets.y_a[i] == y[i] and targets.y_b[i] == y[j]
        assert len(set(lam.tolist())) == m  # one lambda a row


def test_strategy_is_intra_label_with_probability_p_sel():
    transform = LISATransform(np.array([0, 1, 0, 1]), alpha=2.0, p_sel=0.3)
    xb, y, idx = torch.eye(4), torch.tensor([0, 0, 1, 1]), torch.arange(4)
    torch.manual_seed(0)
    draws = []
    for _ in range(800):
        transform(xb, y, idx)
        draws.append(transform.last_intra_label)
    assert stats.binomtest(sum(draws), len(draws), 0.3).pvalue > 0.01


def test_lambda_follows_beta_alpha_alpha_per_row():
    transform = LISATransform(np.array([0, 1] * 50), alpha=0.5, p_sel=1.0)
    torch.manual_seed(0)
    _, targets = transform(torch.zeros(100, 2), torch.zeros(100, dtype=torch.int64), torch.arange(100))
    lams = [targets.lam.numpy()]
    for _ in range(29):
        lams.append(transform(torch.zeros(100, 2), torch.zeros(100, dtype=torch.int64), torch.arange(100))[1].lam.numpy())
    lams = np.concatenate(lams)
    assert stats.kstest(lams, stats.beta(0.5, 0.5).cdf).pvalue > 0.01
    assert stats.kstest(lams, stats.beta(2.0, 2.0).cdf).pvalue < 1e-6


def test_cutmix_pastes_one_box_of_the_partner_and_mixes_labels_by_area():
    m, h, w = 8, 10, 12
    y = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    domains = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    xb = torch.arange(m, dtype=torch.float32)[:, None, None, None].expand(m, 3, h, w).clone()  # image i is i
    torch.manual_seed(4)
    transform = LISATransform(domains, alpha=2.0, p_sel=1.0, mix_method="cutmix")
    mixed, targets = transform(xb, y, torch.arange(m))
    for i in range(m):
        inside = mixed[i] != i
        rows, cols = torch.nonzero(inside[0], as_tuple=True)
        (j,) = set(mixed[i][inside].tolist())  # one partner's pixels (image j is all j)
        j = int(j)
        assert y[j] == y[i] and domains[j] != domains[i]  # intra-label rule
        # the pasted region is one full box, the same in every channel and every row
        box = (int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)
        assert int(inside[0].sum()) == (box[1] - box[0]) * (box[3] - box[2]) and torch.equal(inside[0], inside[2])
        assert float(targets.lam[i]) == pytest.approx(1 - (box[1] - box[0]) * (box[3] - box[2]) / (h * w))
        if i == 0:
            first = box
        assert box == first


def test_cut_box_follows_the_authors_rand_bbox():
    torch.manual_seed(0)
    top, bottom, left, right = cut_box(32, 32, 0.75)
    # sides int(32 * sqrt(0.25)) = 16 around the centre, clipped to the image
    assert bottom - top <= 16 and right - left <= 16 and 0 <= top <= bottom <= 32 and 0 <= left <= right <= 32
    torch.manual_seed(0)
    cy, cx = int(torch.randint(32, ())), int(torch.randint(32, ()))
    assert (top, bottom, left, right) == (max(cy - 8, 0), min(cy + 8, 32), max(cx - 8, 0), min(cx + 8, 32))


def test_cutmix_refuses_features():
    X, y, g = make_spurious_features(200, random_state=0)
    with pytest.raises(ValueError, match="cannot be cut"):
        LISAClassifier(mix_method="cutmix", max_iter=1).fit(X, y, group_labels=g)
    with pytest.raises(ValueError, match="mix_method='mixup'"):
        LISATransform(np.zeros(4), 2.0, 0.5, "cutmix")(torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64),
                                                       torch.arange(4))


def test_finetuning_images_with_cutmix():
    from _vectors import Rows, Vectors
    from skgroup.finetune import FineTuneClassifier

    rng = np.random.RandomState(0)
    y = rng.randint(0, 2, 64)
    a = np.where(rng.rand(64) < 0.8, y, 1 - y)
    images = rng.randn(64, 1, 6, 6).astype(np.float32)
    images[:, :, :3] += (2 * y - 1)[:, None, None, None]  # the label in the top half
    images[:, :, 3:] += 2 * (2 * a - 1)[:, None, None, None]  # the attribute in the bottom half
    ft = FineTuneClassifier(Vectors(), method=LISAClassifier(mix_method="cutmix"), max_iter=2, batch_size=16,
                            learning_rate=1e-2, warmup=0, random_state=0)
    ft.fit(Rows(images), y, group_labels=2 * y + a)
    assert np.isfinite(ft.loss_curve_).all() and ft.score(Rows(images), y) > 0.6


# -- the estimator --------------------------------------------------------------------------------
def test_estimator_reads_domains_and_refuses_overlapping_groups():
    X, y, g = make_spurious_features(400, random_state=0)
    est = LISAClassifier(max_iter=1, batch_size=64, random_state=0).fit(X, y, group_labels=g)
    assert est.domain_reading_ == "make_group_labels" and est.n_domains_ == 2
    est = LISAClassifier(max_iter=1, batch_size=64, random_state=0).fit(X, y)
    assert est.domain_reading_ == "none" and est.n_domains_ == 1
    overlapping = np.column_stack([g == 0, g <= 1, g == 2, g == 3])
    with pytest.raises(ValueError, match="1-D group ids"):
        LISAClassifier(max_iter=1).fit(X, y, group_labels=overlapping)


def test_uneven_groups_of_another_numbering_warn():
    X, y, _ = make_spurious_features(400, random_state=0)
    i = np.arange(400)
    names = np.where(y == 0, np.array(["a", "b"])[i % 2], np.array(["c", "d", "e"])[i % 3])  # 2 and 3 groups
    with pytest.warns(UserWarning, match="rank of its group"):
        LISAClassifier(max_iter=1, batch_size=64, random_state=0).fit(X, y, group_labels=names)


def test_finetuning_path_trains_what_the_head_trains():
    from _vectors import finetune_like_head

    X, y, g = make_spurious_features(400, random_state=0)
    method = LISAClassifier(max_iter=3, batch_size=64, learning_rate=1e-2, random_state=4)
    head = method.fit(X, y, group_labels=g)
    ft = finetune_like_head(method, X, y, group_labels=g)
    np.testing.assert_array_equal(ft.model_.head.weight.detach().numpy(), head.coef_)
    assert ft.loss_curve_ == head.loss_curve_


# -- the effect -----------------------------------------------------------------------------------
def test_lisa_raises_the_worst_group_over_erm_on_spurious_features():
    # the attribute is easier to read than the label (Sagawa et al. 2020b): ERM leans on it; mixing rows
    # of one label across attributes (and of one attribute across labels) removes that shortcut
    wga = {"erm": [], "lisa": [], "intra_label": []}
    for seed in range(2):
        data = make_spurious_benchmark(1000, 200, 1000, random_state=seed)
        tr, te = data.train, data.test

        def score(est):
            p = est.fit(tr.X, tr.y, group_labels=tr.group_labels).predict(te.X)
            return worst_group_accuracy(te.y, p, group_labels=te.group_labels)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wga["erm"].append(score(ERMClassifier()))
            wga["lisa"].append(score(LISAClassifier(random_state=seed)))
            wga["intra_label"].append(score(LISAClassifier(p_sel=1.0, random_state=seed)))
    assert min(wga["lisa"]) > max(wga["erm"]) + 0.1, wga
    assert min(wga["intra_label"]) > max(wga["erm"]) + 0.1, wga
