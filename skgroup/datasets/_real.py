"""Loaders for real group-robustness data that users download themselves.

The data folder is the ``data_home`` argument, else the ``SKGROUP_DATA``
environment variable, else ``~/skgroup_data``. It holds ``celeba/``
(``list_attr_celeba.txt`` or its zip, ``list_eval_partition.txt[.gz]``) and
``mnli/`` (``mnli_dev_matched.tsv[.gz]``); see ``docs/quickstart.rst`` for
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

__all__ = ["get_data_home", "load_celeba_attributes", "load_mnli", "NEGATION_WORDS"]

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
