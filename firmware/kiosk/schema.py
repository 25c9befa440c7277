# One small checker for every data file the board reads at boot (board
# definitions, kiosk config): each problem is reported with the path of the
# field, so the field team can fix the file without reading code.

from kiosk.hw.pins import parse_pin


class SchemaError(ValueError):
    pass


def read_file(path, error=SchemaError):
    """The JSON object in path; an unreadable or torn file raises `error`
    with the path in the message."""
    import json
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise error("%s: cannot read (%s)" % (path, e))
    except ValueError as e:
        raise error("%s: not valid JSON (%s)" % (path, e))


def check(obj, schema, where, errors):
    """Append one message per problem to errors. schema maps a field to
    (kind, required); kinds: "str" (non-empty), "int" (>= 0), "pos" (> 0),
    "bool", "list", "dict", "pin", "hex" (even-length hex string), or a
    tuple of allowed values."""
    if not isinstance(obj, dict):
        errors.append("%s: must be an object" % where)
        return
    for key in obj:
        if key not in schema:
            errors.append("%s.%s: unknown field (typo?)" % (where, key))
    for key in schema:
        kind, required = schema[key]
        path = "%s.%s" % (where, key)
        if key not in obj:
            if required:
                errors.append("%s: missing" % path)
            continue
        v = obj[key]
        if isinstance(kind, tuple):
            if v not in kind:
                errors.append("%s: must be one of %s, got %r" % (path, ", ".join(str(k) for k in kind), v))
        elif kind == "str":
            if not isinstance(v, str) or not v:
                errors.append("%s: must be a non-empty string" % path)
        elif kind in ("int", "pos"):
            if not isinstance(v, int) or isinstance(v, bool) or v < (kind == "pos"):
                errors.append("%s: must be a %s integer, got %r" % (path, "positive" if kind == "pos" else "non-negative", v))
        elif kind == "bool":
            if not isinstance(v, bool):
                errors.append("%s: must be true or false" % path)
        elif kind == "list":
            if not isinstance(v, list):
                errors.append("%s: must be a list" % path)
        elif kind == "dict":
            if not isinstance(v, dict):
                errors.append("%s: must be an object" % path)
        elif kind == "hex":
            if not isinstance(v, str) or len(v) % 2 or not v or not all(c in "0123456789abcdefABCDEF" for c in v):
                errors.append("%s: must be a hex string" % path)
        elif kind == "pin":
            try:
                parse_pin(v)
            except ValueError as e:
                errors.append("%s: %s" % (path, e))
