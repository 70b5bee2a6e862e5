"""Loaders for real group-robustness data that users download themselves.

The data folder is the ``data_home`` argument, else the ``SKGROUP_DATA``
environment variable, else ``~/skgroup_data``. It holds ``celeba/``
(``list_attr_celeba.txt`` or its zip, ``list_eval_partition.txt[.gz]``) and
``mnli/`` (``mnli_dev_matched.tsv[.gz]``) and ``law/`` (``law_data.csv[.gz]``); see ``docs/quickstart.rst`` for
where to get them and their licences.
"""

import csv
import gzip
import os
import string
import zipfile
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from .._groups import make_group_labels

__all__ = ["get_data_home", "load_celeba_attributes", "load_law_school", "load_mnli", "NEGATION_WORDS"]

#: Negation words of Sagawa et al. (2020a) for the MultiNLI spurious attribute.
NEGATION_WORDS = ("no", "never", "nobody", "nothing")
MNLI_LABELS = ("contradiction", "entailment", "neutral")


def get_data_home(data_home=None, *, required=True):
    """Resolve the real-data folder: ``data_home``, else ``$SKGROUP_DATA``, else ``~/skgroup_data``.

    With ``required=False`` a missing folder gives None instead of an error.
    """
    if data_home is not None:
        candidate, how = Path(data_home), "data_home"
    elif os.environ.get("SKGROUP_DATA"):
        candidate, how = Path(os.environ["SKGROUP_DATA"]), "$SKGROUP_DATA"
    else:
        candidate, how = Path("~/skgroup_data").expanduser(), "the default ~/skgroup_data"
    if candidate.is_dir():
        return candidate.resolve()
    if required:
        raise FileNotFoundError(
            f"No data folder at {candidate} ({how}): pass data_home=..., or set SKGROUP_DATA, to "
            "the folder holding celeba/ and mnli/ (see docs/quickstart.rst for the files)."
        )
    return None


def _require(path, what):
    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path}; see the data folder's README.md.")
    return path


def load_celeba_attributes(data_home=None, *, target="Blond_Hair", attribute="Male"):
    """CelebA attributes as a tabular group-robustness benchmark.

    Label ``target`` (default Blond_Hair), spurious attribute ``attribute``
    (default Male); the features are the other 38 binary attributes as 0/1
    float32; the official split (162,770 / 19,867 / 19,962 rows). Groups are
    numbered by :func:`skgroup.metrics.make_group_labels`: 0 non-blond women,
    1 non-blond men, 2 blond women, 3 blond men (1,387 training rows).

    Returns
    -------
    Bunch with ``train``, ``val``, ``test`` (each ``X``, ``y``,
    ``group_labels``, ``attribute``, ``ids``), ``feature_names``,
    ``group_names``, ``name``.
    """
    root = get_data_home(data_home) / "celeba"
    with zipfile.ZipFile(_require(root / "list_attr_celeba.zip", "CelebA attributes")) as zf:
        raw = zf.read("list_attr_celeba.txt").decode()
    lines = raw.splitlines()
    names = lines[1].split()
    body = lines[2:]
    ids = np.array([line.split(maxsplit=1)[0] for line in body])
    values = np.array(" ".join(line.split(maxsplit=1)[1] for line in body).split(), dtype=np.int8)
    values = values.reshape(len(body), len(names))
    with gzip.open(_require(root / "list_eval_partition.txt.gz", "CelebA partition"), "rt") as f:
        part = dict(line.split() for line in f if line.strip())
    split = np.array([int(part[i]) for i in ids], dtype=np.int8)
    for col in (target, attribute):
        if col not in names:
            raise ValueError(f"{col!r} is not a CelebA attribute; choose from {names}.")
    binary = (values > 0).astype(np.int64)
    y = binary[:, names.index(target)]
    a = binary[:, names.index(attribute)]
    keep = [j for j, n in enumerate(names) if n not in (target, attribute)]
    X = binary[:, keep].astype(np.float32)
    groups, pairs = make_group_labels(y, a)
    out = {}
    for split_name, code in (("train", 0), ("val", 1), ("test", 2)):
        rows = split == code
        out[split_name] = Bunch(X=X[rows], y=y[rows], group_labels=groups[rows], attribute=a[rows], ids=ids[rows])
    return Bunch(
        **out,
        feature_names=[names[j] for j in keep],
        group_names=[f"{target}={yy}, {attribute}={aa}" for yy, aa in pairs],
        name="celeba-attributes",
        description=f"CelebA: {target} from the other attributes, spurious {attribute}",
    )


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _has_negation(text, words):
    # the group_DRO preprocessing: drop punctuation, lower-case, split on spaces
    # (so "no-one" is one token "noone", not "no")
    tokens = set(text.translate(_PUNCTUATION).lower().split(" "))
    return any(w in tokens for w in words)


