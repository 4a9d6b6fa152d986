"""Generic composers: `build_fused` for image+text models, `build_unimodal` for one modality.

Registered models are thin presets over these. Layer names are deterministic and carry
the part they belong to (`image_*`, `text_*`, `fusion_*`, `head_*`), which is what lets
`image_init=` / `text_init=` copy a branch between models by name.
"""

import keras

from mmkeras import branches
from mmkeras import fusion as fusion_layers
from mmkeras.argument_checks import check_non_negative
from mmkeras.branches.airbench_layers import AlternatingFlip, RandomPixelNoise
from mmkeras.models.heads import AuxiliaryHead
from mmkeras.models.transfer import freeze_prefix, transfer_weights

MODALITIES = ("image", "text")


def _check_common(num_classes, image_shape, vocab_size, sequence_length):
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an int >= 2. Received num_classes={num_classes!r}.")
    if image_shape is not None and (len(tuple(image_shape)) != 3 or tuple(image_shape)[-1] != 3):
        raise ValueError(f"`image_shape` must be (height, width, 3). Received image_shape={image_shape!r}.")
    if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size < 3):
        raise ValueError(f"`vocab_size` must be an int >= 3. Received vocab_size={vocab_size!r}.")
    if sequence_length is not None and (not isinstance(sequence_length, int) or sequence_length < 1):
        raise ValueError(f"`sequence_length` must be a positive int. Received sequence_length={sequence_length!r}.")


def _inputs(image_shape, sequence_length):
    """The two named inputs; a size left as None accepts any size (unimodal models)."""
    image = keras.Input(shape=tuple(image_shape or (None, None, 3)), dtype="float32", name="image")
    text = keras.Input(shape=(sequence_length,), dtype="int32", name="text")
    return image, text


AUGMENTATIONS = (None, "flip_translate", "speedrun")


def _augment(image, augmentation):
    """In-graph training-time augmentation (inactive at inference, so exports need nothing).

    "flip_translate": random horizontal flips and shifts of up to 1/8 of the size.
    "speedrun" (mmkeras.speedrun): flips (alternating by epoch under fit_speedrun,
    `AlternatingFlip`), shifts of up to 1/16 (2 pixels at 32x32) and Gaussian pixel noise
    (standard deviation up to 0.15 of the range) on a quarter of the images (on half, clean
    accuracy fell by 7.8 points on a short CIFAR-10 schedule).
    """
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"Unknown image_augmentation {augmentation!r}; expected one of: {AUGMENTATIONS}.")
    if augmentation is None:
        return image
    if augmentation == "speedrun":
        x = AlternatingFlip(name="image_augment_flip")(image)
    else:
        x = keras.layers.RandomFlip("horizontal", name="image_augment_flip")(image)
    # Shifts with reflected borders: the standard CIFAR pad-and-crop. Nearest interpolation
    # shifts by whole pixels; bilinear would blur every training image by a sub-pixel shift
    # while test images stay sharp.
    reach = 0.0625 if augmentation == "speedrun" else 0.125
    x = keras.layers.RandomTranslation(reach, reach, fill_mode="reflect", interpolation="nearest",
                                       name="image_augment_shift")(x)
    if augmentation == "speedrun":
        x = RandomPixelNoise(max_stddev=0.15, rate=0.25, name="image_augment_noise")(x)
    return x


def _head(x, num_classes, head_units, dropout, name="label"):
    for i, units in enumerate(head_units):
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense_{i}")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # The softmax runs in float32 even under mixed precision, for a stable loss.
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=name)(x)


def _init_and_freeze(model, init, freeze, prefix):
    if init is not None:
        transfer_weights(init, model, prefix)
    if freeze:
        freeze_prefix(model, prefix)


def build_unimodal(*, modality, branch, num_classes, image_shape=(32, 32, 3), vocab_size=None,
                   sequence_length=None, branch_config=None, head_units=(128,), dropout=0.0,
                   image_augmentation=None, name=None):
    """An image-only or text-only classifier with inputs {"image", "text"} and output {"label"}.

    It takes the same paired batches as fused models and ignores the other modality: both
    inputs are declared, so Keras matches every key by name in every path (call, fit,
    predict, export). A single-input model would be fed a paired dict by position (keras
    issue #23258: an image batch arriving at the text input).
    """
    if modality not in MODALITIES:
        raise ValueError(f"Unknown modality {modality!r}; expected one of: {', '.join(MODALITIES)}.")
    _check_common(num_classes, image_shape, vocab_size, sequence_length)
    if modality == "text" and (vocab_size is None or sequence_length is None):
        raise ValueError("A text model needs `vocab_size` and `sequence_length`. "
                         f"Received vocab_size={vocab_size!r}, sequence_length={sequence_length!r}.")
    image, text = _inputs(image_shape, sequence_length)
    if modality == "image":
        feats = branches.image_branch(branch, _augment(image, image_augmentation), **(branch_config or {}))
    else:
        feats = branches.text_branch(branch, text, vocab_size=vocab_size,
                                     sequence_length=sequence_length, **(branch_config or {}))
    outputs = {"label": _head(feats.vector, num_classes, head_units, dropout)}
    return keras.Model({"image": image, "text": text}, outputs, name=name or f"{modality}_{branch}")


