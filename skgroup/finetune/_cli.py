"""``skgroup-finetune CONFIG.toml``: fine-tune a backbone with a method, from a TOML file.

The config's tables and keys are :data:`CONFIG_HELP` (printed by
``skgroup-finetune --help`` and in ``docs/finetune.rst``). The run trains on
the data's train split with early stopping on its validation split, shows
a bar per batch and a line per epoch, and writes to ``--output`` (default:
the config's ``[output] dir``, else ``./skgroup-finetune-run``):
``log.jsonl`` (one record per epoch), ``checkpoints/`` (one resumable
state per stage; a rerun resumes from it), the fine-tuned model
(``model/``) and ``metrics.json`` (test accuracy and worst-group accuracy
with bootstrap intervals). A key that no table takes is refused with the
nearest valid one, and every mistake in the config (a value out of range, a
missing model or column, a task for another modality, a device torch cannot
see) is one line on stderr and exit status 2, before anything is trained or
written. A folder holding an earlier run's results needs ``--overwrite``.
"""

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

__all__ = ["main", "load_config", "load_data", "run", "apply_override"]

_SECTIONS = {"model", "data", "method", "training", "output", "auxiliary"}
DEFAULT_OUTPUT = "skgroup-finetune-run"

CONFIG_HELP = f"""\
config file (TOML; every table and key; only [model] backbone and the [data] table are required):

  [model]
  backbone = "path/to/model-folder"   # anything feature_extraction.load_backbone reads: a transformers
                                      # folder, 'efficientnet-lite0', a torchvision name ('resnet50') with weights
  options = {{ pair_mode = "template", max_length = 128 }}
                                      # load_backbone keywords: pooling ('cls' | 'mean' | 'pooler'),
                                      # pair_mode ('template' | 'siamese'), max_length, weights, modality,
                                      # image_size, resize, interpolation, mean, std, name
                                      # (normalisation of text features: [training] normalize)

  [data]
  format = "dataset"                  # 'dataset' (a path below) | 'mnli' | 'fashion-spurious'
  path = "path/to/table-or-folder"    # format 'dataset': a text table, an image folder with metadata, class folders
  options = {{ layout = "waterbirds" }} # format 'dataset': feature_extraction.load_dataset keywords
                                      # (text_columns, label_column, attribute_columns, spurious_attribute,
                                      # split_column, layout, metadata, missing_labels, ...)
  data_home = "path/to/data"          # format 'mnli' / 'fashion-spurious': the real-data folder
                                      # (default $SKGROUP_DATA, else ~/skgroup_data)
  max_train = 2000                    # optional: group-stratified subsamples of exactly this many rows
  max_val = 500
  max_test = 1000
  n_train = 20000                     # format 'fashion-spurious' only: make_spurious_fashion_mnist's
  n_val = 4000                        #   n_train, n_val, n_test, train_correlation and random_state
  n_test = 4000
  train_correlation = 0.95
  random_state = 0

  [method]
  name = "JTTClassifier"              # any skgroup estimator (default ERMClassifier)
  lambda_up = 6                       # and its method parameters (id_epochs, eta, alpha, balancing, ...)

  [training]                          # FineTuneClassifier parameters (defaults in brackets)
  max_iter = 3                        # epochs per stage [3]
  batch_size = 32                     # [32]
  learning_rate = 2e-5                # the backbone's peak rate [2e-5]
  head_learning_rate = 2e-5           # the new head's [= learning_rate]
  head_init = "auto"                  # 'auto' | 'zeros' | 'normal' | 'uniform' ['auto': the model's own]
  head_dropout = "auto"               # 'auto' or a float ['auto': the model's classifier dropout]
  normalize = "auto"                  # L2-normalise pooled text features ['auto': off while fine-tuning]
  solver = "adamw"                    # 'adamw' | 'sgd' ['adamw']
  weight_decay = 0.01                 # [0.01]
  l2_reg = 0.0                        # [0.0]
  lr_schedule = "linear"              # 'linear' | 'cosine' | 'constant' ['linear']
  warmup = 0.1                        # steps, or a fraction of the run's [0.1]
  grad_clip = 1.0                     # gradient-norm clipping [1.0]; 0, false or "none": no clipping
  accumulate = 1                      # micro-batches per optimizer step [1]
  amp = "bf16"                        # 'bf16' | 'fp16' on CUDA [none]
  augment = "auto"                    # random resized crop + flip of images ['auto']
  channels_last = "auto"              # ['auto']
  eval_batch_size = 64                # [2 * batch_size]
  num_workers = 0                     # DataLoader workers [0]
  early_stopping = "auto"             # ['auto': on, with the validation split]
  monitor = "worst_group_accuracy"    # 'worst_group_accuracy' | 'worst_class_accuracy' | 'accuracy' | 'loss'
                                      # | 'bias_unsupervised' ['auto': worst-group accuracy]
  n_iter_no_change = 2                # early-stopping patience [none: every epoch runs]
  restore_best = true                 # keep the best epoch [true]
  device = "cpu"                      # ['cpu']
  random_state = 0                    # seeds the run and the subsamples [0]
  verbose = 0                         # [0]

  [auxiliary]                         # optional: regularized multitask fine-tuning (docs/finetune_mtl.rst)
  task = "mlm"                        # 'mlm' (text) | 'mim' (images)
  alpha_aux = 1.0                     # numbers, or "e^-1", "e^0", "e^1" (the paper's grid)
  alpha_reg = "e^-1"
  mask_prob = 0.15                    # mlm: mask_prob, mask_replace, random_replace, head;
                                      # mim: mask_ratio, mask_patch_size

  [output]
  dir = "runs/my-run"                 # the run folder [--output, else ./{DEFAULT_OUTPUT}]
  keep_checkpoints = true             # false: delete checkpoints/ once the run has finished and saved model/
                                      # (a checkpoint per stage holds the weights and optimizer state,
                                      # about 3x the model's size each)

--set TABLE.KEY=VALUE overrides an entry (VALUE is TOML; a bare word is a string), e.g.
  --set data.path=/data/waterbirds --set training.device=cuda --set training.grad_clip=none
"""


