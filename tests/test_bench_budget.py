"""--time-budget: who is served first, measurement reduced before epochs are cut, one probe
per kind of row, per-kind corrections, and the reduced measurements of a real run."""

import json
import time

import pytest

from mmkeras.bench import BenchConfig, run
from mmkeras.bench.budget import (REDUCED, Measurements, Probe, RowCost, RowModel, RunBudget, probe_key,
                                  share_budget)
from mmkeras.bench.plan import RowPlan
from test_bench import user_dir  # noqa: F401 (a fixture: 12x10 images, 3 classes, 108 train pairs)


def test_borrowed_rows_are_served_first():
    costs = [RowCost("image", 20, epoch_seconds=10.0, fixed_seconds=5.0, borrowed=True),
             RowCost("fused", 6, epoch_seconds=10.0, fixed_seconds=5.0),
             RowCost("seed", 30, epoch_seconds=2.0, fixed_seconds=5.0)]
    floor = 5 + 10 + 5 + 10 + 5 + 2  # every row at one epoch
    # Just enough for the borrowed row's whole schedule: the others stay at one epoch.
    epochs, over = share_budget(costs, floor + 19 * 10.0)
    assert epochs == {"image": 20, "fused": 1, "seed": 1} and not over
    # Less: only the borrowed row is cut (to what fits), the others keep their minimum.
    epochs, over = share_budget(costs, floor + 9 * 10.0)
    assert epochs == {"image": 10, "fused": 1, "seed": 1} and not over
    # More: the rest share what is left by need (the same fraction of their epochs).
    # Half their epochs (3 of 6, 15 of 30) is 2 x 10 + 14 x 2 = 48 s beyond one epoch each.
    epochs, over = share_budget(costs, floor + 19 * 10.0 + 48.0)
    assert epochs == {"image": 20, "fused": 3, "seed": 15} and not over
    epochs, over = share_budget(costs, floor + 19 * 10.0 + 47.0)
    assert epochs["image"] == 20 and epochs["seed"] == 14 and not over
    assert sum(c.seconds(epochs[c.name]) for c in costs) <= floor + 19 * 10.0 + 47.0
    # Too little for one epoch each: said, and nothing dropped.
    assert share_budget(costs, floor - 1) == ({"image": 1, "fused": 1, "seed": 1}, True)


def test_rows_that_may_run_longer_take_the_room_left():
    from mmkeras.bench.budget import extend_into

    costs = [RowCost("image", 10, epoch_seconds=10.0, fixed_seconds=5.0, borrowed=True, max_epochs=20),
             RowCost("fused", 6, epoch_seconds=1.0, fixed_seconds=5.0)]
    full = {"image": 10, "fused": 6}
    assert extend_into(costs, full, 116.0) == full  # no room beyond the schedules
    assert extend_into(costs, full, 146.0) == {"image": 13, "fused": 6}
    assert extend_into(costs, full, 1e6) == {"image": 20, "fused": 6}  # never beyond max_epochs
    assert extend_into(costs, full, 100.0) == full  # over: nothing to extend (share_budget cuts)
    assert extend_into(costs[1:], {"fused": 6}, 1e6) == {"fused": 6}  # no row may run longer


def test_a_speed_run_row_is_lengthened_only_with_room_to_spare():
    import dataclasses

    budget = _budget(60.0)
    budget.models["image"] = dataclasses.replace(budget.models["image"], max_epochs=20)
    costs = {n: budget.cost(n, budget.full) for n in ("image", "fused")}
    need = costs["image"].seconds(10) + costs["fused"].seconds(6)
    # A loose budget: twice its epochs, no more; the last tenth of the budget stays unplanned.
    epochs, over, seconds, _ = budget.share(["image", "fused"])
    assert epochs == {"image": 20, "fused": 6} and not over
    budget.seconds = (need + 3 * costs["image"].epoch_seconds + 15 + 1) / 0.9
    epochs, _, seconds, _ = budget.share(["image", "fused"])
    assert epochs == {"image": 13, "fused": 6} and sum(seconds.values()) <= budget.left() - 0.1 * budget.seconds
    plan, _ = budget.start_row(RowPlan("image", "image", "registered", "image", batch_size=128, epochs=10,
                                       max_epochs=20), ["image", "fused"])
    assert plan.epochs == 13 and budget.rows["image"]["scheduled_epochs"] == 10
    # Just enough for the schedules: nothing lengthened (nor when anything is cut).
    budget = _budget(60.0)
    budget.models["image"] = dataclasses.replace(budget.models["image"], max_epochs=20)
    budget.seconds = need + 15 + 1
    assert budget.share(["image", "fused"])[0] == {"image": 10, "fused": 6}
    budget.seconds = need / 2
    assert budget.share(["image", "fused"])[0]["image"] < 10


