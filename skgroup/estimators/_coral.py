"""Deep CORAL (Sun & Saenko, 2016) across environments, as DomainBed and SubpopBench train it."""

from ..objectives import CORALPenalty, Mean, Objective
from ..utils import fill_doc
from ._environments import FeatureAlignmentClassifier, alignment_search_space
from ._spec import MethodSpec, register_method

__all__ = ["CORALClassifier"]


@fill_doc
class CORALClassifier(FeatureAlignmentClassifier):
    """MLP head trained with the CORAL penalty: the environments' feature means and covariances aligned.

    Deep CORAL: Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep
    Domain Adaptation", ECCV 2016 workshops, in the form DomainBed and
    SubpopBench train it (their ``CORAL``, ``AbstractMMD`` with the
    ``mean_cov`` kernel): the mean loss plus, averaged over the pairs of
    environments present in the minibatch, the mean squared differences of
    the environments' mean penultimate features and of their covariances,

    .. math:: \\min_\\theta \\frac{1}{m}\\sum_i \\ell(f_\\theta(x_i), y_i)
              + \\gamma\\,\\binom{E}{2}^{-1}\\sum_{e<f}
              \\overline{(\\mu_e - \\mu_f)^2} + \\overline{(C_e - C_f)^2}
              + \\frac{\\lambda_2}{2}\\lVert W\\rVert^2

    (:class:`~skgroup.objectives.CORALPenalty`; the bars are means over the
    feature coordinates, :math:`C_e` the unbiased covariance of e's rows).

    The penalty reads the penultimate features (the input of the last
    linear layer, captured by the engine: ``Stage(capture_features=True)``).
    With a linear head those are X itself, which training cannot move: the
    penalty would be a constant with no gradient and the fit ERM's. The head
    is therefore an MLP by default (``hidden_layer_sizes=(256,)``, the
    width of DomainBed's and SubpopBench's MLP featurizer) whose hidden
    layer is the representation the penalty aligns, as the backbone's
    features are in the references; ``hidden_layer_sizes=()`` is refused.
    Fine-tuned (``FineTuneClassifier(method=CORALClassifier())``), the features are
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
    from the reference code: ``docs/methods/coral.rst``.

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
    >>> from skgroup import CORALClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> X, y, g = make_spurious_features(1000, random_state=0)
    >>> clf = CORALClassifier(max_iter=3, random_state=0).fit(X, y, group_labels=g)
    >>> clf.environment_names_
    ((0, 2), (1, 3))
    """

    _stage_name = "coral"

    def _objective(self, ctx, environments, weight):
        return Objective(self._loss(ctx), Mean(), [CORALPenalty(environments, weight)])


register_method(MethodSpec(
    CORALClassifier,
    search_space=alignment_search_space,
    fast_params={"max_iter": 3, "batch_size": 64, "hidden_layer_sizes": (16,)},
    check_params={"hidden_layer_sizes": (16,)},
    quick_grid={"penalty_weight": [0.1, 1.0]},
    trains_on_group_labels=True,
))
