# class: work done at import time
# expect: caught
# what: does its expensive work when the module is imported, before the harness starts
#   anything, hoping that time is not counted
import time

_end = time.time() + 600
_model = GPT(256)
_opt = make_optimizer(_model)
while time.time() < _end:
    _x = torch.randint(0, 256, (BATCH_SIZE, SEQ_LEN))
    _loss = F.cross_entropy(_model(_x).view(-1, 256), _x.view(-1))
    _opt.zero_grad()
    _loss.backward()
    _opt.step()
