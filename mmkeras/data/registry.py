"""The dataset registry: which spec means which dataset, decided in one place.

A spec is a registered name ("cifar10", "cifar100", "synthetic") or a path that a
registered loader `accepts` (a paired-format directory, an image-folder tree or a
tarball of one, a manifest file: .csv, .tsv, .jsonl, .parquet, a directory of TFRecord
shards written by write_tfrecords). `load_dataset(spec, seed=..., **options)` resolves
it and calls the loader; the benchmark, the demo, pretraining and the notebooks all go
through it. A name is looked up first; then each loader with an `accepts` predicate is
asked, in registration order, and the first that accepts the spec reads it.

Registering your own takes a decorated loader that returns a PairedData:

    import numpy as np
    from mmkeras.data import PairedData, PairedSplit, load_dataset, register_dataset

    @register_dataset("my_npz", accepts=lambda spec: spec.endswith(".my.npz"))
    def load_my_npz(spec, *, seed=0, **options):
        \"\"\"A file NAME.my.npz holding image, text, label and class_names arrays.\"\"\"
        with np.load(spec) as z:
            split = PairedSplit(z["image"], z["text"], z["label"])
            return PairedData(split, split, [str(c) for c in z["class_names"]], name="my_npz")

    data = load_dataset("runs/pets.my.npz")  # or mmkeras.bench --data runs/pets.my.npz

The first line of a path loader's docstring is how the unknown-spec error describes the
paths it takes, so write it as "A <what the path is>".
"""

import dataclasses
import os
import tarfile

import numpy as np

from mmkeras.data.cifar import load_paired_cifar
from mmkeras.data.images import load_image_folder, load_image_tarball
from mmkeras.data.manifest import is_manifest_path, load_manifest
from mmkeras.data.paired import PAIRED_FILES, PairedData, PairedSplit, load_paired
from mmkeras.data.synthetic import make_synthetic
from mmkeras.data.tfrecords import is_tfrecord_dir, read_tfrecords


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """A registered loader: its name, the function and (for path forms) what it accepts."""

    name: str
    loader: object  # fn(spec, *, seed=0, **options) -> PairedData
    accepts: object = None  # None: loaded by name only; else a predicate on the spec string

    def describe(self):
        if self.accepts is None:
            return self.name
        doc = (self.loader.__doc__ or "").strip().splitlines()
        what = doc[0].rstrip(".") if doc else "A path its accepts() takes"
        return f"{self.name} ({what[0].lower()}{what[1:]})"


_DATASETS = {}  # name -> DatasetEntry, in registration order (the order path specs are tried)


