"""`--pretrain-image`: train an image-only model on a larger image set first.

A small paired set cannot train a strong image branch from scratch (a from-scratch fused
model then loses to its own text branch). Here the image-only model learns on a large
image-only set (CIFAR-10, CIFAR-100 or the user's folder of class folders), with its own
classes and head; the benchmark's fused rows then copy its `image_*` layers and keep them
frozen, exactly as `image_init=` does.
"""

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

import mmkeras
from mmkeras import training
from mmkeras.bench.schedule import plan_schedule, preferred_batch
from mmkeras.bench.plan import RECIPE_PREFIX, branches_of
from mmkeras.bench.report import write_json
from mmkeras.bench.strategies import callbacks_for
from mmkeras.data import PairedData, PairedSplit, load_dataset, make_datasets


def resize_images(images, image_shape, batch_size=1024):
    """uint8 images resized (bilinear, antialiased) to `image_shape`'s height and width."""
    height, width = image_shape[:2]
    if images.shape[1:3] == (height, width):
        return images
    out = [tf.image.resize(images[i : i + batch_size], (height, width), antialias=True).numpy()
           for i in range(0, len(images), batch_size)]
    return np.clip(np.round(np.concatenate(out)), 0, 255).astype(np.uint8)


def pretrain_image_model(model_name, spec, *, image_shape, out_dir, epochs=None, batch_size=None,
                         learning_rate=2e-3, augment=True, seed=0, callbacks=None, precision="auto"):
    """Train image-only `model_name` on the image set `spec`, save it; returns an info dict.

    epochs / batch_size: None follows the image rows' schedule on the image set's size
    (schedule.plan_schedule).

    Images are resized to the paired set's `image_shape`, so the branch fits the fused
    rows. The model is saved as OUT_DIR/<model>_<set>.keras; if that file and its info
    exist (an earlier, interrupted run), nothing is trained again.
    """
    if mmkeras.model_family(model_name) != "image":
        raise ValueError(f"--pretrain-model must name an image-only model (image_*). Received "
                         f"{model_name!r}; image models: {', '.join(mmkeras.list_models('image_*'))}.")
    tag = os.path.basename(os.path.normpath(spec))
    path = os.path.join(out_dir, f"{model_name}_{tag}.keras")
    info_path = path[: -len(".keras")] + ".json"
    if os.path.isfile(path) and os.path.isfile(info_path):
        with open(info_path, encoding="utf-8") as f:
            return json.load(f)
    images = load_dataset(spec, seed=seed)  # its captions, if any, are not read
    # A one-word placeholder caption (an image-only model never reads it; a vocabulary
    # adapted on empty strings alone would be empty).
    data = PairedData(*(PairedSplit(resize_images(split.image, image_shape), np.full(len(split), "image"), split.label)
                        for split in (images.train, images.test)),
                      list(images.class_names), name=tag)
    epochs, batch_size = plan_schedule("image", len(data.train), tuple(image_shape)[:2],
                                       preferred=preferred_batch(model_name), epochs=epochs, batch_size=batch_size)
    ds = make_datasets(data, batch_size=batch_size, vocab_size=3, sequence_length=1, seed=seed)
    keras.utils.set_random_seed(seed)
    with training.precision_policy(precision):
        model = mmkeras.create_model(model_name, num_classes=ds.num_classes, image_shape=tuple(image_shape),
                                     image_augmentation="flip_translate" if augment else None)
    training.compile_model(model, learning_rate=training.cosine_schedule(
        learning_rate, epochs, ds.size("train"), batch_size))
    start = time.perf_counter()
    _, stats = training.fit(model, ds, epochs=epochs, callbacks=callbacks, verbose=2)
    info = {"model": model_name, "source": spec, "path": path, "num_classes": ds.num_classes,
            "n_train": ds.size("train"), "n_test": ds.size("test"),
            "test_accuracy": training.evaluate(model, ds)[0]["accuracy"],
            "total_seconds": time.perf_counter() - start, **stats}
    os.makedirs(out_dir, exist_ok=True)
    model.save(path)
    write_json(info_path, info)
    return info


def pretrain_for_rows(config, ds, names):
    """--pretrain-image for the selected rows `names`: ({("image", branch): .keras path},
    [info]) of an image-only model per image branch the fused rows use (or --pretrain-model's)."""
    if not config.pretrain_image:
        return {}, []
    fused = [n for n in names if not n.startswith(RECIPE_PREFIX) and mmkeras.model_family(n) == "fused"]
    if not fused:
        raise ValueError("--pretrain-image warm-starts the image branch of fused rows, but "
                         f"--models {config.models!r} selects none.")
    used = sorted({branches_of(n)["image"] for n in fused})
    models = [config.pretrain_model] if config.pretrain_model else [f"image_{b}" for b in used]
    for model_name in models:
        if mmkeras.model_family(model_name) != "image" or branches_of(model_name)["image"] not in used:
            raise ValueError(f"--pretrain-model {model_name!r} must be an image-only model whose branch a "
                             f"selected fused row uses: one of {', '.join(f'image_{b}' for b in used)}.")
    pretrained, infos = {}, []
    for model_name in models:
        print(f"\n== pretraining {model_name} on {config.pretrain_image}")
        info = pretrain_image_model(
            model_name, config.pretrain_image, image_shape=ds.image_shape,
            out_dir=os.path.join(config.out, "pretrain"),
            epochs=config.pretrain_epochs or config.epochs, batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            augment=config.augment, seed=config.seed,
            callbacks=callbacks_for(config, f"pretrain_{model_name}", []), precision=config.image_precision)
        pretrained[("image", branches_of(model_name)["image"])] = info["path"]
        infos.append(info)
    return pretrained, infos
