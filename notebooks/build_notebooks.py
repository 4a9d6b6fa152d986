"""Writes the tutorial notebooks in this folder, without outputs.

The notebooks are generated from this file so that they stay small, reviewable and free
of stale outputs: edit the cells here, then run

    python notebooks/build_notebooks.py

tests/test_notebooks.py checks that the committed .ipynb files equal what this script
writes, that they hold no outputs, and executes each one with `MMKERAS_QUICK=1`.
"""

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).resolve().parent

# Shared by every notebook: the parameters cell's common part and the data cell.
PARAMETERS = '''\
# Parameters: edit here, or set MMKERAS_QUICK=1 for the tiny settings the test suite uses.
import os

QUICK = os.environ.get("MMKERAS_QUICK") == "1"
DATA = "synthetic" if QUICK else "cifar10"  # a name in mmkeras.data.list_datasets(), or a path
# Keyword options of DATA's loader (mmkeras.data.load_dataset): the synthetic set's sizes.
DATA_OPTIONS = dict(n_train=300, n_test=100, image_size=16) if DATA == "synthetic" else {}
DATA_DIR = None  # CIFAR tarballs; None: $MMKERAS_DATA_DIR, else shared/data beside the repository
BATCH_SIZE = 32 if QUICK else 128
VOCAB_SIZE = 50 if QUICK else 2000
SEQUENCE_LENGTH = 10 if QUICK else 24
SEED = 0
'''

LOAD_DATA = '''\
import textwrap

import keras
import matplotlib.pyplot as plt
import numpy as np

import mmkeras
from mmkeras import training
from mmkeras.data import load_dataset, make_datasets

keras.utils.set_random_seed(SEED)
if DATA_DIR:
    os.environ["MMKERAS_DATA_DIR"] = DATA_DIR  # where the CIFAR loaders look (after their cache)
data = load_dataset(DATA, seed=SEED, **DATA_OPTIONS)
ds = make_datasets(data, batch_size=BATCH_SIZE, vocab_size=VOCAB_SIZE,
                   sequence_length=SEQUENCE_LENGTH, seed=SEED)
print(f"{data.name}: {ds.size('train')} train, {ds.size('validation')} validation, "
      f"{ds.size('test')} test; {ds.num_classes} classes; images {ds.image_shape}")
'''


