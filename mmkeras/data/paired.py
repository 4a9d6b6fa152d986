"""The paired on-disk format: a directory with train.npz, test.npz and classes.txt.

Each npz holds `image` (uint8 [N,H,W,3]), `text` (unicode strings [N]) and `label`
(int64 [N]); line i of classes.txt names label i. Any image size and class count work.
"""

import dataclasses
import os

import numpy as np

SPLITS = ("train", "test")
PAIRED_FILES = ("train.npz", "test.npz", "classes.txt")  # what a paired-format directory holds


@dataclasses.dataclass
class PairedSplit:
    """One split: images, captions and integer labels of equal length."""

    image: np.ndarray
    text: np.ndarray
    label: np.ndarray

    def __len__(self):
        return len(self.label)

    def take(self, index):
        """A new split holding the rows `index` (an int array or slice)."""
        return PairedSplit(self.image[index], self.text[index], self.label[index])


@dataclasses.dataclass
class PairedData:
    """A paired image+text classification set: train and test splits and class names."""

    train: PairedSplit
    test: PairedSplit
    class_names: list
    name: str = "paired"

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def image_shape(self):
        return tuple(int(d) for d in self.train.image.shape[1:])


def save_paired(data, directory):
    """Write `data` (a PairedData) to `directory` in the paired format."""
    os.makedirs(directory, exist_ok=True)
    for split in SPLITS:
        part = getattr(data, split)
        _validate_split(part, data.num_classes, where=f"{split} split")
        np.savez(
            os.path.join(directory, f"{split}.npz"),
            image=part.image.astype(np.uint8),
            text=np.asarray(part.text, dtype=np.str_),
            label=part.label.astype(np.int64),
        )
    with open(os.path.join(directory, "classes.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(data.class_names) + "\n")


def load_paired(directory, name=None):
    """Read and validate a paired-format directory; returns a PairedData."""
    classes_path = os.path.join(directory, "classes.txt")
    if not os.path.isfile(classes_path):
        raise FileNotFoundError(
            f"{classes_path}: missing. A paired-format directory holds train.npz, test.npz "
            "and classes.txt (one class name per line)."
        )
    with open(classes_path, encoding="utf-8") as f:
        class_names = [line.strip() for line in f if line.strip()]
    if not class_names:
        raise ValueError(f"{classes_path}: no class names found.")
    splits = {}
    for split in SPLITS:
        path = os.path.join(directory, f"{split}.npz")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing (expected {', '.join(SPLITS)} npz files).")
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in ("image", "text", "label") if k not in npz.files]
                if missing:
                    raise ValueError(
                        f"{path}: missing array(s) {missing}; found {sorted(npz.files)}."
                    )
                part = PairedSplit(npz["image"], npz["text"], npz["label"])
        except ValueError as e:
            if str(e).startswith(path):
                raise
            raise ValueError(f"{path}: cannot be read as npz of plain arrays ({e}).") from e
        _validate_split(part, len(class_names), where=path, classes_path=classes_path)
        if not len(part):
            raise ValueError(f"{path}: the {split} split has 0 rows; a paired-format directory needs "
                             "at least one row in each of train.npz and test.npz.")
        splits[split] = part
    return PairedData(
        splits["train"], splits["test"], class_names, name=name or os.path.basename(os.path.normpath(directory))
    )


def _validate_split(part, num_classes, where, classes_path=None):
    image, text, label = part.image, part.text, part.label
    if image.ndim != 4 or image.shape[-1] != 3:
        raise ValueError(
            f"{where}: array 'image' must have shape [N, H, W, 3]; received shape {image.shape}."
        )
    if image.dtype != np.uint8:
        raise ValueError(f"{where}: array 'image' must be uint8; received dtype {image.dtype}.")
    if text.ndim != 1 or text.dtype.kind != "U":
        raise ValueError(
            f"{where}: array 'text' must be 1-D unicode strings; received dtype {text.dtype} "
            f"with shape {text.shape}."
        )
    if label.ndim != 1 or label.dtype.kind not in "iu":
        raise ValueError(
            f"{where}: array 'label' must be 1-D integers; received dtype {label.dtype} with "
            f"shape {label.shape}."
        )
    if not len(image) == len(text) == len(label):
        raise ValueError(
            f"{where}: arrays differ in length: image {len(image)}, text {len(text)}, "
            f"label {len(label)}."
        )
    if len(label) and (label.min() < 0 or label.max() >= num_classes):
        classes = (f" (the {num_classes} lines of {classes_path}: label i is line i + 1; add the "
                   "missing class names there, or fix the labels)") if classes_path else ""
        raise ValueError(
            f"{where}: array 'label' must lie in [0, {num_classes - 1}] for {num_classes} "
            f"classes{classes}; received values in [{label.min()}, {label.max()}]."
        )