class ConfigError(ValueError):
    """A config file that cannot be run as written."""


class _config_errors:
    """Turn what the libraries raise about a table's values into a one-line ConfigError naming the table."""

    def __init__(self, table):
        self.table = table

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, ConfigError):
            return False
        # (feature_extraction's ModelNotFoundError and MetadataError are ValueErrors)
        if isinstance(exc, (ValueError, TypeError, FileNotFoundError, KeyError, ImportError, NotImplementedError)):
            raise ConfigError(f"[{self.table}]: {exc}") from exc
        return False


def _check_device(device):
    from ..engine._batches import check_device

    check_device(device)


def load_config(path):
    """The config as a dict, with the file's problems reported by name."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    unknown = set(config) - _SECTIONS
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)}; the tables are {sorted(_SECTIONS)}.")
    for needed in ("model", "data"):
        if needed not in config:
            raise ConfigError(f"{path}: the [{needed}] table is missing.")
    if "backbone" not in config["model"]:
        raise ConfigError(f"{path}: [model] needs backbone = <folder or model name>.")
    return config


def _refuse_unknown(table, given, valid):
    """Every key of ``given`` must be in ``valid``; the error names the nearest valid key (difflib)."""
    import difflib

    valid = sorted(valid)
    for key in given:
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ConfigError(f"[{table}] {key} is not a setting of [{table}]: {hint}the settings are {valid}.")


def _parameters(fn, skip=()):
    import inspect

    return [p for p in inspect.signature(fn).parameters if p not in ("self", "cls", *skip)]


_DATA_KEYS = {
    "dataset": {"path", "options"},
    "mnli": {"data_home"},
    "fashion-spurious": {"data_home", "random_state", "n_train", "n_val", "n_test", "train_correlation"},
}


def check_config(config):
    """Refuse a key no table takes, naming the nearest valid one (a typo would otherwise be ignored:
    ``[output] dirr`` would send the run to the default folder)."""
    from feature_extraction import load_backbone
    from feature_extraction.data import TextDataset, image_folder_dataset, metadata_image_dataset

    from . import FineTuneClassifier
    from ._auxiliary import MaskedImageModeling, MaskedLM

    model = config.get("model", {})
    _refuse_unknown("model", model, {"backbone", "options"})
    _refuse_unknown("model.options", model.get("options", {}), _parameters(load_backbone, skip=("model",)))
    data = config.get("data", {})
    fmt = data.get("format", "dataset")
    if fmt not in _DATA_KEYS:
        raise ConfigError(f"[data] format = {fmt!r}; choose 'dataset', 'mnli' or 'fashion-spurious'.")
    _refuse_unknown("data", data, {"format", "max_train", "max_val", "max_test"} | _DATA_KEYS[fmt])
    readers = (TextDataset.from_file, metadata_image_dataset, image_folder_dataset)
    _refuse_unknown("data.options", data.get("options", {}),
                    {p for f in readers for p in _parameters(f, skip=("path", "root"))})
    method = config.get("method", {})
    _refuse_unknown("method", method, {"name", *_estimator_class(method.get("name", "ERMClassifier"))().get_params()})
    _refuse_unknown("training", config.get("training", {}),
                    set(_parameters(FineTuneClassifier.__init__)) - {"backbone", "method", "auxiliary", "callbacks"})
    _refuse_unknown("output", config.get("output", {}), {"dir", "keep_checkpoints"})
    aux = config.get("auxiliary")
    if aux:
        task = {"mlm": MaskedLM, "mim": MaskedImageModeling}.get(aux.get("task"))
        if task is not None:
            _refuse_unknown("auxiliary", aux, {"task", *task().get_params()})


def apply_override(config, item):
    """Set ``table.key=value`` (value parsed as TOML, else taken as a string) in ``config``."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"--set {item!r}: write TABLE.KEY=VALUE, e.g. data.path=/data/waterbirds.")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    *tables, last = key.split(".")
    if tables[0] not in _SECTIONS:
        raise ConfigError(f"--set {item!r}: unknown table {tables[0]!r}; the tables are {sorted(_SECTIONS)}.")
    node = config
    for t in tables:
        node = node.setdefault(t, {})
    node[last] = value


