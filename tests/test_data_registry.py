"""The dataset registry: every built-in resolves, a user's own dataset registers in a few
lines, path specs reach the right loader, unknown specs and duplicates fail with help,
and take_subset is the benchmark's --quick subset."""

import tarfile

import numpy as np
import pytest

from mmkeras.data import (PairedData, PairedSplit, list_datasets, load_dataset, load_paired_cifar,
                          make_synthetic, register_dataset, resolve_dataset, save_paired, take_subset)
from mmkeras.data import registry
from test_data_images import assert_same_paired as assert_same_data
from test_data_images import write_image_tree

BUILTIN = ["cifar10", "cifar100", "synthetic", "paired_dir", "image_folder"]


@pytest.fixture
def user_dataset():
    """Registers "tiny_user" for one test, then removes it again."""

    @register_dataset("tiny_user")
    def tiny_user(spec, *, seed=0, n=4):
        split = PairedSplit(np.full((n, 2, 2, 3), seed, np.uint8), np.array(["a"] * n), np.zeros(n, np.int64))
        return PairedData(split, split, ["only"], name=spec)

    yield tiny_user
    registry._DATASETS.pop("tiny_user")


def test_builtins_are_registered_in_matching_order():
    assert list_datasets()[: len(BUILTIN)] == BUILTIN
    for name in ("cifar10", "cifar100", "synthetic"):
        assert resolve_dataset(name) == name


def test_synthetic_passes_options_and_seed():
    data = load_dataset("synthetic", seed=3, n_train=20, n_test=7, image_size=12)
    assert_same_data(data, make_synthetic(n_train=20, n_test=7, image_size=12, seed=3))
    assert not np.array_equal(data.train.image, load_dataset("synthetic", seed=4, n_train=20, n_test=7,
                                                             image_size=12).train.image)


def test_synthetic_defaults_are_the_benchmarks(monkeypatch):
    """load_dataset("synthetic") is make_synthetic(n_train=4000, n_test=1000, seed=seed)."""
    calls = []
    monkeypatch.setattr(registry, "make_synthetic", lambda **kw: calls.append(kw) or "made")
    assert load_dataset("synthetic", seed=5) == "made"
    assert calls == [dict(n_train=4000, n_test=1000, seed=5)]


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_names_pass_options_through(name, tmp_path):
    """Offline: a tiny CIFAR folder tree under data_dir; the registry gives exactly what
    load_paired_cifar gives (captions included), the second read coming from the cache."""
    data_dir, cache_dir = tmp_path / "data", tmp_path / "cache"
    write_image_tree(data_dir / name, n_per_class=2, size=(8, 8), classes=("bird", "cat"))
    options = dict(data_dir=str(data_dir), cache_dir=str(cache_dir), progress=False)
    data = load_dataset(name, seed=2, **options)
    assert data.name == name and data.class_names == ["bird", "cat"] and len(data.train) == 4
    assert_same_data(data, load_paired_cifar(name, seed=2, **options))


def test_user_dataset_resolves_and_is_listed(user_dataset):
    assert list_datasets()[-1] == "tiny_user"
    data = load_dataset("tiny_user", seed=7, n=3)
    assert len(data.train) == 3 and data.train.image.max() == 7 and data.name == "tiny_user"


def test_user_path_loader_after_builtins(tmp_path):
    path = tmp_path / "pets.my.npz"
    np.savez(path, image=np.zeros((2, 3, 3, 3), np.uint8), text=np.array(["x", "y"]),
             label=np.array([0, 1]), class_names=np.array(["cat", "dog"]))

    @register_dataset("my_npz", accepts=lambda spec: spec.endswith(".my.npz"))
    def load_my_npz(spec, *, seed=0):
        """A file NAME.my.npz holding image, text, label and class_names arrays."""
        with np.load(spec) as z:
            split = PairedSplit(z["image"], z["text"], z["label"])
            return PairedData(split, split, [str(c) for c in z["class_names"]], name="my_npz")

    try:
        assert resolve_dataset(path) == "my_npz"
        assert load_dataset(str(path)).class_names == ["cat", "dog"]
        with pytest.raises(ValueError, match="my_npz \\(a file NAME.my.npz holding"):
            load_dataset("nothing_here")
    finally:
        registry._DATASETS.pop("my_npz")


