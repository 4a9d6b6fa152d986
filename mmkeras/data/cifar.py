"""Paired CIFAR: real CIFAR-10 / CIFAR-100 images with the package's captions."""

import numpy as np

from mmkeras.data.captions import make_captions
from mmkeras.data.images import load_cifar
from mmkeras.data.paired import PairedData, PairedSplit


def load_paired_cifar(name="cifar10", seed=0, caption_config=None, **loader_kwargs):
    """CIFAR images (see `load_cifar` for sources) each paired with a generated caption.

    Train and test captions come from separate seeded streams, so the same seed always
    gives the same pairs.
    """
    images = load_cifar(name, **loader_kwargs)
    streams = np.random.SeedSequence(seed).spawn(2)
    captions = [
        make_captions(labels, images.class_names, seed=stream, config=caption_config)
        for labels, stream in ((images.train_labels, streams[0]), (images.test_labels, streams[1]))
    ]
    return PairedData(
        PairedSplit(images.train_images, captions[0], images.train_labels),
        PairedSplit(images.test_images, captions[1], images.test_labels),
        list(images.class_names),
        name=name,
    )
