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
printed and kept in `data.image_size_choice`. Above SIZE_SAMPLE (10,000) good images, the
median is that of a seeded sample of 10,000 of them (every image is still checked).

Memory: the rows are held as columns (numpy arrays: image sources, texts, int32 label
codes, int8 split codes, int32 lines), problems only for the rows that have one, and the
image checks run a chunk at a time, so loading costs little more than the splits it
returns (about 200 bytes a row for a short path and caption; see docs/data.md).
"""

import concurrent.futures
import dataclasses
import os
import re
import sys

import numpy as np

from mmkeras.data.image_files import BadImage, inspect_image
from mmkeras.data.streaming import ImageStream
from mmkeras.data.tables import TABLE_SUFFIXES, is_blank, join_text, read_table

BAD_ROW_POLICIES = ("error", "skip", "missing")
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "eval": "validation",
    "test": "test", "testing": "test",
}
SPLITS = ("train", "validation", "test")
MAX_DEFAULT_SIDE = 224  # a default image_size never exceeds this on either side
SIZE_SAMPLE = 10_000  # image sizes the default image_size is chosen from, at most
KEEP, BLANK, DROP = 0, 1, 2  # what on_bad_row does with a row
_INSPECT_CHUNK = 256  # image checks queued at once (a thread pool holds a future for each)
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


class _Problems:
    """The problems found so far, held only for the rows that have one (a manifest of
    millions of good rows costs two flags a row here)."""

    def __init__(self, n, image_column):
        self.by_row = {}  # row position -> [(column, reason)], in the order found
        self.any = np.zeros(n, bool)
        self.outside_image = np.zeros(n, bool)  # a problem in a column other than the image's
        self.image_column = image_column

    def add(self, i, column, reason):
        self.by_row.setdefault(int(i), []).append((column, reason))
        self.any[i] = True
        self.outside_image[i] |= column != self.image_column

    def fates(self, policy):
        """int8 per row, what `policy` does with it: KEEP, BLANK (image missing) or DROP."""
        fate = np.where(self.any, DROP, KEEP).astype(np.int8)
        if policy == "missing":
            fate[self.any & ~self.outside_image] = BLANK
        return fate

    def records(self, lines):
        return [{"line": int(lines[i]), "column": column, "reason": reason}
                for i in sorted(self.by_row) for column, reason in self.by_row[i]]


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
    lines = np.frombuffer(table.lines, dtype=np.int32)
    problems = _Problems(len(table), image_column)
    for i, reason in table.errors.items():
        problems.add(i, None, reason)
    image = _image_column(table, image_column, base, problems)
    text = _text_column(table, text_columns)
    label, label_values = _label_column(table, label_column, problems)
    split = _split_column(table, split_column, problems) if split_column else np.full(len(table), -1, np.int8)
    table.cells.clear()  # every cell is in the columns above now
    sizes = _inspect_images(image, problems, image_column, None if size else seed)
    if split_column:
        _check_labels_seen_in_train(label, label_values, split, problems.fates(on_bad_row), problems,
                                    label_column)
    bad_rows = problems.records(lines)
    if on_bad_row == "error" and bad_rows:
        raise ManifestError(_bad_row_message(table, problems, bad_rows), bad_rows)

    fate = problems.fates(on_bad_row)
    image[fate == BLANK] = None
    kept = fate != DROP
    if not kept.any():
        raise ValueError(f"{path}: every row has a problem ({len(bad_rows)} problems; the first: "
                         f"{table.where(bad_rows[0]['line'])}, {bad_rows[0]['reason']}).")
    if split_column:
        split_info = {"source": "column", "column": split_column}
    else:
        _stratified_split(split, label, label_values, kept, seed, validation_fraction, test_fraction)
        split_info = {"source": "generated", "method": "stratified by class", "seed": seed,
                      "validation_fraction": validation_fraction, "test_fraction": test_fraction}
    train = kept & (split == SPLITS.index("train"))
    class_names, index = _class_names([label_values[c] for c in np.unique(label[train])])
    class_of_code = np.array([index.get(v, -1) for v in label_values], np.int64)
    splits = {part: _make_split(np.flatnonzero(kept & (split == code)), image, text, label,
                                 class_of_code, lines)
              for code, part in enumerate(SPLITS)}
    del image, text
    for part in ("train", "test"):
        if not len(splits[part]):
            counts = ", ".join(f"{s} {len(rows)}" for s, rows in splits.items())
            raise ValueError(f"{path}: the {part} split has no rows ({counts}; "
                             f"{_describe_split(split_info)}). " + (
                                 "Name some rows in the split column, or leave split_column=None "
                                 "for a generated split." if split_column else
                                 "Give more rows or a larger test_fraction."))
    if size is None:
        rows, shapes = sizes
        keep = fate[rows] == KEEP
        size, choice = choose_image_size(shapes[keep])
        n_images = int(np.count_nonzero(fate == KEEP))
        if keep.sum() < n_images:
            choice += f" (a seeded sample of the {n_images} images)"
    else:
        choice = "given"
    data = ManifestData(
        splits["train"], splits["test"], class_names,
        name=name or os.path.splitext(os.path.basename(path))[0], validation=splits["validation"],
        image_size=size, cache_dir=os.fspath(cache_dir) if cache_dir is not None else None, source=path,
        n_rows=len(table), bad_rows=bad_rows,
        skipped=lines[fate == DROP].tolist(), blanked=lines[fate == BLANK].tolist(),
        class_counts={part: {class_names[c]: int(n) for c, n in
                             zip(*np.unique(splits[part].label, return_counts=True))}
                      for part in SPLITS},
        split=split_info, image_size_choice=choice, line_kind=table.line_kind)
    if verbose:
        _report(data, table)
    return data


def choose_image_size(shapes):
    """((height, width), how) for images of `shapes`: the median height and width, scaled
    down (aspect kept) to fit MAX_DEFAULT_SIDE and, above 32 pixels, rounded to a multiple of 8."""
    if not len(shapes):
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


def _image_column(table, column, base, problems):
    """object [N]: each row's image source (path or bytes), None where the cell gives none."""
    image = np.empty(len(table), object)
    for i, cell in enumerate(table.cells[column]):
        if i not in table.errors:
            image[i], problem = image_source(cell, base)
            if problem:
                problems.add(i, column, problem)
    return image