def quickstart():
    return [
        new_markdown_cell(
            "# Quickstart: one fused model, from data to a served SavedModel\n\n"
            "Load CIFAR-10 paired with captions, build a fused image + text model in one call, "
            "train and evaluate it, export a SavedModel that takes raw pixels and raw strings, "
            "and reload it with TensorFlow alone."
        ),
        new_code_cell(PARAMETERS + '''\
MODEL = "seed_concat"  # any fused model of mmkeras.list_models()
EPOCHS = 1 if QUICK else 4
EXPORT_DIR = None  # None: a fresh temporary folder
''', metadata={"tags": ["parameters"]}),
        new_markdown_cell("## Data\n\nEach image comes with a caption that is only partly informative."),
        new_code_cell(LOAD_DATA),
        new_code_cell('''\
# One test example per class (a test split may be sorted by class), for the pictures.
examples = [np.flatnonzero(data.test.label == c)[0] for c in range(ds.num_classes)
            if (data.test.label == c).any()]
fig, axes = plt.subplots(2, 4, figsize=(11, 6.5))
for ax in axes.flat:
    ax.axis("off")
for ax, i in zip(axes.flat, examples[:8]):
    ax.imshow(data.test.image[i])
    caption = textwrap.fill(f"\\"{data.test.text[i]}\\"", 30)
    ax.set_title(f"{data.class_names[data.test.label[i]]}\\n{caption}", fontsize=8)
plt.tight_layout()
'''),
        new_markdown_cell("## Build, train, evaluate\n\n`create_model` takes the data's sizes "
                          "from `ds.model_kwargs()`."),
        new_code_cell('''\
model = mmkeras.create_model(MODEL, **ds.model_kwargs())
print(model.name, f"{model.count_params():,} parameters")
history, stats = training.fit(model, ds, epochs=EPOCHS, verbose=2)
report, predictions = training.evaluate(model, ds)
print({k: round(v, 3) for k, v in report.items() if k != "per_class_recall"},
      f"{stats['train_samples_per_second']:.0f} samples/s")
print("recall per class:", {name: round(r, 2) for name, r in report["per_class_recall"].items() if r is not None})
'''),
        new_code_cell('''\
from mmkeras.evaluation import confusion_matrix

test_features, test_labels = training.split_arrays(ds, "test")
cm = confusion_matrix(test_labels, predictions, ds.num_classes)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
epochs = np.arange(1, len(history.epoch) + 1)
for key in ("accuracy", "val_accuracy"):
    ax1.plot(epochs, history.history[key], marker="o", label=key)
ax1.set(xlabel="epoch", ylabel="accuracy", title="training curves")
ax1.legend()
ax2.imshow(cm, cmap="Blues")
ax2.set(xticks=range(ds.num_classes), yticks=range(ds.num_classes), xlabel="predicted", ylabel="true",
        title=f"test confusion matrix (accuracy {report['accuracy']:.2f})")
ax2.set_xticklabels(ds.class_names, rotation=90, fontsize=7)
ax2.set_yticklabels(ds.class_names, fontsize=7)
plt.tight_layout()
'''),
        new_markdown_cell(
            "## Export a SavedModel\n\n"
            "The vectorizer (with its vocabulary) and the resize are inside the graph, so the "
            "export serves uint8 images of any size and raw UTF-8 strings."
        ),
        new_code_cell('''\
import tempfile

from mmkeras.export import export_model

path = export_model(model, EXPORT_DIR or os.path.join(tempfile.mkdtemp(), MODEL),
                    vectorizer=ds.vectorizer, class_names=ds.class_names, dataset=data.name,
                    metrics=report, overwrite=True)
print(path, sorted(p.name for p in path.iterdir()))
'''),
        new_markdown_cell("## Serve with TensorFlow alone\n\n"
                          "Nothing below needs mmkeras: a raw image and a raw sentence go in."),
        new_code_cell('''\
import tensorflow as tf

serve = tf.saved_model.load(str(path)).signatures["serving_default"]
i = examples[-1]
image = data.test.image[i : i + 1]  # uint8, any size
sentence = str(data.test.text[i])
out = serve(image=tf.constant(image), text=tf.constant([sentence]))
probabilities = out["probabilities"].numpy()[0]
top = np.argsort(probabilities)[::-1][:3]

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3), gridspec_kw={"width_ratios": [1, 2]})
ax1.imshow(image[0])
ax1.set_title(textwrap.fill(f"\\"{sentence}\\"", 30), fontsize=9)
ax1.axis("off")
ax2.barh([ds.class_names[i] for i in top][::-1], probabilities[top][::-1])
ax2.set(xlim=(0, 1), xlabel="probability",
        title=f"served: {out['class_name'].numpy()[0].decode()} (true: {data.class_names[data.test.label[i]]})")
plt.tight_layout()

# The served probabilities equal the in-memory model's on the same pair.
in_memory = training.predict_proba(model, {k: v[i : i + 1] for k, v in test_features.items()})
np.testing.assert_allclose(probabilities, in_memory[0], atol=1e-5)
'''),
        new_code_cell('''\
# Text the model has never seen works too: unknown words read as [UNK].
for text in ["a small red thing with wings", "", "完全に未知の言葉"]:
    out = serve(image=tf.constant(image), text=tf.constant([text]))
    print(f"{text!r:35} -> {out['class_name'].numpy()[0].decode()} "
          f"({out['probabilities'].numpy()[0].max():.2f})")
'''),
    ]


def fusion_zoo():
    return [
        new_markdown_cell(
            "# The fusion zoo\n\n"
            "Every fusion family, with the same image branch (the seed CNN) and text branch "
            "(the seed LSTM), trained on the same data for the same number of epochs, next to "
            "the image-only and text-only models."
        ),
        new_code_cell(PARAMETERS + '''\
EPOCHS = 1 if QUICK else 3
# Registered names or wildcards: the unimodal seeds, then every fusion family with the seed branches.
MODELS = ["seed_image", "seed_text", "seed_concat", "*_cnn_lstm"]
''', metadata={"tags": ["parameters"]}),
        new_code_cell(LOAD_DATA),
        new_code_cell('''\
names = list(dict.fromkeys(n for pattern in MODELS for n in mmkeras.list_models(pattern)))
results = {}
for name in names:
    keras.utils.set_random_seed(SEED)
    model = mmkeras.create_model(name, **ds.model_kwargs())
    history, stats = training.fit(model, ds, epochs=EPOCHS, verbose=0)
    report, _ = training.evaluate(model, ds)
    results[name] = {**report, "parameters": model.count_params(), **stats}
    print(f"{name:28} accuracy {report['accuracy']:.3f}  macro-F1 {report['macro_f1']:.3f}  "
          f"{model.count_params():>9,} params  {stats['train_seconds']:.0f} s")
'''),
        new_code_cell('''\
order = sorted(results, key=lambda n: results[n]["accuracy"])
colours = ["tab:gray" if n in ("seed_image", "seed_text") else "tab:blue" for n in order]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
ax1.barh(order, [results[n]["accuracy"] for n in order], color=colours)
ax1.set(xlabel="test accuracy", title=f"{data.name}, {EPOCHS} epoch(s) each (grey: one modality)")
for n, colour in zip(order, colours):
    ax2.scatter(results[n]["parameters"], results[n]["accuracy"], color=colour)
    ax2.annotate(n, (results[n]["parameters"], results[n]["accuracy"]), fontsize=7)
ax2.set(xscale="log", xlabel="parameters", ylabel="test accuracy", title="accuracy against size")
plt.tight_layout()
'''),
    ]


