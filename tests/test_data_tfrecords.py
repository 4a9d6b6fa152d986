"""Sharded TFRecords: the round trip (same rows, same bytes, same batches as the source for
the same seed), the shard layout, per-worker shards that are disjoint and cover the train
split, a two-worker MultiWorkerMirroredStrategy fit on loopback that reads only its own
files, and the error messages.

Everything is tiny (12x12 images, a few dozen rows) and written to tmp_path.
"""

import json
import os
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mmkeras import distribute
from mmkeras.data import (TFRecordData, load_dataset, load_manifest, make_datasets, make_synthetic,
                          read_tfrecords, resolve_dataset, take_subset, write_tfrecords)
from mmkeras.data.tfrecords import METADATA
from test_data_manifest import SIZE, assert_same_batches, write_manifest, write_rows
from test_distribute import run_workers

KWARGS = dict(batch_size=8, vocab_size=40, sequence_length=8, seed=3)


@pytest.fixture(scope="module")
def paired():
    return make_synthetic(n_train=40, n_test=12, image_size=SIZE, seed=0)


@pytest.fixture
def manifest(paired, tmp_path):
    """A CSV of JPEG paths with a generated split (so it has validation rows), one row's
    image missing and kept as an image-missing row."""
    path = write_manifest(tmp_path / "m", paired, image_format="JPEG", split_column=False)
    os.remove(tmp_path / "m" / "images" / "train_5.jpeg")
    return load_manifest(path, image_size=SIZE, on_bad_row="missing", verbose=False)


def test_round_trip_of_a_manifest_keeps_rows_bytes_and_batches(manifest, tmp_path):
    assert len(manifest.validation) and manifest.blanked == [7]
    meta = write_tfrecords(manifest, tmp_path / "shards", shards=3, verbose=False)
    data = read_tfrecords(tmp_path / "shards", verbose=False)
    assert isinstance(data, TFRecordData) and data.class_names == manifest.class_names
    assert data.image_size == manifest.image_size and meta["image_size"] == list(manifest.image_size)
    for split in ("train", "validation", "test"):
        got, want = getattr(data, split), getattr(manifest, split)
        np.testing.assert_array_equal(got.text, want.text)
        np.testing.assert_array_equal(got.label, want.label)
        np.testing.assert_array_equal(got.line, want.line)
        # The original encoded file, byte for byte; b"" for the image-missing row.
        for record, source in zip(got.image, want.image):
            expected = b"" if source is None else open(source, "rb").read()
            assert data.records.image(record) == expected
    summary = data.summary()
    assert summary["blanked"] == [7] and summary["bad_rows"] == manifest.bad_rows
    assert summary["class_counts"] == manifest.class_counts and summary["split"]["source"] == "generated"
    assert summary["tfrecords"] == {"directory": str(tmp_path / "shards"), "files": 9, "worker": None,
                                    "left_out": 0}
    streamed, from_records = make_datasets(manifest, **KWARGS), make_datasets(data, **KWARGS)
    for split in ("train", "validation", "test"):
        assert_same_batches(getattr(streamed, split), getattr(from_records, split))
    assert_same_batches(streamed.train, from_records.train)  # the second epoch reshuffles alike
    blank = int(np.flatnonzero(manifest.train.line == 7)[0])
    assert not from_records.features("train", [blank])["image"].any()
    np.testing.assert_array_equal(from_records.features("test", [3, 0])["image"],
                                  streamed.features("test", [3, 0])["image"])


def test_round_trip_of_arrays_png_encodes_them_exactly(paired, tmp_path):
    write_tfrecords(paired, tmp_path / "shards", shards=4, verbose=False)
    data = load_dataset(str(tmp_path / "shards"))
    assert resolve_dataset(str(tmp_path / "shards")) == "tfrecords"
    assert data.image_shape == paired.image_shape and len(data.validation) == 0
    assert data.records.image(0)[:8] == b"\x89PNG\r\n\x1a\n"
    memory, from_records = (make_datasets(d, validation_fraction=0.25, **KWARGS) for d in (paired, data))
    for split in ("train", "validation", "test"):
        assert_same_batches(getattr(memory, split), getattr(from_records, split))
    assert_same_batches(memory.with_batch_size(5).train, from_records.with_batch_size(5).train)
    # A seeded subset and a re-write of the records keep working.
    small = take_subset(data, 10, 4, seed=0)
    write_tfrecords(small, tmp_path / "again", shards=2, verbose=False)
    again = read_tfrecords(tmp_path / "again", verbose=False)
    np.testing.assert_array_equal(again.train.text, small.train.text)
    assert [again.records.image(i) for i in again.train.image] == [data.records.image(i) for i in small.train.image]


