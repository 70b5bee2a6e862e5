"""MMD feature alignment across environments, as DomainBed's and SubpopBench's ``MMD``."""

from ..objectives import MMDPenalty, Mean, Objective
from ..utils import fill_doc
from ._environments import FeatureAlignmentClassifier, alignment_search_space
from ._spec import MethodSpec, register_method

__all__ = ["MMDClassifier"]


@fill_doc
class MMDClassifier(FeatureAlignmentClassifier):
    """MLP head trained with a Gaussian-kernel MMD penalty between the environments' features.

    Maximum mean discrepancy between the environments' feature
    distributions, in the form DomainBed and SubpopBench train it (their
    ``MMD``, ``AbstractMMD`` with the Gaussian kernel; after Li, Pan, Wang &
    Kot, "Domain Generalization with Adversarial Feature Learning", CVPR
    2018, without its adversarial part): the mean loss plus, averaged over
    the pairs of environments present in the minibatch, the biased squared
    MMD of their penultimate features under a sum of Gaussian kernels,

    .. math:: \\min_\\theta \\frac{1}{m}\\sum_i \\ell(f_\\theta(x_i), y_i)
              + \\gamma\\,\\binom{E}{2}^{-1}\\sum_{e<f}
              \\overline{K_{ee}} + \\overline{K_{ff}} - 2\\,\\overline{K_{ef}}
              + \\frac{\\lambda_2}{2}\\lVert W\\rVert^2 ,
              \\qquad K(h, h') = \\sum_{g} e^{-g \\lVert h - h'\\rVert^2}

    with ``g`` in {1e-3, 1e-2, ..., 1e3} (the references' bandwidths, on
    squared distances, fixed whatever the features' scale) and the bars
    means over the two environments' rows
    (:class:`~skgroup.objectives.MMDPenalty`).

    The penalty reads the penultimate features (the input of the last
    linear layer, captured by the engine: ``Stage(capture_features=True)``).
    With a linear head those are X itself, which training cannot move: the
    penalty would be a constant with no gradient and the fit ERM's. The head
    is therefore an MLP by default (``hidden_layer_sizes=(256,)``, the
    width of DomainBed's and SubpopBench's MLP featurizer) whose hidden
    layer is the representation the penalty aligns, as the backbone's
    features are in the references; ``hidden_layer_sizes=()`` is refused.
    Fine-tuned (``FineTuneClassifier(method=MMDClassifier())``), the features are
    the backbone's pooled output, as in the references, and the head is
    linear (the method's ``hidden_layer_sizes`` is not used there).

    Environments: the spurious attribute's values by default, as SubpopBench
    uses them (``environments``); aligning the attribute values' feature
    distributions removes what the representation knows of the attribute.
    Training needs group labels (``fit(X, y, group_labels=g)``, requested
    through metadata routing); without them the training rows are one
    environment, the penalty is 0 and a :class:`SingleEnvironmentWarning`
    says so. Environments of one class each (``environments='groups'`` with
    (class, attribute) cells) would align the classes with each other and
    are warned about too.

    Defaults and why: ``penalty_weight=1`` is DomainBed's and SubpopBench's
    default ``mmd_gamma``; the risk is the mean loss of the batch
    (SubpopBench's ``F.cross_entropy(outputs, y)``); ``l2_reg=1e-4`` is
    their ``weight_decay``; AdamW at batch and learning rate ``'auto'`` as
    the library's other minibatch heads. Measurements and the differences
    from the reference code: ``docs/methods/mmd.rst``.

    Parameters
    ----------
    penalty_weight : float, default=1.0
        The weight of the penalty (the references' ``mmd_gamma``).
    {environments}
    {loss}
    hidden_layer_sizes : tuple of int, default=(256,)
        Widths of the ReLU hidden layers of the MLP head; the last one's
        output is the representation the penalty aligns. Must not be empty.
    {l2_reg}
    solver : {{'adamw', 'sgd'}}, default='adamw'
        Minibatch optimiser (SGD with momentum 0.9): the penalty is defined
        per minibatch.
    max_iter : int, default=10
        Epochs.
    {batch_size}
    {learning_rate}
    {lr_schedule}
    {early_stopping}
    {validation_fraction}
    {monitor}
    {n_iter_no_change}
    {restore_best}
    {callbacks}
    {device}
    {dtype}
    {random_state}
    {verbose}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    environment_names_ : tuple
        The environments: for ``environments='attribute'`` the group names
        each one joins, else the group names.
    coefs_, intercepts_ : lists of ndarray
        Weights of every layer (``coefs_[i]`` has shape (fan_in, fan_out)).
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Mean training objective (risk plus weighted penalty) per epoch.
    history_, validation_scores_, best_iteration_ :
        As in :class:`ERMClassifier`.
    n_features_in_ : int

    Examples
    --------
    >>> from skgroup import MMDClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> X, y, g = make_spurious_features(1000, random_state=0)
    >>> clf = MMDClassifier(max_iter=3, random_state=0).fit(X, y, group_labels=g)
    >>> clf.environment_names_
    ((0, 2), (1, 3))
    """

    _stage_name = "mmd"

    def _objective(self, ctx, environments, weight):
        return Objective(self._loss(ctx), Mean(), [MMDPenalty(environments, weight)])


register_method(MethodSpec(
    MMDClassifier,
    search_space=alignment_search_space,
    fast_params={"max_iter": 3, "batch_size": 64, "hidden_layer_sizes": (16,)},
    check_params={"hidden_layer_sizes": (16,)},
    quick_grid={"penalty_weight": [0.1, 1.0]},
    trains_on_group_labels=True,
))
