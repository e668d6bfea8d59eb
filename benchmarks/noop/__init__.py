"""noop: a benchmark that does no work, for measuring the loop's own overhead."""
