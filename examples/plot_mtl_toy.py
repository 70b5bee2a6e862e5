"""
Regularized multitask learning keeps the core feature (Sec. 3, Fig. 5)
=======================================================================

Kulkarni et al. (TMLR 2024) study a task with one core feature
``x_core ~ N(y, 0.6)`` and one spurious feature ``x_spur ~ N(a, 0.1)``,
where a = y on 900 of the 1,000 training points. A diagonal featurizer
``h = a * x`` has a fixed L1 budget, ``||a||_1 = tau``: with a small budget
it can keep one feature only.

* Trained on the end task alone, it keeps whichever feature its randomly
  initialised end head starts favouring; on this seed, the spurious one,
  and the minority groups (a != y) are misclassified.
* Multitasked with reconstructing x from ``x + N(0, I)`` (alpha = 10), it
  keeps the core feature: reconstruction favours the feature of larger
  variance, and the end head can only read what the featurizer kept.

The figure shows the training points by group and each model's half-space
(the region it labels y = +1), as the paper's Fig. 5 does. Run with
``--quick`` (or ``SKGROUP_EXAMPLES_QUICK=1``, as the test suite does) for a short schedule.
"""

# %%
# Data and models
# ---------------
import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from skgroup import RegularizedMTLClassifier
from skgroup.datasets import make_mtl_toy
from skgroup.metrics import worst_group_accuracy

parser = argparse.ArgumentParser(description="Sec. 3 of Kulkarni et al. (2024): learned half-spaces")
parser.add_argument("--quick", action="store_true", help="40 epochs instead of the paper's 500")
parser.add_argument("--out", default="mtl_toy_halfspaces.png")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--epochs", type=int, default=None, help="override the schedule (a smoke test)")
args, _ = parser.parse_known_args()
quick = args.quick or os.environ.get("SKGROUP_EXAMPLES_QUICK", "0") != "0"
epochs = args.epochs or (40 if quick else 500)

data = make_mtl_toy(random_state=args.seed)
common = dict(featurizer="diagonal", l1_radius=0.1, alpha_reg=0.0, noise_std=1.0, solver="sgd",
              batch_size=64, learning_rate=1e-3, max_iter=epochs, l2_reg=0.0,
              random_state=args.seed)
models = {
    "end task only": RegularizedMTLClassifier(alpha_aux=0.0, **common),
    "regularized MTL": RegularizedMTLClassifier(alpha_aux=10.0, **common),
}
for name, model in models.items():
    model.fit(data.train.X, data.train.y)
    wga = worst_group_accuracy(data.test.y, model.predict(data.test.X), group_labels=data.test.group_labels)
    print(f"{name}: a = {np.round(model.coefs_[0], 3)}, test worst-group accuracy {wga:.3f}")

# %%
# The learned half-spaces
# -----------------------
X, g = data.train.X, data.train.group_labels
lo, hi = X.min(axis=0) - 0.5, X.max(axis=0) + 0.5
xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
grid = np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float32)

fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
styles = {0: ("tab:blue", "o", "y=-1, a=-1"), 1: ("tab:cyan", "x", "y=-1, a=+1 (minority)"),
          2: ("tab:orange", "x", "y=+1, a=-1 (minority)"), 3: ("tab:red", "o", "y=+1, a=+1")}
for ax, (name, model) in zip(axes, models.items()):
    positive = model.predict(grid).reshape(xx.shape) == 1
    ax.contourf(xx, yy, positive, levels=[-0.5, 0.5, 1.5], colors=["white", "moccasin"], alpha=0.7)
    ax.contour(xx, yy, positive, levels=[0.5], colors="k", linewidths=1.5)
    for group, (color, marker, label) in styles.items():
        sel = g == group
        ax.scatter(X[sel, 0], X[sel, 1], s=12 if marker == "o" else 30, c=color, marker=marker, alpha=0.6,
                   label=label)
    wga = worst_group_accuracy(data.test.y, model.predict(data.test.X), group_labels=data.test.group_labels)
    a = model.coefs_[0]
    ax.set_title(f"{name}: a = ({a[0]:.2f}, {a[1]:.2f}), test WGA {wga:.2f}")
    ax.set_xlabel("core feature")
axes[0].set_ylabel("spurious feature")
axes[1].legend(loc="lower right", fontsize=8)
fig.suptitle("||a||_1 = 0.1: the shaded half-space is predicted y = +1")
fig.tight_layout()
fig.savefig(args.out, dpi=120)
print(f"wrote {args.out}")
