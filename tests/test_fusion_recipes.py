"""Fusion recipes (mmkeras.fusion_recipes): each trains a warm-started fused model, says
what it did in its stats, and the errors name what was received and what is allowed."""

import keras
import numpy as np
import pytest

import mmkeras
from mmkeras import fusion_recipes, training
from mmkeras.explain.contributions import blank_image, blank_text
from mmkeras.recipe_trainer import RecipeTrainer


@pytest.fixture(scope="module")
def unimodal(trained_unimodal):
    return trained_unimodal


def _fused(tiny_datasets, unimodal):
    keras.utils.set_random_seed(1)
    return mmkeras.create_model("seed_concat", **tiny_datasets.model_kwargs(), image_init=unimodal["image"],
                                text_init=unimodal["text"], freeze_image=True)


def _weights(model, prefix):
    return [np.array(w) for layer in model.layers if layer.name.startswith(prefix) for w in layer.weights]


def test_the_recipes_and_the_default():
    assert fusion_recipes.list_fusion_recipes() == ["distill", "experts", "finetune", "frozen", "ogm_ge"]
    assert fusion_recipes.DEFAULT_FUSION_RECIPE in fusion_recipes.list_fusion_recipes()


def test_frozen_trains_fusion_and_head_only(tiny_datasets, unimodal):
    model = _fused(tiny_datasets, unimodal)
    image_before, head_before = _weights(model, "image_"), _weights(model, "head_")
    trained, history, stats = fusion_recipes.fit_fused(model, tiny_datasets, recipe="frozen", epochs=2, verbose=0)
    assert trained is model and len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]
    assert all(np.array_equal(a, b) for a, b in zip(image_before, _weights(model, "image_")))
    assert not all(np.array_equal(a, b) for a, b in zip(head_before, _weights(model, "head_")))
    assert stats["recipe"] == "frozen" and stats["epochs"] == 2
    assert stats["train_samples"] == 2 * tiny_datasets.size("train")


def test_finetune_moves_the_borrowed_branches_but_not_their_statistics(tiny_datasets, unimodal):
    # A small VGG image branch: BatchNorm layers to keep in inference mode.
    model = mmkeras.build_fused(image_branch="vgg", text_branch="lstm", fusion="concat",
                                image_config=dict(width=4, blocks=1), **tiny_datasets.model_kwargs())
    image_before = _weights(model, "image_")
    trained, history, stats = fusion_recipes.fit_fused(model, tiny_datasets, recipe="finetune", epochs=1, verbose=0)
    assert stats["epochs"] == 2 and len(history["loss"]) == 2
    assert not all(np.array_equal(a, b) for a, b in zip(image_before, _weights(model, "image_")))
    assert not any(layer.trainable for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))


def test_experts_adds_the_unimodal_heads_and_fits_their_weights(tiny_datasets, unimodal):
    model = _fused(tiny_datasets, unimodal)
    branches_before = _weights(model, "image_") + _weights(model, "text_")
    trained, history, stats = fusion_recipes.fit_fused(model, tiny_datasets, recipe="experts", epochs=1,
                                                       image_model=unimodal["image"], text_model=unimodal["text"],
                                                       modality_dropout=0.3, verbose=0)
    assert set(trained.output) == {"label", "fused_label", "image_label", "text_label"}
    # Both borrowed branches kept the features the experts' heads were trained on.
    assert all(np.array_equal(a, b) for a, b in zip(branches_before, _weights(model, "image_") + _weights(model, "text_")))
    assert stats["recipe"] == "experts" and stats["recipe_seconds"] > 0
    assert set(stats["expert_weights"]) == {"both", "text_only", "image_only", "neither"}
    report, _ = training.evaluate(trained, tiny_datasets, split="validation")
    features, labels = training.split_arrays(tiny_datasets, "validation")
    out = trained.predict(features, verbose=0)
    product = np.log(np.clip(out["image_label"], 1e-7, 1)) + np.log(np.clip(out["text_label"], 1e-7, 1))
    assert report["accuracy"] >= (product.argmax(-1) == labels).mean() - 1e-9


