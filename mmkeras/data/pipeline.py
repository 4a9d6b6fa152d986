"""tf.data pipelines: dict features {"image", "text"} plus integer labels.

Text is vectorized once, up front, by a Keras `TextVectorization` adapted on the training
texts only; sequences are right-padded with 0 (models mask them) to a length fitted to the
training texts unless one is given (`fit_sequence_length`). The validation split is
carved from train, never from test, unless the data brings its own (a manifest's split).
One seed fixes the split and the shuffle order.

Images come two ways. A PairedData holds them as uint8 arrays, cached in memory. A
streamed dataset (one with an `image_stream(cache_dir)` method: a manifest) holds
encoded sources (paths or bytes) that its ImageStream decodes inside tf.data; its
pipelines yield exactly the batches the same images as arrays would, for the same seed.
"""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from mmkeras.argument_checks import check_optional_positive_int
from mmkeras.data.streaming import shuffle_buffer

AUTOTUNE = tf.data.AUTOTUNE
NO_WORDS = "[no words]"  # the vocabulary of texts without a word (punctuation is stripped)
# The fitted sequence length (`fit_sequence_length`): the token count that covers this
# quantile of the training texts, rounded up to a multiple of SEQUENCE_MULTIPLE, within
# [MIN_SEQUENCE_LENGTH, MAX_SEQUENCE_LENGTH]. A quantile, not the maximum, so that one long
# outlier does not pad every batch; the cap bounds the recurrent branches' steps.
SEQUENCE_QUANTILE = 0.99
SEQUENCE_MULTIPLE = 8
MIN_SEQUENCE_LENGTH, MAX_SEQUENCE_LENGTH = 8, 128


def fit_sequence_length(token_counts):
    """The padded length for texts of `token_counts` tokens each: their 99th percentile
    rounded up to a multiple of 8, within [8, 128]. Short captions (10-17 words) get 16,
    where a fixed 24 ran a third of every LSTM's steps over padding; long descriptions get
    up to 128 rather than being cut at a constant."""
    counts = np.asarray(token_counts, dtype=np.float64).reshape(-1)
    if counts.size == 0 or (counts < 0).any():
        raise ValueError(f"`token_counts` must be a non-empty sequence of counts >= 0. Received {token_counts!r}.")
    # "inverted_cdf": the smallest count that at least 99% of the texts do not exceed.
    covered = np.quantile(counts, SEQUENCE_QUANTILE, method="inverted_cdf")
    covered = math.ceil(covered / SEQUENCE_MULTIPLE) * SEQUENCE_MULTIPLE
    return int(min(max(covered, MIN_SEQUENCE_LENGTH), MAX_SEQUENCE_LENGTH))


def _vectorizer(vocab_size, sequence_length, name):
    return keras.layers.TextVectorization(
        max_tokens=vocab_size, output_mode="int", output_sequence_length=sequence_length, name=name
    )


def make_text_vectorizer(texts, vocab_size=2000, sequence_length=None, name="text_vectorizer"):
    """A TextVectorization layer adapted on `texts` (token 0 = padding, 1 = [UNK]), padding
    to `sequence_length` tokens; None: fitted to `texts` (`fit_sequence_length`)."""
    if vocab_size < 3:
        raise ValueError(f"`vocab_size` must be >= 3 (padding, [UNK], a word). Received vocab_size={vocab_size}.")
    sequence_length = check_optional_positive_int("sequence_length", sequence_length)  # None: fitted
    vectorizer = _vectorizer(vocab_size, sequence_length or MAX_SEQUENCE_LENGTH, name)
    vectorizer.adapt(tf.constant(np.asarray(texts, dtype=np.str_)), batch_size=4096)
    if len(vectorizer.get_vocabulary()) < 3:
        # No word at all (every text empty: image-only data): an empty lookup table fails
        # when called, so hold one placeholder that standardized text can never contain.
        vectorizer.set_vocabulary([NO_WORDS])
    if sequence_length is None:
        # Count each text's tokens with the adapted layer itself (its standardization and
        # split; ids are never 0 but for padding), then pad to the fitted length.
        counts = (vectorize(vectorizer, texts) != 0).sum(axis=1) if len(texts) else [0]
        fitted = _vectorizer(vocab_size, fit_sequence_length(counts), name)
        fitted.set_vocabulary(vectorizer.get_vocabulary())
        vectorizer = fitted
    return vectorizer


def vectorize(vectorizer, texts, batch_size=8192):
    """Token ids (int32, right-padded) for `texts`, computed in large batches once."""
    texts = np.asarray(texts, dtype=np.str_)
    out = [
        np.asarray(vectorizer(tf.constant(texts[i : i + batch_size])), dtype=np.int32)
        for i in range(0, len(texts), batch_size)
    ]
    length = vectorizer.get_config()["output_sequence_length"]
    return np.concatenate(out) if out else np.zeros((0, length), np.int32)


def make_dataset(features, labels, batch_size=128, shuffle=False, seed=0, cache=True):
    """A batched, prefetched tf.data pipeline of (features, labels) over in-memory arrays.

    `features` is a dict of arrays; images stay uint8 (the models rescale in-graph), so the
    cache is 4x smaller than float pixels and no preprocessing runs in the step loop.
    """
    ds = tf.data.Dataset.from_tensor_slices((features, labels))
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer(len(labels)), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


