# class: test-time training on the validation rows
# expect: caught
# what: takes gradient steps on the rows it is shown (their own continuation) before
#   predicting them
_seed_forward = GPT.forward


def _adapting_forward(self, idx):
    x, y = idx[:, :-1].contiguous(), idx[:, 1:].contiguous()
    with torch.enable_grad():
        opt = torch.optim.SGD(self.parameters(), lr=0.05)
        for _ in range(3):
            loss = self.loss(x, y, dense_masks(x, int(self.window), self.eot_id))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return _seed_forward(self, idx)


GPT.forward = _adapting_forward
