"""Shared fixtures. Tests are CPU-only, small and offline."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_data_dir():
    """MMKERAS_DATA_DIR, else ../shared/data beside the repository (as CI has it)."""
    return os.environ.get("MMKERAS_DATA_DIR") or os.path.join(REPO, "..", "shared", "data")


@pytest.fixture(scope="session")
def cifar_tarball():
    path = os.path.join(shared_data_dir(), "cifar10-jpg.tar.xz")
    if not os.path.isfile(path):
        pytest.skip(f"real CIFAR-10 tarball not found at {path}")
    return path


@pytest.fixture(scope="session")
def synthetic_data():
    from mmkeras.data import make_synthetic

    return make_synthetic(n_train=240, n_test=60, image_size=16, seed=0)


@pytest.fixture(scope="session")
def tiny_datasets(synthetic_data):
    from mmkeras.data import make_datasets

    return make_datasets(synthetic_data, batch_size=32, vocab_size=40, sequence_length=10,
                         validation_fraction=0.2, seed=0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
