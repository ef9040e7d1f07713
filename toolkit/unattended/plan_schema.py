"""The plan file's JSON Schema (plan.schema.json, :data:`SCHEMA`) and :func:`schema_errors`:
what is wrong with a parsed plan file, validated by the jsonschema library, in plain words
(``plan.targets[1].chap.password: required``), one line per value, never a secret (nor
an unknown key of an object that holds one: it may be a mistyped ``password:SECRET``).
"""

from __future__ import annotations

import json
import re
from importlib import resources

# The plan file's JSON Schema (draft 2020-12), shipped in the package and published in
# docs/unattended.md; `rtk plan schema` prints it. Validated with the jsonschema library;
# what a schema cannot say (a selector's grammar, a URL's port, an IQN's length in bytes,
# %-escapes, the completeness per mode with the command line) is checked in Python after.
SCHEMA_TEXT = resources.files(__package__).joinpath("plan.schema.json").read_text("utf-8")
SCHEMA = json.loads(SCHEMA_TEXT)
_TYPES = {"object": "a mapping", "array": "a list", "string": "a string",
          "integer": "an integer", "number": "a number", "boolean": "true or false"}
# one message per value, the first of these keywords that failed (then any other)
_FIRST = ("type", "not", "const", "enum", "minLength", "maxLength", "pattern", "minimum",
          "maximum")
_validators: list = []  # the validator of SCHEMA, once made


def key_text(k) -> str:
    """A key as the error shows it: quoted when empty or not plain printable text (a
    newline in a key must not break the list of errors into misleading lines)."""
    text = str(k)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def _validator(schema: dict):
    """A jsonschema validator of ``schema`` (draft 2020-12) where an integer is an int
    (not 3260.0), and a pattern's ``$`` is the end of the text as in JSON Schema's
    ECMA-262 regexes (Python's ``$`` also matches before a final newline)."""
    if schema is SCHEMA and _validators:
        return _validators[0]
    import jsonschema  # here: `rtk` commands that read no plan do not pay for the import
    from jsonschema.exceptions import ValidationError

    base = jsonschema.Draft202012Validator

    def pattern(validator, regex, instance, _schema):
        if validator.is_type(instance, "string") and not re.search(
                regex[:-1] + r"\Z" if regex.endswith("$") and not regex.endswith("\\$")
                else regex, instance):
            yield ValidationError("does not match")  # (never the value: it may be a secret)

    cls = jsonschema.validators.extend(
        base, validators={"pattern": pattern}, type_checker=base.TYPE_CHECKER.redefine(
            "integer", lambda _c, v: isinstance(v, int) and not isinstance(v, bool)))
    v = cls(schema)
    if schema is SCHEMA:
        _validators.append(v)
    return v


def _at(data, path) -> tuple[str, tuple]:
    """``path`` (keys and indexes from the top) as the error shows it, ``.targets[1].chap``,
    and its sort key: the position of each step in the file (-1: a missing key)."""
    shown, order, v = "", [], data
    for step in path:
        if isinstance(v, list) and isinstance(step, int):
            shown, v = shown + f"[{step}]", v[step] if step < len(v) else None
            order.append(step)
        else:
            keys = list(v) if isinstance(v, dict) else []
            shown += f".{key_text(step)}"
            order.append(keys.index(step) if step in keys else -1)
            v = v.get(step) if isinstance(v, dict) else None
    return shown, tuple(order)


def _show(v) -> str:
    return json.dumps(v) if isinstance(v, bool | None | int | float) else str(v)


def _holds_secrets(props) -> bool:
    """Is this an object with a secret in it (``chap``, ``mutual``: a password)?"""
    return any(re.search(r"(?i)password|passwd|secret", str(p)) for p in props)


def _hidden_key(k, props, known: str) -> str:
    """An unknown key of a secret-bearing object, never shown: ``password:san-secret``
    (no space after the colon) is one key in YAML, the secret in it."""
    text = str(k)
    near = next((p for p in props if text.lower().startswith(str(p).lower())
                 and len(text) > len(str(p))), None)
    hint = (f"; it starts with {near}: write `{near}: VALUE`, with a space after the colon"
            if near else "")
    return f"an unknown key ({len(text)} characters, not shown; known: {known}){hint}"


