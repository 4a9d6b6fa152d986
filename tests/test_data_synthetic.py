"""The synthetic set: deterministic, and neither modality alone is enough."""

import numpy as np

from mmkeras.data import make_synthetic
from mmkeras.data.synthetic import MATERIALS, SHAPES


def test_deterministic_and_shaped():
    a, b = make_synthetic(50, 10, image_size=20, seed=1), make_synthetic(50, 10, image_size=20, seed=1)
    assert np.array_equal(a.train.image, b.train.image) and a.train.text.tolist() == b.train.text.tolist()
    assert a.train.image.shape == (50, 20, 20, 3) and a.num_classes == 6
    assert not np.array_equal(a.train.image, make_synthetic(50, 10, image_size=20, seed=2).train.image)


def test_text_names_material_never_shape():
    data = make_synthetic(300, 10, seed=0)
    for text, label in zip(data.train.text, data.train.label):
        assert not any(s in text for s in SHAPES)
    material_ok = [MATERIALS[l // 3][:4] in t or ("wood" in t) == (l < 3) for t, l in zip(data.train.text, data.train.label)]
    assert np.mean(material_ok) > 0.9


def test_shape_visible_in_image():
    data = make_synthetic(300, 10, image_size=24, noise=0.0, seed=0)
    # Filled area differs by shape: squares fill more of their box than triangles.
    fg = (np.abs(data.train.image.astype(int) - 128).sum(-1) > 60).mean((1, 2))
    shape = data.train.label % 3
    assert fg[shape == 1].mean() > fg[shape == 2].mean()
