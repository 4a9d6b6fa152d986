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


@pytest.fixture(scope="module")
def export_dir(tiny_datasets, tmp_path_factory):
    """An export of an untrained seed_concat on tiny_datasets (16x16 images), one per module."""
    import keras

    import mmkeras
    from mmkeras.export import export_model

    keras.utils.set_random_seed(7)
    model = mmkeras.create_model("seed_concat", **tiny_datasets.model_kwargs())
    return export_model(model, tmp_path_factory.mktemp("exports") / "seed",
                        vectorizer=tiny_datasets.vectorizer, class_names=tiny_datasets.class_names,
                        dataset="synthetic")


@pytest.fixture(scope="module")
def predictor(export_dir):
    from mmkeras.predict import Predictor

    return Predictor(export_dir)


MANIFEST_IMAGE_SIZE = 12  # of the images manifest_file writes


@pytest.fixture(scope="session")
def manifest_file(tmp_path_factory):
    """(path, paired): a tiny CSV manifest (12x12 PNG paths, text, integer labels, a `split`
    column: train rows, then test rows) and the PairedData it was written from."""
    from mmkeras.data import make_synthetic
    from test_data_manifest import write_manifest  # the manifest generator of the data tests

    paired = make_synthetic(n_train=48, n_test=16, image_size=MANIFEST_IMAGE_SIZE, seed=0)
    return write_manifest(tmp_path_factory.mktemp("manifest"), paired), paired


@pytest.fixture(scope="session")
def trained_unimodal(tiny_datasets):
    """{"image": image_simple_cnn, "text": text_lstm}, each trained 2 epochs on tiny_datasets:
    the experts and warm-start sources of fused-model tests."""
    import keras

    import mmkeras
    from mmkeras import training

    keras.utils.set_random_seed(0)
    models = {}
    for modality, name in (("image", "image_simple_cnn"), ("text", "text_lstm")):
        model = mmkeras.create_model(name, **tiny_datasets.model_kwargs())
        training.compile_model(model)
        training.fit(model, tiny_datasets, epochs=2, verbose=0)
        models[modality] = model
    return models
