"""The benchmark's plots: written, and readable on a 20-row run (no training here)."""

import itertools
import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from mmkeras.bench import plots  # noqa: E402

CONDITIONS = ("text_missing", "image_missing", "word_dropout_0.5", "image_noise_0.1", "image_noise_0.3")
CLASSES = ["wooden_circle", "wooden_square", "wooden_triangle",
           "metal_circle", "metal_square", "metal_triangle"]
# (name, family, test accuracy, params, epochs, seconds of the last epoch): the shape of a full
# default run, with six fused rows within 0.01 of each other at the top and near-equal sizes.
ROWS = [
    ("image_resnet9", "image", 0.612, 952_238, 15, 1700.0),
    ("image_cnn", "image", 0.544, 41_000, 15, 300.0),
    ("text_bilstm", "text", 0.702, 84_550, 8, 40.0),
    ("text_lstm", "text", 0.655, 12_100, 8, 12.0),
    ("recipe_seed_concat", "fused", 0.861, 965_830, 10, 420.0),
    ("seed_concat", "fused", 0.884, 965_830, 10, 130.0),
    ("gmu_cnn_lstm", "fused", 0.842, 1_912_390, 3, 9.0),
    ("concat_resnet9_bilstm", "fused", 0.915, 1_035_886, 3, 6.0),
    ("weighted_sum_resnet9_bilstm", "fused", 0.913, 1_052_528, 3, 6.5),
    ("gmu_resnet9_bilstm", "fused", 0.921, 1_093_614, 3, 7.0),
    ("tensor_resnet9_bilstm", "fused", 0.918, 1_037_070, 3, 6.2),
    ("low_rank_tensor_resnet9_bilstm", "fused", 0.920, 1_176_306, 3, 6.6),
    ("bilinear_resnet9_bilstm", "fused", 0.916, 1_176_174, 3, 6.8),
    ("film_resnet9_bilstm", "fused", 0.905, 1_106_094, 3, 6.1),
    ("cross_attention_resnet9_bilstm", "fused", 0.897, 1_040_494, 3, 8.1),
    ("co_attention_resnet9_bilstm", "fused", 0.901, 1_065_454, 3, 14.0),
    ("early_resnet9_bilstm", "fused", 0.887, 1_020_882, 3, 9.4),
    ("ensemble_average", "ensemble", 0.911, 1_036_788, 0, 1.0),
    ("ensemble_product", "ensemble", 0.914, 1_036_788, 0, 1.1),
    ("ensemble_stacking", "ensemble", 0.919, 1_036_866, 0, 13.6),
]


def make_results(n_rows=20, seed=0, num_classes=len(CLASSES)):
    """A results.json dict as the benchmark writes it, with realistic numbers."""
    rng = np.random.default_rng(seed)
    models = []
    for name, family, acc, params, epochs, seconds in ROWS[:n_rows]:
        start = 1.0 if seconds < 20 else seconds / max(epochs, 1)  # warm-started rows take seconds
        times = np.geomspace(start, seconds, epochs)
        accs = acc - (acc - 1 / num_classes) * np.exp(-np.arange(1, epochs + 1) / max(epochs / 3, 1))
        accs[-1:] = acc
        hits = rng.multinomial(50, np.full(num_classes, 1 / num_classes), size=num_classes) + 5 * np.eye(
            num_classes, dtype=int)
        models.append({
            "name": name, "family": family, "test_accuracy": acc, "macro_f1": acc - 0.01, "params": params,
            "epochs": epochs, "train_seconds": seconds,
            "robustness": {k: round(acc - rng.uniform(0, 0.3), 4) for k in CONDITIONS},
            "confusion_matrix": hits.tolist(),
            "curve": [{"epoch": e + 1, "seconds": float(t), "val_accuracy": float(a) - 0.01,
                       "test_accuracy": float(a)} for e, (t, a) in enumerate(zip(times, accs))],
        })
    names = CLASSES if num_classes == len(CLASSES) else [f"class_{i}" for i in range(num_classes)]
    return {"dataset": "synthetic", "num_classes": num_classes, "n_train": 900, "n_test": 300,
            "image_shape": [32, 32, 3], "class_names": names, "seed": seed, "robustness_samples": 300,
            "models": models}


