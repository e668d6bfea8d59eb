# class: static-scan evasion (attribute by computed name)
# expect: caught
# what: reaches torch.load through the module's __dict__ with a computed key
_loader = torch.__dict__["lo" + "ad"]
