"""Schedules from the data, early stopping on the validation split, and --time-budget."""

import json
import math

import keras
import numpy as np
import pytest

from mmkeras.bench import BenchConfig, run
from mmkeras.bench.budget import RowCost, share_budget
from mmkeras.bench.plan import RowPlan
from mmkeras.bench.schedule import (MIN_BATCH, MIN_STEPS_PER_EPOCH, SCHEDULES, plan_schedule,
                                    preferred_batch)
from mmkeras.data import load_dataset, make_datasets
from test_bench import user_dir  # noqa: F401 (a fixture: 12x10 images, 3 classes, 108 train pairs)

# The table of docs/benchmark.md: (epochs, batch) per row at 2k, 7k, 45k and 500k pairs, 32x32.
TABLE = {
    ("image", "image_resnet9", False): [(20, 32), (20, 128), (9, 128), (2, 128)],
    ("text", "text_bilstm", False): [(20, 32), (20, 128), (5, 128), (2, 128)],
    ("fused", "seed_concat", False): [(30, 32), (30, 128), (18, 512), (3, 512)],
    ("fused", "gmu_cnn_lstm", False): [(30, 32), (28, 128), (5, 128), (3, 128)],
    ("fused", "gmu_resnet9_bilstm", True): [(6, 32), (6, 128), (1, 128), (1, 128)],
}
SIZES = (2000, 7000, 45000, 500000)


@pytest.mark.parametrize("row", list(TABLE))
def test_schedule_table(row):
    family, model, warm = row
    got = [plan_schedule(family, n, 32, preferred=preferred_batch(model), warm_start=warm) for n in SIZES]
    assert got == TABLE[row]


@pytest.mark.parametrize("family, warm", [("image", False), ("text", False), ("fused", False), ("fused", True)])
def test_schedule_is_monotone_and_keeps_its_floors(family, warm):
    rule = SCHEDULES["fused_warm" if warm else family]
    last = None
    for n in np.unique(np.geomspace(100, 2_000_000, 60).astype(int)):
        epochs, batch = plan_schedule(family, int(n), 32, preferred=512, warm_start=warm)
        steps = math.ceil(n / batch)
        assert rule.min_epochs <= epochs <= rule.max_epochs and MIN_BATCH <= batch <= 512
        assert steps >= MIN_STEPS_PER_EPOCH or batch == MIN_BATCH  # small sets: enough steps per epoch
        # The step target is reached unless the epoch cap says a small set has had enough.
        assert epochs * steps >= rule.target_steps or epochs == rule.max_epochs
        if last is not None:  # more data: never a smaller batch, never more epochs
            assert batch >= last[1] and epochs <= last[0]
        last = (epochs, batch)
    # Larger images never get a larger batch; a 224x224 image caps it at the floor.
    batches = [plan_schedule(family, 500000, side, preferred=512, warm_start=warm)[1] for side in (32, 64, 128, 224)]
    assert batches == sorted(batches, reverse=True) and batches[-1] == MIN_BATCH and batches[0] == 512


def test_explicit_choices_win():
    assert plan_schedule("image", 7000, 32, epochs=3) == (3, 128)
    assert plan_schedule("image", 7000, 32, batch_size=64) == (20, 64)
    assert plan_schedule("fused", None, None, epochs=2, batch_size=8) == (2, 8)  # no data needed then
    with pytest.raises(ValueError, match="family 'audio'.*image, text, fused"):
        plan_schedule("audio", 7000, 32)
    with pytest.raises(ValueError, match="n_train=0"):
        plan_schedule("text", 0, 32)


def test_share_budget_cuts_epochs_by_need():
    costs = [RowCost("image", 20, epoch_seconds=30.0, fixed_seconds=10.0),
             RowCost("text", 10, epoch_seconds=3.0, fixed_seconds=5.0),
             RowCost("ensemble", 0, fixed_seconds=4.0, min_epochs=0)]
    need = 10 + 600 + 5 + 30 + 4
    assert share_budget(costs, need) == ({"image": 20, "text": 10, "ensemble": 0}, False)
    assert share_budget(costs, None)[0] == {"image": 20, "text": 10, "ensemble": 0}
    epochs, over = share_budget(costs, need / 2)
    assert not over and epochs["ensemble"] == 0
    spent = sum(c.seconds(epochs[c.name]) for c in costs)
    assert spent <= need / 2
    # Shared by need: both rows keep about the same fraction of their epochs ...
    assert abs(epochs["image"] / 20 - epochs["text"] / 10) <= 0.1
    # ... and no larger common fraction would have fit.
    bigger = {"image": min(20, epochs["image"] + 1), "text": min(10, epochs["text"] + 1), "ensemble": 0}
    assert sum(c.seconds(bigger[c.name]) for c in costs) > need / 2
    # Rows are never dropped: below the minimum every row keeps one epoch, and it says so.
    assert share_budget(costs, 30) == ({"image": 1, "text": 1, "ensemble": 0}, True)


