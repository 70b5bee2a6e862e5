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


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Spread the suite over every core with pytest-xdist (a test dependency) unless ``-n`` is given.

    Half of the suite's time is a few subprocess tests (the main job, examples, torchrun, SIGKILL and
    resume); a second core runs the thousands of quick checks beside them. ``-n 0`` runs in one
    process; without pytest-xdist installed nothing changes.
    """
    if hasattr(config, "workerinput") or not config.pluginmanager.hasplugin("xdist"):
        return
    if config.option.numprocesses is None and not config.getoption("usepdb", False):
        config.option.numprocesses = "auto"


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
