"""Images decoded and resized inside tf.data: a split's images stay on disk (paths) or
encoded (bytes) and only the examples in flight are decoded, in parallel and prefetched,
so memory does not grow with the number of rows.

An image is decoded by `tf.io.decode_image` (JPEG, PNG, GIF: first frame, BMP, WebP;
grayscale replicated to three channels, alpha dropped, 16-bit scaled to 8 bits) and fitted
to `image_size` keeping its aspect ratio by PADDING: it is resized (bilinear, antialiased)
until it fits, then centred on a black canvas (`tf.image.resize_with_pad`). An image
already that size passes unchanged. A row whose image is missing (a blank) is all zeros,
the same blank robustness's `image_missing` and modality dropout use.

The data order matches the in-memory pipeline exactly: the encoded rows are shuffled
with the same seed and buffer as in-memory arrays would be, then decoded in order.

With `cache_dir`, each split is decoded once into a raw uint8 file there (named by a
hash of the sources, their sizes and modification times, and the image size), reused by
later pipelines and later runs; the epochs then read rows from it by offset instead of
decoding (a file read, not a memory map: the pages do not count towards the process).
"""

import dataclasses
import hashlib
import os

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
MAX_SHUFFLE_BUFFER = 50_000
SOURCE_PATH, SOURCE_BYTES, SOURCE_BLANK = 0, 1, 2
CACHE_VERSION = "pad-bilinear-antialias-2"  # 2: integer sizes (fit_pixels)


def shuffle_buffer(n):
    """The shuffle buffer of a split of n rows: every row, up to MAX_SHUFFLE_BUFFER."""
    return max(1, min(n, MAX_SHUFFLE_BUFFER))


def source_tensors(images):
    """(sources: tf.string [N], kinds: int8 [N]) for an object array of image sources:
    a path (str), the encoded bytes, or None (a blank)."""
    kinds = np.array([SOURCE_BLANK if s is None else SOURCE_PATH if isinstance(s, str) else SOURCE_BYTES
                      for s in images], np.int8)
    sources = [b"" if s is None else os.fsencode(s) if isinstance(s, str) else bytes(s) for s in images]
    return tf.constant(sources, dtype=tf.string, shape=[len(sources)]), kinds


