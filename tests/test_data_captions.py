"""Captions: determinism, partial informativeness (text-only accuracy in band), CIFAR-100."""

import re

import numpy as np
import pytest

from mmkeras.data.captions import (CIFAR10_ATTRIBUTES, CIFAR100_SUPERCLASSES, CaptionConfig,
                                   class_attributes, make_captions)

CIFAR10 = sorted(CIFAR10_ATTRIBUTES)
CIFAR100 = sorted(f for fines in CIFAR100_SUPERCLASSES.values() for f in fines)


def naive_bayes_accuracy(train_text, train_y, test_text, test_y, num_classes):
    """A good text-only model: multinomial naive Bayes on words and word pairs."""

    def feats(s):
        w = re.findall(r"[a-z]+", s.lower())
        return w + [a + "_" + b for a, b in zip(w, w[1:])]

    vocab = {}
    for s in train_text:
        for f in feats(s):
            vocab.setdefault(f, len(vocab))
    counts = np.ones((num_classes, len(vocab)))
    for s, y in zip(train_text, train_y):
        for f in feats(s):
            counts[y, vocab[f]] += 1
    logp = np.log(counts / counts.sum(1, keepdims=True))
    prior = np.log(np.bincount(train_y, minlength=num_classes) + 1.0)
    pred = [np.argmax(prior + sum((logp[:, vocab[f]] for f in feats(s) if f in vocab), 0))
            for s in test_text]
    return float(np.mean(np.array(pred) == test_y))


def test_deterministic_in_seed():
    labels = np.arange(50) % 10
    a, b = make_captions(labels, CIFAR10, seed=3), make_captions(labels, CIFAR10, seed=3)
    c = make_captions(labels, CIFAR10, seed=4)
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()


def test_default_captions_partially_informative():
    rng = np.random.default_rng(0)
    ytr, yte = rng.integers(0, 10, 6000), rng.integers(0, 10, 2000)
    acc = naive_bayes_accuracy(make_captions(ytr, CIFAR10, 1), ytr, make_captions(yte, CIFAR10, 2), yte, 10)
    assert 0.40 <= acc <= 0.75, acc


def test_noise_settings_move_informativeness():
    rng = np.random.default_rng(0)
    ytr, yte = rng.integers(0, 10, 4000), rng.integers(0, 10, 1000)

    def acc(cfg):
        return naive_bayes_accuracy(make_captions(ytr, CIFAR10, 1, cfg), ytr,
                                    make_captions(yte, CIFAR10, 2, cfg), yte, 10)

    clean, noisy = acc(CaptionConfig(phrase_noise=0.0, empty_fraction=0.0)), acc(CaptionConfig(phrase_noise=0.5, empty_fraction=0.4))
    assert clean > noisy + 0.2
    blank = make_captions(ytr[:200], CIFAR10, 0, CaptionConfig(empty_fraction=1.0))
    assert not any(p.lstrip("!") in s for s in blank for ps in CIFAR10_ATTRIBUTES.values() for p in ps)


def test_shared_attributes_and_varied_templates():
    caps = make_captions(np.full(300, CIFAR10.index("cat")), CIFAR10, seed=0)
    assert any("four legs" in c for c in caps)  # shared with deer, dog, horse
    assert len({c.split(" something")[0].split(" an object")[0] for c in caps}) >= 4
    assert len({len(c.split()) for c in caps}) >= 5


def test_cifar100_uses_superclass_vocabulary():
    table = class_attributes(CIFAR100)
    assert table["dolphin"] == table["whale"]  # same superclass, same attribute vocabulary
    assert table["dolphin"] != table["tulip"]
    rng = np.random.default_rng(0)
    ytr, yte = rng.integers(0, 100, 8000), rng.integers(0, 100, 2000)
    acc = naive_bayes_accuracy(make_captions(ytr, CIFAR100, 1), ytr, make_captions(yte, CIFAR100, 2), yte, 100)
    assert 0.03 < acc < 0.5  # well above chance (1%), far from solving it


def test_unknown_class_names_get_pool_attributes():
    caps = make_captions(np.array([0, 1, 2, 0]), ["zebra_crossing", "teapot", "kite"], seed=0)
    assert len(caps) == 4 and all(isinstance(c, str) for c in caps)


@pytest.mark.parametrize("kwargs, received", [
    (dict(phrase_noise=1.5), "1.5"), (dict(min_phrases=3, max_phrases=2), "min_phrases=3"),
    (dict(shared_weight=0), "0"),
])
def test_bad_config(kwargs, received):
    with pytest.raises(ValueError, match=received):
        CaptionConfig(**kwargs)


def test_label_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        make_captions(np.array([0, 12]), CIFAR10)