def build_fused(*, image_branch="simple_cnn", text_branch="lstm", fusion="concat", num_classes,
                image_shape=(32, 32, 3), vocab_size, sequence_length, image_config=None,
                text_config=None, fusion_config=None, head_units=(128,), dropout=0.0,
                image_augmentation=None, aux_loss_weights=None, image_init=None, text_init=None, freeze_image=False,
                freeze_text=False, name=None):
    """Compose an image branch, a text branch, a fusion layer and a softmax head.

    fusion: a registered fusion (`mmkeras.list_fusions()`). A fusion of stage "input"
    (early fusion) joins the text to the pixels before the image branch, so every image
    layer reads the text: that branch keeps learning even with freeze_image=True (an
    image_init still gives its starting weights; see `transfer_weights`).
    aux_loss_weights: e.g. {"image_label": 0.3, "text_label": 0.3} adds unimodal auxiliary
    heads (multitask), `AuxiliaryHead` layers that keep their loss weight in the saved
    model; the main output stays "label", which inference and export use.
    image_augmentation: None, "flip_translate" or "speedrun" (see `_augment`; in the graph,
    active only in training).
    image_init / text_init: a trained model (or .keras path) whose `image_*` / `text_*`
    layers are copied in; freeze_image / freeze_text keep them fixed.
    """
    _check_common(num_classes, image_shape, vocab_size, sequence_length)
    spec = fusion_layers.fusion_info(fusion)
    aux_loss_weights = _check_aux_loss_weights(aux_loss_weights)
    image, text = _inputs(image_shape, sequence_length)
    txt = branches.text_branch(text_branch, text, vocab_size=vocab_size,
                               sequence_length=sequence_length, **(text_config or {}))
    layer = spec.cls(name=f"fusion_{fusion}", **(fusion_config or {}))
    if spec.stage == "input":
        # Data-level fusion: text channels join the pixels before the image branch.
        pixels = keras.layers.Rescaling(1.0 / 255.0, name="image_rescale")(_augment(image, image_augmentation))
        img = branches.image_branch(image_branch, layer([pixels, txt.vector]), rescale=False,
                                    **(image_config or {}))
        fused = img.vector
    else:
        img = branches.image_branch(image_branch, _augment(image, image_augmentation), **(image_config or {}))
        if spec.inputs == "vectors":
            fused = layer([img.vector, txt.vector])
        elif spec.inputs == "map_vector":
            x = layer([img.feature_map, txt.vector])
            channels = img.feature_map.shape[-1]
            x = keras.layers.Conv2D(channels, 1, activation="relu", name="fusion_conv")(x)
            fused = keras.layers.GlobalAveragePooling2D(name="fusion_pool")(x)
        else:  # sequence_map: text tokens against image regions, masked
            fused = layer([txt.sequence, img.feature_map], mask=[txt.mask, None])
    outputs = {"label": _head(fused, num_classes, head_units, dropout)}
    for key, vector in (("image_label", img.vector), ("text_label", txt.vector)):
        if key in aux_loss_weights:
            outputs[key] = AuxiliaryHead(num_classes, loss_weight=aux_loss_weights[key], activation="softmax",
                                         dtype="float32", name=f"head_aux_{key.split('_')[0]}")(vector)
    model = keras.Model({"image": image, "text": text}, outputs,
                        name=name or f"{fusion}_{image_branch}_{text_branch}")
    # After an input-stage fusion every image layer reads the text channels too: that
    # branch must keep learning, so freeze_image does not apply to it.
    _init_and_freeze(model, image_init, freeze_image and spec.stage != "input", "image")
    _init_and_freeze(model, text_init, freeze_text, "text")
    return model


AUX_HEADS = ("image_label", "text_label")


def _check_aux_loss_weights(aux_loss_weights):
    aux_loss_weights = dict(aux_loss_weights or {})
    bad = sorted(set(aux_loss_weights) - set(AUX_HEADS))
    if bad:
        raise ValueError(f"Unknown auxiliary head(s) {bad}. Received aux_loss_weights={aux_loss_weights}; "
                         f"allowed keys: {', '.join(AUX_HEADS)}.")
    return {key: check_non_negative(f"aux_loss_weights[{key!r}]", w) for key, w in aux_loss_weights.items()}
