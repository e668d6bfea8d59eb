"""The NanoGPT speedrun benchmark: see README.md."""
