"""Export: SavedModel directories that serve raw images and strings, and TFLite.

- `export_model(model, path, vectorizer=, class_names=)`: the raw-input SavedModel (its
  `explain` signature also serves what each modality and each token contributed) plus
  `model.keras`, `vocabulary.txt` and `mmkeras.json`, written atomically (directory.py).
- `export_inference(model, path)`: the token-level SavedModel (`serve`, dict in, dict out).
- `convert_tflite(export_dir)`: the token-level model as .tflite (tflite.py says what
  does not convert).
- `python mmkeras/export/latency.py DIR`: size and latency from a TensorFlow-only process.
"""

from mmkeras.export.archive import export_inference
from mmkeras.export.directory import (default_export_path, export_model, load_vectorizer,
                                      read_metadata, verify_export)
from mmkeras.export.serving import (EXPLAIN_SIGNATURE, FLOAT_SIGNATURE, SIGNATURE, TOKENIZE_SIGNATURE,
                                    make_serving_functions, make_tokenizer)
from mmkeras.export.tflite import convert_tflite

__all__ = [
    "EXPLAIN_SIGNATURE", "FLOAT_SIGNATURE", "SIGNATURE", "TOKENIZE_SIGNATURE", "convert_tflite",
    "default_export_path",
    "export_inference", "export_model", "load_vectorizer", "make_serving_functions",
    "make_tokenizer", "read_metadata", "verify_export",
]