def test_errors_say_what_was_received(tiny_datasets, unimodal):
    model = _fused(tiny_datasets, unimodal)
    with pytest.raises(ValueError, match="Unknown fusion recipe 'lazy'; expected one of: distill, experts, finetune, frozen, ogm_ge"):
        fusion_recipes.fit_fused(model, tiny_datasets, recipe="lazy")
    with pytest.raises(ValueError, match="needs the trained unimodal models.*missing: image_model, text_model"):
        fusion_recipes.fit_fused(model, tiny_datasets, recipe="experts", verbose=0)
    with pytest.raises(ValueError, match="modality_dropout"):
        fusion_recipes.fit_fused(model, tiny_datasets, recipe="frozen", modality_dropout=1.5)
    with pytest.raises(ValueError, match="already registered"):
        fusion_recipes.register_fusion_recipe("frozen")(lambda *a, **k: None)


def _unimodal_sources(unimodal):
    return dict(image_model=unimodal["image"], text_model=unimodal["text"])


def _branches(model):
    return _weights(model, "image_") + _weights(model, "text_")


def _drift(before, after):
    """Summed absolute change between two lists of weights."""
    return sum(float(np.abs(a - b).sum()) for a, b in zip(before, after))


@pytest.fixture(scope="module")
def recipe_run(tiny_datasets, unimodal):
    """(recipe, **options) -> (model, history, stats) of a 2-epoch run from `_fused`, each
    run once per module."""
    runs = {}

    def run(recipe, **options):
        key = (recipe, *sorted(options.items()))
        if key not in runs:
            model = _fused(tiny_datasets, unimodal)
            runs[key] = fusion_recipes.fit_fused(model, tiny_datasets, recipe=recipe, epochs=2, verbose=0,
                                                 recipe_options=options, **_unimodal_sources(unimodal))
        return runs[key]

    return run


@pytest.mark.parametrize("recipe, options", [("distill", {"distill_weight": 50.0}),
                                             ("ogm_ge", {"alpha": 50.0, "gradient_noise": False})])
def test_the_trained_model_is_plain_and_saves(recipe_run, recipe, options, tiny_datasets, tmp_path):
    model, _, _ = recipe_run(recipe, **options)
    assert type(model) is type(keras.Model(model.input, model.output))  # a plain functional model
    assert set(model.output) == {"label"}
    model.save(tmp_path / "trained.keras")
    features, _ = training.split_arrays(tiny_datasets, "test")
    reloaded = keras.models.load_model(tmp_path / "trained.keras")
    np.testing.assert_allclose(reloaded.predict(features, verbose=0)["label"],
                               model.predict(features, verbose=0)["label"], atol=1e-6)


def test_distill_trains_both_branches_and_keeps_them_near_their_teachers(recipe_run, tiny_datasets, unimodal):
    untrained = _branches(_fused(tiny_datasets, unimodal))
    drifts, distances = {}, {}
    for weight in (0.0, 50.0):
        model, history, stats = recipe_run("distill", distill_weight=weight)
        assert type(model) is not RecipeTrainer and history["loss"][1] < history["loss"][0]
        drifts[weight] = _drift(untrained, _branches(model))
        distances[weight] = sum(stats["distill_distance"].values())
        assert stats["recipe"] == "distill" and stats["distill_weight"] == weight
        assert stats["branch_learning_rate_scale"] == 0.1 and set(stats["distill_distance"]) == {"image", "text"}
    assert drifts[0.0] > 0 and distances[0.0] > 0  # both borrowed branches trained
    # The distillation term acts: the branches stay closer to what their teachers compute.
    assert distances[50.0] < 0.5 * distances[0.0]