def _budget(minutes, n_test=2000):
    """A RunBudget over two probed kinds of row, as if probing had just finished."""
    rows = {"image": RowModel("image", ("row", "image"), "image", 10, True, 7200, 2800, batch_size=128),
            "fused": RowModel("fused", ("warm",), "fused", 6, False, 7200, 2800, batch_size=128, recipe_passes=4)}
    probes = {("row", "image"): Probe(step_seconds=0.2, build_seconds=2.0, per_sample=1e-3, trace_seconds=1.0),
              ("warm",): Probe(step_seconds=0.1, build_seconds=2.0, per_sample=1e-3, trace_seconds=1.0)}
    return RunBudget(minutes, time.perf_counter(), rows, probes, 0.0, n_test=n_test, n_validation=800,
                     full=Measurements(robustness_samples=2000))


def test_measurement_is_reduced_before_epochs_are_cut():
    budget = _budget(60.0)
    full = [budget.cost(n, budget.full) for n in ("image", "fused")]
    reduced = [budget.cost(n, REDUCED) for n in ("image", "fused")]
    need = {name: sum(c.seconds(c.epochs) for c in costs) for name, costs in (("full", full), ("reduced", reduced))}
    assert need["reduced"] < need["full"] - 10  # 2,000 -> 512 pairs, no unimodal shares: seconds saved
    # Enough for everything: full measurements, every epoch.
    epochs, over, _, _ = budget.share(["image", "fused"])
    assert budget.measurements == budget.full and epochs == {"image": 10, "fused": 6} and not over
    # Enough only with reduced measurements: reduced, and still every epoch.
    budget = _budget((need["reduced"] + need["full"]) / 2 / 60 + 15 / 60)
    epochs, over, _, _ = budget.share(["image", "fused"])
    assert budget.measurements == REDUCED and epochs == {"image": 10, "fused": 6} and not over
    assert budget.measurements.reductions(budget.full, 2000) == [
        "robustness, image/text adds and shares on 512 test pairs (not 2,000)",
        "predict ms/sample timed on 256 test pairs (not 2,000)",
        "no Shapley shares for image-only and text-only rows (1 and 0 by construction)"]
    # Less: reduced measurements and cut epochs; once reduced, it stays reduced.
    budget.seconds = need["reduced"] / 2 + 15
    epochs, over, _, _ = budget.share(["image", "fused"])
    assert budget.measurements == REDUCED and epochs["image"] < 10 and not over
    budget.seconds = 3600.0
    budget.share(["image", "fused"])
    assert budget.measurements == REDUCED
    # A small test set: nothing to reduce in the robustness subset, but timings and shares.
    assert REDUCED.reductions(Measurements(robustness_samples=2000), 300)[0].startswith("predict ms")


def test_corrections_follow_the_kind_of_row():
    budget = _budget(60.0)
    budget.start_row(RowPlan("image", "image", "registered", "image", batch_size=128, epochs=10), ["image", "fused"])
    expected = budget.cost("image", budget.measurements).seconds(10)
    budget.finish_row("image", 2 * expected, 10)  # the image row took twice its estimate
    assert budget.corrections == {("row", "image"): pytest.approx(2.0)}
    # A kind with no finished row yet follows all finished rows; its own rows then correct it.
    raw = _budget(60.0).cost("fused", budget.measurements)
    assert budget.cost("fused", budget.measurements).epoch_seconds == pytest.approx(2 * raw.epoch_seconds)
    budget.start_row(RowPlan("fused", "fused", "registered", "fused", batch_size=128, epochs=6), ["fused"])
    budget.finish_row("fused", raw.seconds(6) / 2, 6)
    assert budget.corrections[("warm",)] == pytest.approx(0.5)
    assert budget.cost("image", budget.measurements).epoch_seconds == pytest.approx(
        2 * _budget(60.0).cost("image", budget.measurements).epoch_seconds)