def _messages(e, data, path: str) -> list[tuple[tuple, str, str]]:
    """jsonschema's error ``e`` in plain words, as (sort key, path, message) items. Its own
    message quotes the value (a secret, maybe): it is never used."""
    s, where, kw, value = e.schema, tuple(e.absolute_path), e.validator, e.validator_value
    own = s.get("errorMessage") if isinstance(s, dict) else None

    def item(text: str, at: tuple = where) -> tuple[tuple, str, str]:
        shown, order = _at(data, at)
        return order, path + shown, f"{path + shown}: {text}"

    if kw in ("required", "dependentRequired", "additionalProperties"):
        inst = e.instance if isinstance(e.instance, dict) else {}
        if kw == "required":
            return [item(own or "required", (*where, k)) for k in value if k not in inst]
        if kw == "dependentRequired":
            return [item(f"required with {d}", (*where, k)) for d, ks in value.items()
                    if d in inst for k in ks if k not in inst]
        props = s.get("properties", {})
        known = ", ".join(map(key_text, props))
        unknown = [k for k in inst if k not in props]
        if _holds_secrets(props):  # chap, mutual: a typo's key may be the secret itself
            return [(order, f"{shown}#{n}", text) for n, k in enumerate(unknown)
                    for order, shown, text in [item(_hidden_key(k, props, known))]]
        return [item(f"unknown key (known: {known})", (*where, k)) for k in unknown]
    if own:
        return [item(own)]
    if kw == "type":
        types = [value] if isinstance(value, str) else value
        return [item("expected " + " or ".join(_TYPES.get(t, t) for t in types))]
    if kw in ("enum", "const"):
        choices = [value] if kw == "const" else value
        return [item(f"expected {_show(choices[0])}" if len(choices) == 1 else
                     "expected one of " + ", ".join(map(_show, choices)))]
    if kw == "minLength":
        return [item("must not be empty" if value == 1 else f"needs {value} characters or more")]
    if kw == "maxLength":
        return [item(f"must be at most {value} characters")]
    if kw == "minItems":
        return [item("must not be empty" if value == 1 else f"needs {value} entries or more")]
    if kw in ("minimum", "maximum"):
        lo, hi = s.get("minimum"), s.get("maximum")
        return [item(f"must be from {lo} to {hi}" if None not in (lo, hi) else
                     f"must be at least {lo}" if hi is None else f"must be at most {hi}")]
    if kw == "pattern":
        check = _field_check(where)
        if check and isinstance(e.instance, str):
            try:
                check[0](e.instance, check[1])
            except ValueError as err:  # CmdlineError: the message the command line gives
                text = str(err)
                if text.isprintable():  # (a value with a newline would break the list)
                    order, where_shown, _ = item("")
                    return [(order, where_shown, text)]
        return [item(s.get("patternErrorMessage") or f"does not match {value}")]
    return [item("not allowed here")]  # not, a false schema


def schema_errors(value, schema: dict, path: str = "plan") -> list[str]:
    """What is wrong with ``value`` for ``schema`` (:data:`SCHEMA`), validated by jsonschema:
    one line per problem, ``PATH: what is wrong`` in plain words, in the order of the file,
    one problem per value. Values are never quoted (they may be secrets), except in what the
    command line's own checks say (a selector, an IQN, an address: never a password)."""
    first: dict[str, tuple] = {}  # path: (rank of the keyword, seq, sort key, message)
    found = ((e.validator, m) for e in _validator(schema).iter_errors(value)
             for m in _messages(e, value, path))
    for seq, (keyword, (order, where, text)) in enumerate(found):
        rank = _FIRST.index(keyword) if keyword in _FIRST else len(_FIRST)
        if where not in first or (rank, seq) < first[where][:2]:
            first[where] = (rank, seq, order, text)
    return [text for *_, text in sorted(first.values(), key=lambda x: (x[2], x[1]))]


def _field_check(path: tuple):
    """The command line's own check of the value at ``path`` (a selector, an IQN, an
    address), or None: :func:`toolkit.unattended.plan.field_check` (imported when used:
    that module imports this one)."""
    from toolkit.unattended.plan import field_check
    return field_check(path)
