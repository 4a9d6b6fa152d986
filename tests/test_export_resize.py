"""Serving fits a non-square raw image as training does (aspect kept by padding), so an
exported model (trained on a streamed manifest) gives, for the raw image files, the
probabilities the model gives on the pipeline's decoded images."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import mmkeras
from mmkeras import training
from mmkeras.data import load_manifest, make_datasets
from mmkeras.export import export_model, read_metadata

SIZE = 12


@pytest.fixture(scope="module")
def tall_manifest(tmp_path_factory):
    """A manifest of tall (20x9) and wide (7x16) PNGs with words, fitted to 12x12."""
    folder = tmp_path_factory.mktemp("non_square")
    rng = np.random.default_rng(0)
    lines = ["image,text,label,split"]
    for i in range(24):
        shape = (20, 9, 3) if i % 2 else (7, 16, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i}.png")
        lines.append(f"{i}.png,word{i % 3} thing,{i % 2},{'test' if i >= 18 else 'train'}")
    (folder / "m.csv").write_text("\n".join(lines) + "\n")
    return folder / "m.csv"


def test_served_non_square_image_matches_the_pipeline(tall_manifest, tmp_path):
    data = load_manifest(tall_manifest, split_column="split", image_size=SIZE, verbose=False)
    ds = make_datasets(data, batch_size=4, vocab_size=20, sequence_length=4, validation_fraction=0.0)
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("seed_concat", **ds.model_kwargs())
    training.fit(model, ds, epochs=1, verbose=0)  # a model trained on the streamed manifest
    path = export_model(model, tmp_path / "export", vectorizer=ds.vectorizer, class_names=ds.class_names)
    assert read_metadata(path)["class_names"] == ds.class_names == ["0", "1"]
    served = tf.saved_model.load(str(path))

    rows = np.arange(ds.size("test"))
    features, _ = training.split_arrays(ds, "test", rows)
    expected = training.predict_proba(model, features)
    raw = [np.asarray(Image.open(p).convert("RGB")) for p in data.test.image]
    assert {im.shape[:2] for im in raw} == {(20, 9), (7, 16)}
    # The pipeline padded (black borders), it did not stretch: a tall image keeps black columns.
    tall = next(i for i, im in enumerate(raw) if im.shape[0] == 20)
    assert features["image"][tall][:, 0].max() == 0 and features["image"][tall][:, SIZE // 2].max() > 0
    for i, image in enumerate(raw):
        text = tf.constant([str(data.test.text[i])])
        got = served.signatures["serving_default"](image=tf.constant(image[None]), text=text)["probabilities"]
        np.testing.assert_allclose(got.numpy()[0], expected[i], atol=1e-4)
        floats = served.signatures["serving_float"](image=tf.constant(image[None], tf.float32), text=text)
        np.testing.assert_allclose(floats["probabilities"].numpy()[0], expected[i], atol=1e-4)
    # A stretched image gives other probabilities: the comparison above can fail.
    stretched = tf.image.resize(tf.constant(raw[tall][None], tf.float32), (SIZE, SIZE), antialias=True)
    other = training.predict_proba(model, {"image": stretched.numpy(), "text": features["text"][tall:tall + 1]})
    assert np.abs(other[0] - expected[tall]).max() > 1e-3
