"""The benchmark's per-epoch curve (mmkeras.bench.curve.EpochCurve): its seconds are
training seconds, its own test evaluations left out exactly once."""

import numpy as np

from mmkeras.bench import curve as curve_module
from mmkeras.bench.curve import EpochCurve


def test_seconds_leave_out_each_evaluation_once(monkeypatch):
    clock = {"now": 100.0}
    monkeypatch.setattr(curve_module.time, "perf_counter", lambda: clock["now"])

    def predict(model, features):  # every evaluation takes 7 s of the clock
        clock["now"] += 7.0
        return np.eye(2)[[0, 1, 1]]

    monkeypatch.setattr(curve_module.training, "predict_proba", predict)
    curve = EpochCurve({"image": np.zeros((3, 2, 2, 3))}, np.array([0, 1, 0]))
    curve.on_train_begin()
    for epoch in range(3):
        clock["now"] += 10.0  # each epoch trains 10 s
        curve.on_epoch_end(epoch, {"val_accuracy": 0.5})
    assert [c["seconds"] for c in curve.curve] == [10.0, 20.0, 30.0]
    assert curve.eval_seconds == 21.0
    stats = curve.exclude_from({"train_seconds": 51.0, "train_samples": 300, "epochs": 3})
    assert stats["train_seconds"] == 30.0 and stats["median_epoch_samples_per_second"] == 10.0
    assert curve.curve[-1]["test_accuracy"] == 2 / 3


def test_the_clock_runs_on_through_a_second_fit(monkeypatch):
    # A fusion recipe's second phase: its epochs continue the first phase's seconds.
    clock = {"now": 0.0}
    monkeypatch.setattr(curve_module.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(curve_module.training, "predict_proba", lambda m, f: np.eye(2)[[0]])
    curve = EpochCurve({"image": np.zeros((1, 2, 2, 3))}, np.array([0]))
    for phase in range(2):
        curve.on_train_begin()
        clock["now"] += 5.0
        curve.on_epoch_end(0)
        clock["now"] += 1.0  # between the phases: recompiling, unfreezing
    assert [c["seconds"] for c in curve.curve] == [5.0, 11.0]