def test_paired_directory_resolves_to_load_paired(tmp_path, synthetic_data):
    save_paired(synthetic_data, tmp_path / "pairs")
    assert resolve_dataset(tmp_path / "pairs") == "paired_dir"
    data = load_dataset(tmp_path / "pairs", seed=9)
    assert data.name == "pairs"
    assert np.array_equal(data.test.image, synthetic_data.test.image)
    assert data.train.text.tolist() == synthetic_data.train.text.tolist()
    # A broken paired directory reaches load_paired, whose error names the missing file.
    (tmp_path / "pairs" / "test.npz").unlink()
    with pytest.raises(FileNotFoundError, match="test.npz"):
        load_dataset(tmp_path / "pairs")


def test_image_folder_and_its_tarball_resolve_with_empty_texts(tmp_path):
    root = tmp_path / "shapes"
    write_image_tree(root, n_per_class=2, size=(6, 5), classes=("b", "a"))
    tarball = tmp_path / "shapes.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(root, arcname="shapes")
    folder, packed = (load_dataset(p, progress=False) for p in (root, tarball))
    assert resolve_dataset(root) == resolve_dataset(tarball) == "image_folder"
    assert folder.name == "shapes" and packed.name == "shapes.tar.gz"
    assert folder.class_names == packed.class_names == ["a", "b"]
    assert folder.image_shape == (6, 5, 3) and len(folder.train) == len(folder.test) == 4
    assert np.array_equal(folder.train.image, packed.train.image)
    for split in (folder.train, folder.test, packed.test):
        assert split.text.dtype.kind == "U" and set(split.text.tolist()) == {""}  # text missing


def test_unknown_spec_names_it_and_lists_what_is_accepted(tmp_path):
    with pytest.raises(ValueError) as err:
        load_dataset("cifar11")
    msg = str(err.value)
    assert "'cifar11'" in msg
    for name in BUILTIN:
        assert name in msg
    assert "train.npz, test.npz and classes.txt" in msg and "tarball" in msg
    with pytest.raises(ValueError, match="exists, but no registered loader accepts it"):
        load_dataset(tmp_path)  # an empty directory
    with pytest.raises(ValueError, match="pass the path itself"):
        load_dataset("paired_dir")


def test_duplicate_registration_errors(user_dataset):
    with pytest.raises(ValueError, match="'tiny_user' is already registered"):
        register_dataset("tiny_user")(lambda spec, *, seed=0: None)
    with pytest.raises(ValueError, match="'synthetic' is already registered"):
        register_dataset("synthetic")(lambda spec, *, seed=0: None)
    assert list_datasets().count("tiny_user") == 1
    with pytest.raises(ValueError, match="accepts=3"):
        register_dataset("other", accepts=3)


def _quick_subset_before_the_registry(data, seed, n_train=1000, n_test=300):
    """bench/runner.py load_data's --quick branch as it was written before take_subset."""
    rng = np.random.default_rng(seed)
    data.train = data.train.take(np.sort(rng.permutation(len(data.train))[:n_train]))
    data.test = data.test.take(np.sort(rng.permutation(len(data.test))[:n_test]))
    return data


@pytest.mark.parametrize("seed", [0, 1])
def test_take_subset_is_the_quick_subset(seed):
    data = make_synthetic(n_train=40, n_test=30, image_size=8, seed=0)
    subset = take_subset(data, 25, 12, seed)
    assert len(subset.train) == 25 and len(subset.test) == 12 and len(data.train) == 40  # input kept
    assert_same_data(subset, _quick_subset_before_the_registry(data, seed, 25, 12))
    other = take_subset(make_synthetic(n_train=40, n_test=30, image_size=8, seed=0), 25, 12, seed + 1)
    assert not np.array_equal(other.train.image, subset.train.image)  # the seed picks the rows
    with pytest.raises(ValueError, match="n_test=-1"):
        take_subset(data, 5, -1, seed)
