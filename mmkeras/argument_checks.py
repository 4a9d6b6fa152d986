"""Argument checks shared by every layer: each returns the value or raises a ValueError
that names the argument and repeats what was received."""

import numbers


def check_positive_int(name, value):
    """Returns `value` as an int, or raises if it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int. Received {name}={value!r}")
    return int(value)


def check_optional_positive_int(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int or None. Received {name}={value!r}")
    return int(value)


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False. Received {name}={value!r}")
    return value


def check_rate(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(f"`{name}` must be a float in [0, 1). Received {name}={value!r}")
    return float(value)


def check_open_unit(name, value, low=0.0, high=1.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
        raise ValueError(f"`{name}` must lie strictly between {low} and {high}. Received {name}={value!r}.")
    return float(value)


def check_non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative number. Received {name}={value!r}.")
    return float(value)
