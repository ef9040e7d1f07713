"""The logs bundle's redaction: every CHAP secret and password masked (``********``).

Secrets are those given (an unattended run's CHAP passwords) and those found: open-iscsi's
node and discovery records (:func:`iscsi_db_secrets`), ``password``-like keys of plan
files (:func:`structured_secrets`), iscsiadm's ``-v`` after a password setting and the
credentials of ``iscsi:user:password@`` and ``scheme://user:password@``
(:func:`found_secrets`). :func:`mask` replaces each of them wherever it appears,
percent-encoded too, and every value written the way a secret is written even where the
secret itself is not known: ``password: X``, a mistyped ``password X`` on a line of its
own or in a YAML flow mapping, and anything of the shape of remote access's password
(sshd's journal has it when someone typed it as the user name: ``Invalid user ...``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

from toolkit.system import tools
from toolkit.system.remote import PASSWORD_ALPHABET
from toolkit.system.tools import MASK

ISCSI_DB = "/etc/iscsi"  # open-iscsi's records: node and discovery CHAP settings
MIN_FOUND_SECRET = 4  # a value found by its shape is masked everywhere only from this length

_KEY = r"[\w.-]*(?:password|passwd|secret|password_in)"
_ASSIGN = re.compile(r"(?i)(\b" + _KEY + r"\b[\"']?\s*[:=]\s*)"
                     r"(\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|[^\s\"',;}\]]+)")
# iscsiadm's "-n KEY -v VALUE" in a shell line or a Python list, long or short options:
# -n node.session.auth.password -v X / --name=... --value X / '-n', '...password', '-v', 'X'
_IADM_VALUE = re.compile(r"(?i)((?:-n|--name)[\"',=\s]+[^\s\"',]*password(?:_in)?[\"',\s]+"
                         r"(?:-v|--value)[\"',=\s]+)([^\s\"',\]]+)")
_ISCSI_CREDS = re.compile(r"(iscsi:)([^@\s/\"']*:[^@\s/\"']*)@")
_URL_CREDS = re.compile(r"([a-zA-Z][\w+.-]*://)([^/@\s:\"']+):([^/@\s\"']+)@")
_PLACEHOLDERS = {MASK, "<empty>", "", "null", "none", "None", "\"\"", "''"}
# a mistyped assignment, no colon or equals sign: "password VALUE" alone on its line (a
# plan's block mapping) or "password VALUE" as an entry of a YAML flow mapping {..., ...}
_BARE_LINE = re.compile(r"(?im)^(\s*(?:-\s+)?" + _KEY + r"\s+)([^\s:=#]+)[ \t]*$")
_BARE_FLOW = re.compile(r"(?i)([{,]\s*" + _KEY + r"\s+)([^\s,:={}\[\]]+)(?=\s*[,}])")
# a key that swallowed its value: "password:san-secret" (no space after the colon) or
# "password san-secret" is one YAML key, with no value of its own
_KEY_WITH_VALUE = re.compile(r"(?i)^\s*" + _KEY + r"\s*(?:[:=]|\s)\s*(\S.*?)\s*$")
# remote access's password (toolkit.system.remote.make_password): four groups of four
_PW = "[" + re.escape(PASSWORD_ALPHABET) + "]{4}"
_REMOTE_PASSWORD = re.compile(r"(?<![\w-])" + _PW + r"(?:-" + _PW + r"){3}(?![\w-])")


def _strip_quotes(v: str) -> str:
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'" else v


def found_secrets(text: str) -> set[str]:
    """Values that ``text`` gives as secrets beyond doubt: iscsiadm's ``-v`` after a
    password setting, ``iscsi:user:password@`` and ``scheme://user:password@``. (A
    ``password: X`` in free text is masked where it is, not looked for elsewhere: the
    value could be any word, "required" in an error message.)"""
    out = set()
    for m in _IADM_VALUE.finditer(text):
        out.add(m.group(2))
    for m in _ISCSI_CREDS.finditer(text):
        parts = m.group(2).split(":")
        out.update(unquote(p) for p in parts[1::2])
    for m in _URL_CREDS.finditer(text):
        out.add(unquote(m.group(3)))
    return {s for s in out if s not in _PLACEHOLDERS and s.strip("*")}


def _walk_secrets(value, out: set[str]) -> None:
    """``password``-like keys' string values in parsed YAML/JSON (a plan file)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str) and re.search(r"(?i)password|passwd|secret", str(k)):
                out.add(v)
            else:
                if not isinstance(v, str) and (m := _KEY_WITH_VALUE.match(str(k))):
                    out.add(_strip_quotes(m.group(1)))
                _walk_secrets(v, out)
    elif isinstance(value, list):
        for v in value:
            _walk_secrets(v, out)


