# class: honest: a catalogue edit
# expect: honest
# apply: attention_gate
# what: gated attention outputs, a legitimate change: must pass every check
