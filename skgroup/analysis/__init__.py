"""Analysis tools: why a group-robust method works (or not), as tidy tables and plots.

* :func:`error_set_analysis` - JTT's error-set precision, recall, empirical
  rate and enrichment per group (Liu et al., 2021, Sec. 5.3).
* :func:`gradient_norms_by_group` - last-layer gradient norms per group on
  held-out data (GradTune, Fig. 2 and 4).
* :func:`group_spectra`, :func:`spectral_imbalance` - top eigenvalues of the
  group feature covariances and the intra-class spectral norm ratio rho(y)
  (LaBonte et al., 2023, Sec. 5).
* :func:`cvar_set_composition` - the group composition of CVaR DRO's
  worst-alpha set over training (JTT, Fig. 4); :func:`jtt_error_set_ablation`
  - static against dynamic JTT error sets (JTT, Table 6).
* :func:`group_accuracy_table`, :func:`hyperparameter_table` - comparisons
  across estimators and hyperparameters; :func:`plot_search_results` - a
  :class:`~skgroup.model_selection.RobustSearchCV`'s candidates with their
  bootstrap intervals.

Tables are pandas DataFrames when pandas is installed, else dicts of numpy
columns. The ``plot_*`` functions need matplotlib (``pip install
'skgroup[analysis]'``), take a table and an optional ``ax`` and return the
Axes.
"""

from ._comparison import group_accuracy_table, hyperparameter_table
from ._dynamics import (
    cvar_set_composition,
    jtt_error_set_ablation,
    worst_alpha_mask,
    worst_set_composition,
)
from ._error_set import error_set_analysis, misclassified
from ._gradients import gradient_norm_summary, gradient_norms_by_group
from ._plots import (
    candidate_label,
    plot_cvar_set_composition,
    plot_error_set_ablation,
    plot_error_set_enrichment,
    plot_gradient_norms,
    plot_group_accuracies,
    plot_search_results,
    plot_spectra,
    plot_worst_group_vs_param,
)
from ._spectral import group_spectra, intra_class_spectral_ratio, spectral_imbalance
from ..utils._tables import make_table, table_columns

__all__ = [
    "candidate_label",
    "cvar_set_composition",
    "error_set_analysis",
    "gradient_norm_summary",
    "gradient_norms_by_group",
    "group_accuracy_table",
    "group_spectra",
    "hyperparameter_table",
    "intra_class_spectral_ratio",
    "jtt_error_set_ablation",
    "make_table",
    "misclassified",
    "plot_cvar_set_composition",
    "plot_error_set_ablation",
    "plot_error_set_enrichment",
    "plot_gradient_norms",
    "plot_group_accuracies",
    "plot_search_results",
    "plot_spectra",
    "plot_worst_group_vs_param",
    "spectral_imbalance",
    "table_columns",
    "worst_alpha_mask",
    "worst_set_composition",
]
