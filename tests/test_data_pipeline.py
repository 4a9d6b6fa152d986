"""tf.data pipelines: dtypes, shapes, right padding, split hygiene, reproducibility."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.data import PairedData, PairedSplit, make_datasets, make_text_vectorizer, vectorize
from mmkeras.data.pipeline import fit_sequence_length


def test_pipeline_dtypes_and_shapes(tiny_datasets):
    features, labels = next(iter(tiny_datasets.train))
    assert set(features) == {"image", "text"}
    assert features["image"].dtype.name == "uint8" and tuple(features["image"].shape[1:]) == (16, 16, 3)
    assert features["text"].dtype.name == "int32" and features["text"].shape[1] == 10
    assert labels.dtype.name == "int64" and features["image"].shape[0] == 32
    kw = tiny_datasets.model_kwargs()
    assert kw["num_classes"] == 6 and kw["image_shape"] == (16, 16, 3) and kw["sequence_length"] == 10


def test_text_is_right_padded():
    v = make_text_vectorizer(["a red ball", "the blue cube is big"], vocab_size=20, sequence_length=6)
    ids = vectorize(v, ["red ball", "zzz", ""])
    assert ids[0, 0] > 1 and ids[0, 1] > 1 and (ids[0, 2:] == 0).all()
    assert ids[1, 0] == 1 and (ids[2] == 0).all()


def test_validation_from_train_never_test(synthetic_data):
    ds = make_datasets(synthetic_data, batch_size=16, vocab_size=50, sequence_length=8,
                       validation_fraction=0.25, seed=3)
    assert ds.size("train") + ds.size("validation") == len(synthetic_data.train)
    assert ds.size("test") == len(synthetic_data.test)
    train_imgs = {x.tobytes() for x in synthetic_data.train.image}
    assert all(x.tobytes() in train_imgs for x in ds.arrays["validation"][0]["image"])


def test_vectorizer_adapted_on_train_only(synthetic_data):
    test = PairedSplit(synthetic_data.test.image, np.full(len(synthetic_data.test), "unseenword " * 3),
                       synthetic_data.test.label)  # words only in test must map to [UNK]
    data = PairedData(synthetic_data.train, test, synthetic_data.class_names)
    ds = make_datasets(data, batch_size=16, vocab_size=50, sequence_length=8, seed=0)
    assert "unseenword" not in ds.vectorizer.get_vocabulary()
    assert (ds.arrays["test"][0]["text"][:, 0] == 1).all()


def test_same_seed_same_batches(synthetic_data):
    def first_batch(seed):
        ds = make_datasets(synthetic_data, batch_size=16, vocab_size=50, sequence_length=8, seed=seed)
        f, y = next(iter(ds.train))
        return y.numpy(), ds.arrays["validation"][1]

    a, b, c = first_batch(5), first_batch(5), first_batch(6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("counts, length", [
    ([3] * 50, 8),  # short texts: the floor
    ([10] * 60 + [15] * 39 + [17], 16),  # captions: 99% have <= 15 tokens
    ([20] * 99 + [1000], 24),  # one outlier does not pad every batch
    ([300] * 10, 128),  # long descriptions: capped
    ([0] * 5, 8),  # no words at all
])
def test_fitted_sequence_length(counts, length):
    assert fit_sequence_length(counts) == length


def test_sequence_length_fitted_to_the_training_texts(synthetic_data):
    words = [" ".join(["word"] * n) for n in range(1, 31)]  # 1..30 tokens
    v = make_text_vectorizer(words * 4, vocab_size=20)
    assert v.get_config()["output_sequence_length"] == 32
    ids = vectorize(v, ["word word word", " ".join(["word"] * 40)])
    assert ids.shape == (2, 32) and (ids[0, :3] > 1).all() and (ids[0, 3:] == 0).all() and (ids[1] > 1).all()
    # The same vocabulary as a vectorizer of a given length: only the padding differs.
    fixed = make_text_vectorizer(words * 4, vocab_size=20, sequence_length=40)
    assert fixed.get_vocabulary() == v.get_vocabulary()
    ds = make_datasets(synthetic_data, batch_size=16, vocab_size=50, seed=0)
    longest = max(len(t.split()) for t in synthetic_data.train.text)
    assert ds.sequence_length == ds.arrays["train"][0]["text"].shape[1] == ds.model_kwargs()["sequence_length"]
    assert ds.sequence_length % 8 == 0 and ds.sequence_length < longest + 8


def test_fitted_vectorizer_saves_and_loads(tmp_path):
    """The fitted vectorizer (its vocabulary set, not adapted) round-trips through .keras."""
    v = make_text_vectorizer(["a red ball", "the blue cube is big", "a ball"] * 5, vocab_size=20)
    model = keras.Sequential([keras.Input((1,), dtype="string"), v])
    model.save(tmp_path / "v.keras")
    loaded = keras.models.load_model(tmp_path / "v.keras")
    texts = tf.constant([["red cube"], ["zzz ball is big"], [""]])
    np.testing.assert_array_equal(np.asarray(loaded(texts)), np.asarray(model(texts)))
    assert np.asarray(model(texts)).shape == (3, 8)


@pytest.mark.parametrize("kwargs, received", [(dict(batch_size=0), "batch_size=0"),
                                              (dict(validation_fraction=1.0), "1.0"),
                                              (dict(vocab_size=2), "vocab_size=2"),
                                              (dict(sequence_length=0), "sequence_length=0"),
                                              (dict(sequence_length=2.5), "sequence_length=2.5")])
def test_bad_arguments(synthetic_data, kwargs, received):
    with pytest.raises(ValueError, match=received):
        make_datasets(synthetic_data, **kwargs)


def test_with_batch_size_rebatches_without_revectorizing(synthetic_data):
    ds = make_datasets(synthetic_data, batch_size=16, vocab_size=50, sequence_length=8, seed=2)
    small = ds.with_batch_size(8)
    assert small.batch_size == 8 and ds.batch_size == 16
    assert small.arrays is ds.arrays and small.vectorizer is ds.vectorizer
    for split in ("train", "validation", "test"):
        assert next(iter(getattr(small, split)))[1].shape[0] == 8
    # The same shuffle as pipelines built at that batch size from the start.
    fresh = make_datasets(synthetic_data, batch_size=8, vocab_size=50, sequence_length=8, seed=2)
    first = next(iter(ds.with_batch_size(8).train))[1].numpy()  # a new pipeline's first epoch
    assert np.array_equal(first, next(iter(fresh.train))[1].numpy())
    # However often the original was iterated, a fresh one starts from the seed again.
    for _ in range(2):
        next(iter(ds.train))
    again = next(iter(ds.with_batch_size(16).train))[1].numpy()
    assert np.array_equal(again, next(iter(make_datasets(synthetic_data, batch_size=16, vocab_size=50,
                                                         sequence_length=8, seed=2).train))[1].numpy())
    with pytest.raises(ValueError, match="batch_size=0"):
        ds.with_batch_size(0)
