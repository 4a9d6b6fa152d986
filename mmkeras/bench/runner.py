"""The benchmark: train and measure every selected model on one paired dataset."""

import dataclasses
import fnmatch
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

import mmkeras
from mmkeras import distribute, training
from mmkeras.bench import measure, recipe, report
from mmkeras.models import zoo
from mmkeras.data import (load_paired, load_paired_cifar, make_datasets, make_synthetic)
from mmkeras.data.pipeline import with_modality_dropout
from mmkeras.ensembles import build_ensemble, ensemble_names
from mmkeras.evaluation import classification_report, confusion_matrix

BUILTIN_DATA = ("cifar10", "cifar100", "synthetic")


@dataclasses.dataclass
class BenchConfig:
    data: str = "cifar10"
    models: str = "seed_*"
    epochs: int = None  # None: each row's default (recipe rows 10, others DEFAULT_EPOCHS)
    batch_size: int = 128
    seed: int = 0
    out: str = "runs/bench"
    quick: bool = False
    modality_dropout: float = 0.0
    export: bool = False
    image_init: str = None
    text_init: str = None
    tensorboard: str = None
    vocab_size: int = 2000
    sequence_length: int = 24
    warm_start: bool = True  # fused rows start from this run's unimodal rows (frozen image branch)
    fused_epochs: int = 2  # epochs of a warm-started fused row
    augment: bool = True  # random flips and shifts for image-consuming rows
    learning_rate: float = 2e-3  # peak of a cosine decay over each row's steps
    strategy: str = "default"  # mmkeras.distribute.get_strategy name; models are built in its scope
    callbacks: list = dataclasses.field(default_factory=list)


DEFAULT_EPOCHS = 8
QUICK = dict(n_train=1000, n_test=300, epochs=1)


def load_data(spec, seed=0, quick=False):
    """A PairedData from 'cifar10', 'cifar100', 'synthetic' or a paired-format directory."""
    if spec == "synthetic":
        data = make_synthetic(n_train=4000, n_test=1000, seed=seed)
    elif spec in ("cifar10", "cifar100"):
        data = load_paired_cifar(spec, seed=seed)
    elif os.path.isdir(spec):
        data = load_paired(spec)
    else:
        raise ValueError(f"Unknown --data {spec!r}: expected one of {', '.join(BUILTIN_DATA)} or a "
                         "directory holding train.npz, test.npz and classes.txt.")
    if quick:  # a seeded subset, for smoke runs
        rng = np.random.default_rng(seed)
        data.train = data.train.take(np.sort(rng.permutation(len(data.train))[: QUICK["n_train"]]))
        data.test = data.test.take(np.sort(rng.permutation(len(data.test))[: QUICK["n_test"]]))
    return data


def select_rows(pattern):
    """Rows to run: registered models matching `pattern` (comma-separated wildcards), plus a
    seed-recipe reference row `recipe_<name>` for each selected seed model."""
    parts = [p.strip() for p in pattern.split(",")]
    names = sorted({n for p in parts for n in mmkeras.list_models(p) + ensemble_names(p)})
    if not names:
        raise ValueError(f"No registered model or ensemble matches {pattern!r}; available: "
                         f"{', '.join(mmkeras.list_models() + ensemble_names())}.")
    # Unimodal rows first: fused rows warm-start from them, ensembles combine them.
    order = {"image": 0, "text": 1, "fused": 2, "ensemble": 3}
    names = sorted(names, key=lambda n: (order[_family(n)], n))
    return [f"recipe_{n}" for n in names if n in recipe.KINDS] + names


def _family(name):
    return "ensemble" if name in ensemble_names() else mmkeras.model_family(name)


def _branches_of(name):
    """{"image": branch, "text": branch} of a registered preset (the ones it uses)."""
    if name in zoo.UNIMODAL_PRESETS:
        p = zoo.UNIMODAL_PRESETS[name]
        return {p["modality"]: p["branch"]}
    p = zoo.FUSED_PRESETS.get(name, {})
    return {k: p[f"{k}_branch"] for k in ("image", "text") if f"{k}_branch" in p}


class EpochCurve(keras.callbacks.Callback):
    """Records (seconds since start, validation and test accuracy) after every epoch."""

    def __init__(self, features, labels):
        super().__init__()
        self.features, self.labels, self.curve = features, labels, []

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        eval_start = time.perf_counter()
        pred = training.predict_proba(self.model, self.features).argmax(-1)
        logs = logs or {}
        self.curve.append({"epoch": epoch + 1, "seconds": seconds,
                           "val_accuracy": float(logs.get("val_accuracy", logs.get("val_label_accuracy", np.nan))),
                           "test_accuracy": float(np.mean(pred == self.labels))})
        self.start += time.perf_counter() - eval_start  # evaluation time is not training time