def test_shard_layout_and_round_robin_rows(paired, tmp_path):
    meta = write_tfrecords(paired, tmp_path / "shards", shards=3, verbose=False)
    names = sorted(f for f in os.listdir(tmp_path / "shards") if f.endswith(".tfrecord"))
    assert names == [f"{s}-0000{k}-of-00003.tfrecord" for s in ("test", "train") for k in range(3)]
    assert meta["splits"]["train"]["shard_rows"] == [14, 13, 13]
    with open(tmp_path / "shards" / METADATA) as f:
        assert json.load(f)["class_names"] == paired.class_names
    # Row i lies in shard i % 3, in order; the records are plain tf.train.Examples.
    records = list(tf.data.TFRecordDataset(str(tmp_path / "shards" / "train-00001-of-00003.tfrecord")))
    rows = [tf.train.Example.FromString(r.numpy()).features.feature for r in records]
    assert [r["row"].int64_list.value[0] for r in rows] == list(range(1, 40, 3))
    assert [r["text"].bytes_list.value[0].decode() for r in rows] == list(paired.train.text[1::3])
    assert [r["label"].int64_list.value[0] for r in rows] == list(paired.train.label[1::3])
    # A split smaller than `shards` gets one file per row.
    tiny = take_subset(paired, 8, 2, seed=0)
    meta = write_tfrecords(tiny, tmp_path / "tiny", shards=5, verbose=False)
    assert len(meta["splits"]["test"]["files"]) == 2 and len(meta["splits"]["train"]["files"]) == 5


@pytest.mark.parametrize("shards, workers, left_out", [(4, 2, 0), (6, 3, 1), (5, 2, 8), (3, 3, 1)])
def test_workers_get_disjoint_equal_shares_of_their_own_files(paired, tmp_path, shards, workers, left_out):
    write_tfrecords(paired, tmp_path / "shards", shards=shards, verbose=False)
    shares = [read_tfrecords(tmp_path / "shards", num_workers=workers, worker_index=w, verbose=False)
              for w in range(workers)]
    ids = [set(d.train.image.tolist()) for d in shares]
    assert len({len(s) for s in ids}) == 1  # the same number of steps on every worker
    assert sum(map(len, ids)) == len(paired.train) - left_out == len(set().union(*ids))
    for w, (data, mine) in enumerate(zip(shares, ids)):
        assert data.left_out == left_out and data.summary()["tfrecords"]["worker"] == [w, workers]
        files = {data.records.files[data.records.file_index[i]] for i in mine}
        assert files == {str(tmp_path / "shards" / f"train-{k:05d}-of-{shards:05d}.tfrecord")
                         for k in range(w, shards, workers)}
        np.testing.assert_array_equal(data.test.image, shares[0].test.image)  # test stays whole
    # The worker's own rows carry auto-shard OFF (fit's DATA sharding keeps it); test is
    # left to tf.distribute.
    ds = make_datasets(shares[0], validation_fraction=0.25, **KWARGS)
    off, auto = tf.data.experimental.AutoShardPolicy.OFF, tf.data.experimental.AutoShardPolicy.AUTO
    assert ds.train.options().experimental_distribute.auto_shard_policy == off
    assert ds.train.cardinality() == tf.data.UNKNOWN_CARDINALITY  # Keras runs the epoch to its end
    assert ds.validation.options().experimental_distribute.auto_shard_policy == off
    assert ds.test.options().experimental_distribute.auto_shard_policy == auto
    assert distribute.shard_by_data(ds.train).options().experimental_distribute.auto_shard_policy == off
    assert distribute.shard_by_data(ds.test).options().experimental_distribute.auto_shard_policy == \
        tf.data.experimental.AutoShardPolicy.DATA


def test_cache_dir_yields_the_same_batches(paired, tmp_path):
    write_tfrecords(paired, tmp_path / "shards", shards=2, verbose=False)
    data = read_tfrecords(tmp_path / "shards", verbose=False)
    plain = make_datasets(data, **KWARGS)
    cached = make_datasets(data, cache_dir=tmp_path / "cache", **KWARGS)
    assert len(os.listdir(tmp_path / "cache")) == 3
    for split in ("train", "validation", "test"):
        assert_same_batches(getattr(plain, split), getattr(cached, split))


