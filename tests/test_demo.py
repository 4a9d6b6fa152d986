"""`make demo`'s script on the synthetic set: three rows, and the same seed gives the same rows."""

from mmkeras import demo


def test_demo_on_synthetic_is_reproducible(capsys):
    args = ["--data", "synthetic", "--epochs", "1", "--batch-size", "256"]
    first = demo.main(args)
    assert [r["name"] for r in first] == list(demo.DEMO_MODELS)
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["train_samples_per_second"] > 0 for r in first)
    assert "seed_concat" in capsys.readouterr().out
    again = demo.main(args)  # the same process: earlier models must not change the data order
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in first]
