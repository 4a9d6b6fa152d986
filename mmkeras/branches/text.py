"""Text branches: lstm, bilstm, gru, cnn, transformer.

Every builder starts with the same stem (`embed_tokens`): `NonEmptyTokens` ->
explicit (B, T) bool mask -> `Embedding(vocab_size, embed_dim, mask_zero=True)`
named {prefix}_nonempty, {prefix}_mask, {prefix}_embedding. All use the mask so that
right-padding never changes `vector`.

The recurrent branches keep cuDNN-eligible settings so that they run on the fused
cuDNN kernel on GPUs: default activations (tanh / sigmoid), `recurrent_dropout=0`,
`unroll=False`, `use_bias=True` (and `reset_after=True` for the GRU), with right-padded
masks. Input `dropout` is compatible with cuDNN in Keras 3. Do not change these
without meaning to fall back to the much slower generic kernel.
"""

import copy

import keras

from mmkeras.branches.base import TextFeatures, embed_tokens, register_text_branch
from mmkeras.branches.text_layers import (
    AddPositionEmbedding,
    MaskedGlobalAveragePooling1D,
    MaskedGlobalMaxPooling1D,
    ZeroMaskedSteps,
)


# Default sizes of the three recurrent branches (each registers its own copy).
_RECURRENT_SIZES = {
    "small": {"embed_dim": 64, "units": 64, "dropout": 0.0},
    "base": {"embed_dim": 128, "units": 128, "dropout": 0.2},
}


def _recurrent_layer(cell, units, *, dropout, name):
    # cuDNN-eligible arguments only: see the module docstring.
    layer_class = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cell]
    return layer_class(
        units,
        dropout=dropout,
        recurrent_dropout=0.0,
        unroll=False,
        use_bias=True,
        return_sequences=True,
        return_state=True,
        name=name,
    )


def _zero_padded(sequence, mask, prefix):
    """Zero at padded steps on every device: the generic RNN kernel repeats the last
    output there while the cuDNN kernel writes zeros."""
    return ZeroMaskedSteps(attach_mask=True, name=f"{prefix}_sequence")([sequence, mask])


@register_text_branch("lstm", defaults=copy.deepcopy(_RECURRENT_SIZES))
def lstm(token_ids, *, vocab_size, sequence_length, prefix, embed_dim, units, dropout):
    """LSTM(units) over the masked embeddings.

    vector: (B, units), the state after the last real token (masking carries the state
        over padded steps).
    sequence: (B, T, units), the per-token outputs, zero at padded steps.
    Layers: stem + {prefix}_lstm, {prefix}_sequence.
    """
    x, mask = embed_tokens(token_ids, vocab_size=vocab_size, embed_dim=embed_dim, prefix=prefix)
    sequence, state_h, _ = _recurrent_layer("lstm", units, dropout=dropout, name=f"{prefix}_lstm")(
        x
    )
    return TextFeatures(vector=state_h, sequence=_zero_padded(sequence, mask, prefix), mask=mask)


@register_text_branch("bilstm", defaults=copy.deepcopy(_RECURRENT_SIZES))
def bilstm(token_ids, *, vocab_size, sequence_length, prefix, embed_dim, units, dropout):
    """Bidirectional LSTM(units) over the masked embeddings.

    vector: (B, 2 * units), forward state after the last real token concatenated with
        the backward state after the first token (the backward pass skips the padding).
    sequence: (B, T, 2 * units), per-token forward and backward outputs, zero at
        padded steps.
    Layers: stem + {prefix}_bilstm (wrapping forward_/backward_{prefix}_lstm),
    {prefix}_bilstm_state, {prefix}_sequence.
    """
    x, mask = embed_tokens(token_ids, vocab_size=vocab_size, embed_dim=embed_dim, prefix=prefix)
    sequence, forward_h, _, backward_h, _ = keras.layers.Bidirectional(
        _recurrent_layer("lstm", units, dropout=dropout, name=f"{prefix}_lstm"),
        name=f"{prefix}_bilstm",
    )(x)
    vector = keras.layers.Concatenate(name=f"{prefix}_bilstm_state")([forward_h, backward_h])
    return TextFeatures(vector=vector, sequence=_zero_padded(sequence, mask, prefix), mask=mask)


@register_text_branch("gru", defaults=copy.deepcopy(_RECURRENT_SIZES))
def gru(token_ids, *, vocab_size, sequence_length, prefix, embed_dim, units, dropout):
    """GRU(units) over the masked embeddings.

    vector: (B, units), the state after the last real token.
    sequence: (B, T, units), the per-token outputs, zero at padded steps.
    Layers: stem + {prefix}_gru, {prefix}_sequence.
    """
    x, mask = embed_tokens(token_ids, vocab_size=vocab_size, embed_dim=embed_dim, prefix=prefix)
    sequence, state = _recurrent_layer("gru", units, dropout=dropout, name=f"{prefix}_gru")(x)
    return TextFeatures(vector=state, sequence=_zero_padded(sequence, mask, prefix), mask=mask)


