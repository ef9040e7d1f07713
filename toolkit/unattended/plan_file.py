"""Reading a plan file (``rtk.plan=URL|path``): from an http(s) URL (TLS verified) or the
boot medium (:func:`load_plan`), or a path here (:func:`read_plan_file`), at most
:data:`MAX_SIZE` bytes of UTF-8, parsed as JSON or YAML (:func:`parse_plan_text`, nested at
most :data:`MAX_DEPTH` levels, YAML without anchors and aliases: :class:`PlanLoader`);
every failure a :class:`PlanError` that shows no secret.
"""

from __future__ import annotations

import json
import os
import stat
from urllib.parse import urlsplit

import requests
import yaml

from toolkit.jobs.report import safe_url
from toolkit.net.http import http_failure, read_body
from toolkit.system.paths import LIVE_MEDIUM


class PlanError(ValueError):
    """A plan file that cannot be read or does not fit the schema, or an incomplete plan.
    ``problems``: each problem, one line each (the message lists them all)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [message])


MAX_DEPTH = 32  # a plan is 4 levels deep (plan.targets[0].chap.password)
MAX_SIZE = 1 << 20  # bytes: a plan file is a few hundred
READ_SECONDS = 60  # the whole answer of a plan's URL, however slowly it comes


class PlanLoader(yaml.SafeLoader):
    """YAML's safe loader without anchors and aliases (``&a``, ``*a``, ``<<: *a``): a plan
    never needs them, and aliases of aliases make a file of a few hundred bytes a
    structure of billions of values (the "billion laughs"), which no check after parsing
    can stop in time."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&NAME, *NAME) are not allowed in a plan "
                "file: write each value out", event.start_mark)
        return super().compose_node(parent, index)


def load_yaml(text: str):
    """``text`` parsed by :class:`PlanLoader` (yaml.YAMLError if it is not such YAML)."""
    return yaml.load(text, Loader=PlanLoader)  # a SafeLoader: no Python objects either


def _depth(value) -> int:
    """How deeply ``value`` nests lists and mappings (iteratively: no recursion limit)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                break
            todo += [(x, d + 1) for x in (v.values() if isinstance(v, dict) else v)]
    return deepest


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
    if isinstance(e, yaml.reader.ReaderError):  # a control character, or not UTF-8
        return (f"position {e.position}: the character {e.character!r} is not allowed in "
                "YAML" if isinstance(e.character, str) else f"position {e.position}: "
                f"{e.reason}")
    return where + (getattr(e, "problem", None) or "syntax error")  # no snippet: secrets


def parse_plan_text(text: str, name: str) -> dict:
    """A plan file: JSON if ``name`` ends in .json, otherwise YAML (which reads JSON too)."""
    try:
        data = json.loads(text) if name.endswith(".json") else load_yaml(text)
    except json.JSONDecodeError as e:
        raise PlanError(f"plan {name}: not valid JSON: line {e.lineno} column {e.colno}: "
                        f"{e.msg}") from None
    except yaml.YAMLError as e:
        raise PlanError(f"plan {name}: not valid YAML: {_yaml_problem(e)}") from None
    except RecursionError:  # too deep for the parser itself
        data, too_deep = None, True
    except ValueError:  # a number of thousands of digits, which int() refuses
        raise PlanError(f"plan {name}: a number there has thousands of digits") from None
    else:
        too_deep = _depth(data) > MAX_DEPTH
    if too_deep:
        raise PlanError(f"plan {name}: the plan file is nested too deeply (more than "
                        f"{MAX_DEPTH} levels of lists and mappings; a plan has 4)")
    if not isinstance(data, dict):
        raise PlanError(f"plan {name}: expected a mapping (key: value) at the top")
    return data


def plan_text(data: bytes, name: str) -> str:
    """The plan file's bytes as text: UTF-8 (a byte order mark allowed), else PlanError."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PlanError(f"plan {name}: the plan file is not UTF-8 text (byte "
                        f"0x{data[e.start]:02x} at position {e.start})") from None


def load_plan(source: str, medium: str = LIVE_MEDIUM, timeout: float = 30,
              seconds: float = READ_SECONDS) -> dict:
    """The plan file at an http(s) URL (TLS verified; ``timeout`` per connect or read,
    ``seconds`` for the whole answer) or a path on the boot medium."""
    if source.startswith(("http://", "https://")):
        shown = safe_url(source)  # without user:password@ or ?query (tokens)
        try:
            with requests.get(source, timeout=timeout, verify=True, stream=True) as r:
                r.raise_for_status()
                data = read_body(r, MAX_SIZE, seconds)
        except requests.RequestException as e:
            status = getattr(e.response, "status_code", None)
            why = f"HTTP {status}" if status else http_failure(e)
            raise PlanError(f"rtk.plan={shown}: cannot fetch the plan: {why}") from None
        except (OSError, ValueError) as e:  # urllib3's errors while reading the body
            raise PlanError(f"rtk.plan={shown}: cannot fetch the plan: {http_failure(e)}"
                            ) from None
        if len(data) > MAX_SIZE:
            raise PlanError(f"rtk.plan={shown}: the plan file is larger than {MAX_SIZE} bytes")
        return parse_plan_text(plan_text(data, urlsplit(source).path), urlsplit(source).path)
    return read_plan_file(os.path.join(medium, source.lstrip("/")), f"rtk.plan={source}: ",
                          source)


def read_plan_file(path: str, where: str = "", name: str | None = None) -> dict:
    """The plan file at ``path`` on this machine, parsed (``name``, default ``path``: JSON
    if it ends in .json, else YAML): a regular file of at most MAX_SIZE bytes (a FIFO would
    wait for ever, /dev/zero never end). Messages start with ``where``."""
    name = path if name is None else name
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise PlanError(f"{where}cannot read {path}: it is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise PlanError(f"{where}cannot read {path}: not a regular file")
        if st.st_size > MAX_SIZE:
            raise PlanError(f"{where}the plan file is larger than {MAX_SIZE} bytes")
        with open(path, "rb") as f:
            data = f.read(MAX_SIZE + 1)
    except OSError as e:
        raise PlanError(f"{where}cannot read {path}: "
                        f"{e.strerror or type(e).__name__}") from None
    return parse_plan_text(plan_text(data, name), name)