def _drawn(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _boxes_apart(texts, renderer):
    boxes = [t.get_window_extent(renderer) for t in texts]
    return [(a.get_text(), b.get_text()) for (a, ba), (b, bb) in itertools.combinations(zip(texts, boxes), 2)
            if ba.overlaps(bb)]


@pytest.mark.parametrize("n_rows", [1, 20])
def test_plot_all_writes_the_four_pngs(n_rows, tmp_path):
    paths = plots.plot_all(json.loads(json.dumps(make_results(n_rows))), str(tmp_path))
    assert sorted(p.rsplit("/", 1)[-1] for p in paths) == [
        "accuracy_vs_params.png", "confusion_matrix.png", "robustness.png", "training_curves.png"]
    for path in paths:
        with open(path, "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n", path
        assert (tmp_path / path.rsplit("/", 1)[-1]).stat().st_size > 5_000, path


def test_figures_grow_with_the_rows():
    for build in (plots.accuracy_vs_params_figure, plots.robustness_figure, plots.training_curves_figure):
        small, large = build(make_results(5)), build(make_results(20))
        assert large.get_size_inches()[1] > small.get_size_inches()[1] + 0.3, build.__name__


def test_accuracy_labels_do_not_overlap_and_number_every_row():
    results = make_results(20)
    rows = sorted(results["models"], key=lambda m: -m["test_accuracy"])
    fig = plots.accuracy_vs_params_figure(results)
    renderer = _drawn(fig)
    main, zoom = fig.axes  # the top cluster crowds the main plot: a magnified panel beside it
    numbers = []
    for ax in fig.axes:
        assert _boxes_apart(ax.texts, renderer) == []
        points = ax.transData.transform([(m["params"], m["test_accuracy"]) for m in rows])
        for text in ax.texts:
            own = [int(n) for n in text.get_text().split(",")]
            numbers += own
            box = text.get_window_extent(renderer)
            # A label covers no marker, its own included.
            assert [i + 1 for i, (px, py) in enumerate(points) if box.contains(px, py)] == [], text.get_text()
    assert sorted(numbers) == list(range(1, 21))
    top = [int(t.get_text()) for t in zoom.texts if "," not in t.get_text()]
    assert set(range(1, 10)) <= set(top), "each of the nine top rows has its own label in the magnified panel"
    key = [t.get_text() for t in zoom.artists[0].get_texts()]
    assert key[0] == "1  gmu_resnet9_bilstm  0.921  (1.09M)" and len(key) == 20


def test_accuracy_without_a_crowd_has_one_panel():
    results = make_results(20)
    for i, m in enumerate(results["models"]):  # spread the rows apart
        m["params"], m["test_accuracy"] = 10_000 * 1.3 ** i, 0.3 + 0.03 * i
    fig = plots.accuracy_vs_params_figure(results)
    assert len(fig.axes) == 1
    assert sorted(int(t.get_text()) for t in fig.axes[0].texts) == list(range(1, 21))


def narrow(results):
    """The quick run's shape: every size within 1M..1.2M, every curve within 2..10 seconds (on less
    than a decade, matplotlib labels each minor tick of a log axis, and they collide)."""
    for i, m in enumerate(results["models"]):
        m["params"] = 1_000_000 + 10_000 * i
        for point in m["curve"]:
            point["seconds"] = 2.0 + 0.4 * i + point["seconds"] / 1000
    return results


@pytest.mark.parametrize("results", [make_results(20), narrow(make_results(20))], ids=["wide", "narrow"])
@pytest.mark.parametrize("build", [plots.accuracy_vs_params_figure, plots.training_curves_figure])
def test_log_axis_tick_labels_do_not_collide(build, results):
    fig = build(results)
    ax = fig.axes[0]
    renderer = _drawn(fig)
    assert ax.get_xscale() == "log"
    labels = [t for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True) if t.get_text()]
    assert len(labels) >= 3
    assert _boxes_apart(labels, renderer) == []


@pytest.mark.parametrize("width, limits", [(2.0, (3e4, 3e7)), (1.2, (1e2, 1e9)), (6.0, (4.5e5, 2.4e6))])
def test_log_ticks_label_the_densest_set_that_fits(width, limits):
    fig, ax = plots._figure(width=width, height=1.0)
    ax.set_xscale("log")
    ax.set_xlim(*limits)
    plots._log_ticks(ax, plots._count_label)
    labels = [t for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True) if t.get_text()]
    assert len(labels) >= 2
    assert _boxes_apart(labels, _drawn(fig)) == []
    if width == 6.0:  # room for 1..9 on a short range
        assert [t.get_text() for t in ax.get_xticklabels()][:3] == ["500k", "600k", "700k"]