def load_mnli(data_home=None, *, negation_words=NEGATION_WORDS, split_fractions=(0.5, 0.25, 0.25), random_state=0):
    """MultiNLI dev-matched pairs with the negation spurious attribute.

    Labels: 0 contradiction, 1 entailment, 2 neutral (the Group DRO
    convention). Attribute: 1 if the *hypothesis* contains one of
    ``negation_words`` as a whole word (Sagawa et al., 2020a). Groups:
    ``label * 2 + negation`` (6 groups).

    The public dev-matched set is re-split into train / val / test, stratified
    by group: within each group, rows are permuted by a fixed seed and cut by
    ``split_fractions`` (rounding down val and test, the rest to train). The
    split is deterministic for a given ``random_state`` and file.

    Returns
    -------
    Bunch with ``premise``, ``hypothesis`` (arrays of str), ``y``,
    ``attribute``, ``group_labels``, ``split`` (str array), ``ids``,
    ``label_names``, ``group_names``.
    """
    path = _require(get_data_home(data_home) / "mnli" / "mnli_dev_matched.tsv.gz", "MultiNLI dev-matched")
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        # quoting off: sentences contain quote characters, and CSV quoting merges rows
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, rows = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    rows = [r for r in rows if r[col["gold_label"]] in MNLI_LABELS]
    premise = np.array([r[col["premise"]] for r in rows], dtype=object)
    hypothesis = np.array([r[col["hypothesis"]] for r in rows], dtype=object)
    y = np.array([MNLI_LABELS.index(r[col["gold_label"]]) for r in rows], dtype=np.int64)
    ids = np.array([r[col["index"]] for r in rows])
    a = np.array([_has_negation(h, negation_words) for h in hypothesis], dtype=np.int64)
    groups, pairs = make_group_labels(y, a)
    split = _stratified_split(groups, split_fractions, random_state)
    return Bunch(
        premise=premise,
        hypothesis=hypothesis,
        y=y,
        attribute=a,
        group_labels=groups,
        split=split,
        ids=ids,
        label_names=list(MNLI_LABELS),
        group_names=[f"{MNLI_LABELS[yy]}, negation={aa}" for yy, aa in pairs],
        name="mnli-dev",
    )


LAW_RACES = ("Amerindian", "Asian", "Black", "Hispanic", "Mexican", "Other", "Puertorican", "White")
LAW_REGIONS = ("FW", "GL", "MS", "MW", "Mt", "NE", "NG", "NW", "PO", "SC", "SE")
_LAW_NUMERIC = ("LSAT", "UGPA", "sander_index")


