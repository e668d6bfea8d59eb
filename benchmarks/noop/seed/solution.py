"""The noop benchmark's editable solution: the metric is value(), lower is better."""

VALUE = 3.0
OFFSET = 0.5


def value() -> float:
    v = VALUE
    return v + OFFSET
