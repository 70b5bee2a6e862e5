"""Where the benchmark scripts find real data: $SKGROUP_DATA, else the project's ../shared/data.

The library itself reads ``data_home``, ``$SKGROUP_DATA`` or ``~/skgroup_data``
only; these scripts are the project's own harness, run from a checkout that
has its data folder beside it.
"""

import os
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def use_project_data():
    """Point SKGROUP_DATA at ../shared/data when it is unset and that folder exists."""
    if "SKGROUP_DATA" not in os.environ and SHARED.is_dir():
        os.environ["SKGROUP_DATA"] = str(SHARED)
