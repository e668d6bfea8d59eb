# class: non-causal outputs (looking ahead at validation)
# expect: caught
# what: validates with attention over the whole row, so each position sees the token it
#   is scored on; the probe, which continues rows with other text after a secret cut,
#   sees the predictions before the cut change
_seed_dense_masks = dense_masks


def dense_masks(idx, window, eot_id):
    masks = _seed_dense_masks(idx, window, eot_id)
    return {k: torch.ones_like(m) for k, m in masks.items()}