def _estimator_class(name):
    from .. import estimators

    classes = dict(estimators.all_estimators())
    if name not in classes:
        raise ConfigError(f"[method] name = {name!r} is not a skgroup estimator; choose from {sorted(classes)}.")
    return classes[name]


def make_auxiliary(table):
    """The auxiliary task of an ``[auxiliary]`` table (None for no table)."""
    if not table:
        return None
    from ._auxiliary import MaskedImageModeling, MaskedLM

    table = dict(table)
    task = table.pop("task", None)
    kinds = {"mlm": MaskedLM, "mim": MaskedImageModeling}
    if task not in kinds:
        raise ConfigError(f"[auxiliary] task = {task!r}; write task = 'mlm' (text) or 'mim' (images).")
    for key in ("alpha_aux", "alpha_reg"):
        if isinstance(table.get(key), str):
            table[key] = _exp_value(key, table[key])
    try:
        return kinds[task](**table).check()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[auxiliary]: {exc}") from exc


def _exp_value(key, text):
    """'e^-1' -> exp(-1): the paper's grid {e^-1, e^0, e^1} written as it is."""
    import math

    t = text.replace(" ", "")
    if t.startswith("e^"):
        try:
            return math.exp(float(t[2:]))
        except ValueError:
            pass
    raise ConfigError(f"[auxiliary] {key} = {text!r}: write a number or 'e^K' (e.g. 'e^-1').")


