"""Copy a branch's weights between models by layer name, and freeze a branch."""

import keras
import numpy as np


def _load(source):
    """The model `source` is (a test-time augmentation wrapper gives the model inside)."""
    from mmkeras.models.tta import unwrap_tta

    if isinstance(source, keras.Model):
        return unwrap_tta(source)
    if isinstance(source, str):
        return unwrap_tta(keras.models.load_model(source))
    raise ValueError(f"An init source must be a keras.Model or a .keras path. Received {type(source).__name__}.")


def _prefixed(model, prefix):
    return {l.name: l for l in model.layers if l.name.startswith(prefix + "_") and l.weights}


def transfer_weights(source, target, prefix):
    """Copy weights of the `prefix_*` layers of `source` into the same-named layers of `target`.

    Returns the copied layer names. Raises if no layer matches or a shape disagrees, so a
    silent no-op (the wrong branch type, say) cannot happen. One disagreement is bridged:
    a target that takes *more* input channels (early fusion adds text channels to the
    pixels) gets the source's weights in its leading channels and zeros where those read
    the extra channels (see `_extend`), so it starts out computing what the source did.
    """
    source = _load(source)
    src, dst = _prefixed(source, prefix), _prefixed(target, prefix)
    common = sorted(set(src) & set(dst))
    if not common:
        raise ValueError(
            f"No '{prefix}_*' layer of model '{source.name}' matches one of model '{target.name}'. "
            f"Source has {sorted(src)[:8]}, target has {sorted(dst)[:8]}: build both with the same "
            f"{prefix} branch and options."
        )
    for name in common:
        s, d = src[name].get_weights(), dst[name].get_weights()
        shapes = ([w.shape for w in s], [w.shape for w in d])
        if shapes[0] != shapes[1]:
            s = [_extend(a, b) for a, b in zip(s, d)] if len(s) == len(d) else None
            if s is None or any(w is None for w in s):
                raise ValueError(f"Layer '{name}': weight shapes differ, source {shapes[0]} vs target {shapes[1]}.")
        dst[name].set_weights(s)
    return common


def _extend(weight, target):
    """`weight` written into the leading block of `target`'s own values (a target that
    takes more input channels: early fusion adds text channels to the pixels); None when
    `weight` is larger along some axis or the ranks differ.

    A 4-D convolution kernel also gets zeros where its leading output channels would read
    the extra input channels, so those outputs are exactly the source's: the extra
    channels' other weights then meet only the zeros of the next such kernel.
    """
    if weight.shape == target.shape:
        return weight
    if weight.ndim != target.ndim or any(a > b for a, b in zip(weight.shape, target.shape)):
        return None
    out = np.array(target, copy=True)
    out[tuple(slice(0, n) for n in weight.shape)] = weight
    if weight.ndim == 4:
        out[:, :, weight.shape[2]:, : weight.shape[3]] = 0
    return out


def freeze_prefix(model, prefix):
    """Make every `prefix_*` layer non-trainable (recompile afterwards)."""
    frozen = [l.name for l in model.layers if l.name.startswith(prefix + "_")]
    for name in frozen:
        model.get_layer(name).trainable = False
    return frozen