def ensembles():
    return [
        new_markdown_cell(
            "# Ensembles: decision-level against feature-level fusion\n\n"
            "Train an image-only and a text-only model separately, combine their predictions "
            "each way `build_ensemble` offers, and compare with one model that fuses the "
            "features (`seed_concat`)."
        ),
        new_code_cell(PARAMETERS + '''\
EPOCHS = 1 if QUICK else 4
MEMBERS = ["seed_image", "seed_text"]
FUSED = "seed_concat"
''', metadata={"tags": ["parameters"]}),
        new_code_cell(LOAD_DATA),
        new_markdown_cell("## Members, trained separately"),
        new_code_cell('''\
from mmkeras.ensembles import ENSEMBLE_METHODS, build_ensemble, fit_members

members, records = fit_members(MEMBERS, ds, epochs=EPOCHS, verbose=0)
results = {}
for name, member in zip(records, members):
    results[name] = training.evaluate(member, ds)[0]["accuracy"]
    print(f"{name:24} accuracy {results[name]:.3f}")
'''),
        new_markdown_cell(
            "## Each combination\n\n`weighted` and `stacking` are fitted on the validation "
            "split, never on the test split."
        ),
        new_code_cell('''\
ensembles = {}
for method in ENSEMBLE_METHODS:
    ensembles[method] = ensemble = build_ensemble(members, method, validation_data=ds)
    results[ensemble.name] = training.evaluate(ensemble, ds)[0]["accuracy"]
    print(f"{ensemble.name:24} accuracy {results[ensemble.name]:.3f}")
weights = ensembles["weighted"].get_layer("combine_weighted").get_weights()[0]
print("fitted member weights:", dict(zip(records, np.round(weights, 3).tolist())))
'''),
        new_markdown_cell("## Feature-level fusion, same data and epochs"),
        new_code_cell('''\
keras.utils.set_random_seed(SEED)
fused = mmkeras.create_model(FUSED, **ds.model_kwargs())
training.fit(fused, ds, epochs=EPOCHS, verbose=0)
results[FUSED] = training.evaluate(fused, ds)[0]["accuracy"]

names = list(results)
colours = ["tab:gray"] * len(MEMBERS) + ["tab:orange"] * len(ENSEMBLE_METHODS) + ["tab:blue"]
fig, ax = plt.subplots(figsize=(9, 4))
ax.bar(names, [results[n] for n in names], color=colours)
ax.set(ylabel="test accuracy", ylim=(0, 1),
       title="members (grey), decision-level ensembles (orange), feature-level fusion (blue)")
ax.tick_params(axis="x", rotation=30)
plt.tight_layout()
'''),
    ]