def test_every_trained_row_has_its_own_probe():
    # One probe per fusion stage priced co-attention (token sequences) as concatenation
    # (pooled vectors): an eighth of its cost.
    warm = {"image": "rows/image_resnet9.keras", "text": "rows/text_bilstm.keras"}
    plans = [RowPlan(n, n, "registered", "fused", batch_size=128, epochs=6, warm_start=warm,
                     fusion_recipe="experts") for n in ("concat_resnet9_bilstm", "co_attention_resnet9_bilstm")]
    plans.append(RowPlan("seed_concat", "seed_concat", "registered", "fused", batch_size=128, epochs=6))
    assert len({probe_key(p) for p in plans}) == 3


def test_rows_that_cut_the_same_features_extract_them_once(tiny_datasets):
    import dataclasses

    from mmkeras.bench.budget import _probe_plan

    plan = RowPlan("seed_concat", "seed_concat", "registered", "fused", batch_size=16, epochs=2,
                   warm_start={"image": "image.keras", "text": "text.keras"}, fusion_recipe="experts")
    cached = _probe_plan(plan, tiny_datasets, BenchConfig())
    whole = _probe_plan(plan, tiny_datasets, BenchConfig(modality_dropout=0.3))  # no cache with dropout
    assert cached.extract_per_sample > 0 and whole.extract == ()
    # One key per cut tensor (the borrowed models, its name and shape), the same for a rebuilt row.
    keys = [key for key, _ in cached.extract]
    assert len(keys) == len(set(keys)) >= 1 and all(key[0] == tuple(sorted(plan.warm_start.items())) for key in keys)
    assert [key for key, _ in _probe_plan(plan, tiny_datasets, BenchConfig()).extract] == keys
    # Probes of rows that cut the same tensors time each extraction once (the run's probing
    # passes them one dict): the second row reuses the first's timing and values.
    extracted = {}
    first = _probe_plan(plan, tiny_datasets, BenchConfig(), extracted)
    assert sorted(key for key, _ in extracted) == sorted(keys)
    timed = dict(extracted)
    other = dataclasses.replace(plan, name="concat_other", model="seed_concat")
    assert _probe_plan(other, tiny_datasets, BenchConfig(), extracted).extract == first.extract
    assert extracted == timed
    # Two rows that cut the same features: the first pays the extraction, the second not;
    # once the first has run, neither does a later one.
    budget = _budget(60.0)
    budget.probes[("warm",)] = dataclasses.replace(budget.probes[("warm",)], extract=((("same",), 1e-3),))
    budget.models["fused_2"] = dataclasses.replace(budget.models["fused"], name="fused_2")
    first, second = budget._costs(["fused", "fused_2"], budget.full)
    assert first.fixed_seconds - second.fixed_seconds == pytest.approx(
        1e-3 * (7200 + 2800 + budget.full.samples("fused", 2000)))
    budget.start_row(RowPlan("fused", "fused", "registered", "fused", batch_size=128, epochs=6), ["fused", "fused_2"])
    budget.finish_row("fused", first.seconds(6), 6)  # as estimated: no correction
    assert budget._costs(["fused_2"], budget.full)[0].fixed_seconds == pytest.approx(second.fixed_seconds)


def _warm_rows(budget):
    """`budget` with three fused rows that warm-start from the image row (one with a recipe)."""
    import dataclasses

    budget.models["fused"] = dataclasses.replace(budget.models["fused"], borrows=True)
    for name in ("fused_2", "fused_3"):
        budget.models[name] = RowModel(name, ("warm",), "fused", 6, False, 7200, 2800, batch_size=128, borrows=True)
    return budget, ["image", "fused", "fused_2", "fused_3"]


