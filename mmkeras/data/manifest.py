"""Your own paired data as a manifest: one row per example in a .csv, .tsv, .jsonl or
.parquet file, with an image (a path or the encoded bytes), text columns and a label.

    data = load_manifest("pets.csv", image_column="photo", text_columns=("title", "notes"),
                         label_column="breed", split_column="split")
    ds = make_datasets(data, batch_size=64)  # images decoded inside tf.data, never all in memory

What a row holds:
- image: a path, relative to the manifest's folder (or to `base_dir`), or the encoded
  bytes (a Parquet binary column, or the {"bytes", "path"} struct of Hugging Face image
  datasets). JPEG, PNG, GIF, BMP and WebP are read.
- text: the `text_columns`, joined with a space; an empty cell is the text-missing case,
  never an error.
- label: a string or an integer. `class_names` are the distinct labels of the training
  rows, sorted: numerically when every label is an integer (or a string holding one),
  else as strings (integers written in decimal). Label i is class_names[i].
- split (optional): with `split_column` each row names its split (train / training;
  validation / valid / val / dev / eval; test / testing; any case) and it is obeyed.
  Without one, a seeded split stratified by class is made (each class keeps at least one
  training row) and recorded in `data.split`. A manifest without validation rows leaves
  `make_datasets` to carve them from train, as for every dataset.

Broken rows are found before anything trains, by one scan that opens each image's header
and checks its end (see image_files): a missing file, an unreadable or truncated image, an
empty image or label cell, a split value not listed above, and (with a split column) a
label in validation or test that no training row has. `on_bad_row` says what happens:
"error" (default) raises ManifestError naming the file, the row (a line number as an
editor shows it, header = line 1; a JSONL record's line; a Parquet row index counted from
0), the column and how many more rows have problems; "skip" drops those rows; "missing"
keeps a row whose only problem is its image, as an image-missing row (all zeros), and
drops the others. The result records `bad_rows` [{"line", "column", "reason"}], the lines
`skipped` and `blanked`, `n_rows`, `class_counts` and `source`; `summary()` is the "data"
record of a results file.

Images of any sizes are fitted to one `image_size` (height, width), aspect kept by
padding (streaming.fit_image). By default the size is the median height and width of the
images, scaled down to fit 224 and, above 32, rounded to a multiple of 8; the choice is
printed and kept in `data.image_size_choice`.
"""

import concurrent.futures
import dataclasses
import os
import re
import sys

import numpy as np

from mmkeras.data.image_files import BadImage, inspect_image
from mmkeras.data.streaming import ImageStream
from mmkeras.data.tables import TABLE_SUFFIXES, is_blank, read_table

BAD_ROW_POLICIES = ("error", "skip", "missing")
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "eval": "validation",
    "test": "test", "testing": "test",
}
SPLITS = ("train", "validation", "test")
MAX_DEFAULT_SIDE = 224  # a default image_size never exceeds this on either side
_INTEGER = re.compile(r"[+-]?\d+")


class ManifestError(ValueError):
    """Broken rows under on_bad_row='error'; `bad_rows` lists them all."""

    def __init__(self, message, bad_rows):
        super().__init__(message)
        self.bad_rows = bad_rows


@dataclasses.dataclass
class ManifestSplit:
    """One split of a manifest: image sources, captions, integer labels and manifest lines."""

    image: np.ndarray  # object [N]: an absolute path (str), encoded bytes, or None (image missing)
    text: np.ndarray  # str [N]
    label: np.ndarray  # int64 [N]
    line: np.ndarray  # int64 [N]: the row's line in the manifest (Parquet: row index)

    def __len__(self):
        return len(self.label)

    def take(self, index):
        """A new split holding the rows `index` (an int array or slice)."""
        return ManifestSplit(self.image[index], self.text[index], self.label[index], self.line[index])


@dataclasses.dataclass
class ManifestData:
    """A paired set read from a manifest; `make_datasets` takes it as it takes a PairedData,
    and decodes its images inside tf.data."""

    train: ManifestSplit
    test: ManifestSplit
    class_names: list
    name: str = "manifest"
    validation: ManifestSplit = None  # empty: make_datasets carves validation from train
    image_size: tuple = (32, 32)  # (height, width) every image is fitted to
    cache_dir: str = None  # decoded images cached here (make_datasets(cache_dir=) overrides)
    source: str = ""
    n_rows: int = 0  # data rows in the manifest, bad ones included
    bad_rows: list = dataclasses.field(default_factory=list)  # [{"line", "column", "reason"}]
    skipped: list = dataclasses.field(default_factory=list)  # lines dropped
    blanked: list = dataclasses.field(default_factory=list)  # lines kept with the image missing
    class_counts: dict = dataclasses.field(default_factory=dict)  # split -> {class: rows}
    split: dict = dataclasses.field(default_factory=dict)  # how rows were split
    image_size_choice: str = ""  # "given", or how the default was chosen
    line_kind: str = "line"  # what bad_rows' "line" counts ("row index" for Parquet)

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def image_shape(self):
        return (*self.image_size, 3)

    def image_stream(self, cache_dir=None):
        """How make_datasets turns this set's image sources into pixels."""
        return ImageStream(tuple(self.image_size), cache_dir or self.cache_dir)

    def summary(self):
        """The "data" record of a results file."""
        return {"source": self.source, "n_rows": self.n_rows, "bad_rows": list(self.bad_rows),
                "skipped": list(self.skipped), "blanked": list(self.blanked),
                "class_counts": self.class_counts, "class_names": list(self.class_names),
                "split": self.split, "image_size": list(self.image_size),
                "image_size_choice": self.image_size_choice, "line_kind": self.line_kind}


