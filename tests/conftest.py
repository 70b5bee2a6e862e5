import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)

# The project's real data lives beside the repository (../shared/data); the
# library never looks there itself, so the suite points SKGROUP_DATA at it.
_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "SKGROUP_DATA" not in os.environ and _SHARED.is_dir():
    os.environ["SKGROUP_DATA"] = str(_SHARED)


@pytest.fixture(autouse=True)
def _routing_off_after_test():
    """Tests that switch metadata routing on must not leak it into others."""
    import sklearn

    yield
    sklearn.set_config(enable_metadata_routing=False)


@pytest.fixture(scope="session")
def data_home():
    from skgroup.datasets import get_data_home

    home = get_data_home(required=False)
    if home is None:
        pytest.skip("the real data folder is absent (../shared/data beside the repository, or $SKGROUP_DATA)")
    return home
