"""The benchmark on a user's own paired directory: schema, outputs, resume, determinism."""

import dataclasses
import json
import re

import numpy as np
import pytest

import mmkeras
from mmkeras.bench import BenchConfig, metrics, report, run, select_rows
from mmkeras.bench.config import DEFAULT_IMAGE_MODEL, DEFAULT_MODELS, SEED_BATCH_SIZE
from mmkeras.bench.measure import ROBUSTNESS, drop_words, perturbations
from mmkeras.bench.plan import describe, plan_rows
from mmkeras.bench.recipe import pre_pad
from mmkeras.bench.schedule import plan_schedule
from mmkeras.bench.warm_starts import WarmStarts
from mmkeras.data import PairedData, PairedSplit, save_paired
from mmkeras.data.pipeline import make_dataset, with_modality_dropout
from mmkeras.evaluation import macro_scores

# Every row holds every metric the list does not mark optional, and its training record.
ROW_KEYS = {m.key.split("/")[0] for m in metrics.METRICS if not m.optional} | {"name", "family", "curve", "history"}


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    """Not CIFAR: 12x10 images, 3 classes, its own vocabulary."""
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma"]

    def split(n):
        y = rng.integers(0, 3, n).astype(np.int64)
        img = rng.integers(0, 255, (n, 12, 10, 3), dtype=np.uint8)
        img[:, :4] = (y * 100)[:, None, None, None].astype(np.uint8)  # the image carries the label
        text = np.array([f"token {words[c] if rng.random() < 0.7 else 'noise'} here" for c in y])
        return PairedSplit(img, text, y)

    path = tmp_path_factory.mktemp("user_data")
    save_paired(PairedData(split(120), split(40), ["red", "green", "blue"]), path)
    return str(path)