@register_text_branch(
    "cnn",
    defaults={
        "small": {"embed_dim": 64, "filters": 64, "kernel_sizes": (3, 4, 5), "dropout": 0.0},
        "base": {"embed_dim": 128, "filters": 128, "kernel_sizes": (3, 4, 5), "dropout": 0.3},
    },
)
def cnn(
    token_ids, *, vocab_size, sequence_length, prefix, embed_dim, filters, kernel_sizes, dropout
):
    """Kim-style text CNN: parallel Conv1D(filters, k, relu) for k in `kernel_sizes`.

    Padded embeddings are zeroed before the convolutions ("same" padding then sees the
    same zeros past the end of the text however long the padding is) and conv outputs at
    padded steps are excluded from the max, so padding cannot change the result.

    vector: (B, filters * len(kernel_sizes)), max over real tokens (+ dropout).
    sequence: (B, T, filters * len(kernel_sizes)), conv outputs, zero at padded steps.
    Layers: stem + {prefix}_embedding_masked, {prefix}_conv{k}, {prefix}_conv_concat,
    {prefix}_sequence, {prefix}_pool[, {prefix}_dropout].
    """
    kernel_sizes = tuple(kernel_sizes)
    if not kernel_sizes or len(set(kernel_sizes)) != len(kernel_sizes):
        raise ValueError(
            "`kernel_sizes` must be a non-empty sequence of distinct ints. Received "
            f"kernel_sizes={kernel_sizes!r}"
        )
    x, mask = embed_tokens(token_ids, vocab_size=vocab_size, embed_dim=embed_dim, prefix=prefix)
    x = ZeroMaskedSteps(attach_mask=False, name=f"{prefix}_embedding_masked")([x, mask])
    convs = [
        keras.layers.Conv1D(
            filters, k, padding="same", activation="relu", name=f"{prefix}_conv{k}"
        )(x)
        for k in kernel_sizes
    ]
    if len(convs) > 1:
        x = keras.layers.Concatenate(name=f"{prefix}_conv_concat")(convs)
    else:
        x = convs[0]
    sequence = ZeroMaskedSteps(attach_mask=True, name=f"{prefix}_sequence")([x, mask])
    vector = MaskedGlobalMaxPooling1D(name=f"{prefix}_pool")([sequence, mask])
    if dropout:
        vector = keras.layers.Dropout(dropout, name=f"{prefix}_dropout")(vector)
    return TextFeatures(vector=vector, sequence=sequence, mask=mask)


def _encoder_block(x, mask, *, num_heads, ff_dim, dropout, name):
    """Post-norm Transformer encoder block (as keras-hub's `TransformerEncoder`)."""
    dim = x.shape[-1]
    attention = keras.layers.MultiHeadAttention(
        num_heads, key_dim=dim // num_heads, dropout=dropout, name=f"{name}_attention"
    )
    # `x` carries the padding mask as its Keras mask, which MultiHeadAttention uses for
    # queries and keys; the explicit `value_mask` makes the key mask independent of
    # Keras mask propagation.
    y = attention(x, x, value_mask=mask)
    y = keras.layers.Dropout(dropout, name=f"{name}_attention_dropout")(y)
    x = keras.layers.Add(name=f"{name}_attention_add")([x, y])
    x = keras.layers.LayerNormalization(epsilon=1e-5, name=f"{name}_attention_norm")(x)
    y = keras.layers.Dense(ff_dim, activation="gelu", name=f"{name}_ffn_1")(x)
    y = keras.layers.Dense(dim, name=f"{name}_ffn_2")(y)
    y = keras.layers.Dropout(dropout, name=f"{name}_ffn_dropout")(y)
    x = keras.layers.Add(name=f"{name}_ffn_add")([x, y])
    return keras.layers.LayerNormalization(epsilon=1e-5, name=f"{name}_ffn_norm")(x)


@register_text_branch(
    "transformer",
    defaults={
        "small": {"embed_dim": 64, "num_layers": 2, "num_heads": 4, "ff_dim": 128, "dropout": 0.1},
        "base": {"embed_dim": 128, "num_layers": 4, "num_heads": 4, "ff_dim": 256, "dropout": 0.1},
    },
)
def transformer(
    token_ids, *, vocab_size, sequence_length, prefix, embed_dim, num_layers, num_heads, ff_dim,
    dropout,
):
    """Token + learned position embedding, `num_layers` encoder blocks, masked mean pool.

    vector: (B, embed_dim), mean of the last block's outputs over real tokens.
    sequence: (B, T, embed_dim), the last block's outputs, zero at padded steps.
    Layers: stem + {prefix}_position_embedding, {prefix}_embedding_dropout,
    {prefix}_encoder{i}_*, {prefix}_sequence, {prefix}_pool.
    """
    if embed_dim % num_heads:
        raise ValueError(
            "`embed_dim` must be divisible by `num_heads`. Received "
            f"embed_dim={embed_dim!r}, num_heads={num_heads!r}"
        )
    x, mask = embed_tokens(token_ids, vocab_size=vocab_size, embed_dim=embed_dim, prefix=prefix)
    x = AddPositionEmbedding(sequence_length, name=f"{prefix}_position_embedding")(x)
    x = keras.layers.Dropout(dropout, name=f"{prefix}_embedding_dropout")(x)
    for i in range(1, num_layers + 1):
        x = _encoder_block(
            x,
            mask,
            num_heads=num_heads,
            ff_dim=ff_dim,
            dropout=dropout,
            name=f"{prefix}_encoder{i}",
        )
    sequence = ZeroMaskedSteps(attach_mask=True, name=f"{prefix}_sequence")([x, mask])
    vector = MaskedGlobalAveragePooling1D(name=f"{prefix}_pool")([sequence, mask])
    return TextFeatures(vector=vector, sequence=sequence, mask=mask)