def test_branches_learn_at_their_scale_of_the_learning_rate(tiny_datasets, unimodal):
    model = _fused(tiny_datasets, unimodal)
    fusion_recipes._unfreeze_branches(model)
    trainer = RecipeTrainer(model, branch_learning_rate_scale=0.25)
    schedule = training.cosine_schedule(1e-2, 1, tiny_datasets.size("train"), tiny_datasets.batch_size)
    training.compile_model(trainer, learning_rate=schedule)
    main_before, branch_before = _weights(model, "head_"), _weights(model, "text_")
    training.fit(trainer, tiny_datasets, epochs=1, verbose=0)
    steps = int(trainer.optimizer.iterations)
    assert steps == int(np.ceil(tiny_datasets.size("train") / tiny_datasets.batch_size))
    for modality in ("image", "text"):
        optimizer = trainer.branch_optimizers[modality]
        assert int(optimizer.iterations) == steps  # every branch variable got its own steps
        # The last step's rate: a quarter of the schedule's at that step.
        np.testing.assert_allclose(float(optimizer.learning_rate), 0.25 * float(schedule(steps - 1)), rtol=1e-6)
    assert _drift(main_before, _weights(model, "head_")) > 0 and _drift(branch_before, _weights(model, "text_")) > 0
    branch_variables = {id(v) for v in trainer.groups["image"] + trainer.groups["text"]}
    assert branch_variables and not branch_variables & {id(v) for v in trainer.groups["main"]}


def test_ogm_ge_coefficients_follow_the_blanked_scores(tiny_datasets, unimodal):
    model = _fused(tiny_datasets, unimodal)
    features, labels = training.split_arrays(tiny_datasets, "validation")
    features = {"image": features["image"].astype("float32"), "text": features["text"]}
    p_image = model.predict({**features, "text": blank_text(features["text"]).numpy()}, verbose=0)["label"]
    p_text = model.predict({**features, "image": blank_image(features["image"]).numpy()}, verbose=0)["label"]
    rows = np.arange(len(labels))
    rho = p_image[rows, labels].sum() / p_text[rows, labels].sum()
    for alpha in (0.0, 3.0):
        batch = {k: keras.ops.convert_to_tensor(v) for k, v in features.items()}
        coefficients, logs = RecipeTrainer(model, alpha=alpha)._modulation(batch, {"label": labels})
        np.testing.assert_allclose(float(logs["score_ratio"]), rho, rtol=1e-4)
        expected = {"image": 1 - np.tanh(alpha * max(rho - 1, 0)), "text": 1 - np.tanh(alpha * max(1 / rho - 1, 0))}
        for modality in ("image", "text"):
            np.testing.assert_allclose(float(coefficients[modality]), expected[modality], rtol=1e-4, atol=1e-6)
    assert min(expected.values()) < 0.99 and max(expected.values()) == 1.0  # only the dominant one slows


def test_ogm_ge_runs_and_reports_its_coefficients(recipe_run, tiny_datasets, unimodal):
    plain, (model, history, stats) = recipe_run("ogm_ge", alpha=0.0, gradient_noise=False), \
        recipe_run("ogm_ge", alpha=50.0, gradient_noise=False)
    assert plain[2]["modulation"]["image_coefficient"] == plain[2]["modulation"]["text_coefficient"] == 1.0
    assert min(stats["modulation"]["image_coefficient"], stats["modulation"]["text_coefficient"]) < 1.0
    assert stats["recipe"] == "ogm_ge" and stats["alpha"] == 50.0 and stats["gradient_noise"] is False
    assert history["loss"][1] < history["loss"][0]
    assert _drift(_branches(_fused(tiny_datasets, unimodal)), _branches(model)) > 0  # the borrowed branches trained


def _one_step(tiny_datasets, unimodal, **options):
    """(branch weights before, after, logs) of one train step of a RecipeTrainer on the
    first 32 training pairs, from the same starting weights each call."""
    model = _fused(tiny_datasets, unimodal)
    fusion_recipes._unfreeze_branches(model)
    trainer = RecipeTrainer(model, **options)
    training.compile_model(trainer, learning_rate=1e-3)
    features, labels = training.split_arrays(tiny_datasets, "train", rows=np.arange(32))
    batch = ({"image": keras.ops.convert_to_tensor(features["image"], "float32"),
              "text": keras.ops.convert_to_tensor(features["text"])}, {"label": keras.ops.convert_to_tensor(labels)})
    before = {m: _weights(model, f"{m}_") for m in ("image", "text")}
    logs = trainer.train_step(batch)
    return before, {m: _weights(model, f"{m}_") for m in ("image", "text")}, logs