@dataclasses.dataclass
class _Row:
    line: int
    image: object = None  # path (str) or bytes
    text: str = ""
    label: object = None  # int or str
    split: str = None
    shape: tuple = None
    problems: list = dataclasses.field(default_factory=list)  # [(column, reason)]

    def fate(self, policy, image_column):
        """What `policy` does with this row: "keep", "blank" (image missing) or "drop"."""
        if not self.problems:
            return "keep"
        if policy == "missing" and all(column == image_column for column, _ in self.problems):
            return "blank"
        return "drop"


def load_manifest(path, *, image_column="image", text_columns=("text",), label_column="label",
                  split_column=None, base_dir=None, image_size=None, on_bad_row="error", seed=0,
                  validation_fraction=0.1, test_fraction=0.2, cache_dir=None, name=None, verbose=True):
    """Read, check and split a manifest (see the module docstring); returns ManifestData.

    image_size: None (chosen from the data), an int (square) or (height, width).
    validation_fraction, test_fraction: of each class, for the generated split (no
        split_column).
    cache_dir: where make_datasets caches decoded, resized images (None: decode every epoch).
    verbose: print the chosen image size and what was skipped or blanked.
    """
    path = os.fspath(path)
    text_columns = (text_columns,) if isinstance(text_columns, str) else tuple(text_columns)
    _check_arguments(on_bad_row, validation_fraction, test_fraction, image_column, text_columns,
                     label_column, split_column)
    size = _image_size_argument(image_size)
    table = read_table(path, [image_column, *text_columns, label_column]
                       + ([split_column] if split_column else []))
    if not len(table):
        raise ValueError(f"{path} holds no data rows.")
    base = os.fspath(base_dir) if base_dir is not None else os.path.dirname(os.path.abspath(path))
    rows = [_parse_row(table, i, base, image_column, text_columns, label_column, split_column)
            for i in range(len(table))]
    _inspect_images(rows, image_column)
    if split_column:
        _check_labels_seen_in_train(rows, on_bad_row, image_column, label_column)
    bad_rows = [{"line": row.line, "column": column, "reason": reason}
                for row in rows for column, reason in row.problems]
    if on_bad_row == "error" and bad_rows:
        raise ManifestError(_bad_row_message(table, rows, bad_rows), bad_rows)

    fates = [row.fate(on_bad_row, image_column) for row in rows]
    for row, fate in zip(rows, fates):
        if fate == "blank":
            row.image = None
    kept = [row for row, fate in zip(rows, fates) if fate != "drop"]
    if not kept:
        raise ValueError(f"{path}: every row has a problem ({len(bad_rows)} problems; the first: "
                         f"{table.where(bad_rows[0]['line'])}, {bad_rows[0]['reason']}).")
    if split_column:
        split_info = {"source": "column", "column": split_column}
    else:
        _stratified_split(kept, seed, validation_fraction, test_fraction)
        split_info = {"source": "generated", "method": "stratified by class", "seed": seed,
                      "validation_fraction": validation_fraction, "test_fraction": test_fraction}
    class_names, index = _class_names([row.label for row in kept if row.split == "train"])
    splits = {split: _make_split([row for row in kept if row.split == split], index) for split in SPLITS}
    for split in ("train", "test"):
        if not len(splits[split]):
            counts = ", ".join(f"{s} {len(part)}" for s, part in splits.items())
            raise ValueError(f"{path}: the {split} split has no rows ({counts}; "
                             f"{_describe_split(split_info)}). " + (
                                 "Name some rows in the split column, or leave split_column=None "
                                 "for a generated split." if split_column else
                                 "Give more rows or a larger test_fraction."))
    shapes = [row.shape for row, fate in zip(rows, fates) if fate == "keep"]
    if size is None:
        size, choice = choose_image_size(shapes)
    else:
        choice = "given"
    data = ManifestData(
        splits["train"], splits["test"], class_names,
        name=name or os.path.splitext(os.path.basename(path))[0], validation=splits["validation"],
        image_size=size, cache_dir=os.fspath(cache_dir) if cache_dir is not None else None, source=path,
        n_rows=len(rows), bad_rows=bad_rows,
        skipped=[row.line for row, fate in zip(rows, fates) if fate == "drop"],
        blanked=[row.line for row, fate in zip(rows, fates) if fate == "blank"],
        class_counts={split: {class_names[c]: int(n) for c, n in
                              zip(*np.unique(splits[split].label, return_counts=True))}
                      for split in SPLITS},
        split=split_info, image_size_choice=choice, line_kind=table.line_kind)
    if verbose:
        _report(data, table)
    return data


