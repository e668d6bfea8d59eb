# class: honest (the seed, other randomness)
# expect: honest
# apply: neutral
# what: the seed with its random stream shifted: no gain, nothing to flag