def load_data(data, seed=0):
    """(dataset, groups, group_names) for the [data] table; the dataset has labels, split and get(i)."""
    from feature_extraction import ArrayImageDataset, TextDataset, load_dataset

    from .._groups import make_group_labels
    from ..datasets import load_mnli

    fmt = data.get("format", "dataset")
    if fmt == "mnli":
        m = load_mnli(data.get("data_home"))
        ds = TextDataset(m.premise, m.y, text_pair=m.hypothesis, attributes=m.attribute, attribute_names=["negation"],
                         split=m.split, ids=m.ids, label_names=m.label_names, spurious_attribute="negation",
                         name="mnli-dev")
    elif fmt == "fashion-spurious":
        from feature_extraction.real import make_spurious_fashion_mnist

        keys = ("n_train", "n_val", "n_test", "train_correlation")
        f = make_spurious_fashion_mnist(data.get("data_home"), random_state=data.get("random_state", 0),
                                        **{k: data[k] for k in keys if k in data})
        ds = ArrayImageDataset(f.images, f.y, attributes=f.background, attribute_names=["background"],
                               split=f.split, ids=f.ids, label_names=f.label_names, spurious_attribute="background",
                               name="fashion-spurious")
    elif fmt == "dataset":
        if "path" not in data:
            raise ConfigError("[data] format = 'dataset' needs path = <table or image folder>.")
        ds = load_dataset(data["path"], **data.get("options", {}))
    else:
        raise ConfigError(f"[data] format = {fmt!r}; choose 'dataset', 'mnli' or 'fashion-spurious'.")
    if ds.spurious_attribute is None:
        raise ConfigError("the data names no spurious attribute: set it in [data.options] "
                          "(e.g. spurious_attribute = 'place'), so that groups can be formed.")
    a = ds.attributes[:, ds.attribute_names.index(ds.spurious_attribute)]
    groups, pairs = make_group_labels(ds.labels, a)
    names = [f"{(ds.label_names or {})[yy] if ds.label_names else yy}, {ds.spurious_attribute}={aa}"
             for yy, aa in pairs]
    return ds, groups, names


def _split_rows(ds, groups, data, seed):
    """Row indices of train / val / test, subsampled per group when max_* is set."""
    rng = np.random.default_rng(seed)
    out = {}
    for code, name in ((0, "train"), (1, "val"), (2, "test")):
        rows = np.flatnonzero(ds.split == code)
        if rows.size == 0:
            raise ConfigError(f"the data has no {name} rows: its split column must mark train, val and test.")
        cap = data.get(f"max_{name}")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ConfigError(f"[data] max_{name} = {cap!r}: write a positive whole number of rows.")
        if cap is not None and cap < rows.size:
            # keep every group's share: a stratified subsample of exactly `cap` rows
            names, sizes = np.unique(groups[rows], return_counts=True)
            take = stratified_counts(sizes, cap)
            keep = [rng.choice(rows[groups[rows] == g], size=k, replace=False) for g, k in zip(names, take) if k]
            rows = np.sort(np.concatenate(keep))
        out[name] = rows
    return out


_RESULTS = ("metrics.json", "model", "test_predictions.npz")