def choose_image_size(shapes):
    """((height, width), how) for images of `shapes`: the median height and width, scaled
    down (aspect kept) to fit MAX_DEFAULT_SIDE and, above 32 pixels, rounded to a multiple of 8."""
    if not shapes:
        raise ValueError("No readable image to choose an image size from: pass image_size=.")
    height, width = (float(np.median([s[i] for s in shapes])) for i in (0, 1))
    scale = min(1.0, MAX_DEFAULT_SIDE / max(height, width))
    sides = [max(1, round(side * scale)) for side in (height, width)]
    if min(sides) > 32:
        sides = [max(8, min(MAX_DEFAULT_SIDE, 8 * round(side / 8))) for side in sides]
    how = (f"median of {len(shapes)} image sizes ({height:g}x{width:g})"
           + (f", scaled to fit {MAX_DEFAULT_SIDE}" if scale < 1 else "")
           + (", rounded to a multiple of 8" if min(sides) > 32 else ""))
    return tuple(sides), how


def _check_arguments(on_bad_row, validation_fraction, test_fraction, image_column, text_columns,
                     label_column, split_column):
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ValueError(f"Unknown on_bad_row={on_bad_row!r}; expected one of: {', '.join(BAD_ROW_POLICIES)}.")
    for arg, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"`{arg}` must lie in [0, 1). Received {arg}={value!r}.")
    if validation_fraction + test_fraction >= 1:
        raise ValueError("validation_fraction + test_fraction must leave rows to train on. Received "
                         f"validation_fraction={validation_fraction}, test_fraction={test_fraction}.")
    for arg, value in (("image_column", image_column), ("label_column", label_column)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"`{arg}` must be a column name. Received {arg}={value!r}.")
    if not all(isinstance(c, str) and c for c in text_columns):
        raise ValueError(f"`text_columns` must be column names (a str or a tuple of them; () for no "
                         f"text). Received text_columns={text_columns!r}.")
    if split_column is not None and (not isinstance(split_column, str) or not split_column):
        raise ValueError(f"`split_column` must be None or a column name. Received split_column={split_column!r}.")


def _image_size_argument(image_size):
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
                                 for s in size):
        raise ValueError("`image_size` must be None, an int or (height, width) of positive ints. "
                         f"Received image_size={image_size!r}.")
    return tuple(int(s) for s in size)


def _parse_row(table, i, base, image_column, text_columns, label_column, split_column):
    row = _Row(table.lines[i])
    if i in table.errors:
        row.problems.append((None, table.errors[i]))
        return row
    row.image, problem = image_source(table.cells[image_column][i], base)
    if problem:
        row.problems.append((image_column, problem))
    parts = [table.cells[c][i] for c in text_columns]
    row.text = " ".join(str(p).strip() for p in parts if not is_blank(p))
    label = table.cells[label_column][i]
    if is_blank(label):
        row.problems.append((label_column, "no label (the cell is empty)"))
    else:
        row.label = _label_value(label)
    if split_column:
        value = table.cells[split_column][i]
        row.split = SPLIT_NAMES.get(str(value).strip().lower()) if not is_blank(value) else None
        if row.split is None:
            row.problems.append((split_column, f"split {value!r} is none of "
                                               f"{', '.join(sorted(SPLIT_NAMES))}"))
    return row


def image_source(cell, base):
    """(path or bytes, None) or (None, why the cell gives no image)."""
    if isinstance(cell, dict):  # the {"bytes", "path"} struct of Hugging Face image datasets
        if cell.get("bytes"):
            return bytes(cell["bytes"]), None
        cell = cell.get("path")
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return (bytes(cell), None) if len(cell) else (None, "no image (the bytes are empty)")
    if is_blank(cell):
        return None, "no image (the cell is empty)"
    if not isinstance(cell, str):
        return None, f"an image cell must be a path or the image bytes; received {type(cell).__name__} {cell!r}"
    path = os.path.expanduser(cell.strip())
    return (path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))), None


