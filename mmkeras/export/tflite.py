"""TFLite (LiteRT) conversion of an export, and what does not convert (TF 2.21, Keras 3.15).

Observed outcomes, reproduced by tests/test_export.py:

- The raw-input `serving_default` signature does not convert.
  * Built-in ops only: the converter stops at the masked LSTM's while loop,
    "'tf.TensorListReserve' op requires element_shape to be static during TF Lite
    transformation pass ... Lowering tensor list ops is failed. Please consider using
    Select TF ops and disabling `_experimental_lower_tensor_list_ops`" (the string ops of
    the text vectorization would need Select TF ops too).
  * With Select TF ops (Flex): "'tf.ScaleAndTranslate' op is neither a custom op nor a
    flex op": the antialiased resize has no TFLite kernel at all.
- The token-level model (`model.keras`: float pixels at the model's size, int32 token ids)
  with a dynamic batch converts only with Select TF ops (FlexTensorListReserve,
  FlexTensorListSetItem for the LSTM loop), and the `tf.lite.Interpreter` shipped with the
  tensorflow wheel cannot run it ("Select TensorFlow op(s) ... not supported by this
  interpreter"): it needs the Flex delegate (tensorflow-lite-select-tf-ops on Android).
- Workaround, what `convert_tflite` does: the token-level model with a *static* batch
  size converts with built-in ops only (the LSTM becomes a TFLite WHILE loop) and matches
  Keras to 1e-7. The client then does the preprocessing the SavedModel does in-graph:
  fit the image to the model's input size (aspect kept, black padding: see
  mmkeras.data.streaming.fit_pixels), lowercase + strip punctuation + split on whitespace,
  look tokens up in `vocabulary.txt` (line i = id i, unknown = 1), pad / truncate to
  `sequence_length` with 0, and give an empty row one token 1 ([UNK]).
"""

import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from mmkeras.export.directory import KERAS_FILE, read_metadata
from mmkeras.export.serving import MAIN_OUTPUT, SIGNATURE

INPUTS = ("tokens", "raw")


def _converter_for_tokens(export_dir, batch_size, workdir):
    model = keras.models.load_model(str(Path(export_dir) / KERAS_FILE))
    meta = read_metadata(export_dir)
    if not meta["image"]["input_size"]:
        raise ValueError(f"The model in '{export_dir}' takes images of any size; TFLite needs a fixed one. "
                         "Export it with image_size=(height, width).")
    height, width = meta["image"]["input_size"]
    spec = {"image": tf.TensorSpec([batch_size, height, width, 3], tf.float32, name="image"),
            "text": tf.TensorSpec([batch_size, meta["text"]["sequence_length"]], tf.int32, name="text")}

    def serve(inputs):
        outputs = model(inputs, training=False)
        return {"probabilities": outputs[MAIN_OUTPUT] if isinstance(outputs, dict) else outputs}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve, input_signature=[spec])
    archive.write_out(workdir, verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(workdir, signature_keys=[SIGNATURE])


def convert_tflite(export_dir, output=None, *, inputs="tokens", batch_size=1, select_tf_ops=False):
    """Convert an `export_model` directory to a .tflite file; returns its Path.

    inputs: "tokens" converts `model.keras` (float32 image [batch_size, H, W, 3] in
        [0, 255], int32 text [batch_size, T]) -> probabilities: the path that works.
        "raw" converts the raw-input `serving_default` as is; it fails (see the module
        docstring) and the converter's error is raised unchanged.
    batch_size: the static batch of the token-level model (None: dynamic, which needs
        select_tf_ops=True and a Flex-enabled runtime).
    select_tf_ops: also allow Select TF (Flex) ops.
    output: default `<export_dir>/model_<inputs>.tflite`.
    """
    if inputs not in INPUTS:
        raise ValueError(f"Unknown inputs {inputs!r}. Received inputs={inputs!r}; expected one of: "
                         f"{', '.join(INPUTS)}.")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"`batch_size` must be a positive int or None. Received batch_size={batch_size!r}.")
    export_dir = Path(export_dir)
    output = Path(output) if output is not None else export_dir / f"model_{inputs}.tflite"
    with tempfile.TemporaryDirectory() as workdir:
        if inputs == "tokens":
            converter = _converter_for_tokens(export_dir, batch_size, workdir)
        else:
            converter = tf.lite.TFLiteConverter.from_saved_model(str(export_dir), signature_keys=[SIGNATURE])
        if select_tf_ops:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                                   tf.lite.OpsSet.SELECT_TF_OPS]
        flatbuffer = converter.convert()
    output.write_bytes(flatbuffer)
    return output
