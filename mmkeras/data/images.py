"""Image sources: a folder tree, a tarball of one, keras.datasets and tfds.

Every source yields the same `ImageSet`. Decoding happens once: `load_cifar` caches the
decoded arrays as one .npz in the cache directory (`MMKERAS_CACHE_DIR`, default
~/.cache/mmkeras), so 60,000 files are never decoded twice.
"""

import dataclasses
import io
import os
import tarfile

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
CIFAR_NAMES = ("cifar10", "cifar100")


@dataclasses.dataclass
class ImageSet:
    """Images with integer labels, train and test splits, and the class names."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list


def default_data_dir():
    """`MMKERAS_DATA_DIR`, else ../shared/data (the layout CI uses): from the working
    directory, else beside the repository (Jupyter starts a notebook in notebooks/)."""
    if os.environ.get("MMKERAS_DATA_DIR"):
        return os.environ["MMKERAS_DATA_DIR"]
    relative = os.path.join("..", "shared", "data")
    repository = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    beside = os.path.join(os.path.dirname(repository), "shared", "data")
    return beside if not os.path.isdir(relative) and os.path.isdir(beside) else relative


def default_cache_dir():
    return os.environ.get("MMKERAS_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "mmkeras"
    )


def _decode(data, name):
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # PIL raises many types for a bad file; name the file.
        raise ValueError(f"{name}: cannot be decoded as an image ({e}).") from e


def _assemble(records, limit_per_class, source, progress):
    """records: (split, class, filename, read_fn). Sorted, limited, decoded, stacked."""
    records = sorted(records, key=lambda r: r[:3])
    splits = sorted({r[0] for r in records})
    missing = [s for s in ("train", "test") if s not in splits]
    if missing:
        raise ValueError(f"{source}: no '{missing[0]}' split found; expected SPLIT/CLASS/IMAGE.")
    class_names = sorted({r[1] for r in records})
    index = {c: i for i, c in enumerate(class_names)}
    if limit_per_class is not None:
        kept, seen = [], {}
        for r in records:
            key = (r[0], r[1])
            if seen.get(key, 0) < limit_per_class:
                seen[key] = seen.get(key, 0) + 1
                kept.append(r)
        records = kept
    out = {}
    for split in ("train", "test"):
        rows = [r for r in records if r[0] == split]
        images = [
            _decode(r[3](), f"{source}:{r[0]}/{r[1]}/{r[2]}")
            for r in tqdm(rows, desc=f"decoding {split}", disable=not progress, leave=False)
        ]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise ValueError(f"{source}: {split} images differ in size: {sorted(shapes)[:3]} ...")
        out[split] = (np.stack(images), np.array([index[r[1]] for r in rows], dtype=np.int64))
    return ImageSet(*out["train"], *out["test"], class_names)


def load_image_folder(root, limit_per_class=None, progress=True):
    """Read a folder tree `root/SPLIT/CLASS/*.jpg|png` (splits 'train' and 'test')."""
    records = []
    for split in ("train", "test"):
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            continue
        for cls in sorted(os.listdir(split_dir)):
            cls_dir = os.path.join(split_dir, cls)
            if not os.path.isdir(cls_dir):
                continue
            for fname in os.listdir(cls_dir):
                if fname.lower().endswith(IMAGE_SUFFIXES):
                    path = os.path.join(cls_dir, fname)
                    records.append((split, cls, fname, lambda p=path: open(p, "rb").read()))
    if not records:
        raise FileNotFoundError(f"{root}: no images found in the layout SPLIT/CLASS/*.jpg|png.")
    return _assemble(records, limit_per_class, root, progress)


def load_image_tarball(path, limit_per_class=None, progress=True):
    """Read a tarball (any compression tarfile knows) of the folder-tree layout."""
    records = []
    with tarfile.open(path, "r:*") as tar:
        # One sequential pass: compressed tarballs cannot seek cheaply, so read bytes now
        # and decode (the expensive part) only the members that survive the limit.
        for member in tqdm(tar, desc=f"reading {os.path.basename(path)}", disable=not progress, leave=False):
            parts = member.name.strip("./").split("/")
            if not member.isfile() or len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_SUFFIXES):
                continue
            split, cls, fname = parts[-3], parts[-2], parts[-1]
            if split not in ("train", "test"):
                continue
            data = tar.extractfile(member).read()
            records.append((split, cls, fname, lambda d=data: d))
    if not records:
        raise FileNotFoundError(f"{path}: no images found in the layout SPLIT/CLASS/*.jpg|png.")
    return _assemble(records, limit_per_class, path, progress)


def load_keras_dataset(name):
    """Download through keras.datasets (needs the internet on first use)."""
    import keras

    module = {"cifar10": keras.datasets.cifar10, "cifar100": keras.datasets.cifar100}[name]
    kwargs = {"label_mode": "fine"} if name == "cifar100" else {}
    (xtr, ytr), (xte, yte) = module.load_data(**kwargs)
    return ImageSet(xtr, ytr.reshape(-1).astype(np.int64), xte, yte.reshape(-1).astype(np.int64),
                    _cifar_class_names(name))


def load_tfds_dataset(name, data_dir=None):
    """Download through tensorflow-datasets (needs the internet on first use)."""
    import tensorflow_datasets as tfds

    splits = tfds.as_numpy(tfds.load(name, split=["train", "test"], batch_size=-1, data_dir=data_dir))
    (train, test) = splits
    label_key = "label"
    return ImageSet(train["image"], train[label_key].astype(np.int64), test["image"],
                    test[label_key].astype(np.int64), _cifar_class_names(name))


def _cifar_class_names(name):
    from mmkeras.data.captions import CIFAR10_ATTRIBUTES, CIFAR100_SUPERCLASSES

    if name == "cifar10":
        return sorted(CIFAR10_ATTRIBUTES)
    return sorted(f for fines in CIFAR100_SUPERCLASSES.values() for f in fines)


def _limit(images, labels, limit_per_class):
    if limit_per_class is None:
        return images, labels
    keep = np.concatenate([np.flatnonzero(labels == c)[:limit_per_class] for c in np.unique(labels)])
    keep.sort()
    return images[keep], labels[keep]


def load_cifar(name="cifar10", source="auto", data_dir=None, cache_dir=None,
               limit_per_class=None, progress=True):
    """CIFAR-10 or CIFAR-100 images from the first source that is reachable.

    source: "auto" tries, in order, the cache, `DATA_DIR/<name>-jpg.tar.xz` (or .tar.gz,
    .tar), a folder tree `DATA_DIR/<name>/SPLIT/CLASS/`, keras.datasets, then tfds.
    A specific source is one of "cache", "tarball", "folder", "keras", "tfds".
    """
    if name not in CIFAR_NAMES:
        raise ValueError(f"Unknown dataset '{name}'. Received name={name!r}; expected one of: {', '.join(CIFAR_NAMES)}.")
    sources = ("cache", "tarball", "folder", "keras", "tfds")
    if source != "auto" and source not in sources:
        raise ValueError(f"Unknown source {source!r}; expected 'auto' or one of: {', '.join(sources)}.")
    data_dir = data_dir or default_data_dir()
    cache_dir = cache_dir or default_cache_dir()
    suffix = "" if limit_per_class is None else f"-limit{limit_per_class}"
    cache_path = os.path.join(cache_dir, f"{name}{suffix}.npz")
    tarballs = [os.path.join(data_dir, f"{name}-jpg{ext}") for ext in (".tar.xz", ".tar.gz", ".tar")]
    folder = os.path.join(data_dir, name)
    tried = []

    def attempt(candidate):
        if candidate == "cache":
            if os.path.isfile(cache_path):
                with np.load(cache_path) as z:
                    return ImageSet(z["train_images"], z["train_labels"], z["test_images"],
                                    z["test_labels"], [str(c) for c in z["class_names"]])
            tried.append(f"cache file {cache_path} (absent)")
        elif candidate == "tarball":
            for path in tarballs:
                if os.path.isfile(path):
                    return load_image_tarball(path, limit_per_class, progress)
            tried.append(f"tarball {tarballs[0]} (absent; set MMKERAS_DATA_DIR or data_dir=)")
        elif candidate == "folder":
            if os.path.isdir(folder):
                return load_image_folder(folder, limit_per_class, progress)
            tried.append(f"folder tree {folder}/SPLIT/CLASS/*.jpg (absent)")
        else:
            try:
                loaded = load_keras_dataset(name) if candidate == "keras" else load_tfds_dataset(name)
            except Exception as e:  # offline: a network error of some kind; report it below
                tried.append(f"{'keras.datasets' if candidate == 'keras' else 'tfds'} download ({type(e).__name__}: {str(e)[:120]})")
                return None
            tr = _limit(loaded.train_images, loaded.train_labels, limit_per_class)
            te = _limit(loaded.test_images, loaded.test_labels, limit_per_class)
            return ImageSet(*tr, *te, loaded.class_names)
        return None

    for candidate in (sources if source == "auto" else (source,)):
        result = attempt(candidate)
        if result is not None:
            if candidate != "cache":
                _write_cache(cache_path, result)
            return result
    raise FileNotFoundError(
        f"No source of {name} images is reachable. Tried:\n  - " + "\n  - ".join(tried)
        + f"\nOptions: put {name}-jpg.tar.xz or a {name}/SPLIT/CLASS/ folder tree in a directory "
        "named by MMKERAS_DATA_DIR (or data_dir=), connect to the internet for keras.datasets "
        "or tfds, or use the synthetic set (mmkeras.data.make_synthetic)."
    )


def _write_cache(path, images):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npz"  # write then rename: an interrupted run leaves no half cache
    np.savez(tmp, train_images=images.train_images, train_labels=images.train_labels,
             test_images=images.test_images, test_labels=images.test_labels,
             class_names=np.array(images.class_names, dtype=np.str_))
    os.replace(tmp, path)
