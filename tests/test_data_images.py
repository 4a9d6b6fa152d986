"""Image sources: the real tarball (a small subset), the folder tree, the cache, errors."""

import os

import numpy as np
import pytest
from PIL import Image

from mmkeras.data import images as images_mod
from mmkeras.data import load_cifar, load_dataset, load_image_folder, load_paired_cifar


@pytest.fixture(scope="module")
def real_subset(cifar_tarball, tmp_path_factory):
    """The first 3 images per class of the real tarball (one pass over it), and the options
    that read them again from the decoded cache this wrote."""
    options = dict(data_dir=os.path.dirname(cifar_tarball), cache_dir=str(tmp_path_factory.mktemp("cache")),
                   limit_per_class=3, progress=False)
    return load_cifar("cifar10", source="tarball", **options), options


def assert_same_paired(a, b):
    assert a.class_names == b.class_names and a.name == b.name
    for split in ("train", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert np.array_equal(x.image, y.image) and np.array_equal(x.label, y.label)
        assert x.text.tolist() == y.text.tolist()


def test_tarball_subset_is_real_cifar10(real_subset):
    s, _ = real_subset
    assert s.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                             "horse", "ship", "truck"]
    assert s.train_images.shape == (30, 32, 32, 3) and s.train_images.dtype == np.uint8
    assert s.test_images.shape == (30, 32, 32, 3)
    assert np.array_equal(np.bincount(s.train_labels), np.full(10, 3))
    # Real photos, not blank arrays: pixel statistics of natural images.
    assert 40 < s.train_images.mean() < 200 and s.train_images.std() > 30


def test_registry_cifar10_is_load_paired_cifar(real_subset):
    _, options = real_subset
    data = load_dataset("cifar10", seed=0, **options)
    assert data.name == "cifar10" and len(data.train) == 30
    assert_same_paired(data, load_paired_cifar("cifar10", seed=0, **options))


def write_image_tree(root, n_per_class=2, size=(12, 10), classes=("b_cls", "a_cls", "c_cls")):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in classes:
            os.makedirs(root / split / cls, exist_ok=True)
            for i in range(n_per_class):
                arr = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(arr).save(root / split / cls / f"{i:04d}.{ext}")


def test_folder_tree_any_size_and_class_count(tmp_path):
    write_image_tree(tmp_path, n_per_class=3, size=(12, 10))
    s = load_image_folder(str(tmp_path), progress=False)
    assert s.class_names == ["a_cls", "b_cls", "c_cls"]  # sorted, stable label ids
    assert s.train_images.shape == (9, 12, 10, 3)
    assert list(s.train_labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # PNG files are lossless: the pixels read back exactly.
    png = np.asarray(Image.open(tmp_path / "train" / "a_cls" / "0001.png"))
    assert np.array_equal(s.train_images[1], png)


def test_folder_tree_limit_per_class(tmp_path):
    write_image_tree(tmp_path, n_per_class=3)
    s = load_image_folder(str(tmp_path), limit_per_class=1, progress=False)
    assert len(s.train_labels) == 3 and len(s.test_labels) == 3


def test_corrupt_file_named_in_error(tmp_path):
    write_image_tree(tmp_path, n_per_class=1)
    (tmp_path / "train" / "a_cls" / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        load_image_folder(str(tmp_path), progress=False)


def test_load_cifar_from_folder_then_cache(tmp_path, monkeypatch):
    data_dir, cache_dir = tmp_path / "data", tmp_path / "cache"
    write_image_tree(data_dir / "cifar10", n_per_class=2, size=(8, 8))
    first = load_cifar("cifar10", data_dir=str(data_dir), cache_dir=str(cache_dir), progress=False)
    assert (cache_dir / "cifar10.npz").is_file()

    # The second call must come from the cache: decoding is made to fail.
    def boom(*a, **k):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(images_mod, "load_image_folder", boom)
    again = load_cifar("cifar10", data_dir=str(data_dir), cache_dir=str(cache_dir), progress=False)
    assert np.array_equal(first.train_images, again.train_images)
    assert again.class_names == first.class_names


def test_no_source_error_names_every_option(tmp_path, monkeypatch):
    def offline(name, *a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(images_mod, "load_keras_dataset", offline)
    monkeypatch.setattr(images_mod, "load_tfds_dataset", offline)
    with pytest.raises(FileNotFoundError) as err:
        load_cifar("cifar100", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"), progress=False)
    msg = str(err.value)
    for option in ("cache", "tarball", "folder tree", "keras.datasets", "tfds", "MMKERAS_DATA_DIR", "synthetic"):
        assert option in msg


def test_unknown_dataset_and_source():
    with pytest.raises(ValueError, match="'cifar11'"):
        load_cifar("cifar11")
    with pytest.raises(ValueError, match="'web'"):
        load_cifar("cifar10", source="web")