def _callbacks(config, name, extra):
    cbs = list(config.callbacks) + list(extra)
    if config.tensorboard:
        cbs.append(keras.callbacks.TensorBoard(os.path.join(config.tensorboard, name)))
    return cbs


def run_row(name, ds, config, warm=None):
    """Train and measure one row; returns its results dict (and the trained model).

    warm: {(modality, branch): .keras path} of unimodal models trained earlier in the run.
    """
    keras.utils.set_random_seed(config.seed)
    test_x, test_y = ds.arrays["test"]
    if name in ensemble_names():
        family = "ensemble"
        members = [(warm or {}).get(k) for k in ("best_image", "best_text")]
        if None in members:
            raise ValueError(f"Row {name!r} combines this run's best image-only and text-only rows: "
                             "select at least one of each (e.g. --models 'image_*,text_*,ensemble_*').")

        def prepare(features):
            return features

        start = time.perf_counter()
        model = build_ensemble(members, name, validation_data=ds)
        seconds = time.perf_counter() - start
        curve, history = EpochCurve(test_x, test_y), {}
        stats = {"train_seconds": seconds, "epochs": 0,
                 "train_samples_per_second": ds.size("validation") / seconds}
    elif name.startswith("recipe_"):
        base = name[len("recipe_"):]
        family = recipe.KINDS[base]
        model = recipe.build_recipe_model(base, num_classes=ds.num_classes, image_shape=ds.image_shape,
                                          vocab_size=ds.vocab_size)
        # The recipe's own arrays: train + validation re-joined (it splits 80/20 itself).
        train_x = {k: np.concatenate([ds.arrays["train"][0][k], ds.arrays["validation"][0][k]])
                   for k in ("image", "text")}
        train_y = np.concatenate([ds.arrays["train"][1], ds.arrays["validation"][1]])
        train_x["text"] = recipe.pre_pad(train_x["text"])

        def prepare(features):  # perturbations act on right-padded ids; the recipe reads pre-padded
            return dict(features, text=recipe.pre_pad(features["text"]))

        curve = EpochCurve(prepare(test_x), test_y)
        fitted, stats = recipe.fit_recipe(model, train_x, train_y, epochs=config.epochs,
                                          callbacks=_callbacks(config, name, [curve]))
        history = fitted.history
    else:
        family = mmkeras.model_family(name)

        def prepare(features):
            return features

        kwargs = ds.model_kwargs()
        used = _branches_of(name)
        if config.augment and "image" in used:
            kwargs["image_augmentation"] = "flip_translate"
        epochs = config.epochs or DEFAULT_EPOCHS
        if family == "fused":
            warm = warm if config.warm_start else {}
            inits = {m: getattr(config, f"{m}_init") or (warm or {}).get((m, used.get(m)))
                     for m in ("image", "text")}
            kwargs.update(image_init=inits["image"], text_init=inits["text"],
                          freeze_image=inits["image"] is not None)
            if inits["image"] is not None or inits["text"] is not None:
                epochs = config.fused_epochs
        model = mmkeras.create_model(name, **kwargs)
        steps = epochs * int(np.ceil(ds.size("train") / config.batch_size))
        training.compile_model(model, learning_rate=keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(steps, 1), alpha=0.01))
        curve = EpochCurve(test_x, test_y)
        train = with_modality_dropout(ds.train, config.modality_dropout, config.seed)
        fitted, stats = training.fit(model, dataclasses.replace(ds, train=train), epochs=epochs,
                                     callbacks=_callbacks(config, name, [curve]), verbose=2)
        history = fitted.history

    def predict(features):
        return training.predict_proba(model, prepare(features)).argmax(-1)

    pred = predict(test_x)
    row = {"name": name, "family": family,
           **{("test_accuracy" if k == "accuracy" else k): v
              for k, v in classification_report(test_y, pred, ds.num_classes).items()},
           "params": int(model.count_params()), **stats,
           "predict_ms_per_sample": measure.predict_ms_per_sample(model, prepare(test_x)),
           "latency_ms_p50": measure.latency_p50_ms(model, prepare(test_x)),
           "robustness": measure.robustness(predict, test_x, test_y, config.seed),
           "confusion_matrix": confusion_matrix(test_y, pred, ds.num_classes).tolist(),
           "curve": curve.curve, "history": {k: [float(v) for v in vs] for k, vs in history.items()}}
    return row, model


