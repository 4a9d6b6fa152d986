"""`export_model`: one directory that serves raw inputs, written atomically.

Layout of `saved_models/<dataset>/<model>/` (or any `path`):

    saved_model.pb, variables/, fingerprint.pb   the SavedModel (signatures in serving.py)
    model.keras                                  the token-level Keras model (see below)
    vocabulary.txt                               the vectorizer's vocabulary, one token a line
    mmkeras.json                                 class names, sizes, metrics, versions

`model.keras` is the model exactly as trained: inputs float pixels at the model's size and
int32 token ids. It is the file to fine-tune or evaluate in Keras; raw strings go through
the SavedModel, or through `load_vectorizer(dir)` followed by the `.keras` model.
"""

import datetime
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mmkeras import __version__
from mmkeras.explain.model_parts import walk_layers
from mmkeras.export.serving import (EXPLAIN_OUTPUTS, EXPLAIN_SIGNATURE, EXPLAIN_STEPS, FLOAT_SIGNATURE,
                                    MAIN_OUTPUT, OUTPUTS, SIGNATURE, SIGNATURES, TOKENIZE_SIGNATURE,
                                    make_serving_functions, make_tokenizer, model_image_size,
                                    vectorizer_settings)

DEFAULT_ROOT = "saved_models"
METADATA_FILE = "mmkeras.json"
KERAS_FILE = "model.keras"
VOCABULARY_FILE = "vocabulary.txt"
FORMAT_VERSION = 1


def default_export_path(model, dataset="custom"):
    """saved_models/<dataset>/<model.name>, relative to the current directory."""
    for label, part in (("dataset", dataset), ("model name", model.name)):
        if not part or part in (".", "..") or "/" in part or os.sep in part:
            raise ValueError(f"The {label} names a folder of the default export path and must be "
                             f"a plain name. Received {part!r}.")
    return Path(DEFAULT_ROOT) / dataset / model.name


