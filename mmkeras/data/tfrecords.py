"""Sharded TFRecords: a dataset written once as N files per split, read back streamed, and
split between the workers of a multi-worker run BY FILE.

    write_tfrecords(load_manifest("pets.csv"), "pets-shards", shards=8)
    data = read_tfrecords("pets-shards")            # or load_dataset("pets-shards")
    ds = make_datasets(data, batch_size=64)          # as a manifest: decoded inside tf.data

What is written in `out_dir`:
- `<split>-00000-of-00008.tfrecord` ... for train, validation (when the dataset has one)
  and test: `tf.train.Example` records with `image` (the encoded bytes: the original file
  or bytes of a manifest, unchanged; arrays PNG-encoded; empty for an image-missing row),
  `text` (raw UTF-8), `label` (int64, an index into the class names), `line` (the row's
  manifest line, -1 when there is none) and `row` (its position in the split). Row i of a
  split goes to shard i % shards, so every shard holds a mix of the whole split and the
  shards read round-robin give back the original order.
- `<split>.index.npz`: each record's shard, byte offset and length, with its text, label
  and line, so a reader finds any record without scanning and a worker never opens
  another worker's files (every worker still needs every training text: the vocabulary is
  adapted on them and must be the same everywhere).
- `tfrecords.json`, written last: class names, image size, files and row counts per
  split, the data summary of the source (bad rows, skipped, blanked, class counts).

Reading back gives a `TFRecordData`, which `make_datasets` takes as it takes a manifest:
images are read by offset and decoded inside tf.data, and its pipelines yield exactly the
batches of the source dataset for the same seed. With `num_workers` / `worker_index` (or a
multi-worker `strategy`), the train split holds only the rows of this worker's shards
(shard k goes to worker k % num_workers); its pipelines carry the auto-shard policy OFF,
so tf.distribute does not split them again, while validation and test stay whole (and
are split by data as usual). Every worker then takes the same number of training rows
(the smallest share: a few rows are left out when the shards are not equal).
"""

import dataclasses
import glob
import hashlib
import io
import json
import os
import sys
import threading

import numpy as np
import tensorflow as tf

from mmkeras.data.manifest import SPLITS, ManifestData, ManifestSplit, _image_size_argument
from mmkeras.data.streaming import (AUTOTUNE, CACHE_VERSION, SOURCE_BLANK, SOURCE_BYTES, ImageStream,
                                    _with_image, decode_source, shuffle_buffer)

METADATA = "tfrecords.json"
FORMAT = "mmkeras-tfrecords"
VERSION = 1
_FRAMING = 12  # bytes before a record's data: uint64 length + uint32 CRC (and 4 after it)


def shard_name(split, index, shards):
    return f"{split}-{index:05d}-of-{shards:05d}.tfrecord"


def is_tfrecord_dir(spec):
    """Whether `spec` is a directory written by write_tfrecords."""
    return isinstance(spec, str) and os.path.isfile(os.path.join(spec, METADATA))


# --- writing ----------------------------------------------------------------------------------

