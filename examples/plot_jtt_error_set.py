"""
JTT's error set and what it contains
====================================

Just Train Twice (Liu et al., 2021) upweights the training rows that an
underfit ERM model gets wrong. It works when that error set is *enriched*
in the minority groups: more of them in it than in the data. This example
fits JTT, then asks which groups its error set is made of (the group
labels serve the analysis only; JTT never sees them).
"""

# %%
import os

import matplotlib.pyplot as plt

from skgroup import JTTClassifier
from skgroup.analysis import error_set_analysis, plot_error_set_enrichment
from skgroup.datasets import make_spurious_benchmark
from skgroup.metrics import worst_group_accuracy

# SKGROUP_EXAMPLES_QUICK=1: smaller data and grids (the test suite runs the examples so)
QUICK = os.environ.get("SKGROUP_EXAMPLES_QUICK", "0") != "0"

data = make_spurious_benchmark(600 if QUICK else 3000, 400, 2000, random_state=0)
tr, te = data.train, data.test

# %%
# Two identification models: the default T (few epochs: underfit) and a
# long one (fits the training rows, minority groups included).
for id_epochs in (2, 20 if QUICK else 50):
    jtt = JTTClassifier(id_epochs=id_epochs, random_state=0).fit(tr.X, tr.y)
    table = error_set_analysis(jtt, tr.group_labels)
    wga = worst_group_accuracy(te.y, jtt.predict(te.X), group_labels=te.group_labels)
    print(f"\nid_epochs={id_epochs}: |E| = {jtt.error_set_.sum()} of {len(tr.y)} rows, "
          f"test worst-group accuracy {wga:.3f}")
    print(table.to_string(index=False))

# %%
# Enrichment = share of the error set from a group / share of the data in
# it. Groups 1 and 2 (label and attribute disagree) are the minorities.
jtt = JTTClassifier(random_state=0).fit(tr.X, tr.y)
ax = plot_error_set_enrichment(error_set_analysis(jtt, tr.group_labels), group_names=data.group_names)
ax.set_title("JTT's error set (default identification model)")
plt.tight_layout()
if not QUICK:
    plt.show()