def test_rows_are_left_out_only_when_their_fewest_epochs_overrun_or_starve_a_borrowed_row():
    budget, names = _warm_rows(_budget(60.0))
    fewest = {c.name: c.seconds(c.min_epochs) for c in budget._costs(names, REDUCED)}
    image = budget.cost("image", REDUCED).seconds  # seconds of the image row at so many of its 10 epochs
    assert fewest["fused"] > fewest["fused_2"] == fewest["fused_3"]  # "fused" has its recipe's passes
    assert fewest["fused"] + fewest["fused_2"] + 1 < image(8) - image(5) < sum(fewest[n] for n in names[1:])
    # Enough for every row at its minimum and the borrowed image row at 3/4 of its epochs:
    # nothing left out.
    budget.seconds = image(8) + sum(fewest[n] for n in names[1:]) + 15 + 5
    epochs, over, _, skipped = budget.share(names)
    assert skipped == [] and not over and set(epochs) == set(names) and epochs["image"] >= 8
    # Enough for one fused row with the image row at 3/4 of its epochs: the others are left
    # out (the costliest first), and start_row says why when its turn comes.
    budget.seconds = image(8) + fewest["fused_2"] + 15 + 5
    epochs, over, seconds, skipped = budget.share(names)
    assert sorted(skipped) == ["fused", "fused_2"] and not over and epochs["image"] >= 8
    assert set(epochs) == {"image", "fused_3"} and sum(seconds.values()) <= budget.left()
    plan, _ = budget.start_row(RowPlan("fused", "fused", "registered", "fused", batch_size=128, epochs=6),
                               ["fused", "image", "fused_2", "fused_3"])
    assert plan is None and "75% of their epochs" in budget.skipped["fused"] and "fused" in budget.record()["skipped"]
    # Three quarters would leave out every row built on the image row, which serves
    # nothing: the next floor, half its epochs, keeps them all.
    budget, names = _warm_rows(_budget(60.0))
    budget.seconds = image(5) + sum(fewest[n] for n in names[1:]) + 15 + 1
    epochs, over, _, skipped = budget.share(names)
    assert skipped == [] and not over and 5 <= epochs["image"] < 8 and budget.floor == 0.5
    # No floor keeps a row built on it: rows are left out only as far as the fewest epochs
    # need (here one), and the image row gets what fits.
    budget.seconds = fewest["image"] + fewest["fused"] + fewest["fused_2"] + 15 + 5
    epochs, over, seconds, skipped = budget.share(names)
    assert len(skipped) == 1 and "image" not in skipped and not over and epochs["image"] < 3 and budget.floor == 0
    plan, _ = budget.start_row(RowPlan("fused", "fused", "registered", "fused", batch_size=128, epochs=6),
                               ["fused", "image", "fused_2", "fused_3"])
    assert plan is None and "even at their fewest epochs" in budget.skipped["fused"]
    # Even the borrowed row alone overruns: said, nothing borrowed is dropped.
    budget.seconds = 1.0
    epochs, over, _, skipped = budget.share(names)
    assert over and list(epochs) == ["image"] and set(skipped) == {"fused", "fused_2", "fused_3"}


def test_ensembles_are_left_out_like_the_rows_that_train():
    """The row whose absence saves the most goes first, an ensemble too: a cheap fused row
    trained for an epoch is worth more than an ensemble's predictions."""
    import dataclasses

    budget, names = _warm_rows(_budget(60.0))
    budget.probes[("row", "text")] = Probe(step_seconds=0.1, build_seconds=1.0, per_sample=1e-2, trace_seconds=1.0)
    members = (("row", "image"), ("row", "text"))
    budget.models["ensemble"] = RowModel("ensemble", ("ensemble", members), "ensemble", 0, False, 0, 800,
                                         members=members, borrows=True)
    names = ["image", "fused_2", "ensemble"]
    fewest = {c.name: c.seconds(c.min_epochs) for c in budget._costs(names, REDUCED)}
    assert fewest["ensemble"] > fewest["fused_2"]
    budget.seconds = budget.cost("image", REDUCED).seconds(8) + fewest["ensemble"] + 15 + 1
    epochs, over, _, skipped = budget.share(names)
    assert skipped == ["ensemble"] and not over and epochs["image"] >= 8 and "fused_2" in epochs
    # The stacking ensemble is never left out: a multimodal row on the trained branches
    # whatever the budget (its seconds are kept for it, even where nothing else fits).
    budget.models["stacking"] = dataclasses.replace(budget.models["ensemble"], name="stacking", always_kept=True)
    epochs, over, _, skipped = budget.share(["image", "stacking", "ensemble"])
    assert skipped == ["ensemble"] and not over and "stacking" in epochs
    budget.seconds = 1.0
    epochs, over, _, skipped = budget.share(["image", "stacking", "ensemble"])
    assert over and skipped == ["ensemble"] and set(epochs) == {"image", "stacking"}


