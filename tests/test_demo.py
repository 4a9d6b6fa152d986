"""`make demo`'s script on the synthetic set: three rows, and the same seed gives the same rows;
its fallback to the synthetic set when a named set's images are unreachable."""

import dataclasses

import pytest

from mmkeras import demo
from mmkeras.data import registry


def test_demo_on_synthetic_is_reproducible(capsys):
    args = ["--data", "synthetic", "--epochs", "1", "--batch-size", "256"]
    first = demo.main(args)
    assert [r["name"] for r in first] == list(demo.DEMO_MODELS)
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["train_samples_per_second"] > 0 for r in first)
    assert "seed_concat" in capsys.readouterr().out
    again = demo.main(args)  # the same process: earlier models must not change the data order
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in first]


def test_unreachable_named_set_falls_back_to_synthetic_but_a_path_does_not(monkeypatch, capsys, tmp_path):
    def unreachable(spec, *, seed=0):
        raise FileNotFoundError(f"no {spec} images here")

    entry = registry._DATASETS["cifar100"]
    monkeypatch.setitem(registry._DATASETS, "cifar100", dataclasses.replace(entry, loader=unreachable))
    data = demo.load_demo_data("cifar100", seed=0)
    assert data.name == "synthetic" and len(data.train) == 4000
    assert "No real cifar100 images reachable: running on the SYNTHETIC set" in capsys.readouterr().out
    (tmp_path / "classes.txt").write_text("a\nb\n")  # a paired directory without its npz files
    with pytest.raises(FileNotFoundError, match="train.npz"):
        demo.load_demo_data(str(tmp_path), seed=0)


def test_demo_on_a_manifest_with_class_weights(manifest_file, capsys):
    path, paired = manifest_file
    rows = demo.main(["--data", str(path), "--split-column", "split", "--image-size", "12",
                      "--class-weight", "balanced", "--epochs", "1", "--batch-size", "16"])
    assert [r["name"] for r in rows] == list(demo.DEMO_MODELS)
    names = [str(c) for c in range(paired.num_classes)]
    for r in rows:
        assert list(r["per_class_recall"]) == names and len(r["class_weights"]) == len(names)
    out = capsys.readouterr().out
    assert "worst class (recall)" in out and f"{len(paired.train)} train / {len(paired.test)} test" in out


def test_demo_refuses_manifest_options_for_other_data(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--data", "synthetic", "--split-column", "split"])
    assert "--split-column given, but --data 'synthetic'" in capsys.readouterr().err
