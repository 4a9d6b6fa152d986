"""Data: the dataset registry, image sources, captions, the paired on-disk format, manifests
(your own data, images streamed from disk), sharded TFRecords, synthetic data, pipelines."""

from mmkeras.data.captions import CaptionConfig, class_attributes, make_captions
from mmkeras.data.cifar import load_paired_cifar
from mmkeras.data.images import ImageSet, load_cifar, load_image_folder, load_image_tarball
from mmkeras.data.manifest import ManifestData, ManifestError, ManifestSplit, load_manifest
from mmkeras.data.paired import PairedData, PairedSplit, load_paired, save_paired
from mmkeras.data.pipeline import (PairedDatasets, make_dataset, make_datasets,
                                   make_text_vectorizer, vectorize)
from mmkeras.data.registry import (describe_datasets, list_datasets, load_dataset,
                                   register_dataset, resolve_dataset, take_subset)
from mmkeras.data.streaming import ImageStream
from mmkeras.data.synthetic import make_synthetic
from mmkeras.data.tfrecords import TFRecordData, read_tfrecords, write_tfrecords

__all__ = [
    "CaptionConfig", "ImageSet", "ImageStream", "ManifestData", "ManifestError", "ManifestSplit",
    "PairedData", "PairedDatasets", "PairedSplit", "TFRecordData",
    "class_attributes", "describe_datasets", "list_datasets", "load_cifar", "load_dataset",
    "load_image_folder", "load_image_tarball", "load_manifest", "load_paired", "load_paired_cifar",
    "make_captions", "make_dataset", "make_datasets", "make_synthetic", "make_text_vectorizer",
    "read_tfrecords", "register_dataset", "resolve_dataset", "save_paired", "take_subset", "vectorize",
    "write_tfrecords",
]