def test_the_stacking_ensemble_is_marked_to_stay(tiny_datasets):
    from mmkeras.bench.budget import _row_model

    plans = [RowPlan("image_simple_cnn", "image_simple_cnn", "registered", "image", batch_size=16, epochs=2,
                     saved_model="image.keras"),
             RowPlan("text_lstm", "text_lstm", "registered", "text", batch_size=16, epochs=2, saved_model="text.keras")]
    plans += [RowPlan(n, n, "ensemble", "ensemble", members=("image", "text"))
              for n in ("ensemble_average", "ensemble_stacking")]
    keys = {p.name: ("row", p.name) for p in plans}
    assert {p.name: _row_model(p, plans, tiny_datasets, keys).always_kept for p in plans[2:]} == {
        "ensemble_average": False, "ensemble_stacking": True}


def test_a_deadline_leaves_the_later_rows_their_fewest_epochs():
    def deadline(budget):
        plan, _ = budget.start_row(RowPlan("image", "image", "registered", "image", batch_size=128, epochs=10),
                                   ["image", "fused"])
        return budget.train_config(BenchConfig(), plan).callbacks[-1].seconds

    budget = _budget(60.0)
    image, fused = budget._costs(["image", "fused"], budget.full)
    # A loose budget: the row may use the room the fused row's plan leaves, far beyond its own.
    assert deadline(budget) == pytest.approx(budget.left() - (image.fixed_seconds - 2.0) - fused.seconds(6), rel=1e-3)
    # A budget the plan fills: DEADLINE_SLACK x its planned training seconds.
    budget = _budget((image.seconds(10) + fused.seconds(6) + 15 + 10) / 60)
    cost = budget.cost("image", budget.full)
    assert deadline(budget) == pytest.approx(1.2 * (10 * cost.epoch_seconds + 2.0))
    # Less time left than the plan assumed (a busier machine): no later than what leaves the
    # fused row its one epoch.
    budget = _budget((image.seconds(10) + fused.seconds(1) + 15) / 60)
    tight = deadline(budget)
    measured = budget.measurements
    image, fused = budget._costs(["image", "fused"], measured)
    assert tight == pytest.approx(budget.left() - fused.seconds(1) - (image.fixed_seconds - 2.0), abs=0.5)
    assert tight < 1.2 * (10 * image.epoch_seconds + 2.0)


def test_a_tight_budget_reduces_measurements_and_says_so(user_dir, tmp_path, capsys):
    cfg = BenchConfig(data=user_dir, models="seed_image,seed_text,ensemble_product", out=str(tmp_path),
                      vocab_size=50, sequence_length=6, time_budget=0.5)
    res = run(cfg)
    printed = capsys.readouterr().out
    budget = json.loads((tmp_path / "results.json").read_text())["budget"]
    assert budget["reduced_measurements"] and budget["measurements"] == {
        "robustness_samples": 512, "timing_samples": 256, "unimodal_shares": False}
    assert "Measurement reduced to fit the budget: no Shapley shares for image-only" in printed
    assert budget["probes"] == 4  # the two seed rows and their recipe rows; none for the ensemble
    rows = {r["name"]: r for r in res["models"]}
    assert "modality_share" not in rows["seed_image"]
    if "ensemble_product" in rows:
        assert "modality_share" in rows["ensemble_product"]
    assert {r["measurements"] for r in budget["rows"].values()} == {"reduced"}
    # 0.5 min cannot hold every row at one epoch: rows that nothing borrows are left out,
    # said on the console and in results.json/results.md, never the borrowed unimodal rows.
    assert {"seed_image", "seed_text"} <= set(rows) and set(budget["skipped"]).isdisjoint(rows)
    assert set(rows) | set(budget["skipped"]) == {"recipe_seed_image", "recipe_seed_text", "seed_image",
                                                  "seed_text", "ensemble_product"}
    markdown = (tmp_path / "results.md").read_text()
    for name in budget["skipped"]:
        assert f"{name}: LEFT OUT" in printed and f"**Left out** {name}: with it" in markdown
    # Every trained row ran under a deadline (a busier machine stops it after an epoch).
    assert all("stopped_by_deadline_after" in r for n, r in budget["rows"].items() if n != "ensemble_product")
    assert "served first (later rows borrow its model)" in printed
    # Each row says how far the budget cut it (recipe rows too): analyses.budget_cut reads it.
    for name, row in rows.items():
        assert (row["scheduled_epochs"], row["planned_epochs"]) == (
            budget["rows"][name]["scheduled_epochs"], budget["rows"][name]["planned_epochs"])
        assert row.get("stopped_by_deadline_after") == budget["rows"][name].get("stopped_by_deadline_after")