def _label_value(cell):
    """An int for an integer label (or a string of one), else the stripped string."""
    if isinstance(cell, (bool, np.bool_)):
        return str(bool(cell))
    if isinstance(cell, (int, np.integer)):
        return int(cell)
    if isinstance(cell, float) and cell.is_integer():
        return int(cell)
    text = str(cell).strip()
    return int(text) if _INTEGER.fullmatch(text) else text


def _inspect_images(rows, image_column):
    """Each row's image shape, or a problem in its image column; threads, since the scan
    waits on the disk more than it computes."""
    todo = [row for row in rows if row.image is not None]

    def inspect(row):
        try:
            return inspect_image(row.image)
        except BadImage as err:
            return str(err)

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1))) as pool:
        for row, result in zip(todo, pool.map(inspect, todo, chunksize=64)):
            if isinstance(result, str):
                row.problems.append((image_column, result))
            else:
                row.shape = result


def _check_labels_seen_in_train(rows, policy, image_column, label_column):
    seen = {row.label for row in rows if row.split == "train" and row.fate(policy, image_column) != "drop"}
    for row in rows:
        if row.split in ("validation", "test") and row.label is not None and row.label not in seen \
                and row.fate(policy, image_column) != "drop":
            row.problems.append((label_column, f"label {row.label!r} of the {row.split} split never "
                                               "appears in the train split"))


def _stratified_split(rows, seed, validation_fraction, test_fraction):
    """Assign row.split per class: test and validation shares of each class, drawn with one
    seeded generator in class order; every class keeps at least one training row."""
    rng = np.random.default_rng(seed)
    by_class = {}
    for row in rows:
        by_class.setdefault(row.label, []).append(row)
    for label in sorted(by_class, key=_sort_key):
        members = by_class[label]
        n = len(members)
        n_test = min(round(n * test_fraction), n - 1)
        n_val = min(round(n * validation_fraction), n - 1 - n_test)
        order = rng.permutation(n)
        for rank, i in enumerate(order):
            members[i].split = "test" if rank < n_test else "validation" if rank < n_test + n_val else "train"


def _sort_key(label):
    return (0, label, "") if isinstance(label, int) else (1, 0, str(label))


def _class_names(labels):
    """(class names, label value -> index): numeric order when every label is an int, else
    string order of the labels written as strings."""
    distinct = set(labels)
    if all(isinstance(label, int) for label in distinct):
        ordered = sorted(distinct)
        return [str(v) for v in ordered], {v: i for i, v in enumerate(ordered)}
    names = sorted({str(v) for v in distinct})
    position = {name: i for i, name in enumerate(names)}
    return names, {v: position[str(v)] for v in distinct}


def _make_split(rows, index):
    return ManifestSplit(
        np.array([row.image for row in rows] or [], dtype=object),
        np.array([row.text for row in rows], dtype=np.str_).reshape(-1),
        np.array([index[row.label] for row in rows], dtype=np.int64),
        np.array([row.line for row in rows], dtype=np.int64))


def _describe_split(info):
    if info["source"] == "column":
        return f"split by column {info['column']!r}"
    return (f"generated split, validation_fraction={info['validation_fraction']}, "
            f"test_fraction={info['test_fraction']}")


def _bad_row_message(table, rows, bad_rows):
    first = bad_rows[0]
    column = f", column {first['column']!r}" if first["column"] is not None else ""
    others = sum(bool(row.problems) for row in rows) - 1
    more = (f" {others} more row{'s' if others != 1 else ''} "
            f"{'have' if others != 1 else 'has'} problems." if others else " No other row has a problem.")
    return (f"{table.path}, {table.where(first['line'])}{column}: {first['reason']}.{more} "
            "Fix the rows, or pass on_bad_row='skip' to drop them, or on_bad_row='missing' to keep a row "
            "whose only problem is its image as an image-missing row (all the problems are in the "
            "ManifestError's .bad_rows).")


def _report(data, table):
    counts = ", ".join(f"{split} {len(getattr(data, split))}" for split in SPLITS)
    print(f"{data.source}: {data.n_rows} rows; {counts}; {data.num_classes} classes; "
          f"image size {data.image_size[0]}x{data.image_size[1]} "
          f"({data.image_size_choice}{'' if data.image_size_choice == 'given' else '; pass image_size= to set it'})",
          file=sys.stderr)
    for what, lines in (("skipped", data.skipped), ("blanked (image missing)", data.blanked)):
        if lines:
            shown = ", ".join(str(line) for line in lines[:20]) + (" ..." if len(lines) > 20 else "")
            print(f"{data.source}: {len(lines)} row(s) {what}, {table.line_kind}s {shown}", file=sys.stderr)


def is_manifest_path(spec):
    """Whether `spec` names a manifest file by its suffix (the file may not exist yet)."""
    return isinstance(spec, str) and spec.lower().endswith(TABLE_SUFFIXES)
