"""The run's prediction memo (mmkeras.prediction_memo): it answers what the model answers,
predicts a frozen nested model once for all the models that hold it (also a saved and
reloaded copy), and misses on any changed weight or input."""

import keras
import numpy as np
import pytest

import mmkeras
from mmkeras import prediction_memo, training
from mmkeras.ensembles.members import frozen_copy
from mmkeras.models.experts import with_unimodal_experts
from mmkeras.models.tta import with_tta
from mmkeras.prediction_memo import PredictionMemo


@pytest.fixture(scope="module")
def parts(tiny_datasets, trained_unimodal):
    image = with_tta(trained_unimodal["image"], shift=1)

    def experts(seed):
        keras.utils.set_random_seed(seed)
        fused = mmkeras.create_model("seed_concat", **tiny_datasets.model_kwargs(),
                                     image_init=trained_unimodal["image"], text_init=trained_unimodal["text"],
                                     freeze_image=True)
        return with_unimodal_experts(fused, image, trained_unimodal["text"])

    return {"image": image, "text": trained_unimodal["text"], "a": experts(1), "b": experts(2),
            "features": tiny_datasets.features("test")}


def _close(got, expected):
    for key in expected:
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(expected[key]), atol=1e-5, err_msg=key)


def test_answers_what_the_model_answers_and_predicts_a_shared_expert_once(parts):
    memo, features = PredictionMemo(), parts["features"]
    _close(memo.predict(parts["a"], features), parts["a"].predict(features, verbose=0))
    # The experts model, its image model (six views) and its frozen image branch.
    assert (memo.hits, memo.misses) == (0, 3)
    # Another fused model holding the same image model and the same frozen branch: only
    # its own trainable layers run.
    _close(memo.predict(parts["b"], features), parts["b"].predict(features, verbose=0))
    assert (memo.hits, memo.misses) == (2, 4)
    memo.predict(parts["b"], dict(features))  # the same arrays again: answered whole
    assert (memo.hits, memo.misses) == (3, 4)


def test_a_reloaded_copy_is_the_same_model(parts):
    memo, features = PredictionMemo(), parts["features"]
    memo.predict(parts["image"], features)
    memo.predict(parts["text"], features)
    ensemble = mmkeras.create_model("ensemble_product", members=[parts["image"], parts["text"]])
    copy = frozen_copy(parts["image"], "renamed")
    _close(memo.predict(ensemble, features), ensemble.predict(features, verbose=0))
    assert (memo.hits, memo.misses) == (2, 3)  # both members answered from the memo
    memo.predict(copy, features)
    assert memo.hits == 3


def test_a_changed_weight_or_pixel_misses(parts):
    memo, features = PredictionMemo(), dict(parts["features"])
    text = frozen_copy(parts["text"], "text_copy")
    before = memo.predict(text, features)["label"]
    kernel = text.get_layer("label").kernel
    kernel.assign(kernel.numpy() * 0.0)
    after = memo.predict(text, features)["label"]
    assert memo.misses == 2 and not np.allclose(before, after)
    np.testing.assert_allclose(after, text.predict(features, verbose=0)["label"], atol=1e-6)
    image = np.array(features["image"], copy=True)
    memo.predict(parts["image"], dict(features, image=image))
    image[0, 0, 0, 0] += 1
    memo.predict(parts["image"], dict(features, image=image))
    assert memo.misses == 4 and memo.hits == 0


def test_predictions_go_through_the_active_memo_only(parts):
    memo, features = PredictionMemo(), parts["features"]
    training.predict_proba(parts["text"], features)
    assert memo.misses == 0
    with prediction_memo.active(memo):
        first = training.predict_proba(parts["text"], features)
        again = training.predict_proba(parts["text"], features)
    assert prediction_memo.current() is None
    assert (memo.hits, memo.misses) == (1, 1)
    np.testing.assert_array_equal(first, again)


def test_old_outputs_are_dropped_beyond_max_bytes(parts):
    features = parts["features"]
    one = sum(np.asarray(v).nbytes for v in PredictionMemo().predict(parts["text"], features).values())
    memo = PredictionMemo(max_bytes=int(one * 1.5))
    memo.predict(parts["text"], features)
    memo.predict(parts["text"], dict(features, text=np.zeros_like(features["text"])))
    memo.predict(parts["text"], features)  # the first was dropped to keep the second
    assert (memo.hits, memo.misses) == (0, 3)


def test_fusions_of_the_same_frozen_branches_share_their_features(tiny_datasets, trained_unimodal):
    from mmkeras.models.transfer import freeze_prefix

    def fused(name):
        keras.utils.set_random_seed(0)
        model = mmkeras.create_model(name, **tiny_datasets.model_kwargs(), image_init=trained_unimodal["image"],
                                     text_init=trained_unimodal["text"], freeze_image=True)
        freeze_prefix(model, "text")
        return model

    memo, features = PredictionMemo(), tiny_datasets.features("test")
    concat, gmu = fused("seed_concat"), fused("gmu_cnn_lstm")
    _close(memo.predict(concat, features), concat.predict(features, verbose=0))
    # The image and the text features, each a memo entry of its own (cut before concat's
    # weightless merge, which would make them one tensor no other fusion has).
    assert (memo.hits, memo.misses) == (0, 3)
    _close(memo.predict(gmu, features), gmu.predict(features, verbose=0))
    assert (memo.hits, memo.misses) == (2, 4)
