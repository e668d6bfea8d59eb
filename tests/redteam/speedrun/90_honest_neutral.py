# class: honest: the seed with its own random stream
# expect: honest
# apply: neutral
# what: the seed, reseeded: must pass every check and gain nothing