def test_throughput_and_latency_share_one_trace():
    import mmkeras
    import numpy as np
    from mmkeras.bench import measure

    model = mmkeras.create_model("seed_concat", num_classes=3, image_shape=(8, 8, 3), vocab_size=20, sequence_length=5)
    rng = np.random.default_rng(0)
    features = {"image": rng.integers(0, 255, (300, 8, 8, 3)).astype("uint8"),
                "text": rng.integers(0, 20, (300, 5)).astype("int32")}
    assert measure.predict_ms_per_sample(model, features, batch_size=128) > 0  # 300 rows: a short last batch
    assert measure.latency_p50_ms(model, features, repeats=3) > 0
    fn = measure.inference_fn(model, features)
    assert fn.experimental_get_tracing_count() == 1
    expected = model.predict(features, verbose=0)["label"]
    np.testing.assert_allclose(fn(features)["label"], expected, atol=1e-5)


def test_training_deadline_stops_a_fit_that_would_overrun():
    import keras
    import numpy as np
    from mmkeras.bench.budget import TrainingDeadline

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")], name="tiny")
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((8, 3), "float32"), np.zeros((8, 2), "float32")
    late, roomy = TrainingDeadline(0.0), TrainingDeadline(3600.0)
    assert len(model.fit(x, y, epochs=5, verbose=0, callbacks=[late]).epoch) == 1 and late.stopped_after == 1
    assert len(model.fit(x, y, epochs=3, verbose=0, callbacks=[roomy]).epoch) == 3 and roomy.stopped_after is None
    # A fit that ends anyway is not said to be stopped.
    assert len(model.fit(x, y, epochs=1, verbose=0, callbacks=[late]).epoch) == 1 and late.stopped_after is None


def test_the_speed_run_row_ends_by_its_schedule_not_by_the_deadline(monkeypatch):
    import types

    import keras
    from mmkeras.bench import strategies
    from mmkeras.bench.budget import TrainingDeadline

    seen = {}

    def fit_speedrun(model, ds, *, callbacks, time_limit, **kwargs):
        seen.update(callbacks=callbacks, time_limit=time_limit)
        return model, {}, {"schedule_shortened_to": 3}

    monkeypatch.setattr(strategies.speedrun, "fit_speedrun", fit_speedrun)
    deadline, other = TrainingDeadline(90.0), keras.callbacks.Callback()
    config = BenchConfig(callbacks=[other, deadline])
    plan = types.SimpleNamespace(name="image_airbench", epochs=8, batch_size=250, optimizer="muon")
    curve = types.SimpleNamespace(exclude_from=lambda stats: stats)
    strategies._train_by_speedrun(None, plan, None, config, curve, None, [])
    # Its seconds become the fit's time limit (its schedule is laid over what fits); the
    # deadline itself does not run, so a slow epoch cannot end the fit before it anneals.
    assert seen["time_limit"] == 90.0 and other in seen["callbacks"] and deadline not in seen["callbacks"]
    assert deadline.stopped_after == 3 and config.callbacks == [other, deadline]  # the budget reads it


def test_the_default_run_has_a_budget_and_none_lifts_it(capsys):
    from mmkeras.bench.__main__ import parse_args
    from mmkeras.bench.config import DEFAULT_TIME_BUDGET

    assert parse_args([]).time_budget == DEFAULT_TIME_BUDGET == BenchConfig().time_budget == 30.0
    assert parse_args(["--time-budget", "none"]).time_budget is None
    assert parse_args(["--time-budget", "7.5"]).time_budget == 7.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SystemExit):
            parse_args(["--time-budget", bad])
        assert f"expected a number of minutes > 0 or 'none'; received {bad!r}" in capsys.readouterr().err