def test_ogm_ge_scales_each_branch_step_by_its_coefficient(tiny_datasets, unimodal):
    plain_before, plain_after, plain_logs = _one_step(tiny_datasets, unimodal, alpha=0.0, gradient_noise=False)
    before, after, logs = _one_step(tiny_datasets, unimodal, alpha=50.0, gradient_noise=False)
    assert float(plain_logs["image_coefficient"]) == float(plain_logs["text_coefficient"]) == 1.0
    coefficients = {m: float(logs[f"{m}_coefficient"]) for m in ("image", "text")}
    assert min(coefficients.values()) < 0.99 and max(coefficients.values()) == 1.0  # only the dominant one slows
    for m in ("image", "text"):
        assert all(np.array_equal(a, b) for a, b in zip(plain_before[m], before[m]))  # the same start
        # Adam's step is linear in the learning rate: the dominant branch moves k times as far.
        for a0, a1, b0, b1 in zip(plain_before[m], plain_after[m], before[m], after[m]):
            np.testing.assert_allclose(b1 - b0, coefficients[m] * (a1 - a0), rtol=1e-4, atol=1e-8)


def test_distill_with_one_teacher_distils_that_branch_only(tiny_datasets, unimodal):
    before, after, logs = _one_step(tiny_datasets, unimodal, teachers={"image": unimodal["image"]}, distill_weight=1.0)
    assert "image_distill" in logs and "text_distill" not in logs
    # The branches start as copies of the teachers: nothing to distil yet, yet both train.
    assert float(logs["image_distill"]) < 1e-10
    assert all(_drift(before[m], after[m]) > 0 for m in ("image", "text"))


def test_ogm_ge_noise_acts(tiny_datasets, unimodal):
    plain_before, plain_after, _ = _one_step(tiny_datasets, unimodal, alpha=0.0, gradient_noise=False)
    _, noisy_after, _ = _one_step(tiny_datasets, unimodal, alpha=0.0, gradient_noise=True)
    for m in ("image", "text"):
        assert not all(np.allclose(a, b) for a, b in zip(plain_after[m], noisy_after[m]))
        assert _drift(plain_before[m], noisy_after[m]) > 0


def test_recipe_options_are_checked(tiny_datasets, unimodal):
    model = _fused(tiny_datasets, unimodal)
    sources = _unimodal_sources(unimodal)
    assert fusion_recipes.recipe_option_names("ogm_ge") == ["alpha", "gradient_noise", "branch_learning_rate_scale"]
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['alpah'\] for fusion recipe 'ogm_ge'.*"
                                         r"allowed: alpha, gradient_noise, branch_learning_rate_scale"):
        fusion_recipes.fit_fused(model, tiny_datasets, recipe="ogm_ge", recipe_options={"alpah": 1})
    with pytest.raises(ValueError, match="allowed: none"):
        fusion_recipes.fit_fused(model, tiny_datasets, recipe="frozen", recipe_options={"alpha": 1})
    with pytest.raises(ValueError, match="'distill' needs a trained unimodal model.*Received neither"):
        fusion_recipes.fit_fused(model, tiny_datasets, recipe="distill")
    with pytest.raises(ValueError, match=r"`teachers` maps modalities \(image, text\).*Received keys \['audio'\]"):
        RecipeTrainer(model, teachers={"audio": unimodal["text"]})
    cases = [("distill", {"distill_weight": -1}, "distill_weight.*Received distill_weight=-1"),
             ("ogm_ge", {"alpha": "strong"}, "alpha.*Received alpha='strong'"),
             ("ogm_ge", {"gradient_noise": 1}, "gradient_noise.*Received gradient_noise=1"),
             ("distill", {"branch_learning_rate_scale": 0}, r"in \(0, 1\]. Received branch_learning_rate_scale=0")]
    for recipe, options, message in cases:
        with pytest.raises(ValueError, match=message):
            fusion_recipes.fit_fused(model, tiny_datasets, recipe=recipe, recipe_options=options, **sources)