def _check_output(output, overwrite):
    """The run folder: a folder (created), holding no earlier run's results unless ``overwrite``."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"the output {output} is a file, not a folder: give --output (or [output] dir) a folder.")
    done = [name for name in _RESULTS if (output / name).exists()]
    if done and not overwrite:
        raise ConfigError(
            f"{output} holds the results of an earlier run ({', '.join(done)}): choose another --output, or pass "
            "--overwrite to train afresh there and replace them."
        )
    output.mkdir(parents=True, exist_ok=True)
    if overwrite:  # this run's log starts empty; its checkpoints are rewritten as it goes
        (output / "log.jsonl").unlink(missing_ok=True)


def stratified_counts(sizes, total):
    """Per-group counts summing to exactly ``total`` (<= sum(sizes)), proportional to ``sizes``.

    Largest remainders (Hamilton's method), after one row for every group
    when ``total`` allows it, so that no group vanishes from a small
    subsample; no count exceeds its group's size.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(min(total, sizes.sum()))
    take = np.zeros_like(sizes)
    if total >= sizes.size:
        take[:] = 1
    left = total - take.sum()
    room = sizes - take
    if left > 0:
        quota = left * room / room.sum()
        base = np.minimum(np.floor(quota).astype(np.int64), room)
        take += base
        left -= base.sum()
        order = np.argsort(-(quota - base), kind="stable")
        for i in order:
            if left == 0:
                break
            if take[i] < sizes[i]:
                take[i] += 1
                left -= 1
    return take


_NO_CLIP = ("none", "null", "off", "false")


def training_parameters(table):
    """The [training] table as FineTuneClassifier keywords (``grad_clip`` off written as 0, false or 'none')."""
    training = dict(table)
    clip = training.get("grad_clip", 1.0)
    if clip is False or (isinstance(clip, str) and clip.strip().lower() in _NO_CLIP) or (
            not isinstance(clip, bool) and isinstance(clip, (int, float)) and clip == 0):
        training["grad_clip"] = None
    elif isinstance(clip, str) or clip is True:
        raise ConfigError(f"[training] grad_clip = {clip!r}: write a positive number (the largest gradient norm), "
                          "or 0, false or 'none' for no clipping.")
    return training


def _output_options(config, output):
    table = dict(config.get("output", {}))
    keep = table.get("keep_checkpoints", True)
    if not isinstance(keep, bool):
        raise ConfigError(f"[output] keep_checkpoints = {keep!r}: write true or false.")
    return Path(output or table.get("dir", DEFAULT_OUTPUT)), keep


def _remove_checkpoints(folder):
    """Delete the stage checkpoints this run wrote (``*.pt`` and their temporaries), then the folder if empty."""
    if not folder.is_dir():
        return 0
    freed = 0
    for f in folder.iterdir():
        if f.is_file() and (f.suffix == ".pt" or f.name.endswith(".pt.tmp")):
            freed += f.stat().st_size
            f.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()
    return freed


def _folder_bytes(folder):
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) if Path(folder).is_dir() else 0


