"""The raw-input serving graph: strings and uint8 pixels in, class probabilities out.

Every step a client would otherwise have to repeat (and would get subtly wrong) runs
inside the exported graph: UTF-8 repair, text vectorization with the adapted vocabulary,
the empty-text guard, resizing to the model's input size and the cast to float pixels.
Raw `tf.*` ops are fine here: this is a traced `tf.function`, not a symbolic Keras graph.

Signatures written by `export_model` (all take a batch; row i of `image` goes with row i
of `text`):

- `serving_default`: image uint8 [B, h, w, 3] (any h, w >= 1), text string [B] (raw
  UTF-8) -> probabilities float32 [B, C], class_id int64 [B], class_name string [B].
- `serving_float`: the same with image float32 [B, h, w, 3] pixels in [0, 255]; NaN
  pixels read as 0 and values are clipped to [0, 255] first.
- `tokenize`: text string [B] -> token_ids int32 [B, T], exactly what the model sees.
- `explain`: the inputs of `serving_default` -> its three outputs, plus
  image_contribution and text_contribution float32 [B] (exact Shapley values of each
  modality for the predicted class, `mmkeras.explain.modality_contributions`),
  p_neither float32 [B] (that class's probability with both inputs blanked, so
  image_contribution + text_contribution = probability - p_neither), token_scores
  float32 [B, T] (integrated gradients of each token, 0 at padding,
  `mmkeras.explain.token_attributions` with EXPLAIN_STEPS steps) and tokens string [B, T]
  (each id's vocabulary entry, "" at padding). Bad inputs fail as in `serving_default`.
"""

import keras
import tensorflow as tf

from mmkeras.branches.text_layers import NonEmptyTokens
from mmkeras.data.streaming import fit_pixels
from mmkeras.explain.attributions import DEFAULT_STEPS, token_integrated_gradients
from mmkeras.explain.contributions import PASSES, modality_probabilities, shapley

SIGNATURE = "serving_default"
FLOAT_SIGNATURE = "serving_float"
TOKENIZE_SIGNATURE = "tokenize"
EXPLAIN_SIGNATURE = "explain"
SIGNATURES = (SIGNATURE, FLOAT_SIGNATURE, TOKENIZE_SIGNATURE, EXPLAIN_SIGNATURE)
OUTPUTS = ("probabilities", "class_id", "class_name")
EXPLAIN_OUTPUTS = OUTPUTS + ("image_contribution", "text_contribution", "p_neither", "token_scores", "tokens")
# Integration steps of the served token scores (each costs about one forward and
# backward pass per example; see docs/export.md for the measured cost).
EXPLAIN_STEPS = DEFAULT_STEPS
# The main head of every mmkeras model; auxiliary heads (multitask) are not served.
MAIN_OUTPUT = "label"
REPLACEMENT_CHARACTER = 0xFFFD


def _input_shapes(model):
    if not isinstance(model.input, dict) or set(model.input) != {"image", "text"}:
        received = sorted(model.input) if isinstance(model.input, dict) else type(model.input).__name__
        raise ValueError("export needs a model with dict inputs {'image', 'text'} (the mmkeras contract). "
                         f"Model '{model.name}' has inputs {received}.")
    return tuple(model.input["image"].shape), tuple(model.input["text"].shape)


def model_image_size(model):
    """(height, width) of the model's image input, or None when it takes any size."""
    image_shape, _ = _input_shapes(model)
    if len(image_shape) != 4 or image_shape[-1] != 3:
        raise ValueError(f"The 'image' input of model '{model.name}' must be (batch, height, width, 3). "
                         f"Received shape {image_shape}.")
    height, width = image_shape[1:3]
    return None if height is None or width is None else (int(height), int(width))


def model_num_classes(model):
    """C, the width of the main head ("label")."""
    output = model.output[MAIN_OUTPUT] if isinstance(model.output, dict) else model.output
    return int(output.shape[-1])


def vectorizer_settings(vectorizer):
    """The JSON-safe settings of an adapted `TextVectorization` (its vocabulary excluded)."""
    if not isinstance(vectorizer, keras.layers.TextVectorization):
        raise TypeError("`vectorizer` must be an adapted keras.layers.TextVectorization. "
                        f"Received {type(vectorizer).__name__}.")
    config = vectorizer.get_config()
    keys = ("standardize", "split", "ngrams", "output_mode", "output_sequence_length", "max_tokens")
    return {k: (config.get(k) if config.get(k) is None or isinstance(config.get(k), (str, int, bool))
                else repr(config.get(k))) for k in keys}


def check_compatible(model, vectorizer, class_names):
    """Errors that would otherwise surface only when the export is served."""
    _, text_shape = _input_shapes(model)
    settings = vectorizer_settings(vectorizer)
    if settings["output_mode"] != "int":
        raise ValueError(f"The vectorizer must produce token ids (output_mode='int'). "
                         f"Received output_mode={settings['output_mode']!r}.")
    length = settings["output_sequence_length"]
    if length is None:
        raise ValueError("The vectorizer must pad to a fixed length (output_sequence_length=...); "
                         "received output_sequence_length=None.")
    if len(text_shape) != 2 or text_shape[1] not in (None, length):
        raise ValueError(f"The vectorizer pads to {length} tokens but the 'text' input of model "
                         f"'{model.name}' has shape {text_shape}.")
    if len(vectorizer.get_vocabulary()) < 3:
        raise ValueError("The vectorizer has no vocabulary: adapt it (or pass the `vectorizer` of "
                         "make_datasets) before exporting.")
    num_classes = model_num_classes(model)
    if len(class_names) != num_classes or len(set(class_names)) != len(class_names):
        raise ValueError(f"`class_names` must hold {num_classes} distinct names (the width of the "
                         f"'{MAIN_OUTPUT}' head of '{model.name}'). Received {len(class_names)}: "
                         f"{list(class_names)[:10]}.")
    model_image_size(model)


