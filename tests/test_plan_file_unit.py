"""Reading a plan file (toolkit/unattended/plan_file.py) against what an attacker or a
broken server can hand over: YAML anchors and aliases refused with a clear error (a few
hundred bytes of aliases of aliases are billions of values), and a plan's URL given up
on at a deadline however slowly its server sends (a byte every half second never lets
one read time out). The logs bundle reads plan files with the same loader."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from toolkit.system import bundle_secrets
from toolkit.unattended.plan_file import PlanError, load_plan, parse_plan_text, read_plan_file

pytestmark = pytest.mark.unit


def alias_bomb(levels: int) -> str:
    """``levels`` lists of ten aliases of the one before: 10**levels strings."""
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]"
              for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_yaml_aliases_are_refused_at_once(tmp_path):
    plan = tmp_path / "p.yaml"
    plan.write_text(alias_bomb(9))  # 10**9 values: ~50 minutes before (and the memory)
    assert plan.stat().st_size < 600
    started = time.monotonic()
    with pytest.raises(PlanError, match=r"plan .*p.yaml: not valid YAML: line 1 column 5: "
                       r"anchors and aliases \(&NAME, \*NAME\) are not allowed in a plan "
                       "file: write each value out"):
        read_plan_file(str(plan))
    assert time.monotonic() - started < 1
    for text, where in (("mode: restore\nimage: *img\n", "line 2 column 8"),
                        ("base: &b {verify: true}\nmode: restore\n<<: *b\n", "line 1 column 7")):
        with pytest.raises(PlanError, match=where):
            parse_plan_text(text, "p.yaml")
    # "&" and "*" inside a value are text, not YAML's
    assert parse_plan_text("mode: restore\nimage: 'a&b*c'\n", "p.yaml")["image"] == "a&b*c"


def test_the_bundle_reads_a_plan_file_with_the_same_loader():
    started = time.monotonic()
    assert bundle_secrets.structured_secrets("p.yaml", alias_bomb(9)) == set()
    assert time.monotonic() - started < 1
    assert bundle_secrets.structured_secrets(
        "p.yaml", "chap: {username: u, password: hunter2x}\n") == {"hunter2x"}


class _Dribble(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        for _ in range(1000):
            try:
                self.wfile.write(b"#")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.5)

    def log_message(self, *a):
        pass


@pytest.fixture
def dribble():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dribble)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/plan.yaml"
    srv.shutdown()
    srv.server_close()


def test_a_slow_plan_server_is_given_up_on_time(dribble):
    started = time.monotonic()
    with pytest.raises(PlanError, match=r"rtk.plan=http://127.0.0.1:\d+/plan.yaml: cannot "
                       "fetch the plan: timed out"):
        load_plan(dribble, timeout=2, seconds=3)
    assert time.monotonic() - started < 8  # the deadline plus at most one read
