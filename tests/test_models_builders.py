"""The composers: every fusion family wires up, transfer between models, multitask heads."""

import numpy as np
import pytest

import keras

import mmkeras
from mmkeras import training
from mmkeras.models import AuxiliaryHead, build_fused, freeze_prefix, transfer_weights

KW = dict(num_classes=3, image_shape=(16, 16, 3), vocab_size=30, sequence_length=8)


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    text = rng.integers(2, 30, size=(n, 8)).astype("int32")
    text[:, 5:] = 0
    return ({"image": rng.integers(0, 256, (n, 16, 16, 3)).astype("float32"), "text": text},
            rng.integers(0, 3, n).astype("int64"))


def test_unknown_fusion_and_branch():
    with pytest.raises(ValueError, match="fusion='gated'") as err:
        build_fused(fusion="gated", **KW)
    assert "gmu" in str(err.value)
    with pytest.raises(ValueError, match="alexnet"):
        build_fused(image_branch="alexnet", **KW)


def test_transfer_copies_branch_and_freezes():
    keras.utils.set_random_seed(0)
    image_model = mmkeras.create_model("seed_image", **KW)
    text_model = mmkeras.create_model("seed_text", **KW)
    fused = mmkeras.create_model("seed_concat", **KW, image_init=image_model, text_init=text_model,
                                 freeze_image=True)
    for prefix, src in (("image", image_model), ("text", text_model)):
        names = [l.name for l in src.layers if l.name.startswith(prefix + "_") and l.weights]
        assert names
        for n in names:
            for a, b in zip(src.get_layer(n).get_weights(), fused.get_layer(n).get_weights()):
                np.testing.assert_array_equal(a, b)
    # Frozen image branch stays fixed through training; the text branch moves.
    before = {n: [w.copy() for w in fused.get_layer(n).get_weights()] for n in ("image_conv", "text_lstm")}
    training.compile_model(fused)
    x, y = batch()
    for _ in range(3):
        fused.train_on_batch(x, {"label": y})
    assert all(np.array_equal(a, b) for a, b in zip(before["image_conv"], fused.get_layer("image_conv").get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(before["text_lstm"], fused.get_layer("text_lstm").get_weights()))


def test_transfer_from_keras_file(tmp_path):
    image_model = mmkeras.create_model("seed_image", **KW)
    path = str(tmp_path / "img.keras")
    image_model.save(path)
    fused = mmkeras.create_model("seed_concat", **KW, image_init=path)
    np.testing.assert_array_equal(fused.get_layer("image_conv").get_weights()[0],
                                  image_model.get_layer("image_conv").get_weights()[0])


def test_transfer_mismatch_is_an_error():
    resnet_image = mmkeras.create_model("image_resnet", **KW)
    with pytest.raises(ValueError, match="No 'image_\\*' layer"):
        transfer_weights(resnet_image, mmkeras.create_model("seed_concat", **KW), "image")


def test_early_fusion_warm_starts_with_zero_text_channels():
    """The first conv gains input channels (text); it starts as the image model's, so the
    early-fusion model's image branch first computes exactly what the image model did."""
    keras.utils.set_random_seed(0)
    image_model = mmkeras.create_model("image_resnet9", **KW, branch_config={"width": 2})
    early = build_fused(image_branch="resnet9", text_branch="lstm", fusion="early", **KW,
                        image_config={"width": 2}, text_config={"embed_dim": 4, "units": 4},
                        fusion_config={"channels": 3}, image_init=image_model)
    kernel = early.get_layer("image_prep_conv").get_weights()[0]
    assert kernel.shape[2] == 6
    np.testing.assert_array_equal(kernel[:, :, :3], image_model.get_layer("image_prep_conv").get_weights()[0])
    assert not kernel[:, :, 3:].any()
    x, _ = batch()
    probe = {m: keras.Model(m.input, m.get_layer("image_pool").output) for m in (image_model, early)}
    np.testing.assert_allclose(probe[early](x), probe[image_model](x), atol=1e-5)
    # Any other disagreement is still an error.
    with pytest.raises(ValueError, match="weight shapes differ"):
        transfer_weights(mmkeras.create_model("image_resnet9", **KW, branch_config={"width": 3}), early, "image")


def test_input_stage_fusion_keeps_the_image_branch_learning():
    """Early fusion (stage "input") feeds text channels to every image layer: freeze_image
    leaves that branch trainable, as if it were False, while freeze_text still applies."""
    keras.utils.set_random_seed(0)
    image_model = mmkeras.create_model("image_simple_cnn", **KW)
    trainable = {}
    for freeze in (False, True):
        model = mmkeras.create_model("early_cnn_lstm", **KW, image_init=image_model, freeze_image=freeze,
                                     freeze_text=True)
        trainable[freeze] = [l.name for l in model.layers if l.trainable and l.weights]
    assert trainable[True] == trainable[False]
    assert "image_conv" in trainable[True] and "fusion_early" in trainable[True]
    assert not any(n.startswith("text_") for n in trainable[True])
    # A feature-stage fusion's image branch is frozen by the same call.
    concat = mmkeras.create_model("seed_concat", **KW, image_init=image_model, freeze_image=True)
    assert not concat.get_layer("image_conv").trainable


def test_multitask_heads_train_jointly():
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("gmu_cnn_lstm", **KW,
                                 aux_loss_weights={"image_label": 0.3, "text_label": 0.2})
    assert set(model.output) == {"label", "image_label", "text_label"}
    settings = training.compile_settings(model)
    assert settings["loss_weights"] == {"label": 1.0, "image_label": 0.3, "text_label": 0.2}
    # Explicit weights win over the recorded ones.
    explicit = training.compile_settings(model, aux_loss_weights={"text_label": 0.7})["loss_weights"]
    assert explicit == {"label": 1.0, "image_label": 0.3, "text_label": 0.7}
    model.compile(**settings)
    x, y = batch(16)
    ys = {k: y for k in model.output}
    first = model.train_on_batch(x, ys, return_dict=True)
    for _ in range(15):
        last = model.train_on_batch(x, ys, return_dict=True)
    assert last["loss"] < first["loss"]
    # Inference uses the fused head.
    np.testing.assert_allclose(training.predict_proba(model, x), model(x)["label"], atol=1e-6)


def test_aux_loss_weights_survive_save_and_load(tmp_path):
    model = mmkeras.create_model("seed_concat", **KW, aux_loss_weights={"image_label": 0.25, "text_label": 0.0})
    assert isinstance(model.get_layer("head_aux_image"), AuxiliaryHead)
    expected = {"label": 1.0, "image_label": 0.25, "text_label": 0.0}
    assert training.compile_settings(model)["loss_weights"] == expected
    model.save(tmp_path / "aux.keras")
    loaded = keras.models.load_model(tmp_path / "aux.keras")
    assert training.compile_settings(loaded)["loss_weights"] == expected
    x, _ = batch(4)
    for key in expected:
        np.testing.assert_allclose(np.asarray(loaded(x)[key]), np.asarray(model(x)[key]), atol=1e-6)


def test_bad_aux_head():
    with pytest.raises(ValueError, match="audio_label"):
        build_fused(aux_loss_weights={"audio_label": 1.0}, **KW)
    with pytest.raises(ValueError, match="Received aux_loss_weights\\['text_label'\\]=-1"):
        build_fused(aux_loss_weights={"text_label": -1}, **KW)


def test_freeze_prefix_lists_layers():
    model = mmkeras.create_model("seed_concat", **KW)
    frozen = freeze_prefix(model, "text")
    assert frozen and all(not model.get_layer(n).trainable for n in frozen)
    assert model.get_layer("image_conv").trainable


def test_image_augmentation_only_in_training():
    model = mmkeras.create_model("seed_image", **KW, image_augmentation="flip_translate")
    x, _ = batch(4)
    a, b = model(x, training=False)["label"], model(x, training=False)["label"]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b))
    plain = mmkeras.create_model("seed_image", **KW)
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(plain(x)["label"]), np.asarray(a), atol=1e-6)
    keras.utils.set_random_seed(3)
    t = [np.asarray(model(x, training=True)["label"]) for _ in range(2)]
    assert not np.allclose(t[0], t[1])
    with pytest.raises(ValueError, match="'mixup'"):
        mmkeras.create_model("seed_image", **KW, image_augmentation="mixup")
