import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


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
        pytest.skip("real data folder (../shared/data or $SKGROUP_DATA) is absent")
    return home