@pytest.fixture(scope="module")
def results(user_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(data=user_dir, models="seed_*", epochs=2, fused_epochs=1, batch_size=16,
                      out=str(out), vocab_size=50, sequence_length=6)
    return run(cfg), out, cfg


def test_results_schema(results):
    res, out, _ = results
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["num_classes"] == 3 and on_disk["image_shape"] == [12, 10, 3]
    assert on_disk["n_test"] == 40 and on_disk["n_train"] + 12 == 120  # 10% validation from train
    names = [m["name"] for m in on_disk["models"]]
    assert names == ["recipe_seed_text", "recipe_seed_image", "recipe_seed_concat",
                     "seed_text", "seed_image", "seed_concat"]  # recipes, then unimodal (text first), then fused
    for m in on_disk["models"]:
        assert ROW_KEYS <= set(m), m["name"]
        assert set(m["robustness"]) == set(ROBUSTNESS)
        # The scores agree with the confusion matrix of the same predictions.
        cm = np.array(m["confusion_matrix"])
        assert cm.shape == (3, 3) and cm.sum() == 40
        assert m["test_accuracy"] == pytest.approx(np.trace(cm) / 40)
        labels = np.repeat(np.arange(3), cm.sum(1))
        pred = np.concatenate([np.repeat(np.arange(3), cm[i]) for i in range(3)])
        assert m["macro_f1"] == pytest.approx(macro_scores(labels, pred, 3)["macro_f1"])
        assert m["train_samples_per_second"] * m["train_seconds"] == pytest.approx(m["train_samples"])
        assert m["latency_ms_p50"] > 0 and m["predict_ms_per_sample"] > 0
        # Each perturbation reaches only its own input: a model that does not read it keeps
        # its accuracy, and a blanked input it does read gives one class for every pair.
        r, family = m["robustness"], m["family"]
        if family == "image":
            assert r["text_missing"] == r["word_dropout_0.5"] == m["test_accuracy"]
        if family == "text":
            assert r["image_missing"] == r["image_noise_0.1"] == r["image_noise_0.3"] == m["test_accuracy"]
        frequencies = [float(np.mean(labels == c)) for c in range(3)]
        blanked = {"image": "image_missing", "text": "text_missing"}.get(family)
        if blanked:
            assert min(abs(r[blanked] - f) for f in frequencies) < 1e-9
        # The median epoch's rate, from the epoch curve's own timings.
        # (A fusion recipe's last point, after the epochs, is no epoch.)
        epochs = [c for c in m["curve"] if c.get("stage") != "recipe"]
        durations = np.diff([0.0] + [c["seconds"] for c in epochs])
        assert m["median_epoch_samples_per_second"] == pytest.approx(
            m["train_samples"] / m["epochs"] / np.median(durations))
    assert set(on_disk["speedup"]) == {"seed_concat", "seed_image", "seed_text"}
    # Per-class recall agrees with the confusion matrix; results.md shows the worst class.
    for m in on_disk["models"]:
        cm = np.array(m["confusion_matrix"])
        assert m["per_class_recall"] == pytest.approx(dict(zip(["red", "green", "blue"], np.diag(cm) / cm.sum(1))))
        worst = min(m["per_class_recall"].items(), key=lambda item: item[1])
        assert m["worst_class"] == {"class": worst[0], "recall": pytest.approx(worst[1])}
        assert "class_weights" not in m  # no --class-weight
        # What each modality buys (the robustness subset is the whole 40-pair test set here).
        for modality in ("image", "text"):
            assert m["contribution"][modality] == pytest.approx(
                m["test_accuracy"] - m["robustness"][f"{modality}_missing"])
        if m["family"] in ("image", "text") and not m["name"].startswith("recipe_"):
            assert m["modality_share"][m["family"]] == 1.0  # exact Shapley shares: all on the one input read
    # The warm-started fused row trained by the default fusion recipe: the product of experts,
    # whose last curve point is the finished model's.
    fused = next(m for m in on_disk["models"] if m["name"] == "seed_concat")
    assert fused["fusion_recipe"] == "experts" and fused["recipe_seconds"] > 0
    assert set(fused["expert_weights"]) == {"both", "text_only", "image_only", "neither"}
    assert fused["curve"][-1]["stage"] == "recipe" and fused["curve"][-1]["test_accuracy"] == fused["test_accuracy"]
    # A paired directory records what applies of the "data" record.
    assert on_disk["data"] == {"source": on_disk["data"]["source"], "n_rows": 160, "bad_rows": [], "skipped": [],
                               "blanked": [], "class_names": ["red", "green", "blue"], "image_size": [12, 10],
                               "class_counts": on_disk["data"]["class_counts"]}
    assert {split: sum(c.values()) for split, c in on_disk["data"]["class_counts"].items()} == {"train": 120,
                                                                                              "test": 40}
    assert on_disk["class_weight"] is None
    rows = {m["name"]: m for m in on_disk["models"]}
    assert on_disk["speedup"]["seed_image"]["median_epoch_ratio"] == pytest.approx(
        rows["seed_image"]["median_epoch_samples_per_second"] / rows["recipe_seed_image"]["median_epoch_samples_per_second"])
    assert "recipe_seed_concat" in on_disk["time_to_accuracy"]["models"]
    assert on_disk["wall_seconds"] >= sum(m["train_seconds"] for m in on_disk["models"]) > 0
    # The fused row warm-started from this run's unimodal rows: it trained fused_epochs only.
    epochs = {m["name"]: m["epochs"] for m in on_disk["models"]}
    assert epochs["seed_concat"] == 1 and epochs["seed_image"] == 2 and epochs["recipe_seed_concat"] == 2
    assert rows["seed_concat"]["warm_start"] == {"image": "seed_image", "text": "seed_text"}
    assert "warm_start" not in rows["recipe_seed_concat"] and "warm_start" not in rows["seed_image"]
    batches = {m["name"]: m["batch_size"] for m in on_disk["models"]}
    assert batches["seed_concat"] == 16 and batches["recipe_seed_concat"] == 32  # --batch-size, the recipe's
    import keras

    saved = keras.saving.load_model(out / "rows" / "seed_image.keras")
    assert saved.count_params() == rows["seed_image"]["params"]


def test_markdown_follows_the_metrics_list(results):
    res, out, _ = results
    md = (out / "results.md").read_text()
    best = max(res["models"], key=lambda m: m["test_accuracy"])["name"]
    assert md.index(f"| {best} |") == min(md.index(f"| {m['name']} |") for m in res["models"])
    table = [line.strip("|").split(" | ") for line in md.splitlines() if line.startswith("| ")]
    head, body = table[0], {cells[0].strip(): cells for cells in table[1:]}
    columns = metrics.columns()
    assert [h.strip() for h in head] == ["model", "family"] + [m.title for m in columns]
    # What each modality adds (accuracy lost when it is blanked) sits beside the accuracy.
    titles = [m.title for m in columns]
    assert titles.index("image adds") == titles.index("macro-F1") + 1 == titles.index("text adds") - 1
    for m in res["models"]:
        assert [c.strip() for c in body[m["name"]][2:]] == [metric.cell(m) for metric in columns]
    assert f"| {res['models'][0]['test_accuracy']:.4f} |" in md
    for png in ("accuracy_vs_params.png", "robustness.png", "confusion_matrix.png", "training_curves.png"):
        assert (out / png).stat().st_size > 1000


def test_a_new_metric_is_one_entry(results, monkeypatch):
    """One more entry in METRICS: the row holds it and results.md gets its column."""
    res, _, _ = results
    entry = metrics.Metric("errors", "errors", "d", lambda m: int(np.sum(m.predictions != m.test_y)))
    metrics_list = metrics.METRICS

    class Trained:  # a row whose predictions are known: 2 of 4 wrong
        model, stats, prepare = None, {}, staticmethod(lambda f: f)
        curve = type("Curve", (), {"predictions": np.array([0, 1, 1, 2])})()

    class Data:
        arrays = {"test": ({}, np.array([0, 1, 2, 0])), "train": ({}, np.array([0, 0, 1]))}
        num_classes, class_names = 3, ["a", "b", "c"]

        def features(self, split, rows=None):
            return self.arrays[split][0]

    measured = metrics.Measured(Trained(), Data(), BenchConfig())
    nested = dataclasses.replace(entry, key="robustness/errors", title=None)
    monkeypatch.setattr(metrics, "METRICS", (entry, nested))
    assert metrics.measure_row(measured) == {"errors": 2, "robustness": {"errors": 2}}
    assert nested.value({"robustness": {"errors": 5}}) == 5 and entry.cell({}) == "-"
    monkeypatch.setattr(metrics, "METRICS", metrics_list + (entry,))
    md = report.results_markdown(dict(res, models=[dict(res["models"][0], errors=7)], time_to_accuracy={},
                                      speedup={})).splitlines()
    assert md[2].endswith(f"| {metrics.columns()[-2].title} | errors |") and md[4].endswith("| 7 |")


def test_rerun_resumes(results, monkeypatch):
    res, out, cfg = results
    import mmkeras.bench.runner as runner

    def boom(*a, **k):
        raise AssertionError("a finished model was trained again")

    monkeypatch.setattr(runner, "run_row", boom)
    again = run(cfg)
    assert [m["name"] for m in again["models"]] == [m["name"] for m in res["models"]]
    assert again["models"] == res["models"]


def test_ensemble_rows_combine_the_best_unimodal_rows(user_dir, tmp_path):
    cfg = BenchConfig(data=user_dir, models="seed_image,seed_text,ensemble_average,ensemble_stacking",
                      epochs=1, batch_size=16, out=str(tmp_path), vocab_size=50, sequence_length=6)
    rows = {m["name"]: m for m in run(cfg)["models"]}
    assert rows["ensemble_average"]["family"] == "ensemble" and rows["ensemble_average"]["epochs"] == 0
    assert rows["ensemble_average"]["batch_size"] is None and "train_samples" not in rows["ensemble_average"]
    assert set(rows["ensemble_stacking"]["robustness"]) == set(ROBUSTNESS)
    # Its members are the two unimodal rows: their params, and nothing else.
    assert rows["ensemble_average"]["params"] == rows["seed_image"]["params"] + rows["seed_text"]["params"]
    # Planned before anything trains: a missing member fails at once, with nothing trained.
    with pytest.raises(ValueError, match="best image-only and text-only"):
        run(BenchConfig(data=user_dir, models="seed_text,ensemble_vote", epochs=1, out=str(tmp_path / "x"),
                        vocab_size=50, sequence_length=6))
    assert not any((tmp_path / "x" / "rows").iterdir())


def test_same_seed_same_metrics(user_dir, tmp_path):
    def once(sub):  # default batch sizes: the seed row's from the data, the recipe's 32
        cfg = BenchConfig(data=user_dir, models="seed_text", epochs=1, out=str(tmp_path / sub),
                          vocab_size=50, sequence_length=6)
        return {m["name"]: (m["test_accuracy"], m["robustness"], m["batch_size"]) for m in run(cfg)["models"]}

    a = once("a")
    assert a == once("b")
    # 108 training pairs: the seed rows' 512 halves down to the floor of 16 (7 steps per epoch).
    assert a["seed_text"][2] == plan_schedule("text", 108, (12, 10), preferred=SEED_BATCH_SIZE)[1] == 16
    assert a["recipe_seed_text"][2] == 32


def test_unknown_pattern_and_data(tmp_path):
    with pytest.raises(ValueError, match="nothing_\\*"):
        select_rows("nothing_*")
    with pytest.raises(ValueError, match="imagenet"):
        run(BenchConfig(data="imagenet", models="seed_text", out=str(tmp_path)))


def test_default_run_selection():
    rows = select_rows(DEFAULT_MODELS)
    # Text rows before image rows: under a budget the image row gets what the text row did not use.
    assert rows[:4] == ["recipe_seed_concat", "text_bilstm", DEFAULT_IMAGE_MODEL, "bilinear_airbench_bilstm"]
    assert {f"{f}_airbench_bilstm" for f in mmkeras.list_fusions()} <= set(rows)  # every fusion family
    assert {"seed_concat", "gmu_cnn_lstm"} <= set(rows)
    assert sum(r.startswith("ensemble_") for r in rows) == 5 and rows[-1].startswith("ensemble_")


def test_default_run_plan(tmp_path):
    cfg, cifar = BenchConfig(out=str(tmp_path)), dict(n_train=45000, image_shape=(32, 32, 3))
    plans = {p.name: p for p in plan_rows(select_rows(DEFAULT_MODELS), cfg, WarmStarts.for_config(cfg), **cifar)}
    image, text = (str(tmp_path / "rows" / f"{n}.keras") for n in ("image_airbench", "text_bilstm"))
    # Schedules from the data (see test_bench_schedule.py for the rule's table); the
    # speed-run image row has its own step target, batch and augmentation (mmkeras.speedrun).
    airbench = plans["image_airbench"]
    # On CIFAR-10's 45,000 images, airbench94_muon's optimizer and batch (speedrun.recipe_for).
    assert airbench.saved_model == image and (airbench.epochs, airbench.batch_size) == (9, 2000)
    assert airbench.training == "speedrun" and airbench.augmentation == "speedrun" and airbench.optimizer == "muon"
    assert airbench.max_epochs == 18  # what a budget with room may give it; other rows: their own
    assert all(p.max_epochs is None and p.optimizer is None for n, p in plans.items() if n != "image_airbench")
    assert "speedrun recipe (muon), 9 epochs at batch 2000" in describe(airbench, 45000)
    small = plan_rows(["image_airbench"], cfg, WarmStarts.for_config(cfg), n_train=7200, image_shape=(32, 32, 3))[0]
    assert (small.optimizer, small.epochs, small.batch_size) == ("muon", 8, 250)  # a batch with 20 steps
    larger = plan_rows(["image_airbench"], cfg, WarmStarts.for_config(cfg), n_train=7200, image_shape=(64, 64, 3))[0]
    assert (larger.optimizer, larger.epochs, larger.batch_size) == ("muon", 8, 250)
    large = plan_rows(["image_airbench"], cfg, WarmStarts.for_config(cfg), n_train=7200, image_shape=(96, 96, 3))[0]
    assert (large.optimizer, large.epochs, large.batch_size) == ("sgd", 8, 64)  # airbench94's SGD
    fixed = BenchConfig(out=str(tmp_path), epochs=3)  # --epochs wins: no room taken either
    assert plan_rows(["image_airbench"], fixed, WarmStarts.for_config(fixed), **cifar)[0].max_epochs is None
    assert airbench.precision == "auto" and plans["text_bilstm"].precision == "float32"
    assert plans["text_bilstm"].augmentation is None
    for fusion in mmkeras.list_fusions():  # early fusion too: build_fused keeps its image branch learning
        p = plans[f"{fusion}_airbench_bilstm"]
        assert p.warm_start == {"image": image, "text": text} and p.epochs == 1 and cfg.fused_epochs is None
        assert p.saved_model is None and p.batch_size == 128 and p.early_stopping
    # No unimodal row with their branches: trained from scratch, the family's schedule.
    for name in ("gmu_cnn_lstm", "seed_concat"):
        assert plans[name].warm_start == {}
    assert (plans["gmu_cnn_lstm"].epochs, plans["gmu_cnn_lstm"].batch_size) == (5, 128)
    assert (plans["seed_concat"].epochs, plans["seed_concat"].batch_size) == (18, SEED_BATCH_SIZE)
    recipe = plans["recipe_seed_concat"]
    assert (recipe.strategy, recipe.model, recipe.batch_size, recipe.epochs) == ("recipe", "seed_concat", 32, 10)
    assert recipe.warm_start is None
    assert plans["ensemble_vote"].members == ("image", "text") and plans["ensemble_vote"].strategy == "ensemble"

    # --no-warm-start: no row source; --text-init: the user's file wins for every fused row.
    cold = dataclasses.replace(cfg, warm_start=False, text_init="mine.keras", epochs=3)
    plans = {p.name: p for p in plan_rows(select_rows(DEFAULT_MODELS), cold, WarmStarts.for_config(cold), **cifar)}
    assert plans["gmu_airbench_bilstm"].warm_start == {"text": "mine.keras"}
    assert plans["gmu_cnn_lstm"].warm_start == {"text": "mine.keras"} and plans["gmu_cnn_lstm"].epochs == 3
    assert plans["image_airbench"].epochs == 3 and plans["recipe_seed_concat"].epochs == 3


def test_warm_starts_order_and_best():
    warm = WarmStarts(explicit={"image": None, "text": "user.keras"},
                      pretrained={("image", "resnet9"): "pre.keras"})
    warm.add_row("image", "resnet9", "a.keras")
    warm.add_row("image", "cnn", "b.keras")
    warm.add_row("image", "cnn", "c.keras")  # the first row of a branch is its source
    assert warm.source_for("image", "resnet9") == "pre.keras" and warm.source_for("image", "cnn") == "b.keras"
    assert warm.source_for("text", "lstm") == "user.keras" and warm.source_for("image", "vgg") is None
    with pytest.raises(ValueError, match="No finished text-only row"):
        warm.best("text")
    for path, acc in (("a.keras", 0.5), ("b.keras", 0.7), ("c.keras", 0.7)):
        warm.record("image", path, acc)
    assert warm.best("image") == "b.keras"  # ties: the first wins


def test_time_to_accuracy_counts_warm_start_training():
    from mmkeras.bench.analyses import time_to_accuracy

    def row(name, seconds, curve, warm=None):
        return {"name": name, "train_seconds": seconds, "test_accuracy": curve[-1][1],
                "curve": [{"seconds": s, "test_accuracy": a} for s, a in curve], "warm_start": warm}

    rows = [row("recipe_seed_concat", 300.0, [(150.0, 0.5), (300.0, 0.7)]),
            row("image_x", 500.0, [(500.0, 0.6)]),
            row("gmu_cnn_lstm", 90.0, [(30.0, 0.6), (60.0, 0.72), (90.0, 0.8)]),
            row("concat_x", 40.0, [(40.0, 0.9)], warm={"image": "image_x"}),
            row("film_x", 40.0, [(40.0, 0.9)], warm={"image": "image_x_cifar10"})]
    pretrained = [{"path": "/o/pretrain/image_x_cifar10.keras", "train_seconds": 1000.0}]
    out = time_to_accuracy(rows, "gmu_cnn_lstm", pretrained)
    assert out["target"] == 0.7 and out["recipe_seconds"] == 300.0
    assert out["models"]["gmu_cnn_lstm"] == 60.0 and out["models"]["image_x"] is None
    assert out["models"]["concat_x"] == 40.0 and out["models_with_warm_start"]["concat_x"] == 540.0
    assert out["models_with_warm_start"]["film_x"] == 1040.0
    assert out["default_fused"] == {"name": "gmu_cnn_lstm", "seconds": 60.0,
                                    "fraction_of_recipe_seconds": 0.2, "final_test_accuracy": 0.8}
    assert time_to_accuracy(rows[1:]) == {}  # no recipe row, nothing to compare with


def test_comparisons_with_a_row_the_budget_cut_say_so():
    from mmkeras.bench import report
    from mmkeras.bench.analyses import budget_cut, speedups, time_to_accuracy

    def row(name, acc, sps, **epochs):
        return {"name": name, "test_accuracy": acc, "train_seconds": 10.0, "train_samples_per_second": sps,
                "curve": [{"seconds": 10.0, "test_accuracy": acc}], **epochs}

    full = [row("recipe_seed_concat", 0.7, 100.0, planned_epochs=10, scheduled_epochs=10),
            row("seed_concat", 0.75, 300.0, planned_epochs=30)]
    cut = [dict(full[0], planned_epochs=1), full[1]]
    assert budget_cut(full[0]) is None and budget_cut(full[1]) is None  # no budget record: not cut
    assert budget_cut(cut[0]) == "1 of 10 epochs"
    # A fit its deadline stopped was cut too; one the budget had lengthened was not.
    assert budget_cut(dict(full[0], stopped_by_deadline_after=6)) == "6 of 10 epochs"
    assert budget_cut(dict(full[0], planned_epochs=18, stopped_by_deadline_after=14)) is None
    assert "cut_by_budget" not in speedups(full)["seed_concat"]
    assert speedups(cut)["seed_concat"]["cut_by_budget"] == {"recipe_seed_concat": "1 of 10 epochs"}
    assert "reference_cut_by_budget" not in time_to_accuracy(full)
    assert time_to_accuracy(cut)["reference_cut_by_budget"] == "1 of 10 epochs"
    line = report._cut_warning("speedup", speedups(cut))
    assert "NOT COMPARABLE" in line and "recipe_seed_concat to 1 of 10 epochs" in line
    assert report._cut_warning("time_to_accuracy", time_to_accuracy(cut)).startswith(" NOT COMPARABLE")
    assert report._cut_warning("speedup", speedups(full)) == ""


def test_drop_words_and_pre_pad():
    ids = np.array([[5, 6, 7, 8, 0, 0], [0, 0, 0, 0, 0, 0]], np.int32)
    dropped = drop_words(ids, 0.5, seed=0)
    assert set(dropped[0][dropped[0] != 0]) <= {5, 6, 7, 8} and (dropped[1] == 0).all()
    kept = dropped[0][dropped[0] != 0]
    assert (dropped[0][: len(kept)] != 0).all()  # re-packed to the left: still right-padded
    assert pre_pad(ids, 6)[0].tolist() == [0, 0, 5, 6, 7, 8]
    assert pre_pad(ids, 3)[0].tolist() == [6, 7, 8]


def test_perturbations():
    feats = {"image": np.full((4, 5, 5, 3), 100, np.uint8), "text": np.array([[3, 4, 0]] * 4, np.int32)}
    p = perturbations(feats)
    assert (p["text_missing"]["text"] == 0).all() and (p["image_missing"]["image"] == 0).all()
    assert abs(np.std(p["image_noise_0.1"]["image"] - 100) - 25.5) < 3
    assert np.std(p["image_noise_0.3"]["image"]) > np.std(p["image_noise_0.1"]["image"])


def test_throughput_timing_stops_after_its_seconds(monkeypatch):
    from mmkeras.bench import measure

    calls = []

    def fake(model, features):
        return lambda x: calls.append(len(x["image"])) or {"label": np.zeros((len(x["image"]), 2))}

    monkeypatch.setattr(measure, "inference_fn", fake)
    feats = {"image": np.zeros((1000, 2, 2, 3), np.float32), "text": np.zeros((1000, 3), np.int32)}
    assert measure.predict_ms_per_sample(None, feats, batch_size=100, max_seconds=0.0) > 0
    assert calls == [100, 100, 100]  # warm-up, then the two batches that are always timed
    calls.clear()
    measure.predict_ms_per_sample(None, feats, batch_size=100, max_seconds=60.0)
    assert calls == [100] * 11


def test_modality_dropout_blanks_the_expected_fraction():
    n = 2000
    feats = {"image": np.ones((n, 2, 2, 3), np.uint8), "text": np.ones((n, 4), np.int32)}
    ds = with_modality_dropout(make_dataset(feats, np.zeros(n), batch_size=500), 0.4, seed=1)
    images, texts = [], []
    for f, _ in ds:
        images.append(f["image"].numpy().reshape(len(f["image"]), -1).max(1) == 0)
        texts.append(f["text"].numpy().max(1) == 0)
    img, txt = np.concatenate(images), np.concatenate(texts)
    assert abs(img.mean() - 0.2) < 0.04 and abs(txt.mean() - 0.2) < 0.04
    assert not (img & txt).any()
    with pytest.raises(ValueError, match="rate=1.5"):
        with_modality_dropout(ds, 1.5)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A user's image-only set in the SPLIT/CLASS/*.png layout: 16x16, 3 classes (not 12x10)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for split, n in (("train", 12), ("test", 4)):
        for c, cls in enumerate(["x", "y", "z"]):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
                img[:6] = c * 100
                Image.fromarray(img).save(root / split / cls / f"{i}.png")
    return str(root)


def test_pretrain_image_warm_starts_the_fused_rows(user_dir, image_folder, tmp_path):
    import keras

    from mmkeras.bench.runner import run_row
    from mmkeras.data import load_dataset, make_datasets

    cfg = BenchConfig(data=user_dir, models="seed_concat", epochs=1, fused_epochs=1, batch_size=16,
                      out=str(tmp_path), vocab_size=50, sequence_length=6, pretrain_image=image_folder,
                      pretrain_epochs=2)
    res = run(cfg)
    (info,) = res["pretrain"]
    assert info["model"] == "image_simple_cnn" and info["num_classes"] == 3 and info["epochs"] == 2
    assert info["n_train"] + info["n_test"] + 4 == 48 and info["n_test"] == 12  # the test folder's 12 images
    assert info["test_accuracy"] * 12 == pytest.approx(round(info["test_accuracy"] * 12))  # k of 12 right
    pretrained = keras.saving.load_model(info["path"])
    assert tuple(pretrained.input["image"].shape[1:]) == (12, 10, 3)  # resized to the paired set
    (row,) = [m for m in res["models"] if m["name"] == "seed_concat"]
    tag = info["path"].split("/")[-1][: -len(".keras")]
    assert row["warm_start"] == {"image": tag} and row["epochs"] == 1
    hit = res["time_to_accuracy"]["models"]["seed_concat"]  # None when it never reached it
    assert res["time_to_accuracy"]["models_with_warm_start"]["seed_concat"] == (
        None if hit is None else pytest.approx(hit + info["train_seconds"]))

    # The fused model's image branch is the pretrained one, frozen.
    ds = make_datasets(load_dataset(user_dir), batch_size=16, vocab_size=50, sequence_length=6)
    warm = WarmStarts.for_config(cfg, pretrained={("image", "simple_cnn"): info["path"]})
    (plan,) = plan_rows(["seed_concat"], cfg, warm)
    assert plan.warm_start == {"image": info["path"]} and plan.epochs == 1
    _, model = run_row(plan, ds, cfg, warm)
    fused_conv, source_conv = model.get_layer("image_conv"), pretrained.get_layer("image_conv")
    assert not fused_conv.trainable
    for a, b in zip(fused_conv.get_weights(), source_conv.get_weights()):
        np.testing.assert_array_equal(a, b)

    # A rerun finds the pretrained model on disk and does not train it again.
    again = run(cfg)
    assert again["pretrain"][0]["train_seconds"] == info["train_seconds"]


def test_pretrain_image_errors(user_dir, image_folder, tmp_path):
    base = dict(data=user_dir, epochs=1, out=str(tmp_path), vocab_size=50, sequence_length=6)
    with pytest.raises(ValueError, match="selects none"):
        run(BenchConfig(models="seed_image", pretrain_image=image_folder, **base))
    with pytest.raises(ValueError, match="'image_vgg'.*image_simple_cnn"):
        run(BenchConfig(models="seed_concat", pretrain_image=image_folder, pretrain_model="image_vgg", **base))
    with pytest.raises(ValueError, match="imagenet_dir"):
        run(BenchConfig(models="seed_concat", pretrain_image="imagenet_dir", **base))


def test_export_the_best_row_also_after_resume(user_dir, tmp_path):
    cfg = BenchConfig(data=user_dir, models="seed_image,seed_concat", epochs=1, batch_size=16,
                      out=str(tmp_path), vocab_size=50, sequence_length=6, export=True)
    res = run(cfg)
    best = max((m for m in res["models"] if not m["name"].startswith("recipe_")),
               key=lambda m: m["test_accuracy"])
    assert res["export"]["name"] == best["name"] and res["export"]["note"] is None
    assert (tmp_path / "export" / best["name"] / "saved_model.pb").is_file()

    # Resumed rows: a unimodal row exports from its saved .keras; a fused row has none, so
    # the best row that has a model is exported, and the results say why.
    row_file = tmp_path / "rows" / "seed_concat.json"
    row = json.loads(row_file.read_text())
    row_file.write_text(json.dumps(dict(row, test_accuracy=1.0)))
    again = run(cfg)
    assert again["export"]["name"] == "seed_image" and "seed_concat" in again["export"]["note"]
    assert (tmp_path / "export" / "seed_image" / "saved_model.pb").is_file()


def test_bench_on_a_manifest_with_a_broken_row_and_class_weights(manifest_file, tmp_path):
    from mmkeras.bench.__main__ import parse_args

    path, paired = manifest_file
    lines = path.read_text().splitlines()
    lines.insert(3, "images/missing.png,a lost image,0,train")  # line 4 as an editor shows it
    broken = path.parent / "broken_row.csv"  # beside the images its paths point at
    broken.write_text("\n".join(lines) + "\n")
    cfg = parse_args(["--data", str(broken), "--image-column", "image", "--text-column", "text",
                      "--label-column", "label", "--split-column", "split", "--on-bad-row", "skip",
                      "--image-size", "12", "--class-weight", "balanced",
                      "--models", "seed_image", "--epochs", "1", "--batch-size", "16",
                      "--vocab-size", "40", "--sequence-length", "6", "--robustness-samples", "8",
                      "--out", str(tmp_path)])
    res = run(cfg)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(res))
    data = res["data"]
    assert data["source"] == str(broken) and data["n_rows"] == len(paired.train) + len(paired.test) + 1
    assert [(b["line"], b["column"]) for b in data["bad_rows"]] == [(4, "image")]
    assert "missing.png" in data["bad_rows"][0]["reason"]
    assert data["skipped"] == [4] and data["blanked"] == [] and data["image_size"] == [12, 12]
    names = data["class_names"]
    assert names == res["class_names"] == [str(c) for c in range(paired.num_classes)]
    assert data["class_counts"]["test"] == {names[c]: int(n) for c, n in zip(*np.unique(paired.test.label,
                                                                                        return_counts=True))}
    assert res["class_weight"] == "balanced"
    assert [m["name"] for m in res["models"]] == ["recipe_seed_image", "seed_image"]
    for m in res["models"]:  # the package row and the recipe row are both weighted
        assert list(m["per_class_recall"]) == names
        assert len(m["class_weights"]) == len(names) and max(m["class_weights"]) > min(m["class_weights"])
    md = (tmp_path / "results.md").read_text()
    worst = res["models"][0]["worst_class"]
    assert "| worst class |" in md and f"| {worst['class']} {worst['recall']:.3f} |" in md
    assert f"**Data**: {broken}, {data['n_rows']} rows; 1 skipped: lines 4; smallest class in train:" in md
    assert "; class weight: balanced" in md