def load_law_school(data_home=None, *, attribute="race", split_fractions=(0.6, 0.2, 0.2), random_state=0):
    """The LSAC bar-passage study (law school) as a tabular group-robustness benchmark.

    Label ``first_pf`` (1: passed the first year). Attribute ``'race'``:
    1 for White, 0 for every other recorded race; or ``'sex'``: 1 for the
    file's code 2, 0 for code 1. The groups cross the label with the
    attribute (:func:`skgroup.metrics.make_group_labels`: 0 = (fail, 0),
    1 = (fail, 1), 2 = (pass, 0), 3 = (pass, 1)); with race the 21,791 rows
    hold 973 / 1,458 / 2,533 / 16,827, class and attribute imbalance
    together.

    Features (float32): ``LSAT``, ``UGPA`` and ``sander_index``
    standardised with the training split's mean and standard deviation;
    ``region_first`` one-hot (11 regions); and the other attribute: ``sex``
    as one 0/1 column when the attribute is race, ``race`` one-hot (8
    categories) when it is sex. The attribute itself is not a feature, as
    in :func:`load_celeba_attributes`, and ``ZFYA`` (first-year grades, an
    outcome measured after admission) is dropped.

    Split: within each group the rows are permuted with ``random_state``
    and cut by ``split_fractions`` (train / val / test; val and test rounded
    down, the rest to train), so every split holds each group in the same
    proportion. Deterministic for a given file, attribute and seed.

    Parameters
    ----------
    data_home : str or Path, default=None
        Folder holding ``law/law_data.csv.gz`` (see :func:`get_data_home`).
    attribute : {'race', 'sex'}, default='race'
    split_fractions : tuple of three floats, default=(0.6, 0.2, 0.2)
    random_state : int, default=0

    Returns
    -------
    Bunch with ``train``, ``val``, ``test`` (each ``X``, ``y``,
    ``group_labels``, ``attribute``, ``ids``: the file's row index),
    ``feature_names``, ``group_names``, ``name``, ``description``.
    """
    if attribute not in ("race", "sex"):
        raise ValueError(f"attribute must be 'race' or 'sex'; got {attribute!r}.")
    root = get_data_home(data_home) / "law"
    path = root / "law_data.csv.gz"
    if not path.exists() and (root / "law_data.csv").exists():
        path = root / "law_data.csv"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(_require(path, "Law school data"), "rt", newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    missing = [c for c in ("race", "sex", *_LAW_NUMERIC, "region_first", "first_pf") if c not in col]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; is it the law_data.csv of the data README?")
    race = np.array([r[col["race"]] for r in rows])
    sex = np.array([r[col["sex"]] for r in rows])
    region = np.array([r[col["region_first"]] for r in rows])
    for values, known, what in ((race, LAW_RACES, "race"), (sex, ("1", "2"), "sex"), (region, LAW_REGIONS,
                                                                                     "region_first")):
        unknown = sorted(set(values.tolist()) - set(known))
        if unknown:
            raise ValueError(f"{path}: unexpected {what} values {unknown[:5]}; expected {list(known)}.")
    y = np.array([float(r[col["first_pf"]]) for r in rows]).astype(np.int64)
    numeric = np.array([[float(r[col[c]]) for c in _LAW_NUMERIC] for r in rows])
    ids = np.array([r[col[header[0]]] for r in rows]) if header[0] == "" else np.arange(len(rows)).astype(str)
    a = (race == "White").astype(np.int64) if attribute == "race" else (sex == "2").astype(np.int64)
    groups, pairs = make_group_labels(y, a)
    split = _stratified_split(groups, split_fractions, random_state)

    train = split == "train"
    mean, std = numeric[train].mean(axis=0), numeric[train].std(axis=0)
    std[std == 0] = 1.0
    blocks = [(numeric - mean) / std, (region[:, None] == np.array(LAW_REGIONS)[None, :])]
    names = list(_LAW_NUMERIC) + [f"region_first={r}" for r in LAW_REGIONS]
    if attribute == "race":
        blocks.append((sex == "2")[:, None])
        names.append("sex=2")
    else:
        blocks.append(race[:, None] == np.array(LAW_RACES)[None, :])
        names += [f"race={r}" for r in LAW_RACES]
    X = np.hstack([b.astype(np.float64) for b in blocks]).astype(np.float32)
    attr_names = {"race": ("not White", "White"), "sex": ("sex=1", "sex=2")}[attribute]
    out = {}
    for split_name in ("train", "val", "test"):
        r = split == split_name
        out[split_name] = Bunch(X=X[r], y=y[r], group_labels=groups[r], attribute=a[r], ids=ids[r])
    return Bunch(
        **out,
        feature_names=names,
        group_names=[f"{'pass' if yy else 'fail'}, {attr_names[aa]}" for yy, aa in pairs],
        name=f"law-school-{attribute}",
        description=f"LSAC law school: first-year pass from {len(names)} features, spurious {attribute}",
    )


def _stratified_split(groups, fractions, random_state):
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) <= 0:
        raise ValueError(f"split_fractions must be three positive fractions summing to 1; got {fractions}.")
    rng = np.random.RandomState(random_state)
    split = np.empty(groups.shape[0], dtype=object)
    for g in np.unique(groups):
        rows = rng.permutation(np.flatnonzero(groups == g))
        n_val = int(len(rows) * fractions[1])
        n_test = int(len(rows) * fractions[2])
        split[rows[:n_val]] = "val"
        split[rows[n_val : n_val + n_test]] = "test"
        split[rows[n_val + n_test :]] = "train"
    return split.astype(str)
