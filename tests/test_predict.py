"""The predict CLI and `Predictor`: single and batch mode, text and JSON output, bad files.

The CLI runs in-process through `main(argv)` (exit code, stdout, stderr), on one export
of an untrained seed model with 16x16 inputs.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mmkeras.predict import InputError, load_image, main


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Image files of several sizes and modes, plus a corrupt one, and their RGB arrays."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    big = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, size=(20, 20), dtype=np.uint8)
    alpha = rng.integers(0, 256, size=(16, 16, 1), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(big).save(folder / "big.png")
    Image.fromarray(gray, mode="L").save(folder / "gray.png")
    Image.fromarray(np.concatenate([rgb, alpha], -1), mode="RGBA").save(folder / "rgba.png")
    (folder / "not_an_image.png").write_bytes(b"this is a text file, not a PNG")
    (folder / "truncated.png").write_bytes((folder / "big.png").read_bytes()[:200])
    return folder, {"rgb": rgb, "big": big, "gray": np.repeat(gray[..., None], 3, -1)}


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_single_mode_prints_top_k(capsys, export_dir, images, predictor):
    folder, arrays = images
    code, out, err = _run(capsys, export_dir, "--image", folder / "rgb.png", "--text", "a small red car",
                          "--top-k", "3")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith(str(folder / "rgb.png")) and '"a small red car"' in lines[0]
    expected = predictor.predict([arrays["rgb"]], ["a small red car"])["probabilities"][0]
    order = np.argsort(-expected)[:3]
    for line, i in zip(lines[1:], order):
        name, prob = line.split()
        assert name == predictor.class_names[i] and float(prob) == pytest.approx(expected[i], abs=1e-4)
    assert len(lines) == 4


def test_json_output(capsys, export_dir, images, predictor):
    folder, arrays = images
    code, out, _ = _run(capsys, export_dir, "--image", folder / "rgb.png", "--text", "metal", "--json",
                        "--top-k", "100")
    assert code == 0
    records = json.loads(out)
    preds = records[0]["predictions"]
    assert len(records) == 1 and records[0]["text"] == "metal" and len(preds) == 6
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)
    served = tf.saved_model.load(str(export_dir)).signatures["serving_default"](
        image=tf.constant(arrays["rgb"][None]), text=tf.constant(["metal"]))
    assert preds[0]["class_name"] == served["class_name"].numpy()[0].decode()


def test_batch_mode_over_csv(capsys, export_dir, images, predictor):
    folder, arrays = images
    csv_path = folder / "pairs.csv"
    csv_path.write_text('image,text\nrgb.png,a metal thing\nbig.png,"wooden, painted red"\n'
                        'gray.png,\nrgb.png,something blue\n', encoding="utf-8")
    code, out, err = _run(capsys, export_dir, "--csv", csv_path, "--json", "--top-k", "1",
                          "--batch-size", "1")
    assert code == 0, err
    records = json.loads(out)
    assert [r["text"] for r in records] == ["a metal thing", "wooden, painted red", "", "something blue"]
    # Images of different sizes are batched by size; the result matches one-at-a-time calls.
    keys = ["rgb", "big", "gray", "rgb"]
    one_by_one = [predictor.predict([arrays[k]], [r["text"]])["probabilities"][0]
                  for k, r in zip(keys, records)]
    for record, probs in zip(records, one_by_one):
        assert record["predictions"][0]["probability"] == pytest.approx(probs.max(), abs=1e-6)


def test_grayscale_and_rgba_files_are_converted(images, predictor):
    folder, arrays = images
    np.testing.assert_array_equal(load_image(folder / "rgba.png"), arrays["rgb"])  # alpha dropped
    np.testing.assert_array_equal(load_image(folder / "gray.png"), arrays["gray"])  # replicated
    rgba = np.concatenate([arrays["rgb"], np.zeros((16, 16, 1), np.uint8)], -1)
    p = predictor.predict([rgba, arrays["gray"][..., 0], arrays["gray"][..., :1]], ["x", "x", "x"])
    q = predictor.predict([arrays["rgb"], arrays["gray"], arrays["gray"]], ["x", "x", "x"])
    np.testing.assert_array_equal(p["probabilities"], q["probabilities"])


@pytest.mark.parametrize("name, message", [
    ("not_an_image.png", "cannot read"),
    ("truncated.png", "cannot read"),
    ("missing.png", "not found"),
])
def test_corrupt_or_missing_image_is_a_clear_error(capsys, export_dir, images, name, message):
    folder, _ = images
    code, out, err = _run(capsys, export_dir, "--image", folder / name, "--text", "a metal thing")
    assert code == 2 and out == ""
    assert err.startswith("error:") and message in err and name in err and "Traceback" not in err


def test_csv_row_without_text_is_a_clear_error(capsys, export_dir, images):
    folder, _ = images
    csv_path = folder / "short.csv"
    csv_path.write_text("image,text\nrgb.png,a metal thing\nbig.png\n", encoding="utf-8")
    code, _, err = _run(capsys, export_dir, "--csv", csv_path)
    assert code == 2 and "line 3" in err and "no text" in err


def test_missing_model_dir_is_a_clear_error(capsys, tmp_path, images):
    folder, _ = images
    code, _, err = _run(capsys, tmp_path / "nothing", "--image", folder / "rgb.png", "--text", "x")
    assert code == 2 and "saved_model.pb" in err


def test_text_only_call_and_undecodable_argument(capsys, export_dir):
    # An argument holding invalid UTF-8 reaches Python as surrogate escapes.
    code, out, err = _run(capsys, export_dir, "--text", "metal \udcff\udcfe")
    assert code == 0 and "no --image" in err and "metal \ufffd\ufffd" in out


def test_predictor_counts_differ(predictor):
    with pytest.raises(InputError, match="2 image"):
        predictor.predict([np.zeros((4, 4, 3), np.uint8)] * 2, ["only one"])
    with pytest.raises(InputError, match="list"):
        predictor.predict([np.zeros((4, 4, 3), np.uint8)], "a text, not a list")


def test_predictor_float_images_with_nan(predictor):
    image = np.random.default_rng(1).uniform(0, 255, size=(16, 16, 3)).astype("float32")
    with_nan = image.copy()
    with_nan[:5] = np.nan
    out = predictor.predict([with_nan, np.full((8, 8, 3), np.nan, np.float32)], ["metal", ""])
    # NaN reads as 0.
    np.testing.assert_allclose(out["probabilities"][0],
                               predictor.predict([np.nan_to_num(with_nan)], ["metal"])["probabilities"][0])
    np.testing.assert_allclose(out["probabilities"][1],
                               predictor.predict([np.zeros((8, 8, 3), np.float32)], [""])["probabilities"][0])


def test_predictor_bad_arrays(predictor):
    with pytest.raises(InputError, match="channels"):
        predictor.predict([np.zeros((4, 4, 5), np.uint8)], ["x"])
    with pytest.raises(InputError, match=r"\[0, 255\]"):
        predictor.predict([np.full((4, 4, 3), 300, np.int32)], ["x"])
    with pytest.raises(InputError, match="1x1"):
        predictor.predict([np.zeros((0, 4, 3), np.uint8)], ["x"])


def test_explain_flag_prints_contributions_and_token_scores(capsys, export_dir, images, predictor):
    folder, arrays = images
    code, out, err = _run(capsys, export_dir, "--image", folder / "rgb.png", "--text", "a metal thing",
                          "--explain", "--json")
    assert code == 0, err
    explanation = json.loads(out)[0]["explanation"]
    expected = predictor.explain([arrays["rgb"]], ["a metal thing"])
    assert explanation["image_contribution"] == pytest.approx(float(expected["image_contribution"][0]))
    assert explanation["text_contribution"] == pytest.approx(float(expected["text_contribution"][0]))
    # Efficiency: the two contributions add up to p(predicted) - p(both blanked).
    p = expected["probabilities"][0].max()
    assert explanation["image_contribution"] + explanation["text_contribution"] == pytest.approx(
        p - explanation["p_neither"], abs=1e-6)
    assert [t for t, _ in explanation["tokens"]] == ["a", "metal", "thing"]
    assert explanation["class_name"] == predictor.predict([arrays["rgb"]], ["a metal thing"])["class_name"][0]
    code, out, err = _run(capsys, export_dir, "--image", folder / "rgb.png", "--text", "a metal thing", "--explain")
    assert code == 0, err
    assert "image " in out and "tokens: a(" in out and "metal(" in out


def test_explain_refuses_bad_input_like_predict(capsys, export_dir, images):
    folder, _ = images
    code, _, err = _run(capsys, export_dir, "--image", folder / "not_an_image.png", "--text", "x", "--explain")
    assert code == 2 and "cannot read" in err