def test_a_row_measured_with_test_time_views_is_priced_with_them(tiny_datasets):
    import dataclasses

    from mmkeras.bench.budget import _probe_plan

    plan = RowPlan("image_airbench", "image_airbench", "registered", "image", batch_size=16, epochs=2,
                   training="speedrun")
    probe = _probe_plan(plan, tiny_datasets, BenchConfig())
    assert probe.measured_per_sample > probe.per_sample  # six views against one
    assert _probe_plan(dataclasses.replace(plan, training=None), tiny_datasets, BenchConfig()).measured_per_sample is None
    budget = _budget(60.0)
    plain = budget.cost("image", REDUCED)
    budget.probes[("row", "image")] = dataclasses.replace(budget.probes[("row", "image")], measured_per_sample=6e-3)
    viewed = budget.cost("image", REDUCED)
    assert viewed.epoch_seconds == plain.epoch_seconds  # epochs predict without the views
    assert viewed.fixed_seconds - plain.fixed_seconds == pytest.approx(
        5e-3 * REDUCED.samples("image", 2000) + 6e-3 * 2000)


def test_the_row_left_out_first_is_the_one_whose_absence_saves_most():
    import dataclasses

    # The row whose absence saves the most goes first: not the first of two rows that cut
    # the same features (the second would pay them instead), but a row that shares nothing.
    budget = _budget(60.0)
    shared = Probe(step_seconds=0.01, build_seconds=1.0, per_sample=1e-5, trace_seconds=0.1, extract=((("f",), 1e-2),))
    alone = Probe(step_seconds=0.01, build_seconds=1.0, per_sample=1e-5, trace_seconds=0.1, extract=((("g",), 6e-3),))
    budget.probes.update({("a",): shared, ("b",): shared, ("c",): alone})
    for name in ("a", "b", "c"):
        budget.models[name] = dataclasses.replace(budget.models["fused"], name=name, key=(name,))
    floor = {c.name: c.seconds(c.min_epochs) for c in budget._costs(["image", "a", "b", "c"], REDUCED, floor=0.75)}
    assert floor["a"] > floor["c"] > floor["b"]  # "a" is the costliest, as the first to extract
    budget.seconds = floor["image"] + floor["a"] + floor["b"] + 15 + 5  # the image row at 3/4 of its epochs
    assert budget.share(["image", "a", "b", "c"])[3] == ["c"]
    # A recipe row is never left out: the seed graph's row is compared with it.
    budget.models["c"] = dataclasses.replace(budget.models["c"], reference=True)
    assert "c" not in budget.share(["image", "a", "b", "c"])[3]


def test_a_recipe_row_and_the_seed_row_compared_with_it_are_never_left_out(tiny_datasets):
    from mmkeras.bench.budget import _row_model

    plans = [RowPlan("recipe_seed_concat", "seed_concat", "recipe", "fused", batch_size=32, epochs=10),
             RowPlan("seed_concat", "seed_concat", "registered", "fused", batch_size=128, epochs=6),
             RowPlan("gmu_cnn_lstm", "gmu_cnn_lstm", "registered", "fused", batch_size=128, epochs=6)]
    keys = {p.name: ("row", p.name) for p in plans}
    assert {p.name: _row_model(p, plans, tiny_datasets, keys).reference for p in plans} == {
        "recipe_seed_concat": True, "seed_concat": True, "gmu_cnn_lstm": False}
    # Without its recipe row the seed graph's row is a row like any other.
    assert not _row_model(plans[1], plans[1:], tiny_datasets, keys).reference


def test_a_prediction_is_timed_at_its_fastest_of_three():
    """One timing caught a moment of load (the plain model timed 8x slower than with six
    views); the probe keeps the shortest of three."""
    from mmkeras.bench.budget import _fastest

    sleeps = iter([0.2, 0.01, 0.1])
    assert 0.01 <= _fastest(lambda: time.sleep(next(sleeps))) < 0.1