def test_manifest_options_are_refused_for_other_data(capsys, tmp_path):
    from mmkeras.bench.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--data", "synthetic", "--image-column", "img", "--text-column", "title"])
    err = capsys.readouterr().err
    assert "--image-column, --text-column given, but --data 'synthetic'" in err and "image_column='img'" in err
    with pytest.raises(ValueError, match="--image-size given, but --data 'synthetic'"):
        run(BenchConfig(data="synthetic", image_size=8, out=str(tmp_path)))
    assert parse_args(["--data", "synthetic"]).class_weight is None


@pytest.mark.parametrize("predictions, reason", [
    ([1, 1, 1, 1, 1], "predicts one class \\(b\\) for every test pair"),
    ([2, 0, 1, 1, 1], "accuracy 0.2000 is no better than always answering the majority class b \\(0.4000\\)"),
    ([0, 1, 1, 2, 2], None),
])
def test_degenerate_rows_are_flagged(predictions, reason):
    class Trained:
        model, stats, prepare = None, {}, staticmethod(lambda f: f)
        curve = type("Curve", (), {"predictions": np.array(predictions)})()

    class Data:  # the training split's majority class is b; 2 of the 5 test pairs are b
        arrays = {"test": ({}, np.array([0, 1, 1, 2, 2])), "train": ({}, np.array([1, 1, 0, 2]))}
        num_classes, class_names = 3, ["a", "b", "c"]

        def features(self, split, rows=None):
            return self.arrays[split][0]

    flagged = metrics.Measured(Trained(), Data(), BenchConfig()).degenerate
    if reason is None:
        assert flagged is None
    else:
        assert re.fullmatch(reason, flagged)
        entry = next(m for m in metrics.METRICS if m.key == "degenerate")
        assert entry.cell({"degenerate": flagged}) == "**DEGENERATE**" and entry.cell({}) == "-"
