# Text from outside the kiosk (a command's ids, a scanned line) is kept only
# when it reads back the same anywhere: MicroPython's decoder lets through
# lone surrogates and overlong UTF-8 forms, and a record holding them could
# be journaled but never decoded by the host, which then could not
# acknowledge past it. A leaf module: the gate and the scanner driver use it.


def clean(x, n):
    """x if it is a string of 1..n characters, each encoded in the
    shortest UTF-8 form, no surrogate; else None. (Control characters are
    the caller's to refuse where they matter.)"""
    if not isinstance(x, str) or not 0 < len(x) <= n:
        return None
    want = 0
    for c in x:
        o = ord(c)
        if 0xD800 <= o <= 0xDFFF or o > 0x10FFFF:
            return None
        want += 1 if o < 0x80 else 2 if o < 0x800 else 3 if o < 0x10000 else 4
    return x if len(x.encode()) == want else None
