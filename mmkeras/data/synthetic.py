"""A synthetic paired set generated in code, for tests and the offline demo.

Each image shows one shape (circle, square or triangle) in a random colour at a random
place; each caption names the shape's material (wooden or metal) and its colour, never
its shape. The label is (shape, material), so neither modality alone is enough: an
image-only model tops out near 50% (shape known, material a coin flip), a text-only model
near 33% (material known, shape unknown), and a fused model can approach 100%.
"""

import numpy as np

from mmkeras.data.paired import PairedData, PairedSplit

SHAPES = ("circle", "square", "triangle")
MATERIALS = ("wooden", "metal")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 220), "yellow": (230, 210, 40)}
TEMPLATES = ("a {m} thing, painted {c}.", "something {c} made of {m2}.", "a {c} object, {m}.",
             "this {m} piece is {c}.")


def _draw(rng, shape, size):
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    r = rng.uniform(0.18, 0.32)
    cy, cx = rng.uniform(r, 1 - r, size=2)
    if shape == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    elif shape == "square":
        mask = (np.abs(yy - cy) <= r * 0.8) & (np.abs(xx - cx) <= r * 0.8)
    else:  # triangle: apex up, base at cy + r
        mask = (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
    return mask


def make_synthetic(n_train=2000, n_test=500, image_size=32, noise=0.1, phrase_noise=0.05, seed=0):
    """The synthetic paired set as a PairedData (6 classes: material x shape)."""
    if image_size < 8:
        raise ValueError(f"`image_size` must be >= 8. Received image_size={image_size}.")
    class_names = [f"{m}_{s}" for m in MATERIALS for s in SHAPES]
    rng = np.random.default_rng(seed)

    def split(n):
        labels = rng.integers(0, len(class_names), size=n).astype(np.int64)
        images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
        texts = []
        colour_names = list(COLOURS)
        for i, label in enumerate(labels):
            material, shape = MATERIALS[label // len(SHAPES)], SHAPES[label % len(SHAPES)]
            colour = colour_names[rng.integers(len(colour_names))]
            background = rng.normal(128, 255 * noise, size=(image_size, image_size, 3))
            mask = _draw(rng, shape, image_size)
            background[mask] = np.array(COLOURS[colour]) + rng.normal(0, 255 * noise, size=(mask.sum(), 3))
            images[i] = np.clip(background, 0, 255).astype(np.uint8)
            if rng.random() < phrase_noise:
                material = MATERIALS[rng.integers(len(MATERIALS))]
            template = TEMPLATES[rng.integers(len(TEMPLATES))]
            texts.append(template.format(m=material, c=colour, m2="wood" if material == "wooden" else "metal"))
        return PairedSplit(images, np.array(texts, dtype=np.str_), labels)

    train = split(n_train)
    test = split(n_test)
    return PairedData(train, test, class_names, name="synthetic")
