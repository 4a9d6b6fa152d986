"""Manifests: every table format, streamed == in-memory batches, broken rows under each
policy with exact line numbers, split column and generated split, image sizes, the cache.

Everything is tiny (12x12 images, a few dozen rows) and written to tmp_path.
"""

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmkeras.data import (ManifestData, ManifestError, PairedData, PairedSplit, load_dataset,
                          load_manifest, load_paired, make_datasets, make_synthetic, save_paired,
                          take_subset)
from mmkeras.data.streaming import fit_image

SIZE = 12


@pytest.fixture(scope="module")
def paired():
    return make_synthetic(n_train=36, n_test=12, image_size=SIZE, seed=0)


def _encode(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def write_manifest(folder, data, table="csv", image_format="PNG", cells="paths", split_column=True):
    """A manifest of `data` (a PairedData) in `folder`: images as files (or embedded bytes),
    integer labels, a split column; rows train first, then test. Returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for split in ("train", "test"):
        part = getattr(data, split)
        for i in range(len(part)):
            data_bytes = _encode(part.image[i], image_format)
            name = f"images/{split}_{i}.{image_format.lower()}"
            if cells == "paths":
                (folder / "images").mkdir(exist_ok=True)
                (folder / name).write_bytes(data_bytes)
                image = name
            else:
                image = data_bytes if cells == "bytes" else {"bytes": data_bytes, "path": name}
            rows.append({"image": image, "text": str(part.text[i]), "label": int(part.label[i]),
                         "split": split})
    if not split_column:
        for row in rows:
            row.pop("split")
    return write_rows(folder, rows, table)


def write_rows(folder, rows, table="csv"):
    """Rows (dicts) as a manifest file `folder/manifest.<table>`."""
    path = folder / f"manifest.{table}"
    if table in ("csv", "tsv"):
        import csv

        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="," if table == "csv" else "\t")
            writer.writeheader()
            writer.writerows(rows)
    elif table == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _batches(dataset):
    return [({k: v.numpy() for k, v in f.items()}, y.numpy()) for f, y in dataset]


def assert_same_batches(a, b):
    a, b = _batches(a), _batches(b)
    assert len(a) == len(b) and len(a) > 0
    for (fa, ya), (fb, yb) in zip(a, b):
        assert set(fa) == set(fb) == {"image", "text"}
        np.testing.assert_array_equal(ya, yb)
        for key in fa:
            assert fa[key].dtype == fb[key].dtype
            np.testing.assert_array_equal(fa[key], fb[key])


# --- streamed == in-memory -------------------------------------------------------------

def test_streamed_batches_equal_in_memory_batches(paired, tmp_path):
    path = write_manifest(tmp_path / "m", paired)
    data = load_manifest(path, split_column="split", image_size=SIZE, verbose=False)
    assert data.image_shape == paired.image_shape and len(data.validation) == 0
    kwargs = dict(batch_size=8, vocab_size=40, sequence_length=8, validation_fraction=0.25, seed=3)
    memory, streamed = make_datasets(paired, **kwargs), make_datasets(data, **kwargs)
    assert streamed.stream is not None and memory.stream is None
    assert streamed.class_names == [str(i) for i in range(paired.num_classes)]
    for split in ("train", "validation", "test"):
        assert streamed.size(split) == memory.size(split)
        assert_same_batches(getattr(memory, split), getattr(streamed, split))
    # A second epoch reshuffles the same way; re-batched pipelines start from the seed again.
    assert_same_batches(memory.train, streamed.train)
    assert_same_batches(memory.with_batch_size(5).train, streamed.with_batch_size(5).train)
    # features() decodes a subset into the arrays the in-memory set holds.
    rows = [4, 0, 7]
    got, want = streamed.features("test", rows), memory.features("test", rows)
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["text"], want["text"])
    assert got["image"].dtype == np.uint8
    # arrays hold the sources, not pixels.
    assert isinstance(streamed.arrays["test"][0]["image"][0], str)


def test_cache_dir_decodes_once_and_yields_the_same_batches(paired, tmp_path):
    path = write_manifest(tmp_path / "m", paired)
    data = load_manifest(path, split_column="split", image_size=SIZE, verbose=False)
    kwargs = dict(batch_size=8, vocab_size=40, sequence_length=8, seed=1)
    plain = make_datasets(data, **kwargs)
    cached = make_datasets(data, cache_dir=tmp_path / "cache", **kwargs)
    files = sorted(os.listdir(tmp_path / "cache"))
    assert len(files) == 3 and all(f.endswith(".u8") for f in files)
    for split in ("train", "validation", "test"):
        assert_same_batches(getattr(plain, split), getattr(cached, split))
    np.testing.assert_array_equal(cached.features("train", [3, 1])["image"],
                                  plain.features("train", [3, 1])["image"])
    # A second run reuses the files; a changed image gets a new one.
    stamps = {f: os.stat(tmp_path / "cache" / f).st_mtime_ns for f in files}
    make_datasets(data, cache_dir=tmp_path / "cache", **kwargs)
    assert {f: os.stat(tmp_path / "cache" / f).st_mtime_ns for f in files} == stamps
    (tmp_path / "m" / "images" / "test_0.png").write_bytes(_encode(np.zeros((SIZE, SIZE, 3), np.uint8), "PNG"))
    make_datasets(data, cache_dir=tmp_path / "cache", **kwargs)
    assert len(os.listdir(tmp_path / "cache")) == 4
    with pytest.raises(ValueError, match="cache_dir"):
        make_datasets(paired, cache_dir=tmp_path / "cache")


# --- every table format and image cell ----------------------------------------------------

@pytest.mark.parametrize("table, image_format, cells", [
    ("csv", "PNG", "paths"), ("tsv", "JPEG", "paths"), ("jsonl", "PNG", "paths"),
    ("parquet", "JPEG", "paths"), ("parquet", "PNG", "bytes"), ("parquet", "JPEG", "struct"),
])
def test_each_format_reads_the_same_rows(paired, tmp_path, table, image_format, cells):
    path = write_manifest(tmp_path / "m", paired, table=table, image_format=image_format, cells=cells)
    data = load_manifest(path, split_column="split", verbose=False)
    assert isinstance(data, ManifestData) and data.image_size == (SIZE, SIZE)
    assert data.image_size_choice.startswith("median of 48 image sizes")
    assert data.class_names == [str(i) for i in range(paired.num_classes)]
    for split in ("train", "test"):
        part, want = getattr(data, split), getattr(paired, split)
        assert part.text.tolist() == want.text.tolist()
        np.testing.assert_array_equal(part.label, want.label)
    first = 0 if table == "parquet" else 1 if table == "jsonl" else 2
    assert data.train.line.tolist() == list(range(first, first + 36))
    assert data.line_kind == ("row index" if table == "parquet" else "line")
    ds = make_datasets(data, batch_size=16, vocab_size=40, sequence_length=8, seed=0)
    images = ds.features("test")["image"]
    if image_format == "PNG":
        np.testing.assert_array_equal(images, paired.test.image)
    else:  # lossy: what Pillow decodes from the same bytes (the decoders round differently)
        pil = np.stack([np.asarray(Image.open(io.BytesIO(_encode(x, "JPEG"))).convert("RGB"))
                        for x in paired.test.image])
        difference = np.abs(images.astype(int) - pil)
        assert difference.max() <= 4 and difference.mean() < 2  # vs 22 to the PNG pixels


def test_several_text_columns_string_labels_and_registry(tmp_path):
    folder = tmp_path / "m"
    (folder / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        name = f"img/{i}.png"
        (folder / name).write_bytes(_encode(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8), "PNG"))
        rows.append({"photo": name, "title": f"title {i}", "notes": "" if i % 3 else f"note {i}",
                     "kind": ["zebra", "ant", "Moth"][i % 3]})
    path = write_rows(folder, rows, "csv")
    data = load_dataset(str(path), image_column="photo", text_columns=("title", "notes"),
                        label_column="kind", seed=4, verbose=False)
    assert isinstance(data, ManifestData)
    assert data.class_names == ["Moth", "ant", "zebra"]  # sorted strings
    texts = {line: text for part in (data.train, data.validation, data.test)
             for line, text in zip(part.line, part.text)}
    assert texts[2] == "title 0 note 0" and texts[3] == "title 1"  # joined; empty cell skipped
    # Registry subset keeps the validation share.
    small = take_subset(data, 10, 4, seed=0)
    assert len(small.train) == 10 and len(small.test) == 4
    assert len(small.validation) == round(10 * len(data.validation) / len(data.train))


def test_integer_labels_in_numeric_order(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    png = _encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    (folder / "a.png").write_bytes(png)
    rows = [{"image": "a.png", "text": "x", "label": label} for label in [10, 2, 1, 2, 10, 1] * 3]
    for table in ("csv", "jsonl"):  # strings of integers in CSV, numbers in JSONL
        data = load_manifest(write_rows(folder, rows, table), verbose=False)
        assert data.class_names == ["1", "2", "10"]


# --- splits ---------------------------------------------------------------------------------

def test_generated_split_is_stratified_seeded_and_recorded(paired, tmp_path):
    path = write_manifest(tmp_path / "m", paired, split_column=False)
    a = load_manifest(path, seed=5, validation_fraction=0.25, test_fraction=0.25, verbose=False)
    b = load_manifest(path, seed=5, validation_fraction=0.25, test_fraction=0.25, verbose=False)
    c = load_manifest(path, seed=6, validation_fraction=0.25, test_fraction=0.25, verbose=False)
    assert a.split == {"source": "generated", "method": "stratified by class", "seed": 5,
                       "validation_fraction": 0.25, "test_fraction": 0.25}
    assert a.test.line.tolist() == b.test.line.tolist() != c.test.line.tolist()
    lines = sorted(a.train.line.tolist() + a.validation.line.tolist() + a.test.line.tolist())
    assert lines == list(range(2, 50))  # every row once
    for c_id in range(paired.num_classes):
        n = {split: int((getattr(a, split).label == c_id).sum()) for split in ("train", "validation", "test")}
        total = sum(n.values())
        assert n["test"] == round(total * 0.25) and n["validation"] == round(total * 0.25) and n["train"] >= 1
        assert a.class_counts["test"][str(c_id)] == n["test"]
    # make_datasets uses the manifest's validation split (not a carve of train).
    ds = make_datasets(a, batch_size=8, vocab_size=40, sequence_length=8, validation_fraction=0.5)
    assert ds.size("validation") == len(a.validation) and ds.size("train") == len(a.train)


def test_split_column_synonyms(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.png").write_bytes(_encode(np.zeros((8, 8, 3), np.uint8), "PNG"))
    names = ["TRAIN", "training", "valid", "val", "dev", "eval", "Validation", "test", "Testing"]
    rows = [{"image": "a.png", "text": "", "label": "x", "part": name} for name in names]
    data = load_manifest(write_rows(folder, rows), split_column="part", verbose=False)
    assert data.train.line.tolist() == [2, 3] and data.validation.line.tolist() == [4, 5, 6, 7, 8]
    assert data.test.line.tolist() == [9, 10] and data.split == {"source": "column", "column": "part"}
    rows = [dict(r, part="train") for r in rows]
    with pytest.raises(ValueError, match="test split has no rows"):
        load_manifest(write_rows(folder, rows), split_column="part", verbose=False)


# --- broken rows ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """A CSV with good rows and one of each problem, and the lines each problem is on."""
    folder = tmp_path_factory.mktemp("broken")
    rng = np.random.default_rng(0)
    good = _encode(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8), "PNG")
    (folder / "good.png").write_bytes(good)
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "text.png").write_bytes(b"not an image at all")
    header = "image,text,label,split\n"
    lines = [
        "good.png,a,cat,train",  # 2
        'good.png,"two\nlines",dog,train',  # 3-4: a quoted cell spanning lines
        "missing.png,c,cat,train",  # 5: file not found
        "truncated.png,d,dog,train",  # 6: truncated
        "text.png,e,cat,test",  # 7: not an image
        "good.png,f,,train",  # 8: empty label
        ",g,dog,train",  # 9: empty image cell
        "good.png,,cat,test",  # 10: empty text: fine
        "good.png,i,bird,test",  # 11: label never in train
        "good.png,j,dog,holdout",  # 12: unknown split
        "good.png,k,dog,test",  # 13
        "good.png,l,cat,validation",  # 14
    ]
    path = folder / "broken.csv"
    path.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    return path


BROKEN = {5: ("image", "not found"), 6: ("image", "truncated"), 7: ("image", "cannot read"),
          8: ("label", "no label"), 9: ("image", "no image"), 11: ("label", "never appears in the train"),
          12: ("split", "holdout")}


def test_bad_rows_error_names_file_line_column_and_count(broken):
    with pytest.raises(ManifestError) as err:
        load_manifest(broken, split_column="split", verbose=False)
    message = str(err.value)
    assert message.startswith(f"{broken}, line 5, column 'image': image file not found")
    assert "6 more rows have problems" in message and "on_bad_row='skip'" in message
    found = {row["line"]: (row["column"], row["reason"]) for row in err.value.bad_rows}
    assert set(found) == set(BROKEN)
    for line, (column, reason) in BROKEN.items():
        assert found[line][0] == column and reason in found[line][1]


def test_bad_rows_skip(broken):
    data = load_manifest(broken, split_column="split", on_bad_row="skip", verbose=False)
    assert data.skipped == sorted(BROKEN) and data.blanked == [] and data.n_rows == 12
    assert data.train.line.tolist() == [2, 3] and data.test.line.tolist() == [10, 13]
    assert data.validation.line.tolist() == [14] and data.class_names == ["cat", "dog"]
    assert data.test.text.tolist() == ["", "k"] and data.train.text.tolist() == ["a", "two\nlines"]
    assert {r["line"] for r in data.bad_rows} == set(BROKEN)
    summary = data.summary()
    assert summary["source"] == str(broken) and summary["skipped"] == sorted(BROKEN)
    assert summary["class_counts"]["train"] == {"cat": 1, "dog": 1}
    json.dumps(summary)  # a results file can hold it


def test_bad_rows_missing_blanks_broken_images(broken):
    data = load_manifest(broken, split_column="split", on_bad_row="missing", image_size=10, verbose=False)
    assert data.blanked == [5, 6, 7, 9] and data.skipped == [8, 11, 12]
    assert data.train.line.tolist() == [2, 3, 5, 6, 9] and data.test.line.tolist() == [7, 10, 13]
    ds = make_datasets(data, batch_size=4, vocab_size=20, sequence_length=4, seed=0)
    train = ds.features("train")["image"]
    assert (train[2:] == 0).all() and train[0].any() and train[1].any()  # blanks are all zeros
    images = np.concatenate([f["image"].numpy() for f, _ in ds.train])
    assert (images.reshape(len(images), -1).max(axis=1) == 0).sum() == 3


def test_bad_rows_jsonl_and_parquet_positions(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.png").write_bytes(_encode(np.zeros((8, 8, 3), np.uint8), "PNG"))
    records = ['{"image": "a.png", "text": "x", "label": "a"}', "",
               '{"image": "gone.png", "text": "x", "label": "a"}', "{not json",
               '["a list"]', '{"image": "a.png", "label": "b"}']
    (folder / "m.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"m\.jsonl, line 3, column 'image'") as err:
        load_manifest(folder / "m.jsonl", verbose=False)
    assert [r["line"] for r in err.value.bad_rows] == [3, 4, 5]
    assert err.value.bad_rows[1]["column"] is None and "not valid JSON" in err.value.bad_rows[1]["reason"]
    rows = [{"image": "a.png", "text": "x", "label": "a"}, {"image": "gone.png", "text": "y", "label": "a"}]
    with pytest.raises(ManifestError, match=r"row index 1 \(Parquet rows counted from 0\), column 'image'"):
        load_manifest(write_rows(folder, rows, "parquet"), verbose=False)


def test_bad_arguments_and_missing_columns(paired, tmp_path):
    path = write_manifest(tmp_path / "m", paired)
    with pytest.raises(ValueError, match="no column 'photo'.*'image', 'text', 'label', 'split'"):
        load_manifest(path, image_column="photo")
    with pytest.raises(ValueError, match="on_bad_row='drop'.*error, skip, missing"):
        load_manifest(path, on_bad_row="drop")
    with pytest.raises(ValueError, match="image_size=0"):
        load_manifest(path, image_size=0)
    with pytest.raises(ValueError, match="suffix '.xlsx'"):
        load_manifest(tmp_path / "m.xlsx")
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        load_dataset(str(tmp_path / "nothing.csv"))


# --- image sizes and decoding ---------------------------------------------------------------

def test_mixed_sizes_default_size_and_padding(tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    rows = []
    for i, (h, w) in enumerate([(8, 16), (12, 12), (16, 24), (12, 20), (12, 12)]):
        (folder / f"{i}.png").write_bytes(_encode(np.full((h, w, 3), 255, np.uint8), "PNG"))
        rows.append({"image": f"{i}.png", "text": "t", "label": "a" if i % 2 else "b"})
    data = load_manifest(write_rows(folder, rows * 2), test_fraction=0.2, validation_fraction=0.0)
    assert data.image_size == (12, 16)  # median height, median width
    assert "image size 12x16 (median of 10 image sizes (12x16)" in capsys.readouterr().err
    ds = make_datasets(data, batch_size=4, vocab_size=10, sequence_length=2, seed=0)
    assert ds.image_shape == (12, 16, 3) and ds.features("train")["image"].shape[1:] == (12, 16, 3)
    # A wide white image fitted to a square: centred, black bars above and below.
    fitted = fit_image(np.full((8, 16, 3), 255, np.uint8), (8, 8)).numpy()
    assert (fitted[:2] == 0).all() and (fitted[-2:] == 0).all() and (fitted[2:6] == 255).all()
    batch = fit_image(np.full((3, 8, 16, 3), 255, np.uint8), (8, 8)).numpy()  # a batch the same way
    assert batch.shape == (3, 8, 8, 3) and (batch == fitted).all()
    # Large images are scaled to fit 224, then rounded to a multiple of 8.
    from mmkeras.data.manifest import choose_image_size

    assert choose_image_size([(480, 640)] * 3)[0] == (168, 224)
    assert choose_image_size([(300, 301)])[0] == (224, 224)


def test_sixteen_bit_and_grayscale_pngs_are_scaled_not_clipped(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024)  # 0 .. 64512
    Image.fromarray(ramp).save(folder / "deep.png")
    Image.fromarray((ramp >> 8).astype(np.uint8), mode="L").save(folder / "gray.png")
    rows = [{"image": name, "text": "", "label": label}
            for name, label in [("deep.png", "a"), ("gray.png", "a"), ("deep.png", "b"), ("gray.png", "b")]]
    data = load_manifest(write_rows(folder, rows), split_column=None, test_fraction=0.5,
                         validation_fraction=0.0, verbose=False)
    ds = make_datasets(data, batch_size=4, vocab_size=10, sequence_length=2)
    images = np.concatenate([ds.features(s)["image"] for s in ("train", "test")])
    expected = np.repeat((ramp >> 8).astype(np.uint8)[..., None], 3, -1)
    for image in images:
        np.testing.assert_array_equal(image, expected)


# --- load_paired refuses what fails later -------------------------------------------------

def test_load_paired_refuses_empty_split_and_points_at_classes_txt(tmp_path):
    data = make_synthetic(n_train=6, n_test=3, image_size=8, seed=0)
    empty = PairedSplit(data.test.image[:0], data.test.text[:0], data.test.label[:0])
    save_paired(PairedData(data.train, empty, data.class_names), tmp_path / "empty")
    with pytest.raises(ValueError, match="test split has 0 rows"):
        load_paired(tmp_path / "empty")
    save_paired(data, tmp_path / "few")
    (tmp_path / "few" / "classes.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\] for 2 classes \(the 2 lines of .*classes\.txt"):
        load_paired(tmp_path / "few")


# --- memory and the large-file paths ---------------------------------------------------------

def test_pyarrow_csv_reads_the_same_table_and_falls_back(tmp_path, monkeypatch):
    from mmkeras.data import tables

    rows = [{"image": f"{i}.png", "text": "" if i % 4 == 0 else f" t {i}", "label": i % 3, "split": "train"}
            for i in range(9)]
    (tmp_path / "a").mkdir()
    clean, messy = write_rows(tmp_path / "a", rows, "tsv"), tmp_path / "b.csv"
    messy.write_text('image,text,label\n"a.png","two\nlines",1\n\nb.png,,2\nc.png\n', encoding="utf-8")
    columns = {clean: ["image", "text", "label", "split"], messy: ["image", "text", "label"]}
    expected = {path: tables.read_table(path, columns[path]) for path in (clean, messy)}
    monkeypatch.setattr(tables, "PYARROW_CSV_BYTES", 0)
    assert tables._read_delimited_pyarrow(str(clean), columns[clean], "\t") is not None
    assert tables._read_delimited_pyarrow(str(messy), columns[messy], ",") is None  # the csv module reads it
    for path, want in expected.items():
        got = tables.read_table(path, columns[path])
        assert got.cells == want.cells and got.lines == want.lines and got.columns == want.columns
    assert expected[messy].lines.tolist() == [2, 5, 6] and expected[messy].cells["text"][2] is None


def test_image_size_from_a_sample_still_checks_every_image(tmp_path, monkeypatch):
    from mmkeras.data import manifest

    folder = tmp_path / "m"
    folder.mkdir()
    for h in (8, 10, 12):
        (folder / f"{h}.png").write_bytes(_encode(np.zeros((h, 6, 3), np.uint8), "PNG"))
    rows = [{"image": f"{(8, 10, 12)[i % 3]}.png", "text": "", "label": i % 2} for i in range(30)]
    rows[29]["image"] = "gone.png"
    monkeypatch.setattr(manifest, "SIZE_SAMPLE", 5)
    a = load_manifest(write_rows(folder, rows), on_bad_row="skip", seed=1, verbose=False)
    b = load_manifest(folder / "manifest.csv", on_bad_row="skip", seed=1, verbose=False)
    assert a.skipped == [31] and a.image_size[1] == 6  # the last row was checked though not sampled
    assert a.image_size_choice.startswith("median of 5 image sizes")
    assert a.image_size_choice.endswith("(a seeded sample of the 29 images)")
    assert a.image_size == b.image_size and a.image_size_choice == b.image_size_choice


def test_load_holds_no_object_per_row(tmp_path):
    """tracemalloc's peak while loading 3,000 rows, per row: the per-row objects of the first
    version cost about 2.3 KB; columns about 350 bytes (the cells, the splits returned)."""
    import tracemalloc

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.png").write_bytes(_encode(np.zeros((4, 4, 3), np.uint8), "PNG"))
    n = 3000
    path = folder / "m.csv"
    path.write_text("image,text,label\n" + "".join(f"a.png,caption {i},c{i % 7}\n" for i in range(n)),
                    encoding="utf-8")
    tracemalloc.start()
    try:
        data = load_manifest(path, verbose=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(data.train) + len(data.validation) + len(data.test) == n
    assert peak / n < 600, f"{peak / n:.0f} bytes a row"
