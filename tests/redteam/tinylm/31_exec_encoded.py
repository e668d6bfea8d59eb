# class: static-scan evasion (exec of encoded text)
# expect: caught
# what: runs code hidden in a hex string
exec(bytes.fromhex("7072696e74282268696464656e2229").decode())