def robustness_and_attention():
    return [
        new_markdown_cell(
            "# Robustness and attention\n\n"
            "1. How a fused model copes when a modality is missing or noisy, trained with and "
            "without modality dropout.\n"
            "2. Where the words of a caption look in the image (cross-attention weights).\n"
            "3. How much a gated multimodal unit (GMU) trusts the image, per class."
        ),
        new_code_cell(PARAMETERS + '''\
EPOCHS = 1 if QUICK else 4
ROBUST_MODEL = "gmu_cnn_lstm"
MODALITY_DROPOUT = 0.3  # fraction of training examples with one modality blanked
N_ATTENTION_EXAMPLES = 4
''', metadata={"tags": ["parameters"]}),
        new_code_cell(LOAD_DATA),
        new_markdown_cell(
            "## Missing and noisy modalities\n\n"
            "The same model trained twice: on the plain pipeline, and with "
            "`with_modality_dropout`, which blanks the image or the caption of a fraction of "
            "the training examples."
        ),
        new_code_cell('''\
import dataclasses

from mmkeras.bench.measure import robustness
from mmkeras.data.pipeline import with_modality_dropout

features, labels = training.split_arrays(ds, "test")
variants = {"plain": ds,
            f"modality dropout {MODALITY_DROPOUT}": dataclasses.replace(
                ds, train=with_modality_dropout(ds.train, MODALITY_DROPOUT, seed=SEED))}
models, scores = {}, {}
for label, datasets in variants.items():
    keras.utils.set_random_seed(SEED)
    models[label] = model = mmkeras.create_model(ROBUST_MODEL, **ds.model_kwargs())
    training.fit(model, datasets, epochs=EPOCHS, verbose=0)
    predict = lambda f, model=model: training.predict_proba(model, f).argmax(axis=-1)
    scores[label] = {"clean": training.evaluate(model, ds)[0]["accuracy"],
                     **robustness(predict, features, labels, seed=SEED)}
    print(label, {k: round(v, 3) for k, v in scores[label].items()})
'''),
        new_code_cell('''\
conditions = list(scores["plain"])
x = np.arange(len(conditions))
fig, ax = plt.subplots(figsize=(10, 4))
for i, (label, values) in enumerate(scores.items()):
    ax.bar(x + (i - 0.5) * 0.4, [values[c] for c in conditions], width=0.4, label=label)
ax.set_xticks(x, conditions, rotation=20)
ax.set(ylabel="test accuracy", ylim=(0, 1), title=f"{ROBUST_MODEL} on {data.name}")
ax.legend()
plt.tight_layout()
'''),
        new_markdown_cell(
            "## Cross-attention over the image grid\n\n"
            "In `cross_attention_cnn_lstm` every caption token attends over the regions of "
            "the CNN's feature map (layer `fusion_cross_attention`). A probe model reuses the "
            "trained layers and a copy of the fusion layer built with "
            "`return_attention_scores=True`, so the weights are exactly the trained model's."
        ),
        new_code_cell('''\
from mmkeras.fusion import CrossModalAttention

keras.utils.set_random_seed(SEED)
attention_model = mmkeras.create_model("cross_attention_cnn_lstm", **ds.model_kwargs())
training.fit(attention_model, ds, epochs=EPOCHS, verbose=0)

trained = attention_model.get_layer("fusion_cross_attention")
# The tensors the trained layer is called on: [text sequence, image map], then the text mask.
text_sequence, image_map = trained.input[:2]
text_mask = attention_model.get_layer("text_mask").output
probe_layer = CrossModalAttention.from_config(
    {**trained.get_config(), "return_attention_scores": True, "name": "probe_cross_attention"})
_, attention_scores = probe_layer([text_sequence, image_map], mask=[text_mask, None])
probe = keras.Model(attention_model.input, {"scores": attention_scores, "label": attention_model.output["label"]})
probe_layer.set_weights(trained.get_weights())

# One test example per class (a test split may be sorted by class), for the pictures.
examples = [np.flatnonzero(data.test.label == c)[0] for c in range(ds.num_classes)
            if (data.test.label == c).any()]
shown = examples[:N_ATTENTION_EXAMPLES]
batch = {k: v[shown] for k, v in features.items()}
out = probe.predict(batch, verbose=0)
grid = tuple(image_map.shape[1:3])
# Mean over heads and over the caption's real tokens (padded rows are all zeros).
tokens = (batch["text"] != 0).sum(axis=1)
weights = out["scores"].sum(axis=(1, 2)) / (out["scores"].shape[1] * np.maximum(tokens, 1))[:, None]
np.testing.assert_allclose(out["label"], training.predict_proba(attention_model, batch), atol=1e-5)
print("feature map grid:", grid, "- weights of each (token, head) sum to 1 over the grid")
'''),
        new_code_cell('''\
fig, axes = plt.subplots(2, len(shown), figsize=(3 * len(shown), 7), squeeze=False)
for i, index in enumerate(shown):
    image = batch["image"][i]
    axes[0, i].imshow(image)
    axes[0, i].set_title(textwrap.fill(f"\\"{data.test.text[index]}\\"", 30), fontsize=8)
    axes[1, i].imshow(image)
    axes[1, i].imshow(weights[i].reshape(grid), cmap="magma", alpha=0.6, interpolation="nearest",
                      extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
    predicted, true = ds.class_names[out["label"][i].argmax()], ds.class_names[labels[index]]
    axes[1, i].set_title(f"attention; predicted {predicted}\\n(true: {true})", fontsize=8)
    for ax in axes[:, i]:
        ax.axis("off")
plt.tight_layout()
'''),
        new_markdown_cell(
            "## GMU gate values per class\n\n"
            "The GMU mixes `h = z * h_image + (1 - z) * h_text`; the mean gate `z` over units "
            "is the share the image gets. A probe copies `fusion_gmu` with `return_gate=True`."
        ),
        new_code_cell('''\
from mmkeras.fusion import GatedMultimodalUnit

gmu_model = models["plain"]  # ROBUST_MODEL, a gmu_* model
trained = gmu_model.get_layer("fusion_gmu")
gate_layer = GatedMultimodalUnit.from_config(
    {**trained.get_config(), "return_gate": True, "name": "probe_gmu"})
_, gate = gate_layer(trained.input)
gate_probe = keras.Model(gmu_model.input, gate)
gate_layer.set_weights(trained.get_weights())

gates = {"clean": features, "text missing": dict(features, text=np.zeros_like(features["text"])),
         "image missing": dict(features, image=np.zeros_like(features["image"]))}
per_class = {}
for condition, feats in gates.items():
    z = gate_probe.predict(feats, verbose=0).mean(axis=-1)
    per_class[condition] = [z[labels == c].mean() if (labels == c).any() else np.nan
                            for c in range(ds.num_classes)]

x = np.arange(ds.num_classes)
fig, ax = plt.subplots(figsize=(10, 4))
for i, (condition, values) in enumerate(per_class.items()):
    ax.bar(x + (i - 1) * 0.27, values, width=0.27, label=condition)
ax.set_xticks(x, ds.class_names, rotation=30)
ax.set(ylabel="mean gate z (image share)", ylim=(0, 1), title="GMU gate per true class")
ax.axhline(0.5, color="gray", lw=0.8, ls="--")
ax.legend()
plt.tight_layout()
'''),
    ]


