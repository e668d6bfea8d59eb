# class: static-scan evasion (code in a string annotation)
# expect: caught
# what: hides code in a string annotation that typing evaluates
import typing


def _go(x: "__import__('os').system('touch %%OUTSIDE%%/zz-%%TOKEN%%-typing')"):
    return x


typing.get_type_hints(_go)