class Sabotage(keras.callbacks.Callback):
    """Zeroes every weight after each batch from epoch `start` on: later epochs are worse."""

    def __init__(self, start):
        super().__init__()
        self.start, self.epoch = start, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch >= self.start:
            self.model.set_weights([np.zeros_like(w) for w in self.model.get_weights()])


def test_early_stopping_restores_the_best_validation_weights(user_dir, tmp_path):
    from mmkeras import training
    from mmkeras.bench.strategies import train_registered

    ds = make_datasets(load_dataset(user_dir), batch_size=16, vocab_size=50, sequence_length=6)
    config = BenchConfig(data=user_dir, out=str(tmp_path), callbacks=[Sabotage(start=3)], learning_rate=5e-3)
    plan = RowPlan(name="seed_image", model="seed_image", strategy="registered", family="image", batch_size=16,
                   epochs=12, early_stopping=True)
    keras.utils.set_random_seed(0)
    trained = train_registered(plan, ds, config, warm=None)
    val = trained.history["val_accuracy"]
    best = trained.stats["best_epoch"]
    assert trained.stats["planned_epochs"] == 12 and trained.stats["epochs"] == len(val) < 12  # it stopped
    assert 1 <= best <= 3 and val[best - 1] == max(val) > val[-1]  # the best VALIDATION epoch, kept
    # The model holds that epoch's weights (not the zeroed ones): its test predictions are
    # the ones the curve recorded after that epoch, and they are the row's.
    test_x, _ = training.split_arrays(ds, "test")
    np.testing.assert_array_equal(trained.predict(test_x), trained.curve.epoch_predictions[best - 1])
    np.testing.assert_array_equal(trained.curve.predictions, trained.curve.epoch_predictions[best - 1])
    assert any(np.abs(w).sum() > 0 for w in trained.model.get_weights())


def test_time_budget_end_to_end(user_dir, tmp_path, capsys):
    cfg = BenchConfig(data=user_dir, models="seed_text", out=str(tmp_path), vocab_size=50, sequence_length=6,
                      time_budget=3.0)
    res = run(cfg)
    printed = capsys.readouterr().out
    assert "Plan: 2 rows on 108 training pairs, images 12x10; budget 3.0 min" in printed
    assert "Estimated finish:" in printed and "run ends about" in printed
    budget = json.loads((tmp_path / "results.json").read_text())["budget"]
    assert budget["minutes"] == 3.0 and budget["probe_seconds"] > 0
    assert budget["spent_seconds"] <= 3.0 * 60 * 1.15
    for row in res["models"]:
        record = budget["rows"][row["name"]]
        assert row["planned_seconds"] == record["planned_seconds"] > 0
        assert row["spent_seconds"] == record["spent_seconds"] == row["wall_seconds"] > 0
        assert row["epochs"] <= record["planned_epochs"] <= record["scheduled_epochs"]
    assert res["models"][1]["planned_epochs"] >= res["models"][1]["epochs"] >= res["models"][1]["best_epoch"] >= 1
    # 108 pairs: seed_text trains at the floor batch, the recipe row at its 32.
    assert [m["batch_size"] for m in res["models"]] == [32, MIN_BATCH]
    # A resumed run says what it reuses, and trains nothing.
    again = run(cfg)
    printed = capsys.readouterr().out
    assert "reusing" in printed and "seed_text: reused from an earlier run (test accuracy" in printed
    assert [m["name"] for m in again["models"]] == [m["name"] for m in res["models"]]
    with pytest.raises(ValueError, match="time_budget=0"):
        run(BenchConfig(data=user_dir, models="seed_text", out=str(tmp_path / "x"), time_budget=0))