def time_to_accuracy(rows):
    """Seconds each row took to reach the seed recipe's final test accuracy (None: never)."""
    ref = next((r for r in rows if r["name"] == "recipe_seed_concat"), None)
    if ref is None:
        return {}
    target = ref["test_accuracy"]
    out = {"target": target, "recipe_seconds": ref["train_seconds"], "models": {}}
    for r in rows:
        hit = next((c["seconds"] for c in r.get("curve", []) if c["test_accuracy"] >= target), None)
        out["models"][r["name"]] = hit
    return out


def speedups(rows):
    """Each seed model's package-pipeline row against its recipe row: samples/s ratio."""
    by_name = {r["name"]: r for r in rows}
    return {n: {"samples_per_second_ratio": by_name[n]["train_samples_per_second"] / by_name[f"recipe_{n}"]["train_samples_per_second"],
                "accuracy_delta": by_name[n]["test_accuracy"] - by_name[f"recipe_{n}"]["test_accuracy"]}
            for n in recipe.KINDS if n in by_name and f"recipe_{n}" in by_name}


def run(config):
    """Run the benchmark; writes OUT/results.json, results.md, plots; returns the results."""
    # First: multi-worker collectives and device lists must be set before TF starts its devices.
    strategy = distribute.get_strategy(config.strategy)
    os.makedirs(os.path.join(config.out, "rows"), exist_ok=True)
    if config.seed is not None:
        tf.config.experimental.enable_op_determinism()  # same seed, same CPU: same metrics
    data = load_data(config.data, config.seed, config.quick)
    if config.quick and config.epochs is None:
        config.epochs = QUICK["epochs"]
    ds = make_datasets(data, batch_size=config.batch_size, vocab_size=config.vocab_size,
                       sequence_length=config.sequence_length, seed=config.seed)
    rows, best, warm = [], (None, {"test_accuracy": -1.0}), {}
    for name in tqdm(select_rows(config.models), desc="benchmark", unit="model"):
        path = os.path.join(config.out, "rows", f"{name}.json")
        saved = os.path.join(config.out, "rows", f"{name}.keras")
        if os.path.isfile(path):  # finished in an earlier run: resume
            with open(path, encoding="utf-8") as f:
                row, model = json.load(f), None
        else:
            print(f"\n== {name}")
            with strategy.scope():  # models, optimizers and metrics belong to the strategy
                row, model = run_row(name, ds, config, warm)
            if row["family"] in ("image", "text") and not name.startswith("recipe_"):
                model.save(saved)  # later fused rows (and resumed runs) warm-start from it
            report.write_json(path, row)
        rows.append(row)
        if os.path.isfile(saved):
            for modality, branch in _branches_of(name).items():
                warm.setdefault((modality, branch), saved)
                best_key = f"best_{modality}"
                if row["test_accuracy"] > warm.get(best_key + "_accuracy", -1.0):
                    warm[best_key], warm[best_key + "_accuracy"] = saved, row["test_accuracy"]
        if config.export and model is not None and not name.startswith("recipe_") \
                and row["test_accuracy"] > best[1]["test_accuracy"]:
            best = (model, row)  # exported once, after the loop
    if best[0] is not None:
        _export_best(best[0], ds, data, config, best[1])
    results = {"dataset": data.name, "num_classes": ds.num_classes, "n_train": ds.size("train"),
               "n_test": ds.size("test"), "image_shape": list(ds.image_shape),
               "class_names": ds.class_names, "seed": config.seed, "models": rows,
               "time_to_accuracy": time_to_accuracy(rows), "speedup": speedups(rows)}
    report.write_json(os.path.join(config.out, "results.json"), results)
    with open(os.path.join(config.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(report.results_markdown(results))
    report.plot_all(results, config.out)
    return results


def _export_best(model, ds, data, config, row):
    try:
        from mmkeras.export import export_model
    except ImportError:
        print("export_model unavailable: skipping --export")
        return
    path = os.path.join(config.out, "export", row["name"])
    export_model(model, path, vectorizer=ds.vectorizer, class_names=ds.class_names, dataset=data.name,
                 metrics={"test_accuracy": row["test_accuracy"]}, overwrite=True)
