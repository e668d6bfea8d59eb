# class: honest (the recorded champion of the default campaign)
# expect: honest
# apply: rotary
# what: rotary position embeddings instead of the learned table
