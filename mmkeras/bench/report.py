"""Benchmark outputs: results.json, results.md and PNG plots."""

import json
import os

FAMILY_COLOURS = {"image": "tab:blue", "text": "tab:orange", "fused": "tab:green", "ensemble": "tab:red"}


def write_json(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated results file


def results_markdown(results):
    rows = sorted(results["models"], key=lambda m: -m["test_accuracy"])
    head = ("| model | family | test acc | macro-F1 | params | epochs | batch | train s | samples/s | "
            "predict ms/sample | p50 ms | text missing | image missing | words -50% | noise 0.1 | noise 0.3 |")
    lines = [f"# {results['dataset']}: {results['n_train']} train / {results['n_test']} test, "
             f"{results['num_classes']} classes, images {tuple(results['image_shape'])}", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for m in rows:
        r = m["robustness"]
        lines.append(
            f"| {m['name']} | {m['family']} | {m['test_accuracy']:.4f} | {m['macro_f1']:.4f} | "
            f"{m['params']:,} | {m['epochs']} | {m.get('batch_size') or '-'} | {m['train_seconds']:.1f} | "
            f"{m['train_samples_per_second']:.0f} | {m['predict_ms_per_sample']:.3f} | "
            f"{m['latency_ms_p50']:.2f} | {r['text_missing']:.3f} | {r['image_missing']:.3f} | "
            f"{r['word_dropout_0.5']:.3f} | {r['image_noise_0.1']:.3f} | {r['image_noise_0.3']:.3f} |")
    for key, label in (("time_to_accuracy", "Time to accuracy"), ("speedup", "Pipeline vs seed recipe")):
        if results.get(key):
            lines += ["", f"**{label}**: `{json.dumps(results[key])}`"]
    return "\n".join(lines) + "\n"


def plot_all(results, out_dir):
    """Accuracy vs parameters, robustness, best confusion matrix, training curves."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: skipping plots (pip install mmkeras[notebooks])")
        return []
    models = results["models"]
    paths = []

    fig, ax = plt.subplots(figsize=(7, 5))
    for m in models:
        ax.scatter(m["params"], m["test_accuracy"], color=FAMILY_COLOURS.get(m["family"], "grey"))
        ax.annotate(m["name"], (m["params"], m["test_accuracy"]), fontsize=7)
    for family, colour in FAMILY_COLOURS.items():
        ax.scatter([], [], color=colour, label=family)
    ax.set(xscale="log", xlabel="parameters", ylabel="test accuracy", title="Accuracy against size")
    ax.legend()
    paths.append(_save(fig, out_dir, "accuracy_vs_params.png"))

    fig, ax = plt.subplots(figsize=(max(7, len(models) * 0.6), 5))
    keys = ["clean"] + list(models[0]["robustness"]) if models else []
    width = 0.8 / max(len(keys), 1)
    for j, key in enumerate(keys):
        vals = [m["test_accuracy"] if key == "clean" else m["robustness"][key] for m in models]
        ax.bar([i + j * width for i in range(len(models))], vals, width, label=key)
    ax.set_xticks([i + 0.4 for i in range(len(models))], [m["name"] for m in models], rotation=60,
                  ha="right", fontsize=7)
    ax.set(ylabel="accuracy", title="Robustness")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out_dir, "robustness.png"))

    best = max(models, key=lambda m: m["test_accuracy"])
    if best.get("confusion_matrix"):
        fig, ax = plt.subplots(figsize=(6, 5))
        im = ax.imshow(best["confusion_matrix"], cmap="Blues")
        names = results.get("class_names", [])
        if len(names) <= 20:
            ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix: {best['name']}")
        fig.colorbar(im)
        paths.append(_save(fig, out_dir, "confusion_matrix.png"))

    fig, ax = plt.subplots(figsize=(7, 5))
    for m in models:
        curve = m.get("curve") or []
        if curve:
            ax.plot([c["seconds"] for c in curve], [c["test_accuracy"] for c in curve], marker=".",
                    label=m["name"], color=FAMILY_COLOURS.get(m["family"]))
    ax.set(xlabel="training seconds", ylabel="test accuracy", title="Training curves")
    ax.legend(fontsize=6)
    paths.append(_save(fig, out_dir, "training_curves.png"))
    return paths


def _save(fig, out_dir, name):
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