def export_model(model, path=None, *, vectorizer, class_names, dataset="custom", metrics=None,
                 overwrite=False, image_size=None, verify=True):
    """Write a SavedModel directory that serves raw images and strings; returns its Path.

    Args:
        model: any model with the mmkeras contract: dict inputs {"image": float32 pixels in
            [0, 255], "text": int32 token ids}, output "label" (softmax) or a single tensor.
            Unimodal models serve both inputs and ignore one of them (it must still have
            the batch size: '' for text, any image).
        path: the directory to write; default `saved_models/<dataset>/<model.name>/`.
        vectorizer: the adapted `TextVectorization` the model was trained with; its
            vocabulary is baked into the graph.
        class_names: one name per class, in label order.
        dataset: names the default path's folder and is recorded in mmkeras.json.
        metrics: a dict of floats to record (test accuracy ...). None records the last
            epoch of the model's most recent `fit` (model.history), if any.
        overwrite: replace an earlier export at `path`. Without it an existing export is
            an error, checked before any work.
        image_size: (height, width) served images are resized to; default the model's
            input size.
        verify: reload the written SavedModel and check it against the in-memory model
            (atol 1e-5; 1e-2 for mixed-precision models) before it replaces anything.

    The directory is written to a temporary sibling and renamed into place, so a failure
    midway (an exception, a killed process) leaves an earlier export at `path` untouched.
    """
    path = Path(path) if path is not None else default_export_path(model, dataset)
    class_names = [str(n) for n in class_names]
    _check_destination(path, overwrite)
    if isinstance(vectorizer, keras.layers.TextVectorization) and not vectorizer.built:
        # Adapted but never called: the archive can only track a built layer.
        vectorizer.build((None,))
    functions = make_serving_functions(model, vectorizer, class_names, image_size=image_size)
    metadata = _metadata(model, vectorizer, class_names, dataset, metrics, image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _write(staging, model, vectorizer, functions, metadata)
        if verify:
            verify_export(staging, model, vectorizer, image_size=image_size)
        _check_destination(path, overwrite)  # again: another writer may have finished meanwhile
        _move_into_place(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _is_export(path):
    return (path / "saved_model.pb").is_file() or (path / METADATA_FILE).is_file()


def _check_destination(path, overwrite):
    if path.is_file():
        raise FileExistsError(f"Cannot export to '{path}': it is a file.")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not _is_export(path):
        raise FileExistsError(f"Cannot export to '{path}': the directory is not empty and holds no "
                              "earlier export, so it is never replaced. Choose another path.")
    if not overwrite:
        raise FileExistsError(f"An export already exists at '{path}'. Pass overwrite=True to replace it.")


def _move_into_place(staging, path):
    """rename(2) is atomic; replacing a non-empty directory takes two renames, and a crash
    between them leaves the earlier export beside `path` as `.<name>.old-*`."""
    if path.is_dir() and any(path.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.rename(path, old / path.name)
        try:
            os.rename(staging, path)
        except BaseException:
            os.rename(old / path.name, path)
            raise
        finally:
            if path.exists():
                shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, path)  # replaces an empty directory too


def _write(directory, model, vectorizer, functions, metadata):
    archive = keras.export.ExportArchive()
    # The vectorizer's lookup tables must be tracked by hand; the model's variables are
    # found through the endpoints. Tracking the model itself would also save its
    # optimizer state (twice the weights with Adam), which serving never reads.
    archive.track(vectorizer)
    for name in SIGNATURES:  # serving_default first: TF Serving's default
        fn, signature = functions[name]
        archive.add_endpoint(name, fn, input_signature=signature)
    archive.write_out(str(directory), verbose=False)
    model.save(str(directory / KERAS_FILE))
    (directory / VOCABULARY_FILE).write_text(
        "".join(f"{token}\n" for token in vectorizer.get_vocabulary()), encoding="utf-8")
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n",
                                           encoding="utf-8")


def _floats(values):
    """JSON-ready metrics: floats, the last value of a history list, nested dicts (a
    report's per_class_recall) kept as dicts of floats."""
    out = {}
    for key, value in dict(values).items():
        if isinstance(value, (list, tuple)):
            value = value[-1] if value else None
        if isinstance(value, dict):
            out[str(key)] = _floats(value)
        elif value is not None:
            out[str(key)] = float(np.asarray(value))
    return out


def _metadata(model, vectorizer, class_names, dataset, metrics, image_size):
    if metrics is None:
        history = getattr(model, "history", None)
        metrics = getattr(history, "history", None) or {}
        source = "last epoch of model.history" if metrics else "none"
    else:
        source = "given at export"
    size = tuple(image_size) if image_size is not None else model_image_size(model)
    settings = vectorizer_settings(vectorizer)
    return {
        "format": "mmkeras-export",
        "format_version": FORMAT_VERSION,
        "model_name": model.name,
        "dataset": dataset,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "class_names": class_names,
        "num_classes": len(class_names),
        "image": {"input_size": list(size) if size else None, "channels": 3,
                  "resize": "fitted as in training: aspect kept, bilinear, antialiased, centred on black "
                            "padding, rounded; none when the size already matches",
                  "pixels": "uint8 (serving_default) or float32 in [0, 255] (serving_float)"},
        "text": {"sequence_length": settings["output_sequence_length"],
                 "vocabulary_size": len(vectorizer.get_vocabulary()),
                 "vectorizer": settings, "vocabulary_file": VOCABULARY_FILE},
        "signatures": {
            SIGNATURE: {"inputs": {"image": "uint8 [B, h, w, 3]", "text": "string [B]"},
                        "outputs": list(OUTPUTS)},
            FLOAT_SIGNATURE: {"inputs": {"image": "float32 [B, h, w, 3], NaN -> 0, clipped to [0, 255]",
                                         "text": "string [B]"}, "outputs": list(OUTPUTS)},
            TOKENIZE_SIGNATURE: {"inputs": {"text": "string [B]"}, "outputs": ["token_ids"]},
            EXPLAIN_SIGNATURE: {"inputs": {"image": "uint8 [B, h, w, 3]", "text": "string [B]"},
                                "outputs": list(EXPLAIN_OUTPUTS), "integration_steps": EXPLAIN_STEPS},
        },
        "served_output": MAIN_OUTPUT,
        "keras_file": KERAS_FILE,
        "metrics": _floats(metrics),
        "metrics_source": source,
        "versions": {"mmkeras": __version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }


def read_metadata(export_dir):
    """The parsed mmkeras.json of an export directory."""
    path = Path(export_dir) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"'{export_dir}' is not an mmkeras export: {METADATA_FILE} is missing.")
    return json.loads(path.read_text(encoding="utf-8"))


def load_vectorizer(export_dir):
    """The export's TextVectorization rebuilt from vocabulary.txt and mmkeras.json, for
    feeding raw strings to `model.keras` (the SavedModel needs no such step)."""
    settings = dict(read_metadata(export_dir)["text"]["vectorizer"])
    vocabulary = (Path(export_dir) / VOCABULARY_FILE).read_text(encoding="utf-8").split("\n")[:-1]
    if vocabulary[:2] != ["", "[UNK]"]:
        raise ValueError(f"{VOCABULARY_FILE} in '{export_dir}' must start with the padding and [UNK] "
                         f"tokens. Received {vocabulary[:2]}.")
    return keras.layers.TextVectorization(**settings, vocabulary=vocabulary[2:])


def _tolerance(model, atol):
    """`atol` for float32 models; bf16/fp16 layers (mixed precision) keep ~3 significant
    digits, so a compiled graph and eager calls may differ by ~1e-3 in probabilities."""
    if atol is not None:
        return atol
    return 1e-2 if any(layer.compute_dtype in ("bfloat16", "float16") for layer in walk_layers(model)) else 1e-5


def verify_export(export_dir, model, vectorizer, image_size=None, atol=None):
    """Reload `export_dir` and compare its serving_default with `model` on a probe batch
    (atol: 1e-5, or 1e-2 when the model computes in bf16/fp16 anywhere)."""
    atol = _tolerance(model, atol)
    loaded = tf.saved_model.load(str(export_dir))
    missing = [s for s in SIGNATURES if s not in loaded.signatures]
    if missing:
        raise RuntimeError(f"The export at '{export_dir}' lacks the signature(s) {missing}.")
    size = tuple(image_size) if image_size is not None else (model_image_size(model) or (8, 8))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(2, *size, 3), dtype=np.uint8)
    texts = ["", " ".join(vectorizer.get_vocabulary()[2:6]) or "probe"]
    served = loaded.signatures[SIGNATURE](image=tf.constant(image), text=tf.constant(texts))
    tokens = loaded.signatures[TOKENIZE_SIGNATURE](text=tf.constant(texts))["token_ids"]
    if not np.array_equal(np.asarray(tokens), np.asarray(make_tokenizer(vectorizer)(tf.constant(texts)))):
        raise RuntimeError(f"The reloaded export at '{export_dir}' tokenizes differently from `vectorizer`.")
    expected = model({"image": tf.constant(image, tf.float32), "text": tokens}, training=False)
    expected = np.asarray(expected[MAIN_OUTPUT] if isinstance(expected, dict) else expected)
    got = np.asarray(served["probabilities"])
    if got.shape != expected.shape:
        raise RuntimeError(f"The reloaded export at '{export_dir}' returns probabilities of shape "
                           f"{got.shape}; the in-memory model {expected.shape}.")
    if not np.allclose(got, expected, atol=atol):
        raise RuntimeError(f"The reloaded export at '{export_dir}' disagrees with the in-memory model "
                           f"(max |diff| {np.max(np.abs(got - expected)):.2e} > atol {atol}).")
    explained = loaded.signatures[EXPLAIN_SIGNATURE](image=tf.constant(image), text=tf.constant(texts))
    if not np.allclose(np.asarray(explained["probabilities"]), got, atol=atol):
        raise RuntimeError(f"The '{EXPLAIN_SIGNATURE}' signature of '{export_dir}' disagrees with "
                           f"'{SIGNATURE}'.")