@dataclasses.dataclass
class PairedDatasets:
    """Train / validation / test pipelines plus what a model builder needs to know."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    vectorizer: keras.layers.TextVectorization
    class_names: list
    image_shape: tuple
    vocab_size: int
    sequence_length: int
    # split -> (features dict, labels): the vectorized arrays behind the pipelines. Streamed
    # (stream set): features["image"] holds the image sources (paths / bytes / None for a
    # blank), not pixels; `features(split, rows)` decodes them.
    arrays: dict
    batch_size: int = None  # of the pipelines (None: unknown, built by hand)
    seed: int = 0  # of the training pipeline's shuffle
    stream: object = None  # streaming.ImageStream of a streamed set; None: images in memory

    @property
    def num_classes(self):
        return len(self.class_names)

    def model_kwargs(self):
        """The common keyword arguments of every registered model, for this data."""
        return dict(num_classes=self.num_classes, image_shape=self.image_shape,
                    vocab_size=self.vocab_size, sequence_length=self.sequence_length)

    def size(self, split):
        return len(self.arrays[split][1])

    def features(self, split, rows=None):
        """The features dict of `split` (all rows, or the positions `rows`) with images as
        uint8 [N, H, W, 3] pixels, decoded when the set is streamed. Mind the memory: a
        whole large split of a streamed set is decoded at once."""
        features = self.arrays[split][0]
        index = slice(None) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        out = {k: v[index] for k, v in features.items()}
        if self.stream is not None:
            out["image"] = self.stream.decode(split, features["image"], rows)
        return out

    def pipeline(self, split, batch_size, cache=True, shuffle=None):
        """A fresh pipeline over `split`; shuffled from the seed for "train" unless
        `shuffle` says otherwise (evaluation reads every split in order)."""
        features, labels = self.arrays[split]
        shuffle = split == "train" if shuffle is None else shuffle
        if self.stream is not None:
            return self.stream.dataset(split, features, labels, batch_size=batch_size, shuffle=shuffle,
                                       seed=self.seed)
        return make_dataset(features, labels, batch_size=batch_size, shuffle=shuffle, seed=self.seed,
                            cache=cache)

    def with_batch_size(self, batch_size):
        """Fresh pipelines over the same arrays (text is not vectorized again), batched by
        `batch_size`. Their shuffle starts from the seed: a pipeline that was iterated
        before draws a new order every epoch, so a model's data order would depend on what
        trained before it in the same process."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1. Received batch_size={batch_size!r}.")
        pipelines = {split: self.pipeline(split, batch_size) for split in self.arrays}
        return dataclasses.replace(self, **pipelines, batch_size=batch_size)


def split_train_validation(n, validation_fraction, seed):
    """Seeded (train_index, validation_index) over range(n)."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"`validation_fraction` must lie in [0, 1). Received {validation_fraction}.")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * validation_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def make_datasets(data, batch_size=128, vocab_size=2000, sequence_length=None,
                  validation_fraction=0.1, seed=0, cache=True, cache_dir=None):
    """Pipelines for a PairedData or a streamed set (a manifest): vectorize text once,
    split, cache, shuffle, batch, prefetch.

    sequence_length: tokens per text; None: fitted to the training texts
        (`fit_sequence_length`: 16 for the project's captions); the result's
        `sequence_length` says which.
    validation_fraction: of train, carved as validation, unless the data brings a
        non-empty `validation` split of its own (then it is used and this is not).
    cache: keep in-memory arrays' pipelines in memory (`Dataset.cache()`).
    cache_dir: a streamed set's decoded, resized images are cached there (decoded once,
        read back by later pipelines and runs); None: the data's own (e.g.
        load_manifest(cache_dir=)), else decoded every epoch.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received batch_size={batch_size}.")
    own_validation = getattr(data, "validation", None)
    if own_validation is not None and len(own_validation):
        train, val = data.train, own_validation
    else:
        train_idx, val_idx = split_train_validation(len(data.train), validation_fraction, seed)
        train, val = data.train.take(train_idx), data.train.take(val_idx)
    stream = data.image_stream(cache_dir) if hasattr(data, "image_stream") else None
    if cache_dir is not None and stream is None:
        raise ValueError("`cache_dir` caches decoded images of a streamed dataset (a manifest); "
                         f"{type(data).__name__} holds its images in memory already. "
                         f"Received cache_dir={cache_dir!r}.")
    vectorizer = make_text_vectorizer(train.text, vocab_size, sequence_length)
    arrays = {}
    for split, part in (("train", train), ("validation", val), ("test", data.test)):
        arrays[split] = ({"image": part.image, "text": vectorize(vectorizer, part.text)}, part.label)
        if stream is not None:
            stream.prepare(split, part.image)
    datasets = PairedDatasets(
        None, None, None, vectorizer, list(data.class_names), tuple(data.image_shape),
        len(vectorizer.get_vocabulary()), vectorizer.get_config()["output_sequence_length"], arrays, batch_size,
        seed, stream,
    )
    pipelines = {split: datasets.pipeline(split, batch_size, cache=cache) for split in arrays}
    return dataclasses.replace(datasets, **pipelines)


def with_modality_dropout(dataset, rate, seed=0):
    """Blank one modality for a fraction `rate` of training examples (half image, half text).

    A blanked image is all zeros; a blanked caption is all padding (the models read it as
    one [UNK] token). Trains a model to cope when a modality is missing at test time.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"`rate` must lie in [0, 1]. Received rate={rate}.")
    if rate == 0:
        return dataset
    generator = tf.random.Generator.from_seed(seed)

    def blank(features, labels):
        n = tf.shape(features["text"])[0]
        u = generator.uniform([n])
        drop_image = u < rate / 2
        drop_text = tf.logical_and(u >= rate / 2, u < rate)
        image = tf.where(drop_image[:, None, None, None], tf.zeros_like(features["image"]), features["image"])
        text = tf.where(drop_text[:, None], tf.zeros_like(features["text"]), features["text"])
        return {**features, "image": image, "text": text}, labels

    return dataset.map(blank, num_parallel_calls=1).prefetch(AUTOTUNE)
