"""FineTuneClassifier: any skgroup method, training a whole backbone end to end."""

import copy
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._groups import check_group_labels
from ..engine import FitContext, TrainOptions, run_plan
from ..engine._batches import check_device
from ..engine._callbacks import MONITORS, Callback
from ..engine._fit import fit_classes, resolve_seed, split_fit_data, store_fit_result
from ..estimators import ERMClassifier
from ..estimators._spec import registered_spec
from ..estimators._base import BaseHeadClassifier
from ._auxiliary import resolve_auxiliary
from ._executor import FineTuneExecutor, SubsetInputs
from ._inputs import RandomResizedCropFlip, as_inputs
from ._model import save_finetuned

__all__ = ["FineTuneClassifier"]


#: Registered estimators with no plan a backbone can be trained by, and what to do instead.
class FineTuneClassifier(ClassifierMixin, BaseEstimator):
    """Fine-tune a whole backbone with any skgroup method.

    The method (``method``: an ERM, JTT, Group DRO, CVaR, class-balancing or
    GradTune estimator, or any skgroup head estimator) says what is
    trained: its objective, sampler and stages (JTT's identification run and
    upweighted run; GradTune's base model and last-layer fine-tuning); its
    method parameters (``lambda_up``, ``id_epochs``, ``eta``, ``alpha``,
    ``balancing``, ...) are used, while its head-training settings
    (learning rate, epochs, batch size) are replaced by this estimator's,
    which suit a backbone. The same objectives, samplers, plans and loop as
    the head estimators run here (:mod:`skgroup.engine`); nothing is
    implemented twice.

    ``X`` is what the backbone reads: image paths, PIL images, a uint8 image
    array, texts, text pairs, or a :mod:`feature_extraction` dataset.

    ``auxiliary`` adds regularized multitask learning (Kulkarni et al.,
    "Multitask Learning Can Improve Worst-Group Outcomes", TMLR 2024,
    eq. 9): masked language modelling (text) or masked image modelling
    (images) on the end-task inputs through the same body, and an L1
    penalty on the pooled representations, with the method's objective as
    the end-task loss (``docs/finetune_mtl.rst``). No group labels are used.

    Parameters
    ----------
    backbone : str, path, feature_extraction.Backbone or torch.nn.Module
        What :func:`feature_extraction.load_backbone` loads (a transformers
        folder, a torchvision or EfficientNet-Lite name with local weights,
        a module with ``features_fn``), or a loaded Backbone. A fit trains a
        copy; the parameter is never changed.
    backbone_options : dict or None, default=None
        Keyword arguments of ``load_backbone`` (``pooling``, ``pair_mode``
        — 'template' for a cross-encoder over sentence pairs —, ``max_length``,
        ``image_size``, ``weights``, ...). ``pooling='pooler'`` reads a
        BERT-family checkpoint's pretrained pooler, as
        ``BertForSequenceClassification`` does; a sentence-transformers
        checkpoint keeps its own pooling (mean for all-MiniLM-L6-v2, its
        training objective). Normalisation is ``normalize`` below.
    method : skgroup estimator or None, default=None
        The method; None is :class:`~skgroup.ERMClassifier`. Group labels
        reach ``fit`` by routing exactly when the method requests them.
        Every registered estimator fine-tunes except DFR (a liblinear refit
        of the last layer on held-out rows: fit it on ``transform``'s
        features) and RegularizedMTLClassifier (its fine-tuning form is
        ``auxiliary=``), which are refused with what to do instead.
    auxiliary : {'mlm', 'mim'}, MaskedLM, MaskedImageModeling or None, default=None
        The auxiliary task of regularized multitask fine-tuning, with its
        weights ``alpha_aux`` and ``alpha_reg`` (``set_params(
        auxiliary__alpha_reg=...)`` tunes them); 'mlm' / 'mim' are
        ``MaskedLM()`` / ``MaskedImageModeling()`` with their defaults.
        Every stage that trains the whole backbone (both of JTT's) gets it.
    max_iter : int, default=3
        Epochs (of each training stage; a method's own stage lengths, e.g.
        JTT's ``id_epochs``, apply to their stage).
    batch_size : int, default=32
        Rows per optimizer step over all processes (each of k ``torchrun``
        processes takes ``batch_size / k``), before accumulation.
    learning_rate : float, default=2e-5
        Peak learning rate of the backbone.
    head_learning_rate : float or None, default=None
        Peak learning rate of the new linear head; None: ``learning_rate``,
        as a transformers classifier trains its head (``docs/finetune.rst``
        measures both against a bare loop).
    head_init : {'auto', 'zeros', 'normal', 'uniform'}, default='auto'
        The new head's initial weights. 'auto' is what the model's own new
        classifier gets: ``normal(0, config.initializer_range)`` (0.02 for
        BERT / MiniLM) for transformers models, PyTorch's default ``Linear``
        initialisation for torchvision, EfficientNet-Lite and custom
        modules; and zeros for a backbone without parameters, so that the
        path then trains exactly what the head estimators train. A zero
        head passes no gradient to the backbone on the first step and only
        what the slowly growing head passes back afterwards: fine-tuning
        learns far more slowly from it (``docs/finetune.rst``).
    head_dropout : 'auto' or float, default='auto'
        Dropout on the pooled features before the head, while training.
        'auto': what ``BertForSequenceClassification`` applies for a
        transformers text model (``config.classifier_dropout``, else
        ``hidden_dropout_prob``, 0.1 for BERT / MiniLM); 0 for image models,
        whose own dropout (EfficientNet-Lite's, torchvision's) is inside the
        backbone already, and for a backbone without parameters.
    normalize : 'auto' or bool, default='auto'
        L2-normalise a text backbone's pooled features before the head.
        'auto' is False: the unit-norm sentence embedding of a
        sentence-transformers checkpoint suits frozen features, but a head
        on unit vectors keeps the logits tiny while the backbone trains
        (``docs/finetune.rst``). True keeps the checkpoint's
        normalisation. The saved model records the choice.
    solver : {'adamw', 'sgd'}, default='adamw'
    weight_decay : float, default=0.01
        The optimizer's weight decay (decoupled for AdamW, coupled for SGD,
        as the papers' SGD runs use it).
    l2_reg : float, default=0.0
        The heads' coupled L2 penalty ``l2_reg / 2 * ||W||^2`` (weight
        tensors only), if wanted on top.
    lr_schedule : {'linear', 'cosine', 'constant'}, default='linear'
    warmup : float or int, default=0.1
        Warm-up steps, or a fraction of the run's steps.
    grad_clip : float or None, default=1.0
        Clip the gradient norm to this value; None or 0: no clipping.
    accumulate : int, default=1
        Micro-batches per optimizer step.
    amp : {None, 'bf16', 'fp16'}, default=None
        Autocast precision on CUDA (fp16 with a gradient scaler).
    augment : 'auto' or bool, default='auto'
        Random resized crop and horizontal flip of training images
        ('auto': on for image backbones with a crop size).
    channels_last : 'auto' or bool, default='auto'
        NHWC memory format for convolutional backbones on CUDA.
    eval_batch_size : int or None, default=None
        Batch of evaluation passes; None: 2 * ``batch_size``.
    num_workers : int, default=0
        DataLoader worker processes.
    early_stopping : 'auto' or bool, default='auto'
        As in the head estimators: validation every epoch, best epoch kept;
        'auto' validates when ``X_val`` is given, and for a method whose
        last epoch is unreliable (LfF) also without it, on
        ``validation_fraction`` of the rows when every class gets 20.
    validation_fraction : float, default=0.1
    monitor : str, default='auto'
        'bias_unsupervised' uses an ERM head on the pretrained backbone's
        features as the biased model.
    n_iter_no_change : int or None, default=None
    restore_best : bool, default=True
    callbacks : list of skgroup.engine.Callback or None, default=None
        E.g. ``[Checkpoint(dirname)]`` to resume a killed run.
    device : str, default='cpu'
    random_state : int or None, default=None
    verbose : int, default=0

    Attributes
    ----------
    classes_ : ndarray
    model_ : skgroup.finetune.BackboneClassifier
        The fine-tuned backbone and head (on the CPU).
    method_ : the fitted clone of ``method`` (e.g. JTT's ``error_set_``).
    history_, validation_scores_, best_iteration_, n_iter_, loss_curve_ :
        Of the last stage, as in :class:`~skgroup.ERMClassifier`.
    """

    _parameter_constraints = {
        "backbone": "no_validation",
        "backbone_options": [dict, None],
        "method": "no_validation",  # _method() names what cannot fine-tune and why
        "auxiliary": "no_validation",  # resolve_auxiliary checks it against the backbone's modality
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="left")],
        "head_learning_rate": [Interval(Real, 0, None, closed="left"), None],
        "head_init": [StrOptions({"auto", "zeros", "normal", "uniform"})],
        "head_dropout": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="left")],
        "normalize": ["boolean", StrOptions({"auto"})],
        "solver": [StrOptions({"adamw", "sgd"})],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "l2_reg": [Interval(Real, 0, None, closed="left")],
        "lr_schedule": [StrOptions({"linear", "cosine", "constant"})],
        "warmup": [Interval(Real, 0, None, closed="left")],
        "grad_clip": [Interval(Real, 0, None, closed="left"), None],
        "accumulate": [Interval(Integral, 1, None, closed="left")],
        "amp": [StrOptions({"bf16", "fp16"}), None],
        "augment": ["boolean", StrOptions({"auto"})],
        "channels_last": ["boolean", StrOptions({"auto"})],
        "eval_batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "early_stopping": ["boolean", StrOptions({"auto"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "monitor": [StrOptions({"auto", *MONITORS})],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), None],
        "restore_best": ["boolean"],
        "callbacks": [list, None],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    __metadata_request__fit = {"X_val": True, "y_val": True, "group_labels_val": True, "group_labels": False}

    def __init__(
        self,
        backbone,
        *,
        backbone_options=None,
        method=None,
        auxiliary=None,
        max_iter=3,
        batch_size=32,
        learning_rate=2e-5,
        head_learning_rate=None,
        head_init="auto",
        head_dropout="auto",
        normalize="auto",
        solver="adamw",
        weight_decay=0.01,
        l2_reg=0.0,
        lr_schedule="linear",
        warmup=0.1,
        grad_clip=1.0,
        accumulate=1,
        amp=None,
        augment="auto",
        channels_last="auto",
        eval_batch_size=None,
        num_workers=0,
        early_stopping="auto",
        validation_fraction=0.1,
        monitor="auto",
        n_iter_no_change=None,
        restore_best=True,
        callbacks=None,
        device="cpu",
        random_state=None,
        verbose=0,
    ):
        self.backbone = backbone
        self.backbone_options = backbone_options
        self.method = method
        self.auxiliary = auxiliary
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.head_init = head_init
        self.head_dropout = head_dropout
        self.normalize = normalize
        self.solver = solver
        self.weight_decay = weight_decay
        self.l2_reg = l2_reg
        self.lr_schedule = lr_schedule
        self.warmup = warmup
        self.grad_clip = grad_clip
        self.accumulate = accumulate
        self.amp = amp
        self.augment = augment
        self.channels_last = channels_last
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.monitor = monitor
        self.n_iter_no_change = n_iter_no_change
        self.restore_best = restore_best
        self.callbacks = callbacks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # -- routing: group labels go to fit exactly when the method trains on them ---------
    def _get_metadata_request(self):
        requests = super()._get_metadata_request()
        method = self.method if self.method is not None else ERMClassifier()
        wanted = method.get_metadata_routing().fit.requests.get("group_labels") is True
        if wanted and "_metadata_request" not in self.__dict__:  # a user's set_fit_request wins
            requests.fit.add_request(param="group_labels", alias=True)
        return requests

    # -- fitting ---------------------------------------------------------------------
    def _load_backbone(self):
        from feature_extraction import Backbone, load_backbone

        if self.backbone_options and "normalize" in self.backbone_options:
            raise ValueError("backbone_options['normalize'] is set by FineTuneClassifier(normalize=...) "
                             "('auto': off while the backbone trains); move it there.")
        if isinstance(self.backbone, Backbone):
            if self.backbone_options:
                raise ValueError("backbone_options apply to a backbone that is loaded here; this one is loaded.")
            backbone = self.backbone
        else:
            backbone = load_backbone(self.backbone, **(self.backbone_options or {}))
        return _with_normalization(backbone, self.normalize)

    @property
    def _auto_validation_split(self):
        # the method's own default (see BaseHeadClassifier._auto_validation_split): the path trains what the
        # head estimator trains
        return bool(getattr(self.method, "_auto_validation_split", False))

    def _method(self):
        name = type(self.method).__name__
        spec = registered_spec(name)
        if spec is not None and not spec.finetune:
            raise ValueError(f"method={name}() cannot fine-tune a backbone: {spec.finetune_instead}.")
        method = ERMClassifier() if self.method is None else clone(self.method)
        if not isinstance(method, BaseHeadClassifier) or not hasattr(method, "_plan"):
            raise TypeError(f"method must be a skgroup estimator that trains by a plan (e.g. JTTClassifier()); got "
                            f"{name}.")
        method._validate_params()
        method._check_params()
        return method

    def _options(self, device=None):
        return TrainOptions(
            solver=self.solver, max_iter=self.max_iter, batch_size=self.batch_size,
            learning_rate=self.learning_rate, lr_schedule=self.lr_schedule, warmup_steps=self.warmup,
            l2_reg=self.l2_reg, weight_decay=self.weight_decay, grad_clip=self.grad_clip,
            accumulate=self.accumulate, amp=self.amp, device=device or self.device,
            eval_batch_size=self.eval_batch_size or 2 * self.batch_size,
        )

    def fit(self, X, y, *, group_labels=None, X_val=None, y_val=None, group_labels_val=None):
        """Fine-tune the backbone with the method.

        Parameters
        ----------
        X : what the backbone reads (see the class docstring), n_samples of them
        y : array-like of shape (n_samples,)
        group_labels : array-like, default=None
            Used in training by methods that request them (Group DRO), and
            to stratify and score the internal validation split.
        X_val, y_val, group_labels_val : validation inputs, default=None
            For early stopping and checkpoint selection.
        """
        self._validate_params()
        check_device(self.device)  # torch's own error on a CPU build is a bare AssertionError
        if any(not isinstance(cb, Callback) for cb in self.callbacks or []):
            raise TypeError("callbacks must be a list of skgroup.engine.Callback objects.")
        from feature_extraction import distributed

        dist_info = distributed.setup(self.device)  # under torchrun: one process per device
        try:
            fitted = self._fit(X, y, group_labels, X_val, y_val, group_labels_val, dist_info)
            # every rank done before the group goes: a rank that tears gloo down while its peer is
            # still in the last collective aborts the peer ("terminate called without an active
            # exception"), seen once in ~10 runs of the two-process tests
            distributed.barrier(dist_info)
            return fitted
        finally:
            distributed.teardown(dist_info)

    def _fit(self, X, y, group_labels, X_val, y_val, group_labels_val, dist_info):
        device = self.device
        if dist_info.active and str(device).startswith("cuda"):
            device = f"cuda:{dist_info.local_rank}"
        method = self._method()
        backbone = self._load_backbone()
        auxiliary = resolve_auxiliary(self.auxiliary, backbone)
        inputs = as_inputs(X, backbone.modality)
        self.classes_, y_enc = fit_classes(y, type(self).__name__)
        if y_enc.shape[0] != len(inputs):
            raise ValueError(f"X holds {len(inputs)} samples but y has {y_enc.shape[0]} labels.")
        groups = None if group_labels is None else check_group_labels(group_labels, y_enc.shape[0])
        from feature_extraction import distributed

        seed = distributed.broadcast(resolve_seed(self.random_state), dist_info)  # every rank draws the same epochs
        data = split_fit_data(
            self, inputs, y_enc, groups, X_val=X_val, y_val=y_val, group_labels_val=group_labels_val, seed=seed,
            check_X_val=lambda Xv: as_inputs(Xv, backbone.modality), subset=SubsetInputs,
        )
        inputs, y_enc, groups, rows = data.X, data.y, data.groups, data.rows
        validation, stopping = data.validation, data.stopping
        augment = self.augment
        size = getattr(getattr(backbone, "preprocessing", None), "size", None)
        if augment == "auto":
            augment = backbone.modality == "image" and size is not None
        if augment and (backbone.modality != "image" or size is None):
            raise ValueError("augment=True needs an image backbone with a crop size (ImagePreprocessing).")
        channels_last = self.channels_last
        if channels_last == "auto":
            channels_last = bool(getattr(backbone, "channels_last_ok", False)) and str(self.device).startswith("cuda")
        executor = FineTuneExecutor(
            backbone, inputs, y_enc, len(self.classes_), validation=validation, early_stopping=stopping,
            head_learning_rate=self.head_learning_rate, head_init=self.head_init, head_dropout=self.head_dropout,
            augment=RandomResizedCropFlip(size) if augment else None, num_workers=self.num_workers,
            pin_memory=str(self.device).startswith("cuda"), channels_last=channels_last,
            eval_batch_size=self.eval_batch_size or 2 * self.batch_size, callbacks=self.callbacks or [],
            verbose=self.verbose if dist_info.is_main else 0, classes=self.classes_, device=device, seed=seed,
            auxiliary=auxiliary,
        )
        if validation is not None and stopping["monitor"] == "bias_unsupervised":
            validation.y_pred_biased = _frozen_erm_predictions(executor, validation, seed)
        method.classes_ = self.classes_
        ctx = FitContext(y=y_enc, n_classes=len(self.classes_), options=self._options(device), seed_base=seed,
                         groups=groups, executor=executor, rows=rows)
        result = run_plan(method._plan(ctx), executor)
        self.method_ = method
        self.model_ = result.module.eval()
        self.backbone_source_ = backbone.source.get("path")
        store_fit_result(self, result, validation is not None)
        self._executor_settings = dict(eval_batch_size=executor.eval_batch_size, device=device)
        return self

    # -- prediction ----------------------------------------------------------------------
    def _run(self, X, what):
        check_is_fitted(self, "model_")
        backbone = self.model_.backbone
        inputs = as_inputs(X, backbone.modality)
        executor = FineTuneExecutor(backbone, inputs, np.zeros(len(inputs), dtype=np.int64), len(self.classes_),
                                    eval_batch_size=self._executor_settings["eval_batch_size"],
                                    device=self._executor_settings["device"])
        return executor._eval(self.model_, inputs, None, what).astype(np.float64)

    def decision_function(self, X):
        z = self._run(X, "logits")
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X):
        z = self._run(X, "logits")
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.classes_[np.argmax(self._run(X, "logits"), axis=1)]

    def transform(self, X):
        """Penultimate features of the fine-tuned backbone (the head estimators' input)."""
        return self._run(X, "features")

    def save(self, folder, *, overwrite=False):
        """Write the fine-tuned backbone and head (see :func:`skgroup.finetune.save_finetuned`).

        ``folder`` must be absent or empty unless ``overwrite=True``, which
        replaces the files the save writes and keeps the others.
        """
        check_is_fitted(self, "model_")
        return save_finetuned(self.model_, folder, classes=self.classes_, backbone_source=self.backbone_source_,
                              overwrite=overwrite)


def _with_normalization(backbone, normalize):
    """``backbone``, or a shallow copy of it reading its text features with the normalisation asked for."""
    from feature_extraction import TextBackbone

    if not isinstance(backbone, TextBackbone):
        if normalize is True:
            raise ValueError(f"normalize=True applies to text backbones; {backbone.name} is a "
                             f"{backbone.modality} backbone. Leave normalize='auto'.")
        return backbone
    want = False if normalize == "auto" else bool(normalize)
    if backbone.normalize == want:
        return backbone
    out = copy.copy(backbone)  # the module is shared: the fit trains a deep copy of it anyway
    out.normalize = want
    out._identity = {**backbone._identity, "normalize": want}
    return out


def _frozen_erm_predictions(executor, validation, seed):
    """Encoded validation predictions of an ERM head on the pretrained backbone's features."""
    module = executor.new_module(seed)
    train = executor.features(module)
    val = executor._features_of(module, validation.X)
    erm = ERMClassifier(random_state=seed).fit(train, executor.y)
    return erm.predict(val)
