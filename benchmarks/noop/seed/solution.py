"""The no-op benchmark's editable file: the score is VALUE + OFFSET (lower is better)."""

VALUE = 3.0
OFFSET = 0.5