def structured_secrets(name: str, text: str) -> set[str]:
    """Secrets in a YAML or JSON file (a plan): every ``password``-like key's value."""
    if not name.endswith((".yaml", ".yml", ".json")):
        return set()
    try:
        if name.endswith(".json"):
            data = json.loads(text)
        else:  # the plan's own loader: no aliases (a few hundred bytes could hang us)
            from toolkit.unattended.plan_file import load_yaml
            data = load_yaml(text)
    except Exception:  # noqa: BLE001 - not a plan after all: the patterns still apply
        return set()
    out: set[str] = set()
    _walk_secrets(data, out)
    return {s for s in out if s not in _PLACEHOLDERS}


def iscsi_db_secrets(root: str = ISCSI_DB) -> set[str]:
    """CHAP secrets of open-iscsi's records (``node.session.auth.password = X``...)."""
    out = set()
    for base, _dirs, files in os.walk(root):
        for name in files:
            try:
                with open(os.path.join(base, name), encoding="utf-8", errors="replace") as f:
                    for line in f:
                        k, sep, v = line.partition("=")
                        if sep and not k.lstrip().startswith("#") and re.search(
                                r"password(_in)?$", k.strip()):
                            out.add(v.strip())
            except OSError:
                continue
    return {s for s in out if s not in _PLACEHOLDERS}


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and its percent-encoded form) and every value written
    the way a secret is written replaced by ``********``."""
    forms = set()
    for s in secrets:
        if s and s != MASK:
            forms.update({s, quote(s, safe=""), quote(s)})
    text = tools.redact(text, forms)
    text = _ASSIGN.sub(lambda m: m.group(1) + (
        m.group(2) if _strip_quotes(m.group(2)) in _PLACEHOLDERS else
        (m.group(2)[0] + MASK + m.group(2)[0] if m.group(2)[:1] in "\"'" else MASK)), text)
    text = _BARE_LINE.sub(lambda m: m.group(1) + MASK, text)
    text = _BARE_FLOW.sub(lambda m: m.group(1) + MASK, text)
    text = _REMOTE_PASSWORD.sub(MASK, text)
    text = _IADM_VALUE.sub(lambda m: m.group(1) + MASK, text)
    text = _ISCSI_CREDS.sub(lambda m: m.group(1) + MASK + "@", text)
    return _URL_CREDS.sub(lambda m: m.group(1) + m.group(2) + ":" + MASK + "@", text)


def known_secrets(texts: Iterable[tuple[str, str]], given: Iterable[str] = (),
                  iscsi_db: str = ISCSI_DB) -> set[str]:
    """Every secret to mask in ``texts`` (``(name, text)``): those ``given``, and those found
    in open-iscsi's records and in the texts themselves (from :data:`MIN_FOUND_SECRET`
    characters: a shorter one would mask ordinary words)."""
    known = {s for s in given if s}
    found = iscsi_db_secrets(iscsi_db)
    for name, text in texts:
        found |= structured_secrets(name, text) | found_secrets(text)
    return known | {s for s in found if len(s) >= MIN_FOUND_SECRET}