def write_tfrecords(dataset, out_dir, *, shards=8, overwrite=False, verbose=True):
    """Write `dataset` (a PairedData, a ManifestData or a TFRecordData: whatever
    load_dataset returns) as `shards` TFRecord files per split in `out_dir`; returns the
    metadata written to tfrecords.json. A split with fewer rows than `shards` gets one file
    per row. `overwrite`: replace the shards of an earlier write in `out_dir`."""
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
        raise ValueError(f"`shards` must be an int >= 1. Received shards={shards!r}.")
    out_dir = os.fspath(out_dir)
    splits = {split: getattr(dataset, split, None) for split in SPLITS}
    splits = {split: part for split, part in splits.items() if part is not None and len(part)}
    for split in ("train", "test"):
        if split not in splits:
            raise ValueError(f"The dataset has no {split} rows; write_tfrecords writes train, "
                             f"validation (if any) and test. Received {type(dataset).__name__} with "
                             f"{', '.join(f'{s} {len(p)}' for s, p in splits.items()) or 'no rows'}.")
    _prepare_out_dir(out_dir, overwrite)
    encode = _encoder(dataset)
    meta = {"format": FORMAT, "version": VERSION, "name": getattr(dataset, "name", "") or "",
            "class_names": [str(c) for c in dataset.class_names],
            "image_size": list(_image_size(dataset)), "splits": {}, "data": _summary(dataset)}
    for split, part in splits.items():
        meta["splits"][split] = _write_split(out_dir, split, part, min(int(shards), len(part)), encode)
    with open(os.path.join(out_dir, METADATA + ".tmp"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    os.replace(os.path.join(out_dir, METADATA + ".tmp"), os.path.join(out_dir, METADATA))
    if verbose:
        counts = ", ".join(f"{s} {info['rows']} rows in {len(info['files'])} files"
                           for s, info in meta["splits"].items())
        print(f"{out_dir}: {counts}", file=sys.stderr)
    return meta


def _prepare_out_dir(out_dir, overwrite):
    old = [os.path.join(out_dir, METADATA)] if os.path.exists(os.path.join(out_dir, METADATA)) else []
    old += glob.glob(os.path.join(out_dir, "*.tfrecord")) + glob.glob(os.path.join(out_dir, "*.index.npz"))
    if old and not overwrite:
        raise FileExistsError(f"{out_dir} already holds TFRecord shards ({len(old)} files, e.g. "
                              f"{os.path.basename(sorted(old)[0])}); pass overwrite=True to replace them "
                              "or choose another directory.")
    for path in old:
        os.remove(path)
    os.makedirs(out_dir, exist_ok=True)


def _write_split(out_dir, split, part, shards, encode):
    n = len(part)
    shard = np.arange(n, dtype=np.int32) % shards
    offset, length = np.zeros(n, np.int64), np.zeros(n, np.int64)
    position = [0] * shards
    files = [shard_name(split, k, shards) for k in range(shards)]
    writers = [tf.io.TFRecordWriter(os.path.join(out_dir, f)) for f in files]
    line = _lines(part)
    try:
        for i in range(n):
            record = _example(encode(part, i), str(part.text[i]), int(part.label[i]), int(line[i]), i)
            k = shard[i]
            writers[k].write(record)
            offset[i], length[i] = position[k], len(record)
            position[k] += _FRAMING + len(record) + 4
    finally:
        for w in writers:
            w.close()
    np.savez(os.path.join(out_dir, f"{split}.index.npz"), shard=shard, offset=offset, length=length,
             text=np.asarray(part.text, dtype=np.str_), label=np.asarray(part.label, np.int64), line=line)
    return {"files": files, "rows": n, "shard_rows": np.bincount(shard, minlength=shards).tolist(),
            "shard_bytes": position, "index": f"{split}.index.npz"}


def _example(image, text, label, line, row):
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode("utf-8")])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "line": tf.train.Feature(int64_list=tf.train.Int64List(value=[line])),
        "row": tf.train.Feature(int64_list=tf.train.Int64List(value=[row])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _encoder(dataset):
    """fn(split, i) -> the encoded image bytes of row i (b"" for an image-missing row)."""
    if isinstance(dataset, TFRecordData):
        return lambda part, i: dataset.records.image(int(part.image[i]))
    from PIL import Image

    def encode(part, i):
        source = part.image[i]
        if source is None:
            return b""
        if isinstance(source, str):
            with open(source, "rb") as f:
                return f.read()
        if isinstance(source, (bytes, bytearray, memoryview)):
            return bytes(source)
        buffer = io.BytesIO()  # pixels held in memory: PNG keeps them exactly
        Image.fromarray(np.asarray(source, np.uint8)).save(buffer, format="PNG", compress_level=3)
        return buffer.getvalue()

    return encode


def _lines(part):
    return np.asarray(part.line, np.int64) if hasattr(part, "line") else np.full(len(part), -1, np.int64)


def _image_size(dataset):
    size = getattr(dataset, "image_size", None)
    return tuple(int(s) for s in (size if size is not None else dataset.image_shape[:2]))


def _summary(dataset):
    """The source's "data" record (a manifest's bad rows, skips, blanks), or a plain one."""
    if hasattr(dataset, "summary"):
        summary = dict(dataset.summary())
        summary.pop("tfrecords", None)
        return summary
    names = list(dataset.class_names)
    counts = {}
    for split in SPLITS:
        part = getattr(dataset, split, None)
        labels = np.asarray(part.label) if part is not None else np.zeros(0, np.int64)
        counts[split] = {names[c]: int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
    return {"source": getattr(dataset, "name", "") or "", "n_rows": sum(sum(c.values()) for c in counts.values()),
            "bad_rows": [], "skipped": [], "blanked": [], "class_counts": counts}


# --- reading ----------------------------------------------------------------------------------

@dataclasses.dataclass
class RecordTable:
    """Where every record of a TFRecord directory lies: global record id -> (file, offset,
    length). Ids number the train records first, then validation, then test."""

    files: list  # absolute paths
    file_index: np.ndarray  # int32 [N]
    offset: np.ndarray  # int64 [N]: where the record's framing starts in its file
    length: np.ndarray  # int64 [N]: bytes of the serialized Example
    _fds: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    _lock: object = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def read(self, record_id):
        """The serialized Example of one record (os.pread: safe from parallel map threads)."""
        i = int(record_id)
        k = int(self.file_index[i])
        fd = self._fds.get(k)
        if fd is None:
            with self._lock:
                fd = self._fds.get(k)
                if fd is None:
                    fd = self._fds[k] = os.open(self.files[k], os.O_RDONLY)
        return os.pread(fd, int(self.length[i]), int(self.offset[i]) + _FRAMING)

    def image(self, record_id):
        """The encoded image bytes of one record (b"" for an image-missing row)."""
        example = tf.train.Example.FromString(self.read(record_id))
        return example.features.feature["image"].bytes_list.value[0]

    def __del__(self):
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass


@dataclasses.dataclass
class TFRecordData(ManifestData):
    """A dataset read from TFRecord shards. Its splits are ManifestSplits whose `image`
    holds record ids (int64) into `records`; `make_datasets` takes it as a manifest."""

    directory: str = ""
    records: RecordTable = None
    worker: tuple = None  # (index, count) when the train split is this worker's shards only
    left_out: int = 0  # training rows left out so every worker has the same number
    train_records: int = 0  # records in the train shards: ids below it are train records

    def image_stream(self, cache_dir=None):
        return TFRecordStream(tuple(self.image_size), cache_dir or self.cache_dir, records=self.records,
                              local_below=self.train_records if self.worker is not None else 0)

    def summary(self):
        record = super().summary()
        record["tfrecords"] = {"directory": self.directory, "files": len(self.records.files),
                               "worker": list(self.worker) if self.worker else None,
                               "left_out": self.left_out}
        return record


@dataclasses.dataclass
class TFRecordStream(ImageStream):
    """An ImageStream whose sources are record ids: each image is read by offset from its
    shard, parsed and decoded inside tf.data, in the order a manifest's would be."""

    records: RecordTable = None
    local_below: int = 0  # ids below this are this worker's own train records (auto-shard OFF)

    def dataset(self, split, features, labels, *, batch_size=128, shuffle=False, seed=0):
        ids = np.asarray(features["image"], np.int64)
        if self.cache_files.get(split):
            ds = super().dataset(split, features, labels, batch_size=batch_size, shuffle=shuffle, seed=seed)
        else:
            head = {k: v for k, v in features.items() if k != "image"}
            head["_record"] = ids
            ds = tf.data.Dataset.from_tensor_slices((head, labels))
            if shuffle:
                ds = ds.shuffle(shuffle_buffer(len(labels)), seed=seed, reshuffle_each_iteration=True)
            size = self.image_size
            ds = ds.map(lambda f, y: (_with_image(f, decode_source(*self._encoded(f["_record"]), size), "_record"), y),
                        num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE)
        if len(ids) and ids.max() < self.local_below:
            ds = _worker_local(ds)
        return ds

    def _encoded(self, record_id):
        # A bytes result: an object array here would leak every record (TF 2.21).
        serialized = tf.numpy_function(self.records.read, [record_id], tf.string, stateful=False)
        serialized = tf.ensure_shape(serialized, [])
        image = tf.io.parse_single_example(serialized, {"image": tf.io.FixedLenFeature([], tf.string)})["image"]
        kind = tf.where(tf.strings.length(image) > 0, tf.constant(SOURCE_BYTES, tf.int8),
                        tf.constant(SOURCE_BLANK, tf.int8))
        return image, kind

    def _decoded_batches(self, images, batch_size=32):
        size = self.image_size
        ds = tf.data.Dataset.from_tensor_slices(np.asarray(images, np.int64))
        ds = ds.map(lambda i: decode_source(*self._encoded(i), size), num_parallel_calls=AUTOTUNE)
        for batch in ds.batch(batch_size).prefetch(AUTOTUNE):
            yield batch.numpy()

    def _cache_key(self, images):
        digest = hashlib.sha1(f"{CACHE_VERSION}|tfrecords|{self.image_size}|{len(images)}".encode())
        for path in self.records.files:
            stat = os.stat(path)
            digest.update(f"|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        digest.update(np.asarray(images, np.int64).tobytes())
        return digest.hexdigest()[:16]


def _worker_local(ds):
    """A pipeline over this worker's own shards, marked so for tf.distribute.

    Auto-shard OFF: these rows are this worker's share already. tf.distribute still splits
    every batch of B (the global batch) into num_workers pieces, so each step takes
    B / num_workers of this worker's rows and the global step B, as with DATA sharding;
    an epoch is then num_workers times more steps than this pipeline's cardinality, which
    Keras would take as the epoch's length. An unknown cardinality (that of any
    TFRecordDataset) makes Keras run each epoch to the end of the data instead.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.filter(lambda *_: True).with_options(options)


def read_tfrecords(directory, *, num_workers=1, worker_index=0, strategy=None, image_size=None,
                   cache_dir=None, name=None, verbose=True):
    """The TFRecordData of a directory written by write_tfrecords.

    num_workers, worker_index: keep only this worker's train shards (shard k goes to worker
        k % num_workers); `strategy` (a multi-worker tf.distribute strategy) sets both from
        its cluster. More workers than train shards is an error.
    image_size: override the size images are fitted to (default: the one written).
    cache_dir: where make_datasets caches decoded images (see streaming).
    """
    directory = os.fspath(directory)
    if strategy is not None:
        from mmkeras import distribute

        num_workers, worker_index = distribute.worker_count(strategy), distribute.task_id(strategy)
    meta = _read_metadata(directory)
    train_files = len(meta["splits"]["train"]["files"])
    _check_worker(num_workers, worker_index, train_files, directory)
    files, parts, first_id = [], {}, 0
    file_index, offsets, lengths = [], [], []
    for split in SPLITS:
        info = meta["splits"].get(split)
        if info is None:
            parts[split] = _empty_split()
            continue
        index = _read_index(directory, split, info)
        ids = first_id + np.arange(info["rows"], dtype=np.int64)
        file_index.append(index["shard"].astype(np.int32) + len(files))
        offsets.append(index["offset"])
        lengths.append(index["length"])
        files += [os.path.abspath(os.path.join(directory, f)) for f in info["files"]]
        parts[split] = ManifestSplit(ids, index["text"], index["label"], index["line"])
        if split == "train":
            train_shard = index["shard"]
        first_id += info["rows"]
    records = RecordTable(files, np.concatenate(file_index), np.concatenate(offsets), np.concatenate(lengths))
    left_out, worker = 0, None
    if num_workers > 1:
        worker = (int(worker_index), int(num_workers))
        parts["train"], left_out = _worker_rows(parts["train"], train_shard, meta["splits"]["train"], *worker)
    summary = meta.get("data", {})
    size = tuple(meta["image_size"]) if image_size is None else _image_size_argument(image_size)
    data = TFRecordData(
        parts["train"], parts["test"], list(meta["class_names"]), name=name or meta.get("name") or
        os.path.basename(os.path.normpath(directory)), validation=parts["validation"], image_size=size,
        cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
        source=summary.get("source", directory), n_rows=summary.get("n_rows", first_id),
        bad_rows=summary.get("bad_rows", []), skipped=summary.get("skipped", []),
        blanked=summary.get("blanked", []), class_counts=summary.get("class_counts", {}),
        split=summary.get("split", {}),
        image_size_choice="given" if image_size is not None else "as written",
        line_kind=summary.get("line_kind", "line"), directory=os.path.abspath(directory), records=records,
        worker=worker, left_out=left_out, train_records=meta["splits"]["train"]["rows"])
    if verbose:
        counts = ", ".join(f"{s} {len(getattr(data, s))}" for s in SPLITS)
        mine = (f"; worker {worker[0]} of {worker[1]} reads train shards {worker[0]}, {worker[0] + worker[1]}, ..."
                + (f" ({left_out} rows left out to even the workers)" if left_out else "")) if worker else ""
        print(f"{directory}: {len(files)} TFRecord files; {counts}; {data.num_classes} classes; "
              f"image size {size[0]}x{size[1]}{mine}", file=sys.stderr)
    return data


def _read_metadata(directory):
    path = os.path.join(directory, METADATA)
    if not os.path.isfile(path):
        raise ValueError(f"{directory} is not a TFRecord directory written by write_tfrecords: it has no "
                         f"{METADATA}. Received directory={directory!r}.")
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{path} is not a {FORMAT} version {VERSION} file. Received format="
                         f"{meta.get('format')!r}, version={meta.get('version')!r}.")
    return meta


def _read_index(directory, split, info):
    for f, size in zip(info["files"], info["shard_bytes"]):
        path = os.path.join(directory, f)
        have = os.path.getsize(path) if os.path.isfile(path) else None
        if have != size:
            raise ValueError(f"{path}: {'missing' if have is None else f'{have} bytes'}, but {METADATA} "
                             f"says {size} bytes: the shards of {directory} are incomplete or from another "
                             "write. Write them again with write_tfrecords(..., overwrite=True).")
    with np.load(os.path.join(directory, info["index"])) as z:
        return {k: z[k] for k in z.files}


def _check_worker(num_workers, worker_index, train_files, directory):
    for arg, value, low in (("num_workers", num_workers, 1), ("worker_index", worker_index, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"`{arg}` must be an int >= {low}. Received {arg}={value!r}.")
    if worker_index >= num_workers:
        raise ValueError(f"`worker_index` must lie in [0, {num_workers}). Received worker_index={worker_index}, "
                         f"num_workers={num_workers}.")
    if train_files < num_workers:
        raise ValueError(f"{directory} has {train_files} train shard(s), fewer than the {num_workers} workers: "
                         "each worker reads its own shards. Write it again with "
                         f"write_tfrecords(data, out_dir, shards=N), N >= {num_workers} (a multiple of "
                         f"{num_workers} keeps the workers' rows equal). Received num_workers={num_workers}.")


def _worker_rows(train, shard, info, index, count):
    """This worker's train rows (shards k with k % count == index), cut to the smallest
    worker's share so every worker runs the same number of steps."""
    per_worker = [sum(info["shard_rows"][k::count]) for k in range(count)]
    keep = min(per_worker)
    mine = np.flatnonzero(shard % count == index)[:keep]
    return train.take(mine), int(sum(per_worker) - keep * count)


def _empty_split():
    return ManifestSplit(np.zeros(0, np.int64), np.zeros(0, np.str_), np.zeros(0, np.int64), np.zeros(0, np.int64))

