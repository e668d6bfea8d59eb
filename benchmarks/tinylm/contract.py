"""What the tinylm harness and its trusted side agree on: shapes, file names, sizes.

Imported inside the sandbox by the harness, so it holds constants only.
"""

VOCAB_SIZE = 256  # bytes
EVAL_LEN = 256  # positions predicted per evaluation window
N_EVAL_WINDOWS = 64
EVAL_BATCH = 16  # windows per forward in the eval step
PROBE_BATCH = 8  # a different batching in the probe step: outputs must not depend on it
TRAIN_STREAM = "train_stream.bin"  # in the train step's inputs
INPUTS = "x.bin"  # (rows, EVAL_LEN) uint8 in the eval and probe steps' inputs
MODEL = "model.pt"  # in the train step's outputs
TRAIN_LOG = "train_log.json"
LOGITS = "logits.npy"  # (rows, EVAL_LEN, VOCAB_SIZE) float16 in eval's and probe's outputs
