"""The paired on-disk format: round trip, any shape, and each validation error."""

import numpy as np
import pytest

from mmkeras.data import PairedData, PairedSplit, load_paired, make_synthetic, save_paired


def _data(n=6, shape=(5, 7), classes=("x", "y", "z", "w")):
    rng = np.random.default_rng(0)

    def split(n):
        return PairedSplit(rng.integers(0, 255, (n, *shape, 3), dtype=np.uint8),
                           np.array([f"caption {i} é✓" for i in range(n)]),
                           rng.integers(0, len(classes), n).astype(np.int64))

    return PairedData(split(n), split(n // 2), list(classes))


def test_round_trip_any_size(tmp_path):
    data = _data()
    save_paired(data, tmp_path)
    back = load_paired(tmp_path)
    assert back.class_names == ["x", "y", "z", "w"] and back.image_shape == (5, 7, 3)
    for split in ("train", "test"):
        a, b = getattr(data, split), getattr(back, split)
        assert np.array_equal(a.image, b.image) and a.text.tolist() == b.text.tolist()
        assert np.array_equal(a.label, b.label) and b.label.dtype == np.int64


def test_synthetic_round_trip(tmp_path):
    data = make_synthetic(n_train=30, n_test=10, image_size=12)
    save_paired(data, tmp_path)
    assert load_paired(tmp_path).train.text.tolist() == data.train.text.tolist()


def _corrupt(tmp_path, split="train", **arrays):
    save_paired(_data(), tmp_path)
    path = tmp_path / f"{split}.npz"
    with np.load(path) as z:
        content = {k: z[k] for k in z.files}
    content.update(arrays)
    for k in [k for k, v in arrays.items() if v is None]:
        content.pop(k)
    np.savez(path, **content)
    return path


@pytest.mark.parametrize("arrays, message", [
    (dict(label=np.array([0, 1, 2, 3, 0, 9])), "'label' must lie in [0, 3]"),
    (dict(label=np.array([0, 1, 2])), "differ in length"),
    (dict(image=np.zeros((6, 5, 7), np.uint8)), "'image' must have shape [N, H, W, 3]"),
    (dict(image=np.zeros((6, 5, 7, 3), np.float32)), "'image' must be uint8"),
    (dict(text=np.arange(6)), "'text' must be 1-D unicode"),
    (dict(label=np.zeros(6, np.float32)), "'label' must be 1-D integers"),
    (dict(text=None), "missing array(s) ['text']"),
])
def test_validation_errors_name_file_array_problem(tmp_path, arrays, message):
    path = _corrupt(tmp_path, **arrays)
    with pytest.raises(ValueError) as err:
        load_paired(tmp_path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="classes.txt"):
        load_paired(tmp_path)
    save_paired(_data(), tmp_path)
    (tmp_path / "test.npz").unlink()
    with pytest.raises(FileNotFoundError, match="test.npz"):
        load_paired(tmp_path)


def test_not_an_npz(tmp_path):
    save_paired(_data(), tmp_path)
    (tmp_path / "train.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="train.npz"):
        load_paired(tmp_path)


def test_save_refuses_bad_data(tmp_path):
    bad = _data()
    bad.train.label[0] = 7
    with pytest.raises(ValueError, match="train split"):
        save_paired(bad, tmp_path)