def test_heatmap_cells_hold_the_numbers_best_row_first():
    results = make_results(20)
    fig = plots.robustness_figure(results)
    ax = fig.axes[0]
    rows = sorted(results["models"], key=lambda m: -m["test_accuracy"])
    assert [t.get_text() for t in ax.get_yticklabels()] == [m["name"] for m in rows]
    expected = [plots.CELL_FORMAT.format(v) for m in rows
                for v in [m["test_accuracy"]] + [m["robustness"][k] for k in CONDITIONS]]
    assert [t.get_text() for t in ax.texts] == expected
    assert ax.get_xticklabels()[0].get_text() == "clean" and len(ax.get_xticklabels()) == 6
    assert len(ax.child_axes) == 1, "a colour bar beside the heatmap"
    renderer = _drawn(fig)
    assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)), \
        "the family legend covers no cell"


def test_training_curves_log_time_and_one_shade_per_row():
    results = make_results(20)
    fig = plots.training_curves_figure(results)
    ax = fig.axes[0]
    renderer = _drawn(fig)
    assert ax.get_xscale() == "log"
    low, high = ax.get_xlim()
    assert low < 1.0 and high > 1700.0
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert len(lines) == 17  # the three ensembles have no epochs
    fused = [tuple(line.get_color()) for label, line in lines.items() if label.endswith("(fused)")]
    assert len(fused) == 13 and len(set(fused)) == 13
    assert all(len(line.get_xdata()) == 1 or line.get_marker() not in ("", "None") for line in lines.values())
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.x0 >= ax.get_window_extent(renderer).x1, "legend outside the axes"


def test_confusion_matrix_of_the_best_row_normalised_per_true_class():
    results = make_results(20)
    fig = plots.confusion_matrix_figure(results)
    ax = fig.axes[0]
    assert "gmu_resnet9_bilstm" in ax.get_title()
    shown = ax.get_images()[0].get_array()
    np.testing.assert_allclose(shown.sum(axis=1), 1.0)
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    best = next(m for m in results["models"] if m["name"] == "gmu_resnet9_bilstm")
    counts = np.array(best["confusion_matrix"])
    first = counts[0, 0] / counts[0].sum()
    assert ax.texts[0].get_text() == f"{first:.0%}\n{counts[0, 0]}"


def test_confusion_matrix_of_many_classes_has_no_cell_text():
    fig = plots.confusion_matrix_figure(make_results(3, num_classes=100))
    ax = fig.axes[0]
    assert len(ax.texts) == 0
    assert "class_0" not in [t.get_text() for t in ax.get_yticklabels()]
    assert max(fig.get_size_inches()) < 14


def test_rows_without_curve_or_robustness_do_not_break_the_plots(tmp_path):
    results = make_results(20)
    results["models"][0]["curve"] = []
    del results["models"][1]["robustness"]
    results["models"][2]["robustness"] = {}
    del results["models"][3]["confusion_matrix"]
    assert len(plots.plot_all(results, str(tmp_path))) == 4
    texts = [t.get_text() for t in plots.robustness_figure(results).axes[0].texts]
    assert texts.count("n/a") == 2 * len(CONDITIONS)

    for m in results["models"]:
        m["curve"], m["robustness"] = [], None
    written = plots.plot_all(results, str(tmp_path / "bare"))
    assert sorted(p.rsplit("/", 1)[-1] for p in written) == ["accuracy_vs_params.png", "confusion_matrix.png"]
    assert plots.plot_all({"models": []}, str(tmp_path / "empty")) == []


def test_without_matplotlib_plot_all_says_so(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(plots, "Figure", None)
    assert plots.plot_all(make_results(2), str(tmp_path)) == []
    assert "matplotlib not installed" in capsys.readouterr().out