def register_dataset(name, *, accepts=None):
    """Decorator: register `fn(spec, *, seed=0, **options) -> PairedData` as `name`.

    accepts: None for a dataset loaded by its name; else a predicate on the spec string
    (e.g. "is a directory holding X"), which makes the loader read path-like specs too.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A dataset name must be a non-empty string. Received name={name!r}.")
    if accepts is not None and not callable(accepts):
        raise ValueError(f"`accepts` must be None or a predicate on the spec string. "
                         f"Received accepts={accepts!r}.")

    def decorator(loader):
        if name in _DATASETS:
            raise ValueError(f"Dataset {name!r} is already registered (by "
                             f"{_DATASETS[name].loader.__qualname__}); choose another name. "
                             f"Registered: {', '.join(_DATASETS)}.")
        _DATASETS[name] = DatasetEntry(name, loader, accepts)
        return loader

    return decorator


def list_datasets():
    """The registered dataset names, in registration order."""
    return list(_DATASETS)


def describe_datasets():
    """One line: the registered names, then the path forms with what each accepts (for
    errors and --help)."""
    names = [e.name for e in _DATASETS.values() if e.accepts is None]
    paths = [e.describe() for e in _DATASETS.values() if e.accepts is not None]
    return f"by name: {', '.join(names) or '(none)'}; by path: {', '.join(paths) or '(none)'}"


def resolve_dataset(spec):
    """The name of the registered dataset that reads `spec` (a name, else the first loader
    that accepts it); ValueError naming the spec and what is registered otherwise."""
    spec = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    if not isinstance(spec, str):
        raise ValueError(f"A dataset spec must be a name or a path. Received spec={spec!r}; "
                         f"expected a registered dataset, {describe_datasets()}.")
    entry = _DATASETS.get(spec)
    if entry is not None and entry.accepts is None:
        return entry.name
    for entry in _DATASETS.values():
        if entry.accepts is not None and entry.accepts(spec):
            return entry.name
    if spec in _DATASETS:
        raise ValueError(f"Dataset {spec!r} reads a path: pass the path itself as the spec. "
                         f"Received spec={spec!r}; {_DATASETS[spec].describe()}.")
    hint = " (the path exists, but no registered loader accepts it)" if os.path.exists(spec) else ""
    raise ValueError(f"Unknown dataset {spec!r}{hint}. Received spec={spec!r}; expected a "
                     f"registered dataset, {describe_datasets()}.")


def load_dataset(spec, *, seed=0, **options):
    """The PairedData that `spec` names; `options` go to its loader (e.g. data_dir= for
    CIFAR, n_train= for the synthetic set). See `describe_datasets()` for what is registered."""
    spec = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    return _DATASETS[resolve_dataset(spec)].loader(spec, seed=seed, **options)


def take_subset(data, n_train, n_test, seed):
    """A seeded subset of `data` (of the same type): n_train train rows, then n_test test
    rows, drawn from one generator, each kept in its original order. Data with its own
    validation split (a manifest) keeps the same share of it, drawn next from the same
    generator: round(n_train * len(validation) / len(train)) rows."""
    for arg, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"`{arg}` must be an int >= 0. Received {arg}={value!r}.")
    rng = np.random.default_rng(seed)
    train = data.train.take(np.sort(rng.permutation(len(data.train))[:n_train]))
    test = data.test.take(np.sort(rng.permutation(len(data.test))[:n_test]))
    validation = getattr(data, "validation", None)
    if validation is None or not len(validation):
        return dataclasses.replace(data, train=train, test=test)
    n_val = round(min(n_train, len(data.train)) * len(validation) / max(1, len(data.train)))
    validation = validation.take(np.sort(rng.permutation(len(validation))[:n_val]))
    return dataclasses.replace(data, train=train, test=test, validation=validation)


# Built-in datasets. Path forms are tried in this order, so the paired format (a directory
# with classes.txt) is recognised before an image-folder tree.

@register_dataset("cifar100")
@register_dataset("cifar10")
def _cifar(spec, *, seed=0, **options):
    # options (data_dir, cache_dir, source, limit_per_class, caption_config, ...) pass through.
    return load_paired_cifar(spec, seed=seed, **options)


SYNTHETIC_DEFAULTS = dict(n_train=4000, n_test=1000)  # the benchmark's and the demo's size


@register_dataset("synthetic")
def _synthetic(spec, *, seed=0, **options):
    return make_synthetic(**{**SYNTHETIC_DEFAULTS, **options}, seed=seed)


def _is_paired_dir(spec):
    return os.path.isdir(spec) and any(os.path.exists(os.path.join(spec, f)) for f in PAIRED_FILES)


@register_dataset("paired_dir", accepts=_is_paired_dir)
def _paired_dir(spec, *, seed=0, name=None):
    """A directory holding train.npz, test.npz and classes.txt: the paired format."""
    return load_paired(spec, name=name)  # fixed on disk: the seed changes nothing


def _is_image_tree_or_tarball(spec):
    if os.path.isdir(spec):
        return os.path.isdir(os.path.join(spec, "train"))
    return os.path.isfile(spec) and tarfile.is_tarfile(spec)


@register_dataset("image_folder", accepts=_is_image_tree_or_tarball)
def _image_folder(spec, *, seed=0, limit_per_class=None, progress=True, name=None):
    """A folder tree train|test/CLASS/*.jpg|png, or a tarball of one."""
    read = load_image_folder if os.path.isdir(spec) else load_image_tarball
    images = read(spec, limit_per_class=limit_per_class, progress=progress)
    # No captions: every text is empty, the text-missing case (image-only models and
    # pretraining never read it).
    splits = [PairedSplit(x, np.full(len(y), "", dtype=np.str_), y)
              for x, y in ((images.train_images, images.train_labels),
                           (images.test_images, images.test_labels))]
    return PairedData(*splits, list(images.class_names),
                      name=name or os.path.basename(os.path.normpath(spec)))


@register_dataset("manifest", accepts=is_manifest_path)
def _manifest(spec, *, seed=0, **options):
    """A manifest file (.csv, .tsv, .jsonl, .parquet) of image, text and label columns."""
    # options: image_column, text_columns, label_column, split_column, on_bad_row, ... (load_manifest)
    return load_manifest(spec, seed=seed, **options)


@register_dataset("tfrecords", accepts=is_tfrecord_dir)
def _tfrecords(spec, *, seed=0, **options):
    """A directory of TFRecord shards written by write_tfrecords (with tfrecords.json)."""
    # Written once, split as written: the seed changes nothing. options: num_workers,
    # worker_index, strategy, image_size, cache_dir, name (read_tfrecords).
    return read_tfrecords(spec, **options)