def explain_predictions():
    return [
        new_markdown_cell(
            "# Explaining predictions: which modality, which words, which pixels\n\n"
            "`mmkeras.explain` answers, per prediction, how much the image and the caption "
            "contributed (exact two-player Shapley values), which words mattered (integrated "
            "gradients on the token embeddings) and where in the image (Grad-CAM and "
            "integrated gradients on the pixels). Across the zoo, the image's share of the "
            "predictions shows which fusion families lean on one modality. See docs/explain.md."
        ),
        new_code_cell(PARAMETERS + """\
MODEL = "cross_attention_cnn_lstm"  # any fused model with an image feature map
EPOCHS = 1 if QUICK else 4
N_EXAMPLES = 4
# The zoo figure: one seed-branch model (simple_cnn + lstm) per fusion; None: every fusion.
ZOO_FUSIONS = ["concat", "gmu", "weighted_sum", "cross_attention"] if QUICK else None
""", metadata={"tags": ["parameters"]}),
        new_code_cell(LOAD_DATA),
        new_code_cell("""\
from mmkeras import explain

keras.utils.set_random_seed(SEED)
model = mmkeras.create_model(MODEL, **ds.model_kwargs())
training.fit(model, ds, epochs=EPOCHS, verbose=0)
features, labels = training.split_arrays(ds, "test")
# One test example per class (a test split may be sorted by class).
shown = [np.flatnonzero(labels == c)[0] for c in range(ds.num_classes) if (labels == c).any()][:N_EXAMPLES]
batch = {k: v[shown] for k, v in features.items()}
contributions = explain.modality_contributions(model, batch)
tokens = explain.token_attributions(model, batch)
pixels = explain.pixel_attributions(model, batch)
cam = explain.grad_cam(model, batch)
print("image + text == p_both - p_neither:",
      np.allclose(contributions["image"] + contributions["text"], contributions["p_both"] - contributions["p_neither"]))
print("token completeness error:", np.abs(tokens["scores"].sum(-1) - (tokens["p_input"] - tokens["p_baseline"])).max())
"""),
        new_code_cell("""\
vocabulary = ds.vectorizer.get_vocabulary()
fig, axes = plt.subplots(len(shown), 4, figsize=(14, 2.8 * len(shown)), squeeze=False,
                         gridspec_kw={"width_ratios": [1, 1, 2.2, 1]})
for row, ax in enumerate(axes):
    image = batch["image"][row]
    ax[0].imshow(image)
    ax[0].imshow(cam["heatmap"][row], cmap="jet", alpha=0.45, extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
    predicted = ds.class_names[contributions["class_id"][row]]
    ax[0].set_title(f"Grad-CAM: {predicted}\\n(true: {ds.class_names[labels[shown[row]]]})", fontsize=8)
    limit = np.abs(pixels["scores"][row]).max() or 1.0
    ax[1].imshow(pixels["scores"][row], cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax[1].set_title("pixel integrated gradients", fontsize=8)
    # The caption, each word coloured by its score (red: for the class, blue: against).
    ids = batch["text"][row]
    words = [(vocabulary[i], s) for i, s in zip(ids, tokens["scores"][row]) if i != 0]
    limit = max((abs(s) for _, s in words), default=0.0) or 1.0
    for j, (word, score) in enumerate(words):
        ax[2].text(j / max(len(words), 1), 0.5, word, fontsize=10, ha="left", va="center",
                   bbox=dict(facecolor=plt.cm.RdBu_r(0.5 + 0.5 * score / limit), edgecolor="none"))
    ax[2].set_title("caption, words coloured by integrated gradients", fontsize=8)
    values = [contributions["image"][row], contributions["text"][row]]
    ax[3].barh(["image", "text"], values, color=["tab:orange", "tab:blue"])
    ax[3].axvline(0, color="gray", lw=0.8)
    ax[3].set_title("Shapley contribution to p(predicted)", fontsize=8)
    for a in ax[:3]:
        a.axis("off")
plt.tight_layout()
"""),
        new_markdown_cell(
            "## Across the zoo: the image's share against accuracy\n\n"
            "For each fusion, a model on the seed branches is trained and scored on the test "
            "split; its image share is `mean_modality_shares`: the sum over test examples of "
            "|phi_image| over the sum of |phi_image| + |phi_text|. A share near 1 or 0 is a "
            "model that leans on one modality (modality laziness)."
        ),
        new_code_cell("""\
zoo = [n for n in mmkeras.list_models() if mmkeras.model_info(n)["family"] == "fused"
       and mmkeras.model_info(n)["image_branch"] == "simple_cnn" and mmkeras.model_info(n)["text_branch"] == "lstm"
       and (ZOO_FUSIONS is None or mmkeras.model_info(n)["fusion"] in ZOO_FUSIONS)]
rows = []
for name in zoo:
    keras.utils.set_random_seed(SEED)
    member = mmkeras.create_model(name, **ds.model_kwargs())
    training.fit(member, ds, epochs=EPOCHS, verbose=0)
    accuracy = training.evaluate(member, ds)[0]["accuracy"]
    shares = explain.mean_modality_shares(member, features)
    rows.append((mmkeras.model_info(name)["fusion"], accuracy, shares["image_share"]))
    print(f"{name:32s} accuracy {accuracy:.3f}  image share {shares['image_share']:.3f}")
"""),
        new_code_cell("""\
fig, ax = plt.subplots(figsize=(7, 4.5))
for fusion, accuracy, share in rows:
    ax.scatter(share, accuracy, s=40)
    ax.annotate(fusion, (share, accuracy), fontsize=8, xytext=(4, 3), textcoords="offset points")
ax.axvline(0.5, color="gray", lw=0.8, ls="--")
ax.set(xlabel="image share of the predictions", ylabel="test accuracy", xlim=(0, 1),
       title=f"Image share against accuracy, one model per fusion ({data.name})")
plt.tight_layout()
"""),
    ]


NOTEBOOKS = {
    "01_quickstart.ipynb": quickstart,
    "02_fusion_zoo.ipynb": fusion_zoo,
    "03_ensembles.ipynb": ensembles,
    "04_robustness_and_attention.ipynb": robustness_and_attention,
    "05_explain.ipynb": explain_predictions,
}


def build(name):
    """The notebook `name` as a NotebookNode: no outputs, deterministic cell ids."""
    nb = new_notebook(cells=NOTEBOOKS[name](), metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    })
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-cell-{i:02d}"
    nbformat.validate(nb)
    return nb


def main():
    for name in NOTEBOOKS:
        nbformat.write(build(name), HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
