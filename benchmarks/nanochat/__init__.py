"""nanochat: GPT pre-training for a wall-clock budget, judged by bits per byte."""
