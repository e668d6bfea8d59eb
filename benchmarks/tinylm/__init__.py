"""tinylm: byte-level GPT on State of the Union addresses; see README.md for the contract."""