def fit_pixels(image, size):
    """Float pixels in [0, 255], (h, w, 3) or a batch (B, h, w, 3) of one size, fitted to
    `size` = (height, width): resized (bilinear, antialiased) to fit with the aspect kept,
    centred on black padding, rounded; unchanged when they already have that size. The
    training pipeline (`fit_image`) and served models (mmkeras.export) both call it.

    The resized and padding sizes are tf.image.resize_with_pad's, computed in integers:
    its float32 formula floor(h / (w / W)) drifts by one pixel once grappler rewrites a
    traced graph (20x9 -> 12x12 gave 11 rows there, 12 in tf.data and eagerly)."""
    height, width = (tf.constant(side, tf.int64) for side in size)
    shape = tf.shape(image, out_type=tf.int64)
    h, w = shape[-3], shape[-2]
    by_width = w * height >= h * width  # the width fills the target, the height is padded
    # At least one pixel: a 1x40 strip would round to 0 rows.
    new_h = tf.maximum(tf.where(by_width, h * width // w, height), 1)
    new_w = tf.maximum(tf.where(by_width, width, w * height // h), 1)
    # resize_with_pad's floor((H - h / ratio) / 2), exactly.
    zero = tf.zeros([], tf.int64)
    top = tf.where(by_width, (height * w - h * width) // (2 * w), zero)
    left = tf.where(by_width, zero, (width * h - w * height) // (2 * h))

    def fit():
        resized = tf.image.resize(image, tf.cast(tf.stack([new_h, new_w]), tf.int32), method="bilinear",
                                  antialias=True)
        padded = tf.image.pad_to_bounding_box(resized, tf.cast(top, tf.int32), tf.cast(left, tf.int32), *size)
        return tf.clip_by_value(tf.round(padded), 0.0, 255.0)

    same = tf.logical_and(tf.equal(h, height), tf.equal(w, width))
    return tf.ensure_shape(tf.cond(same, lambda: image, fit), [*image.shape[:-3], *size, 3])


def fit_image(image, size):
    """uint8 pixels (h, w, 3) or (B, h, w, 3) fitted to `size` by `fit_pixels`, as uint8."""
    return tf.cast(fit_pixels(tf.cast(image, tf.float32), size), tf.uint8)


def decode_source(source, kind, size):
    """One image source (tf.string) of `kind` decoded and fitted to `size`."""

    def decode():
        data = tf.cond(tf.equal(kind, SOURCE_PATH), lambda: tf.io.read_file(source), lambda: source)
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        return fit_image(image, size)

    return tf.cond(tf.equal(kind, SOURCE_BLANK), lambda: tf.zeros([*size, 3], tf.uint8), decode)


@dataclasses.dataclass
class ImageStream:
    """How a streamed dataset's images become pixels: their size and the optional cache."""

    image_size: tuple  # (height, width)
    cache_dir: str = None
    cache_files: dict = dataclasses.field(default_factory=dict)  # split -> decoded-image file

    @property
    def _row_shape(self):
        return (*self.image_size, 3)

    def dataset(self, split, features, labels, *, batch_size=128, shuffle=False, seed=0):
        """A batched, prefetched pipeline of (features with decoded "image", labels)."""
        n = len(labels)
        head = {k: v for k, v in features.items() if k != "image"}
        cached = self.cache_files.get(split)
        if cached:
            head["_row"] = np.arange(n, dtype=np.int64)
        else:
            head["_source"], head["_kind"] = source_tensors(features["image"])
        ds = tf.data.Dataset.from_tensor_slices((head, labels))
        if shuffle:
            ds = ds.shuffle(shuffle_buffer(n), seed=seed, reshuffle_each_iteration=True)
        if cached:
            read = self._cache_reader(cached)
            ds = ds.batch(batch_size).map(lambda f, y: (_with_image(f, read(f["_row"]), "_row"), y),
                                          num_parallel_calls=AUTOTUNE)
        else:
            size = self.image_size
            ds = ds.map(lambda f, y: (_with_image(f, decode_source(f["_source"], f["_kind"], size),
                                                  "_source", "_kind"), y),
                        num_parallel_calls=AUTOTUNE).batch(batch_size)
        return ds.prefetch(AUTOTUNE)

    def decode(self, split, images, rows=None):
        """uint8 [k, h, w, 3]: the images of `split` (all, or the positions `rows`)."""
        index = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        cached = self.cache_files.get(split)
        if cached:
            return self._read_rows(cached, index)
        return self._decode_all(np.asarray(images, dtype=object)[index])

    def prepare(self, split, images):
        """Decode `split` into the cache (unless an identical one is there); no-op without
        cache_dir. Returns the cache file's path, or None."""
        if not self.cache_dir:
            return None
        path = os.path.join(self.cache_dir, f"images-{self.image_size[0]}x{self.image_size[1]}-"
                                            f"{self._cache_key(images)}.u8")
        expected = len(images) * int(np.prod(self._row_shape))
        if not (os.path.isfile(path) and os.path.getsize(path) == expected):
            os.makedirs(self.cache_dir, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"  # write then rename: no half cache after an interrupt
            with open(tmp, "wb") as f:
                for batch in self._decoded_batches(images):
                    f.write(np.ascontiguousarray(batch).tobytes())
            os.replace(tmp, path)
        self.cache_files[split] = path
        return path

    def _decoded_batches(self, images, batch_size=32):
        # Small batches: with 256 rows of 128x128 the peak RSS of decoding grew by ~60 MB
        # more (allocator high-water marks), for no speed gained.
        sources, kinds = source_tensors(images)
        size = self.image_size
        ds = tf.data.Dataset.from_tensor_slices((sources, kinds))
        ds = ds.map(lambda s, k: decode_source(s, k, size), num_parallel_calls=AUTOTUNE)
        for batch in ds.batch(batch_size).prefetch(AUTOTUNE):
            yield batch.numpy()

    def _decode_all(self, images):
        batches = list(self._decoded_batches(images))
        return np.concatenate(batches) if batches else np.zeros((0, *self._row_shape), np.uint8)

    def _cache_key(self, images):
        digest = hashlib.sha1(f"{CACHE_VERSION}|{self.image_size}|{len(images)}".encode())
        for source in images:
            if source is None:
                digest.update(b"|blank")
            elif isinstance(source, str):
                try:
                    stat = os.stat(source)
                    digest.update(f"|{source}|{stat.st_size}|{stat.st_mtime_ns}".encode())
                except OSError:
                    digest.update(f"|{source}|absent".encode())
            else:
                digest.update(b"|" + hashlib.sha1(bytes(source)).digest())
        return digest.hexdigest()[:16]

    def _read_rows(self, path, index):
        shape = self._row_shape
        row_bytes = int(np.prod(shape))
        out = np.empty((len(index), *shape), np.uint8)
        with open(path, "rb") as f:
            for j, i in enumerate(index):
                f.seek(int(i) * row_bytes)
                f.readinto(memoryview(out[j]).cast("B"))
        return out

    def _cache_reader(self, path):
        shape = self._row_shape

        def read(rows):
            images = tf.numpy_function(lambda index: self._read_rows(path, index), [rows], tf.uint8,
                                       stateful=False)
            return tf.ensure_shape(images, [None, *shape])

        return read


def _with_image(features, image, *drop):
    out = {k: v for k, v in features.items() if k not in drop}
    out["image"] = image
    return out
