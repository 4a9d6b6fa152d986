"""The seed recipe, reproduced as the reference row of every benchmark.

The textbook two-branch model trained the textbook way: the seed graph without masking,
captions padded to 100 tokens with the zeros first (as `keras.utils.pad_sequences` does),
batch 32, Adam, Keras's `validation_split=0.2` on in-memory arrays, 10 epochs. mmkeras's
own rows train the same graph through its pipeline (vectorized once, short masked
sequences, larger batches, tf.data), which is what the speed comparison measures.
"""

import time

import keras
import numpy as np

import mmkeras

RECIPE = dict(sequence_length=100, batch_size=32, validation_split=0.2, epochs=10)
# The registered models the textbook recipe also trains: each gets a `recipe_<name>` row.
SEED_MODELS = ("seed_concat", "seed_image", "seed_text")


def pre_pad(token_ids, length=RECIPE["sequence_length"]):
    """Right-padded ids -> `pad_sequences` layout: zeros first, truncated to `length`."""
    out = np.zeros((len(token_ids), length), dtype=np.int32)
    for i, row in enumerate(token_ids):
        words = row[row != 0][-length:]
        if len(words):
            out[i, -len(words):] = words
    return out


def build_recipe_model(name, *, num_classes, image_shape, vocab_size, sequence_length=100):
    """The seed graph as the textbook writes it (no mask), for `seed_concat|image|text`."""
    if name not in SEED_MODELS:
        raise ValueError(f"No seed recipe for {name!r}; expected one of: {', '.join(SEED_MODELS)}.")
    family = mmkeras.model_family(name)
    image = keras.Input(shape=tuple(image_shape), name="image")
    text = keras.Input(shape=(sequence_length,), dtype="int32", name="text")
    x = keras.layers.Rescaling(1.0 / 255, name="image_rescale")(image)
    x = keras.layers.Conv2D(32, 3, activation="relu", name="image_conv")(x)
    x = keras.layers.MaxPooling2D(2, name="image_pool")(x)
    x = keras.layers.Flatten(name="image_flatten")(x)
    t = keras.layers.Embedding(vocab_size, 64, name="text_embedding")(text)
    t = keras.layers.LSTM(64, name="text_lstm")(t)
    if family == "fused":
        z = keras.layers.Concatenate(name="fusion_concat")([x, t])
    else:
        z = x if family == "image" else t
    z = keras.layers.Dense(128, activation="relu", name="head_dense_0")(z)
    out = keras.layers.Dense(num_classes, activation="softmax", name="label")(z)
    return keras.Model({"image": image, "text": text}, {"label": out}, name=f"recipe_{name}")


def fit_recipe(model, features, labels, epochs=None, batch_size=None, callbacks=None, verbose=2,
               sample_weight=None):
    """Train as the recipe does; returns (history, stats). `features` hold pre-padded text.
    sample_weight: one weight per example (class weights, see training.resolve_class_weight);
    Keras's validation_split takes its last 20% along."""
    epochs = RECIPE["epochs"] if epochs is None else epochs
    batch_size = RECIPE["batch_size"] if batch_size is None else batch_size
    model.compile(optimizer="adam", loss={"label": "sparse_categorical_crossentropy"},
                  metrics={"label": ["accuracy"]})
    start = time.perf_counter()
    history = model.fit(features, {"label": labels}, batch_size=batch_size, epochs=epochs,
                        validation_split=RECIPE["validation_split"], callbacks=callbacks,
                        verbose=verbose, sample_weight=sample_weight)
    seconds = time.perf_counter() - start
    samples = int(len(labels) * (1 - RECIPE["validation_split"])) * len(history.epoch)
    return history, {"train_seconds": seconds, "epochs": len(history.epoch), "train_samples": samples,
                     "train_samples_per_second": samples / seconds}