def test_errors_say_what_was_received_and_what_to_do(paired, tmp_path):
    out = tmp_path / "shards"
    write_tfrecords(paired, out, shards=2, verbose=False)
    with pytest.raises(ValueError, match=r"has 2 train shard\(s\), fewer than the 3 workers.*shards=N\), N >= 3"):
        read_tfrecords(out, num_workers=3, worker_index=0)
    with pytest.raises(ValueError, match=r"`worker_index` must lie in \[0, 2\). Received worker_index=2"):
        read_tfrecords(out, num_workers=2, worker_index=2)
    with pytest.raises(ValueError, match=r"`shards` must be an int >= 1. Received shards=0"):
        write_tfrecords(paired, tmp_path / "other", shards=0)
    with pytest.raises(FileExistsError, match="already holds TFRecord shards.*overwrite=True"):
        write_tfrecords(paired, out, shards=2)
    write_tfrecords(paired, out, shards=3, overwrite=True, verbose=False)  # old shards removed
    assert len([f for f in os.listdir(out) if f.endswith(".tfrecord")]) == 6
    shard = out / "train-00001-of-00003.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"train-00001-of-00003.tfrecord: \d+ bytes, but tfrecords.json says"):
        read_tfrecords(out)
    with pytest.raises(ValueError, match="has no tfrecords.json"):
        read_tfrecords(tmp_path)
    empty_test = take_subset(paired, 5, 0, seed=0)
    with pytest.raises(ValueError, match="no test rows.*train 5"):
        write_tfrecords(empty_test, tmp_path / "x")


def test_manifest_with_string_labels_and_a_split_column(tmp_path):
    """A manifest's own split (train / validation / test) and string classes survive."""
    folder = tmp_path / "m"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"images/{i}.png")
        rows.append({"image": f"images/{i}.png", "text": f"item {i}", "label": ["cat", "dog"][i % 2],
                     "split": "train" if i < 6 else "val" if i < 8 else "test"})
    source = load_manifest(write_rows(folder, rows, "jsonl"), split_column="split", verbose=False)
    write_tfrecords(source, tmp_path / "shards", shards=2, verbose=False)
    data = read_tfrecords(tmp_path / "shards", verbose=False)
    assert data.class_names == ["cat", "dog"] and data.split["source"] == "column"
    assert [len(data.train), len(data.validation), len(data.test)] == [6, 2, 4]
    np.testing.assert_array_equal(data.validation.line, [7, 8])  # JSONL lines, as the manifest said


WORKER = textwrap.dedent("""
    import json, sys
    import keras
    import numpy as np
    from mmkeras import distribute, training
    from mmkeras.data import make_datasets, read_tfrecords

    strategy = distribute.get_strategy("multi_worker")
    data = read_tfrecords(sys.argv[1], strategy=strategy, verbose=False)
    ds = make_datasets(data, batch_size=16, vocab_size=40, sequence_length=8, validation_fraction=0.2, seed=0)
    keras.utils.set_random_seed(0)
    model = training.build_in_scope(strategy, "seed_concat", **ds.model_kwargs())

    class Steps(keras.callbacks.Callback):
        steps = 0

        def on_train_batch_end(self, batch, logs=None):
            Steps.steps += 1

    history, _ = training.fit(model, ds, epochs=2, verbose=0, strategy=strategy, callbacks=[Steps()])
    index = distribute.task_id(strategy)
    np.savez(f"worker_{index}.npz", *model.get_weights())
    opened = sorted(data.records.files[k] for k in data.records._fds)
    print(json.dumps({"train": data.train.image.tolist(), "opened": opened, "history": history.history,
                      "steps": Steps.steps, "train_rows": ds.size("train")}))
""")


def test_two_workers_train_on_their_own_shards(paired, tmp_path):
    write_tfrecords(paired, tmp_path / "shards", shards=4, verbose=False)
    (tmp_path / "worker.py").write_text(WORKER)
    outputs = run_workers(["worker.py", str(tmp_path / "shards")], tmp_path, timeout=200)
    # Disjoint halves of the train split that cover it, each read from its own files only.
    train = [set(o["train"]) for o in outputs]
    assert not train[0] & train[1] and train[0] | train[1] == set(range(len(paired.train)))
    shards = tmp_path / "shards"
    for w, o in enumerate(outputs):
        own = {str(shards / f"train-{k:05d}-of-00004.tfrecord") for k in (w, w + 2)}
        assert {f for f in o["opened"] if "/train-" in f} == own
    # 16 train rows per worker (4 of its 20 carved as validation), global batch 16: each
    # step takes 8 rows of each worker, so an epoch is 2 steps and reads all 32 rows.
    assert [(o["train_rows"], o["steps"]) for o in outputs] == [(16, 4), (16, 4)]
    # One model: the same losses and the same weights on both workers.
    assert outputs[0]["history"] == outputs[1]["history"]
    assert outputs[0]["history"]["loss"][1] < outputs[0]["history"]["loss"][0]
    w0, w1 = np.load(tmp_path / "worker_0.npz"), np.load(tmp_path / "worker_1.npz")
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key])