def _text_column(table, columns):
    """object [N] of str: the text columns joined with a space, empty cells left out."""
    text = np.full(len(table), "", object)
    for i, parts in enumerate(zip(*(table.cells[c] for c in columns))):
        if i not in table.errors:
            text[i] = join_text(parts)
    return text


def _label_column(table, column, problems):
    """(int32 [N] codes, -1 where there is no label; the label value of each code)."""
    codes, values = np.full(len(table), -1, np.int32), {}
    for i, cell in enumerate(table.cells[column]):
        if i in table.errors:
            continue
        if is_blank(cell):
            problems.add(i, column, "no label (the cell is empty)")
        else:
            codes[i] = values.setdefault(_label_value(cell), len(values))
    return codes, list(values)


def _split_column(table, column, problems):
    """int8 [N]: the position in SPLITS each row names, -1 where it names none."""
    codes = np.full(len(table), -1, np.int8)
    for i, value in enumerate(table.cells[column]):
        if i in table.errors:
            continue
        split = SPLIT_NAMES.get(str(value).strip().lower()) if not is_blank(value) else None
        if split is None:
            problems.add(i, column, f"split {value!r} is none of {', '.join(sorted(SPLIT_NAMES))}")
        else:
            codes[i] = SPLITS.index(split)
    return codes


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


def _inspect_images(image, problems, image_column, sample_seed):
    """Open every image's header and check its end (image_files.inspect_image), a chunk of
    rows at a time in threads (the scan waits on the disk more than it computes); a broken
    image is a problem in its image column. With `sample_seed`, returns (rows, (height,
    width) per row) for the images the default size is chosen from: all of them up to
    SIZE_SAMPLE, else a seeded sample of SIZE_SAMPLE; (0, 0) where the image is broken."""
    todo = np.flatnonzero(np.fromiter((source is not None for source in image), bool, len(image)))
    sizes = None
    if sample_seed is not None:
        rows = todo if len(todo) <= SIZE_SAMPLE else np.sort(
            np.random.default_rng(sample_seed).choice(todo, SIZE_SAMPLE, replace=False))
        sizes = rows, np.zeros((len(rows), 2), np.int64)

    def inspect(source):
        try:
            return inspect_image(source)
        except BadImage as err:
            return str(err)

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1))) as pool:
        for start in range(0, len(todo), _INSPECT_CHUNK):
            chunk = todo[start:start + _INSPECT_CHUNK]
            results = list(pool.map(inspect, image[chunk]))
            for i, result in zip(chunk, results):
                if isinstance(result, str):
                    problems.add(i, image_column, result)
            if sizes is not None:
                rows, shapes = sizes
                at = np.searchsorted(rows, chunk)
                for i, j, result in zip(chunk, at, results):
                    if j < len(rows) and rows[j] == i and not isinstance(result, str):
                        shapes[j] = result
    return sizes


def _check_labels_seen_in_train(label, label_values, split, fate, problems, label_column):
    """A validation or test row whose label no kept training row has is a problem."""
    alive = fate != DROP
    seen = np.unique(label[alive & (split == SPLITS.index("train"))])
    unseen = alive & (split > 0) & (label >= 0) & ~np.isin(label, seen)
    for i in np.flatnonzero(unseen):
        problems.add(i, label_column, f"label {label_values[label[i]]!r} of the {SPLITS[split[i]]} split "
                                      "never appears in the train split")


def _stratified_split(split, label, label_values, kept, seed, validation_fraction, test_fraction):
    """Fill `split` for the kept rows per class: test and validation shares of each class,
    drawn with one seeded generator in class order (each class's rows in manifest order);
    every class keeps at least one training row."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(kept)
    order = np.argsort(label[rows], kind="stable")  # by class, manifest order within one
    rows, codes = rows[order], label[rows][order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    by_class = {label_values[codes[s]]: rows[s:e] for s, e in zip(starts, ends)}
    test, validation, train = (SPLITS.index(s) for s in ("test", "validation", "train"))
    for value in sorted(by_class, key=_sort_key):
        members = by_class[value]
        n = len(members)
        n_test = min(round(n * test_fraction), n - 1)
        n_val = min(round(n * validation_fraction), n - 1 - n_test)
        drawn = members[rng.permutation(n)]
        split[drawn[:n_test]] = test
        split[drawn[n_test:n_test + n_val]] = validation
        split[drawn[n_test + n_val:]] = train


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


def _make_split(rows, image, text, label, class_of_code, lines):
    return ManifestSplit(image[rows], text[rows].astype(np.str_), class_of_code[label[rows]],
                         lines[rows].astype(np.int64))


def _describe_split(info):
    if info["source"] == "column":
        return f"split by column {info['column']!r}"
    return (f"generated split, validation_fraction={info['validation_fraction']}, "
            f"test_fraction={info['test_fraction']}")


def _bad_row_message(table, problems, bad_rows):
    first = bad_rows[0]
    column = f", column {first['column']!r}" if first["column"] is not None else ""
    others = len(problems.by_row) - 1
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