def run(config, output=None, *, quiet=False, progress=True, overwrite=False):
    """Fine-tune as ``config`` says; returns the test metrics (also written to ``output``).

    ``quiet`` prints nothing; ``progress=False`` keeps the epoch lines but no per-batch bar. A run folder
    that holds an earlier run's results (``metrics.json``, ``model/``) is refused before any work unless
    ``overwrite``, which trains afresh (its checkpoints are not resumed) and replaces what the run writes;
    other files are kept. Without ``overwrite`` the run resumes its checkpoints, and refuses those of a run
    with other settings or data.
    """
    from ..engine import Checkpoint, CheckpointMismatchError, JSONLLogger
    from ..engine._loop import format_differences
    from ..metrics import group_accuracies
    from . import FineTuneClassifier
    from ._executor import SubsetInputs
    from ._inputs import as_inputs
    from ._progress import RunProgress

    check_config(config)
    output, keep_checkpoints = _output_options(config, output)
    training = training_parameters(config.get("training", {}))
    seed = training.get("random_state", 0)
    if "normalize" in config["model"].get("options", {}):
        raise ConfigError("[model] options: normalize is a [training] key (normalize = true keeps the "
                          "checkpoint's L2 normalisation; 'auto' turns it off while fine-tuning).")
    # everything the config says is checked before the output folder is touched or anything trains
    method_cfg = dict(config.get("method", {}))
    method = _estimator_class(method_cfg.pop("name", "ERMClassifier"))(**method_cfg)
    with _config_errors("method"):
        method._validate_params()
        method._check_params()
    auxiliary = make_auxiliary(config.get("auxiliary"))
    checkpoints = output / "checkpoints"
    callbacks = [Checkpoint(checkpoints, resume=not overwrite), JSONLLogger(output / "log.jsonl")]
    if not quiet:  # after the Checkpoint, so that it can say where a stage resumes
        callbacks.append(RunProgress(checkpoints, bar=progress))
    with _config_errors("training"):
        clf = FineTuneClassifier(config["model"]["backbone"], method=method, auxiliary=auxiliary,
                                 callbacks=callbacks, random_state=seed,
                                 **{k: v for k, v in training.items() if k != "random_state"})
        clf._validate_params()
        _check_device(clf.device)
    from feature_extraction import load_backbone

    from ._auxiliary import resolve_auxiliary

    with _config_errors("model"):
        backbone = load_backbone(config["model"]["backbone"], **config["model"].get("options", {}))
    with _config_errors("auxiliary"):
        resolve_auxiliary(auxiliary, backbone)
    clf.set_params(backbone=backbone)
    with _config_errors("data"):
        ds, groups, group_names = load_data(config["data"], seed)
    rows = _split_rows(ds, groups, config["data"], seed)
    _check_output(output, overwrite)
    base = as_inputs(ds, backbone.modality)
    y = ds.labels
    tr, va, te = rows["train"], rows["val"], rows["test"]
    start = time.perf_counter()
    try:
        clf.fit(SubsetInputs(base, tr), y[tr], group_labels=groups[tr],
                X_val=SubsetInputs(base, va), y_val=y[va], group_labels_val=groups[va])
    except CheckpointMismatchError as exc:
        what = format_differences(exc.differences) if exc.differences else "written by an older skgroup"
        raise ConfigError(
            f"{output / 'checkpoints'} holds checkpoints of a different run ({what}): choose another --output, "
            "or pass --overwrite to train afresh there."
        ) from None
    seconds = time.perf_counter() - start
    pred = clf.predict(SubsetInputs(base, te))
    report = group_accuracies(y[te], pred, group_labels=groups[te], confidence_level=0.95, random_state=seed)
    metrics = {
        "test_accuracy": float(report.accuracy),
        "test_worst_group_accuracy": float(report.worst_group_accuracy),
        "test_worst_group_ci": [float(c) for c in report.worst_group_ci],
        "groups": {group_names[int(g)] if isinstance(g, (int, np.integer)) else str(g): float(acc)
                   for g, acc in zip(report.groups, report.accuracies)},
        "best_iteration": clf.best_iteration_,
        "fit_seconds": seconds,
        "auxiliary": None if auxiliary is None else {"task": type(auxiliary).__name__, **auxiliary.get_params()},
        "n_train": int(tr.size), "n_val": int(va.size), "n_test": int(te.size),
    }
    clf.save(output / "model", overwrite=overwrite)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    # the test rows' labels, groups and predictions: paired comparisons of runs on the same rows
    np.savez(output / "test_predictions.npz", rows=te, y=y[te], group_labels=groups[te], pred=np.asarray(pred))
    stored = _folder_bytes(checkpoints)
    if not keep_checkpoints:
        _remove_checkpoints(checkpoints)
    if not quiet:
        print(f"\ntest accuracy {metrics['test_accuracy']:.4f}, worst-group accuracy "
              f"{metrics['test_worst_group_accuracy']:.4f} (95% CI {metrics['test_worst_group_ci'][0]:.3f}-"
              f"{metrics['test_worst_group_ci'][1]:.3f}); model and logs in {output}")
        if keep_checkpoints and stored:
            print(f"{checkpoints} keeps a resumable state per stage ({stored / 2**20:.0f} MB); the final model is "
                  f"{output / 'model'}. Delete checkpoints/ when done, or set [output] keep_checkpoints = false.")
        elif stored:
            print(f"deleted {checkpoints} ({stored / 2**20:.0f} MB; keep_checkpoints = false).")
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="skgroup-finetune", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CONFIG_HELP,
        description="Fine-tune a backbone with a skgroup method, as a TOML config says. The run folder gets "
                    "log.jsonl, checkpoints/ (a resumable state per stage: a rerun resumes), model/ and "
                    "metrics.json.")
    parser.add_argument("config", help="TOML file with [model], [data], [method], [training], [auxiliary], "
                                       "[output] tables (below)")
    parser.add_argument("--output", help=f"run folder (default: [output] dir of the config, else ./{DEFAULT_OUTPUT})")
    parser.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                        help="override a config entry, e.g. --set data.path=/data/waterbirds "
                             "--set training.device=cuda (VALUE is TOML; bare words are strings)")
    parser.add_argument("--no-progress", action="store_true", help="no per-batch progress bar (epoch lines stay)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--overwrite", action="store_true",
                        help="train afresh in an output folder that holds an earlier run (its checkpoints, log, "
                             "model/ and metrics.json are replaced; other files are kept)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        for item in args.set:
            apply_override(config, item)
        run(config, args.output, quiet=args.quiet, progress=not args.no_progress, overwrite=args.overwrite)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"skgroup-finetune: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
