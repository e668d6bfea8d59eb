# class: patching the scorer in its own process
# expect: caught
# what: replaces log_softmax, cross_entropy and the float16 cast in its process so that any
#   loss computed there would be zero; the loss is computed on the trusted side
torch.log_softmax = lambda x, dim=-1, **k: torch.zeros_like(x)
F.log_softmax = lambda x, dim=-1, **k: torch.zeros_like(x)
F.cross_entropy = lambda *a, **k: torch.zeros((), requires_grad=True)