def make_tokenizer(vectorizer):
    """texts (string [B]) -> token ids (int32 [B, T]) as the exported graph computes them.

    Invalid UTF-8 sequences become U+FFFD first, so every token is valid UTF-8 and the
    result never depends on how the string ops treat stray bytes; a text with
    no known or unknown word (empty, whitespace, punctuation only) becomes one [UNK] token,
    so no row is ever all padding (the cuDNN LSTM kernel fails on fully masked rows).
    """
    guard = NonEmptyTokens(name="serving_nonempty")

    def tokenize(texts):
        texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace",
                                             replacement_char=REPLACEMENT_CHARACTER)
        return guard(tf.cast(vectorizer(texts), tf.int32))

    return tokenize


def _sanitize_float_pixels(image):
    image = tf.where(tf.math.is_nan(image), tf.zeros_like(image), image)
    return tf.clip_by_value(image, 0.0, 255.0)


def _resize(image, size):
    """Float pixels [B, h, w, 3] in [0, 255] fitted to `size` exactly as the training
    pipeline fits a manifest's images (streaming.fit_pixels: aspect kept, black padding),
    so a non-square image is not stretched."""
    return image if size is None else fit_pixels(image, size)


def make_serving_functions(model, vectorizer, class_names, image_size=None):
    """{signature name: (fn, input_signature)} for the raw-input endpoints of `model`.

    image_size: (height, width) images are resized to; defaults to the model's input size
        (a model that takes any size gets the images at their own size).
    """
    check_compatible(model, vectorizer, class_names)
    if image_size is not None and (len(tuple(image_size)) != 2 or not all(
            isinstance(s, int) and s >= 1 for s in image_size)):
        raise ValueError("`image_size` must be (height, width), two positive ints. "
                         f"Received image_size={image_size!r}.")
    size = tuple(image_size) if image_size is not None else model_image_size(model)
    names = tf.constant([str(n) for n in class_names])
    vocabulary = tf.constant(vectorizer.get_vocabulary())
    tokenize = make_tokenizer(vectorizer)

    def checked(image, text):
        """(pixels at the model's size, token ids) after the checks every signature makes."""
        shape = tf.shape(image)
        checks = [
            tf.debugging.assert_equal(tf.rank(image), 4,
                                      message="`image` must be a batch [B, height, width, 3]"),
            tf.debugging.assert_equal(tf.rank(text), 1, message="`text` must be a batch of strings [B]"),
            tf.debugging.assert_equal(
                shape[-1], 3, message="images must have 3 channels (RGB); convert grayscale or RGBA "
                                      "first (mmkeras.predict does)"),
            tf.debugging.assert_equal(
                shape[0], tf.shape(text)[0],
                message="image and text batch sizes differ: row i of `image` goes with row i of "
                        "`text` (give '' as the text, or any image, for an input the model ignores)"),
            tf.debugging.assert_positive(shape[1:3], message="images must be at least 1x1 pixels"),
        ]
        with tf.control_dependencies([c for c in checks if c is not None]):
            return _resize(tf.identity(image), size), tokenize(text)

    def labelled(probabilities):
        probabilities = tf.debugging.assert_all_finite(
            tf.cast(probabilities, tf.float32), "the model produced non-finite probabilities")
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {"probabilities": probabilities, "class_id": class_id,
                "class_name": tf.gather(names, class_id)}

    def predict(image, text):
        pixels, tokens = checked(image, text)
        outputs = model({"image": pixels, "text": tokens}, training=False)
        return labelled(outputs[MAIN_OUTPUT] if isinstance(outputs, dict) else outputs)

    def explain(image, text):
        pixels, tokens = checked(image, text)
        passes = modality_probabilities(model, pixels, tokens)
        out = labelled(passes["p_both"])
        class_id = tf.cast(out["class_id"], tf.int32)
        picked = [tf.gather(passes[name], class_id, batch_dims=1) for name in PASSES]
        out["image_contribution"], out["text_contribution"] = shapley(*picked)
        out["p_neither"] = picked[-1]
        out["token_scores"], _, _ = token_integrated_gradients(model, pixels, tokens, class_id, EXPLAIN_STEPS)
        out["tokens"] = tf.gather(vocabulary, tokens)
        return out

    def serve_uint8(inputs):
        return predict(tf.cast(inputs["image"], tf.float32), inputs["text"])

    def serve_float(inputs):
        return predict(_sanitize_float_pixels(inputs["image"]), inputs["text"])

    def serve_tokenize(inputs):
        return {"token_ids": tokenize(inputs["text"])}

    def serve_explain(inputs):
        return explain(tf.cast(inputs["image"], tf.float32), inputs["text"])

    text_spec = tf.TensorSpec([None], tf.string, name="text")
    uint8_spec = {"image": tf.TensorSpec([None, None, None, 3], tf.uint8, name="image"), "text": text_spec}
    return {
        SIGNATURE: (serve_uint8, [uint8_spec]),
        FLOAT_SIGNATURE: (serve_float, [{"image": tf.TensorSpec([None, None, None, 3], tf.float32,
                                                                name="image"),
                                         "text": text_spec}]),
        TOKENIZE_SIGNATURE: (serve_tokenize, [{"text": text_spec}]),
        EXPLAIN_SIGNATURE: (serve_explain, [uint8_spec]),
    }
