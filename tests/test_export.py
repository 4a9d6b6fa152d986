"""export_model: the raw-input SavedModel, its files, atomic writes, bad input, TFLite.

One trained seed model is exported once per module (16x16 images, 40-word vocabulary);
the bad-input tests call its reloaded signatures. Two checks run in a fresh process: the
TensorFlow-only reload and `saved_model_cli show --all`.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.data.streaming import fit_image

import mmkeras
from mmkeras import training
from mmkeras.export import (FLOAT_SIGNATURE, SIGNATURE, TOKENIZE_SIGNATURE, convert_tflite,
                            export_model, load_vectorizer, read_metadata)
from mmkeras.export import directory as export_directory
from mmkeras.export.latency import measure

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def trained(tiny_datasets):
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("seed_concat", **tiny_datasets.model_kwargs())
    # Fresh pipelines: the session's shared ones draw a new order each time they are read,
    # so the model would depend on which tests ran before.
    training.fit(model, tiny_datasets.with_batch_size(tiny_datasets.batch_size), epochs=6, verbose=0)
    return model


@pytest.fixture(scope="module")
def exported(trained, tiny_datasets, tmp_path_factory):
    path = tmp_path_factory.mktemp("exports") / "seed_concat"
    return export_model(trained, path, vectorizer=tiny_datasets.vectorizer,
                        class_names=tiny_datasets.class_names, dataset="synthetic",
                        metrics={"test_accuracy": 0.5})


@pytest.fixture(scope="module")
def served(exported):
    return tf.saved_model.load(str(exported))


def test_test_data_is_not_degenerate(trained, tiny_datasets):
    """The comparisons below mean something only if predictions vary between rows."""
    features, _ = tiny_datasets.arrays["test"]
    p = training.predict_proba(trained, features)
    assert p.max(-1).min() < 0.9 * p.max() and len(set(p.argmax(-1))) > 1


def _serve(served, image, text, signature=SIGNATURE):
    return {k: v.numpy() for k, v in served.signatures[signature](image=tf.constant(image),
                                                                   text=tf.constant(text)).items()}


def _tokens(served, texts):
    return served.signatures[TOKENIZE_SIGNATURE](text=tf.constant(texts))["token_ids"].numpy()


def _check_probabilities(out, n, num_classes=6):
    p = out["probabilities"]
    assert p.shape == (n, num_classes) and p.dtype == np.float32
    assert np.isfinite(p).all() and np.allclose(p.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["class_id"], p.argmax(-1))


# --- the signature and its agreement with the in-memory model -------------------------


def test_signature_contract(served):
    fn = served.signatures[SIGNATURE]
    inputs = fn.structured_input_signature[1]
    assert inputs["image"].dtype == tf.uint8 and inputs["image"].shape.as_list() == [None, None, None, 3]
    assert inputs["text"].dtype == tf.string and inputs["text"].shape.as_list() == [None]
    outputs = fn.structured_outputs
    assert set(outputs) == {"probabilities", "class_id", "class_name"}
    probabilities = outputs["probabilities"]
    assert probabilities.dtype == tf.float32 and probabilities.shape.as_list() == [None, 6]
    assert outputs["class_id"].dtype == tf.int64 and outputs["class_id"].shape.as_list() == [None]
    assert outputs["class_name"].dtype == tf.string and outputs["class_name"].shape.as_list() == [None]
    assert {SIGNATURE, FLOAT_SIGNATURE, TOKENIZE_SIGNATURE} <= set(served.signatures)


def test_served_raw_inputs_match_in_memory_model(served, trained, tiny_datasets, synthetic_data):
    test = synthetic_data.test
    out = _serve(served, test.image, test.text)
    features, _ = tiny_datasets.arrays["test"]
    expected = training.predict_proba(trained, features)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    names = np.array(tiny_datasets.class_names)[expected.argmax(-1)]
    assert [n.decode() for n in out["class_name"]] == list(names)
    np.testing.assert_array_equal(_tokens(served, test.text), features["text"])


def test_fresh_process_with_tensorflow_only(exported, trained, synthetic_data, tmp_path):
    test = synthetic_data.test
    np.savez(tmp_path / "inputs.npz", image=test.image[:16], text=test.text[:16])
    script = (
        "import json, sys\n"
        "import numpy as np, tensorflow as tf\n"
        "d = np.load(sys.argv[2])\n"
        "fn = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "out = fn(image=tf.constant(d['image']), text=tf.constant(d['text']))\n"
        "np.save(sys.argv[3], out['probabilities'].numpy())\n"
        "print(json.dumps({'mmkeras_imported': 'mmkeras' in sys.modules}))\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(exported), str(tmp_path / "inputs.npz"),
                          str(tmp_path / "p.npy")], cwd=tmp_path, env=ENV, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"mmkeras_imported": False}
    vectorized = np.asarray(load_vectorizer(exported)(tf.constant(test.text[:16])))
    expected = training.predict_proba(trained, {"image": test.image[:16].astype("float32"),
                                                "text": vectorized})
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-5)


def test_saved_model_cli_lists_the_signature(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip(f"saved_model_cli not found beside {sys.executable}")
    run = subprocess.run([cli, "show", "--dir", str(exported), "--all"], env=ENV, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "signature_def['serving_default']" in out
    for line in ("inputs['image']", "DT_UINT8", "inputs['text']", "DT_STRING", "outputs['probabilities']",
                 "outputs['class_id']", "DT_INT64", "outputs['class_name']"):
        assert line in out


# --- the other files ------------------------------------------------------------------


def test_keras_file_vocabulary_and_metadata(exported, trained, tiny_datasets, synthetic_data):
    files = {"saved_model.pb", "variables", "model.keras", "vocabulary.txt", "mmkeras.json"}
    assert files <= set(os.listdir(exported))
    features, _ = tiny_datasets.arrays["test"]
    reloaded = keras.models.load_model(str(exported / "model.keras"))
    np.testing.assert_allclose(training.predict_proba(reloaded, features),
                               training.predict_proba(trained, features), atol=1e-6)
    meta = read_metadata(exported)
    assert meta["class_names"] == tiny_datasets.class_names and meta["num_classes"] == 6
    assert meta["image"]["input_size"] == [16, 16]
    assert meta["text"]["sequence_length"] == 10
    assert meta["text"]["vocabulary_size"] == len(tiny_datasets.vectorizer.get_vocabulary())
    assert meta["metrics"] == {"test_accuracy": 0.5} and meta["dataset"] == "synthetic"
    assert meta["versions"]["tensorflow"] == tf.__version__ and meta["versions"]["keras"] == keras.__version__
    assert meta["versions"]["mmkeras"] == mmkeras.__version__
    texts = synthetic_data.test.text
    np.testing.assert_array_equal(np.asarray(load_vectorizer(exported)(tf.constant(texts))),
                                  np.asarray(tiny_datasets.vectorizer(tf.constant(texts))))


def test_metrics_default_to_last_epoch_of_fit(trained, tiny_datasets):
    meta = export_directory._metadata(trained, tiny_datasets.vectorizer, tiny_datasets.class_names,
                                      "synthetic", None, None)
    assert meta["metrics_source"] == "last epoch of model.history"
    assert meta["metrics"]["loss"] == pytest.approx(trained.history.history["loss"][-1])


# --- default path, overwrite, atomicity -----------------------------------------------


def test_default_path_overwrite_and_crash_midway(trained, tiny_datasets, synthetic_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kwargs = dict(vectorizer=tiny_datasets.vectorizer, class_names=tiny_datasets.class_names,
                  dataset="synthetic", verify=False)
    path = export_model(trained, metrics={"run": 1}, **kwargs)
    assert path == tmp_path.joinpath("saved_models", "synthetic", trained.name).relative_to(tmp_path)
    assert read_metadata(path)["metrics"] == {"run": 1}

    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_model(trained, metrics={"run": 2}, **kwargs)
    assert read_metadata(path)["metrics"] == {"run": 1}

    def crash(*args, **kw):
        raise RuntimeError("simulated crash after the SavedModel was written")

    monkeypatch.setattr(export_directory, "verify_export", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        export_model(trained, metrics={"run": 3}, overwrite=True, **dict(kwargs, verify=True))
    assert read_metadata(path)["metrics"] == {"run": 1}
    # The first export still serves the model's predictions.
    test = synthetic_data.test
    features, _ = tiny_datasets.arrays["test"]
    np.testing.assert_allclose(_serve(tf.saved_model.load(str(path)), test.image[:8], test.text[:8])["probabilities"],
                               training.predict_proba(trained, {k: v[:8] for k, v in features.items()}), atol=1e-5)
    assert os.listdir(path.parent) == [trained.name]  # no staging directory left behind
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)

    export_model(trained, metrics={"run": 4}, overwrite=True, **kwargs)
    assert read_metadata(path)["metrics"] == {"run": 4}
    assert os.listdir(path.parent) == [trained.name]


def test_never_replaces_a_directory_that_is_not_an_export(trained, tiny_datasets, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        export_model(trained, tmp_path / "mine", vectorizer=tiny_datasets.vectorizer,
                     class_names=tiny_datasets.class_names, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("change, match", [
    (dict(class_names=["a", "b"]), "6 distinct names"),
    (dict(sequence_length=7), "pads to 7 tokens"),
])
def test_mismatched_export_arguments(trained, tiny_datasets, synthetic_data, tmp_path, change, match):
    from mmkeras.data import make_text_vectorizer

    vectorizer = tiny_datasets.vectorizer
    if "sequence_length" in change:
        vectorizer = make_text_vectorizer(synthetic_data.train.text[:50], 40, change["sequence_length"])
    with pytest.raises(ValueError, match=match):
        export_model(trained, tmp_path / "x", vectorizer=vectorizer,
                     class_names=change.get("class_names", tiny_datasets.class_names))
    assert not (tmp_path / "x").exists()


# --- unimodal and ensemble models: same contract, same export -------------------------


def _average_ensemble(members, name):
    """An ensemble with the mmkeras contract, built here so this test needs no other module."""
    inputs = {"image": keras.Input((16, 16, 3), name="image"),
              "text": keras.Input((10,), dtype="int32", name="text")}
    label = keras.layers.Average(name="label")([m(inputs)["label"] for m in members])
    return keras.Model(inputs, {"label": label}, name=name)


@pytest.mark.parametrize("kind", ["seed_image", "seed_text", "ensemble", "mmkeras_ensemble"])
def test_unimodal_and_ensemble_models_export(kind, tiny_datasets, synthetic_data, tmp_path):
    keras.utils.set_random_seed(3)
    kw = tiny_datasets.model_kwargs()
    if kind == "ensemble":
        model = _average_ensemble([mmkeras.create_model("seed_concat", **kw),
                                   mmkeras.create_model("seed_text", **kw)], "average_ensemble")
    elif kind == "mmkeras_ensemble":
        ensembles = pytest.importorskip("mmkeras.ensembles")
        model = ensembles.build_ensemble([mmkeras.create_model("seed_image", **kw),
                                          mmkeras.create_model("seed_text", **kw)], "average")
    else:
        model = mmkeras.create_model(kind, **kw)
    # verify=True (the default) reloads and compares with the in-memory model.
    path = export_model(model, tmp_path / kind, vectorizer=tiny_datasets.vectorizer,
                        class_names=tiny_datasets.class_names)
    served = tf.saved_model.load(str(path))
    test = synthetic_data.test
    image, text = test.image[:8], test.text[:8]
    base = _serve(served, image, text)
    _check_probabilities(base, 8)
    other_text = _serve(served, image, np.array([""] * 8))["probabilities"]
    other_image = _serve(served, np.zeros((8, 1, 1, 3), np.uint8), text)["probabilities"]
    if kind == "seed_image":  # text ignored, image used
        np.testing.assert_allclose(other_text, base["probabilities"], atol=1e-6)
        assert not np.allclose(other_image, base["probabilities"], atol=1e-6)
    elif kind == "seed_text":  # image ignored, text used
        np.testing.assert_allclose(other_image, base["probabilities"], atol=1e-6)
        assert not np.allclose(other_text, base["probabilities"], atol=1e-6)
    else:
        assert not np.allclose(other_text, base["probabilities"], atol=1e-6)
        assert not np.allclose(other_image, base["probabilities"], atol=1e-6)


# --- bad input: a defined result or a clear error -------------------------------------


def _image(n=1, size=(16, 16), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *size, 3), dtype=np.uint8)


def test_empty_text(served):
    out = _serve(served, _image(), [""])
    _check_probabilities(out, 1)
    np.testing.assert_array_equal(_tokens(served, [""])[0], [1] + [0] * 9)  # one [UNK]


def test_whitespace_only_text(served):
    texts = [" ", "   \t\n  ", "\u3000"]
    _check_probabilities(_serve(served, _image(3), texts), 3)
    np.testing.assert_array_equal(_tokens(served, texts), _tokens(served, ["", "", ""]))


def test_no_token_row_is_ever_all_padding(served):
    """What keeps the cuDNN LSTM kernel working on GPUs: no fully masked row."""
    texts = ["", " ", "!!! ... ???", "\t", b"\xff\xfe", "\U0001F600", "metal"]
    tokens = _tokens(served, texts)
    assert tokens.shape == (len(texts), 10) and (tokens != 0).any(axis=-1).all()


def test_ten_thousand_character_text(served, tiny_datasets):
    long_text = ("a metal thing painted red " * 400)[:10_000]
    out = _serve(served, _image(), [long_text])
    _check_probabilities(out, 1)
    np.testing.assert_array_equal(_tokens(served, [long_text]),
                                  np.asarray(tiny_datasets.vectorizer(tf.constant([long_text]))))


def test_cjk_and_emoji_text(served, tiny_datasets):
    texts = ["木製の赤い四角", "🚗🔥 metal 🙂", "金属 wooden 三角形"]
    out = _serve(served, _image(3), texts)
    _check_probabilities(out, 3)
    # Words outside the vocabulary read as [UNK] (1); the English words keep their ids.
    vocabulary = tiny_datasets.vectorizer.get_vocabulary()
    metal, wooden = vocabulary.index("metal"), vocabulary.index("wooden")
    expected = [[1] + [0] * 9, [1, metal, 1] + [0] * 7, [1, wooden, 1] + [0] * 7]
    np.testing.assert_array_equal(_tokens(served, texts), expected)


def test_invalid_utf8_bytes(served):
    texts = [b"\xff\xfe\xfd", b"metal \xc3", b"\xe2\x82 wooden \x80"]
    out = _serve(served, _image(3), texts)
    _check_probabilities(out, 3)
    # Invalid bytes read as U+FFFD, an unknown word; the valid words keep their ids.
    np.testing.assert_array_equal(_tokens(served, texts),
                                  _tokens(served, ["\ufffd", "metal \ufffd", "\ufffd wooden \ufffd"]))


@pytest.mark.parametrize("size", [(1, 1), (500, 300), (2000, 2000)])
def test_images_of_any_size(served, size):
    image = _image(1, size)
    out = _serve(served, image, ["a metal thing"])
    _check_probabilities(out, 1)
    # The same as fitting it first as the training pipeline does (aspect kept, black
    # padding: mmkeras.data.streaming.fit_image) and serving at the model's size.
    resized = fit_image(tf.constant(image), (16, 16)).numpy().astype("float32")
    at_model_size = _serve(served, resized, ["a metal thing"], FLOAT_SIGNATURE)
    np.testing.assert_allclose(out["probabilities"], at_model_size["probabilities"], atol=1e-5)


def test_resize_is_identity_at_the_model_size(served):
    image = _image(2)
    as_float = _serve(served, image.astype("float32"), ["a", "b"], FLOAT_SIGNATURE)
    np.testing.assert_array_equal(_serve(served, image, ["a", "b"])["probabilities"],
                                  as_float["probabilities"])


@pytest.mark.parametrize("channels", [1, 4])
def test_signature_refuses_grayscale_and_rgba(served, channels):
    """The signature takes 3 channels; mmkeras.predict converts (tests/test_predict.py)."""
    image = np.zeros((1, 16, 16, channels), np.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="3 channels"):
        served.signatures[SIGNATURE](image=tf.constant(image), text=tf.constant(["x"]))


def test_image_and_text_counts_differ(served):
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch sizes differ"):
        _serve(served, _image(3), ["a", "b"])


def test_empty_image_is_a_clear_error(served):
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 1x1"):
        _serve(served, np.zeros((1, 0, 5, 3), np.uint8), ["a"])


def test_float_input_with_nan(served):
    image = _image(2).astype("float32")
    image[0, :4] = np.nan
    image[1] = np.nan
    out = _serve(served, image, ["metal", "wooden"], FLOAT_SIGNATURE)
    _check_probabilities(out, 2)
    # NaN reads as 0; out-of-range values are clipped to [0, 255].
    expected = np.nan_to_num(image, nan=0.0)
    without_nan = _serve(served, expected, ["metal", "wooden"], FLOAT_SIGNATURE)
    np.testing.assert_allclose(out["probabilities"], without_nan["probabilities"])
    clipped = _serve(served, expected * 10 - 1000, ["metal", "wooden"], FLOAT_SIGNATURE)
    np.testing.assert_allclose(clipped["probabilities"],
                               _serve(served, np.clip(expected * 10 - 1000, 0, 255), ["metal", "wooden"],
                                      FLOAT_SIGNATURE)["probabilities"])


# --- TFLite and latency ---------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_token_model_converts_and_raw_signature_fails_as_documented(exported, trained,
                                                                            tiny_datasets, tmp_path):
    if not hasattr(tf, "lite") or not hasattr(tf.lite, "TFLiteConverter"):
        pytest.skip("the TFLite converter is not available in this TensorFlow")
    path = convert_tflite(exported, tmp_path / "seed.tflite", batch_size=1)
    features, _ = tiny_datasets.arrays["test"]
    runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner(SIGNATURE)
    x = {"image": features["image"][:1].astype("float32"), "text": features["text"][:1]}
    np.testing.assert_allclose(runner(**x)["probabilities"], training.predict_proba(trained, x), atol=1e-5)
    # The raw-input signature: built-in ops stop at the LSTM loop, Flex at the resize.
    with pytest.raises(Exception, match="TensorListReserve"):
        convert_tflite(exported, tmp_path / "raw.tflite", inputs="raw")
    with pytest.raises(Exception, match="ScaleAndTranslate"):
        convert_tflite(exported, tmp_path / "raw.tflite", inputs="raw", select_tf_ops=True)
    assert not (tmp_path / "raw.tflite").exists()


def test_latency_report(exported):
    report = measure(str(exported), batch_sizes=(1, 4), repeats=2)
    sizes = {f.relative_to(exported).as_posix(): f.stat().st_size for f in exported.rglob("*") if f.is_file()}
    assert report["directory_bytes"] == sum(sizes.values())
    extras = ("model.keras", "mmkeras.json", "vocabulary.txt")  # not part of the SavedModel
    assert report["saved_model_bytes"] == sum(sizes.values()) - sum(sizes[name] for name in extras)
    assert set(report["batches"]) == {"1", "4"}
    for batch_size, row in report["batches"].items():
        assert row["repeats"] == 2 and 0 < row["median_ms"] <= row["p90_ms"]
        # The median is rounded to 0.01 ms.
        assert row["samples_per_second"] == pytest.approx(int(batch_size) * 1e3 / row["median_ms"],
                                                          rel=0.01 + 0.005 / row["median_ms"])


def test_mixed_precision_model_exports_within_its_precision(tiny_datasets, tmp_path):
    keras.utils.set_random_seed(4)
    with training.precision_policy("mixed_bfloat16"):
        model = mmkeras.create_model("seed_image", **tiny_datasets.model_kwargs())
    assert export_directory._tolerance(model, None) == 1e-2
    assert export_directory._tolerance(mmkeras.create_model("seed_text", **tiny_datasets.model_kwargs()),
                                       None) == 1e-5
    # verify=True reloads the export and compares it with the model at that tolerance.
    path = export_model(model, tmp_path / "bf16", vectorizer=tiny_datasets.vectorizer,
                        class_names=tiny_datasets.class_names)
    assert os.path.isfile(os.path.join(str(path), "saved_model.pb"))


# --- the explain signature ------------------------------------------------------------


def test_explain_signature_matches_the_python_api(served, exported, trained, tiny_datasets, synthetic_data):
    from mmkeras import explain
    from mmkeras.export import EXPLAIN_SIGNATURE

    test = synthetic_data.test
    out = {k: v.numpy() for k, v in served.signatures[EXPLAIN_SIGNATURE](
        image=tf.constant(test.image[:12]), text=tf.constant(test.text[:12])).items()}
    features, _ = tiny_datasets.arrays["test"]
    features = {k: v[:12] for k, v in features.items()}
    contributions = explain.modality_contributions(trained, features)
    tokens = explain.token_attributions(trained, features)
    np.testing.assert_allclose(out["probabilities"], training.predict_proba(trained, features), atol=1e-5)
    np.testing.assert_array_equal(out["class_id"], contributions["class_id"])
    np.testing.assert_allclose(out["image_contribution"], contributions["image"], atol=1e-5)
    np.testing.assert_allclose(out["text_contribution"], contributions["text"], atol=1e-5)
    np.testing.assert_allclose(out["p_neither"], contributions["p_neither"], atol=1e-5)
    np.testing.assert_allclose(out["token_scores"], tokens["scores"], atol=1e-5)
    assert np.abs(out["image_contribution"]).max() > 1e-4 and np.abs(out["token_scores"]).max() > 0
    vocabulary = tiny_datasets.vectorizer.get_vocabulary()
    assert out["tokens"].tolist() == [[vocabulary[i].encode() for i in row] for row in features["text"]]
    assert np.all(out["token_scores"][features["text"] == 0] == 0)
    assert read_metadata(exported)["signatures"][EXPLAIN_SIGNATURE]["integration_steps"] == 32


@pytest.mark.parametrize("image, text, match", [
    (np.zeros((1, 16, 16, 1), np.uint8), ["x"], "3 channels"),
    (np.zeros((3, 16, 16, 3), np.uint8), ["a", "b"], "batch sizes differ"),
    (np.zeros((1, 0, 5, 3), np.uint8), ["a"], "at least 1x1"),
])
def test_explain_refuses_bad_input_as_serving_default_does(served, image, text, match):
    from mmkeras.export import EXPLAIN_SIGNATURE

    for signature in (SIGNATURE, EXPLAIN_SIGNATURE):
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            served.signatures[signature](image=tf.constant(image), text=tf.constant(text))


def test_explain_defined_results_for_odd_input(served):
    from mmkeras.export import EXPLAIN_SIGNATURE

    texts = ["", b"\xff metal \xc3", "\U0001F600 wooden"]
    out = {k: v.numpy() for k, v in served.signatures[EXPLAIN_SIGNATURE](
        image=tf.constant(_image(3, (500, 300))), text=tf.constant(texts)).items()}
    np.testing.assert_allclose(out["probabilities"], _serve(served, _image(3, (500, 300)), texts)["probabilities"],
                               atol=1e-6)
    for key in ("image_contribution", "text_contribution", "token_scores"):
        assert np.isfinite(out[key]).all()
    assert out["tokens"][0].tolist() == [b"[UNK]"] + [b""] * 9  # the empty text reads as one [UNK]


def test_fresh_adapted_vectorizer_exports(trained, synthetic_data, tmp_path):
    """A TextVectorization adapted but never called is built by export_model (it used to fail)."""
    vectorizer = keras.layers.TextVectorization(max_tokens=40, output_sequence_length=10)
    vectorizer.adapt(synthetic_data.train.text)
    assert not vectorizer.built
    path = export_model(trained, tmp_path / "fresh", vectorizer=vectorizer, class_names=[str(i) for i in range(6)])
    tokens = _tokens(tf.saved_model.load(str(path)), synthetic_data.test.text[:4])
    np.testing.assert_array_equal(tokens, np.asarray(vectorizer(tf.constant(synthetic_data.test.text[:4]))))


def test_onnx_token_level_model(exported, trained, tiny_datasets, tmp_path):
    """The documented ONNX path (docs/export.md): tf2onnx converts the token-level model."""
    tf2onnx = pytest.importorskip("tf2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    model = keras.models.load_model(str(exported / "model.keras"))
    spec = (tf.TensorSpec([None, 16, 16, 3], tf.float32, name="image"),
            tf.TensorSpec([None, 10], tf.int32, name="text"))

    @tf.function(input_signature=spec)
    def probabilities(image, text):
        return {"probabilities": model({"image": image, "text": text}, training=False)["label"]}

    tf2onnx.convert.from_function(probabilities, input_signature=spec, output_path=str(tmp_path / "m.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    features, _ = tiny_datasets.arrays["test"]
    x = {"image": features["image"][:8].astype("float32"), "text": features["text"][:8]}
    got = session.run(None, x)[0]
    np.testing.assert_allclose(got, training.predict_proba(trained, x), atol=1e-5)


def test_an_evaluate_report_is_recorded_as_the_metrics(tmp_path, tiny_datasets):
    model = mmkeras.create_model("seed_concat", **tiny_datasets.model_kwargs())
    report, _ = training.evaluate(model, tiny_datasets)
    path = export_model(model, tmp_path / "m", vectorizer=tiny_datasets.vectorizer,
                        class_names=tiny_datasets.class_names, metrics=report, verify=False)
    recorded = read_metadata(path)["metrics"]
    assert recorded["accuracy"] == pytest.approx(report["accuracy"])
    assert recorded["per_class_recall"] == pytest.approx(
        {name: r for name, r in report["per_class_recall"].items() if r is not None})
