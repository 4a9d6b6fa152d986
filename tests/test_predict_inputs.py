"""The predict CLI's inputs as a demanding user gives them: 16-bit PNGs, broken rows in a
1,000-row style batch file (line numbers, --on-bad-row), manifest columns and formats."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from PIL import Image

from mmkeras.predict import load_image, main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sixteen_bit_png_is_scaled_not_white(tmp_path):
    ramp = np.arange(256, dtype=np.uint16).reshape(16, 16) * 256 + 255  # high bytes 0 .. 255
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    pixels = load_image(tmp_path / "deep.png")
    expected = np.repeat((ramp >> 8).astype(np.uint8)[..., None], 3, -1)
    np.testing.assert_array_equal(pixels, expected)  # Pillow's convert("RGB") made ~all 255
    # The same pixels the training pipeline decodes.
    decoded = tf.io.decode_image((tmp_path / "deep.png").read_bytes(), channels=3, expand_animations=False)
    np.testing.assert_array_equal(pixels, decoded.numpy())
    assert load_image((tmp_path / "deep.png").read_bytes()).shape == (16, 16, 3)  # bytes too


def _csv(folder, name, lines):
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_missing_image_names_its_line_and_counts_the_others(capsys, export_dir, folder):
    path = _csv(folder, "batch.csv", ["image,text", "0.png,a", "gone.png,b", "1.png,c", "broken.png,d", "2.png,e"])
    code, out, err = _run(capsys, export_dir, "--csv", path)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {path}, line 3, column 'image': image file not found")
    assert "gone.png" in err and "1 more row has problems" in err and "--on-bad-row skip" in err


def test_on_bad_row_skip_predicts_the_good_rows(capsys, export_dir, folder, predictor):
    path = _csv(folder, "batch.csv", ["image,text", "0.png,a", "gone.png,b", "1.png,c", "broken.png,d", "2.png,e"])
    code, out, err = _run(capsys, export_dir, "--csv", path, "--on-bad-row", "skip", "--json", "--top-k", "1")
    assert code == 0, err
    records = json.loads(out)
    assert [r["line"] for r in records] == [2, 4, 6] and [r["text"] for r in records] == ["a", "c", "e"]
    assert "skipped" in err and "line 3" in err and "line 5" in err
    want = predictor.predict([load_image(folder / "1.png")], ["c"])["probabilities"][0]
    assert records[1]["predictions"][0]["probability"] == pytest.approx(want.max(), abs=1e-6)


def test_on_bad_row_missing_predicts_a_black_image(capsys, export_dir, folder, predictor):
    path = _csv(folder, "batch.csv", ["image,text", "0.png,a", "gone.png,b"])
    code, out, err = _run(capsys, export_dir, "--csv", path, "--on-bad-row", "missing", "--json", "--top-k", "1")
    assert code == 0, err
    records = json.loads(out)
    assert [r["line"] for r in records] == [2, 3] and "image-missing" in err
    want = predictor.predict([np.zeros((16, 16, 3), np.uint8)], ["b"])["probabilities"][0]
    assert records[1]["predictions"][0]["probability"] == pytest.approx(want.max(), abs=1e-6)


def test_manifest_columns_and_label(capsys, export_dir, folder, predictor):
    path = _csv(folder, "named.tsv", ["photo\ttitle\tnotes\tcategory", "0.png\ta red\tthing\tmetal_circle",
                                      "1.png\tblue\t\twooden_square"])
    code, out, err = _run(capsys, export_dir, "--csv", path, "--image-column", "photo", "--text-column", "title",
                          "--text-column", "notes", "--label-column", "category", "--json")
    assert code == 0, err
    records = json.loads(out)
    assert [r["text"] for r in records] == ["a red thing", "blue"]
    assert [r["label"] for r in records] == ["metal_circle", "wooden_square"]
    code, _, err = _run(capsys, export_dir, "--csv", path)
    assert code == 2 and "no column 'image', 'text'" in err and "'photo'" in err


def test_parquet_bytes_and_jsonl_batch_files(capsys, export_dir, folder, predictor):
    images = [(folder / f"{i}.png").read_bytes() for i in range(2)]
    parquet = folder / "batch.parquet"
    pq.write_table(pa.Table.from_pylist([{"image": {"bytes": images[0], "path": None}, "text": "x"},
                                         {"image": {"bytes": images[1], "path": None}, "text": None}]), parquet)
    jsonl = folder / "batch.jsonl"
    jsonl.write_text('{"image": "0.png", "text": "x"}\n\n{"image": "1.png"}\n', encoding="utf-8")
    results = {}
    for path in (parquet, jsonl):
        code, out, err = _run(capsys, export_dir, "--csv", path, "--json", "--top-k", "1")
        assert code == 0, err
        results[path.suffix] = json.loads(out)
    assert [r["line"] for r in results[".parquet"]] == [0, 1] and [r["line"] for r in results[".jsonl"]] == [1, 3]
    for a, b in zip(results[".parquet"], results[".jsonl"]):
        assert a["text"] == b["text"] and a["predictions"] == b["predictions"]
    assert results[".jsonl"][1]["text"] == ""  # an absent text is the empty text
