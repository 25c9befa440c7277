# Pin notation for board files, the Klipper way: electrical facts (pull-up,
# pull-down, active-low) live in the data, parsed here and nowhere else.
# A leaf module: the board checker, the config schema and hal all read it.


class PinError(ValueError):
    pass


def parse_pin(spec):
    """'^!gpio5' -> (5, pull, invert): '^' pull-up, '~' pull-down, '!'
    active-low."""
    if not isinstance(spec, str):
        raise PinError("pin must be a string like 'gpio5' or '^!gpio5'")
    pull = None
    invert = False
    i = 0
    while i < len(spec) and spec[i] in "^~!":
        c = spec[i]
        if c == "!":
            invert = True
        else:
            pull = "up" if c == "^" else "down"
        i += 1
    name = spec[i:]
    if name.startswith("gpio") and name[4:].isdigit():
        return int(name[4:]), pull, invert
    raise PinError("bad pin %r: expected [^|~][!]gpioN" % spec)
