"""Storage outages in the live guest, one boot: the SOURCE's tgtd frozen (SIGSTOP) longer
than the rest of the copy, then continued: ``rtk copy`` pauses ("SOURCE path to 10.0.2.2
lost, waiting ..."), goes on when the kernel has reconnected, and the host finds the
TARGET's backing file identical, nothing recorded as unreadable; the same with the
TARGET's tgtd frozen; and the SOURCE frozen past ``--outage-limit``: exit 1, a mapfile
with nothing bad in it, and ``--resume`` completes once the path is back.

SOURCE and TARGET are served by two tgtd (two "hosts") with distinct serials. A frozen
target is noticed by the NOP-Out ping (5 + 5 s); I/O fails after the session's recovery
timeout: the SOURCE's is what the attach set (15 s, checked), the TARGET's is set to 5 s.

RTK_VM_DEV=1 pushes this source tree into the guest (the ISO may be older).
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from conftest import MiB
from vmlab.http import HttpServer
from vmlab.qemu import Guest
from vmlab.tgt import Tgt

from toolkit.blockio.mapfile import BAD, FINISHED, NON_SCRAPED, NON_TRIED, NON_TRIMMED, Mapfile

pytestmark = pytest.mark.vm

SRC_PORT, DST_PORT = 3281, 3282
SRC_IQN, DST_IQN = "iqn.2026-12.lab.rtk:outage-bdr", "iqn.2026-12.lab.rtk:outage-san"
SIZE = 20 * MiB
DST_SERIALS = ["RTK-OUT-DST1", "RTK-OUT-DST2", "RTK-OUT-DST3"]
RATE = "1M"  # bytes/s: the copy of SIZE lasts about 20 s


@pytest.fixture(scope="module")
def lab(tmp_path_factory, iso, need_root):
    work = tmp_path_factory.mktemp("vm-outage")
    src = work / "bdr.img"
    src.write_bytes(os.urandom(SIZE))
    dsts = [work / f"san{i}.img" for i in (1, 2, 3)]
    for d in dsts:
        with open(d, "wb") as f:
            f.truncate(SIZE)
    (work / "s").mkdir()
    (work / "d").mkdir()
    t_src, t_dst = Tgt(work / "s", port=SRC_PORT), Tgt(work / "d", port=DST_PORT)
    t_dst.next_tid = 2  # another tid: another NAA (tgtd derives the WWN from tid and LUN)
    t_src.add_target(SRC_IQN, [src], serials=["RTK-OUT-SRC"])
    t_dst.add_target(DST_IQN, dsts, serials=DST_SERIALS)
    http = HttpServer(work)
    started = time.monotonic()
    guest = Guest(work, iso, name="outage")
    timings: dict[str, float] = {}
    try:
        guest.wait_menu(timeout=400)
        timings["boot"] = guest.elapsed()
        guest.open_shell()
        if os.environ.get("RTK_VM_DEV") == "1":
            guest.install_source_tree(http, work)
        g = guest.run
        g(f"rtk iscsi attach 10.0.2.2:{SRC_PORT} {SRC_IQN} --role source", timeout=180)
        g(f"rtk iscsi attach 10.0.2.2:{DST_PORT} {DST_IQN} --role target", timeout=180)
        tmo = g("cat /sys/class/iscsi_session/session*/recovery_tmo").split()
        g(f"for s in /sys/class/iscsi_session/session*; do grep -q {DST_IQN} $s/targetname "
          "&& echo 5 > $s/recovery_tmo; done; true")
        link = "/dev/disk/by-path/ip-10.0.2.2:{}-iscsi-{}-lun-{}"
        devs = {"src": g("readlink -f " + link.format(SRC_PORT, SRC_IQN, 1)).strip()}
        for i in (1, 2, 3):
            devs[i] = g("readlink -f " + link.format(DST_PORT, DST_IQN, i)).strip()
        yield {"guest": guest, "src": src, "dsts": dsts, "tgt": {"src": t_src, "dst": t_dst},
               "devs": devs, "tmo": tmo, "timings": timings}
    finally:
        for t in (t_src, t_dst):
            if t.proc.poll() is None:
                t.proc.send_signal(signal.SIGCONT)
        guest.stop()
        t_src.stop()
        t_dst.stop()
        http.stop()
        print(f"\noutage VM test: {time.monotonic() - started:.0f} s including boot; "
              f"timings (s): {timings}")


def _copy(lab, n: int, extra: str = "", name: str | None = None) -> str:
    """Start ``rtk copy`` of the SOURCE onto TARGET LUN ``n`` in the background; its log."""
    log = f"/tmp/copy-{name or n}.log"
    d = lab["devs"]
    lab["guest"].run(
        f"(rtk copy --max-rate {RATE} --chunk-size 1M --mapfile /tmp/copy-{n}.map --yes "
        f"--target-id {DST_SERIALS[n - 1]} {extra} {d['src']} {d[n]} > {log} 2>&1; "
        f"echo __RC=$? >> {log}) > /dev/null 2>&1 < /dev/null & true")
    return log


def _wait_log(lab, log: str, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = lab["guest"].run(f"cat {log}")
        if re.search(pattern, text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{log} never said {pattern!r}:\n{text}")
        time.sleep(2)


def _wait_logged_in(lab, timeout: float = 120) -> None:
    lab["guest"].run(f"for i in $(seq {int(timeout)}); do ! grep -qv LOGGED_IN "
                     "/sys/class/iscsi_session/session*/state && break; sleep 1; done",
                     timeout=timeout + 10)


def _report(lab, text: str) -> dict:
    import json
    path = re.search(r"report: (\S+)\.txt", text).group(1) + ".json"
    return json.loads(lab["guest"].run(f"cat {path}"))


def _mapfile(lab, n: int) -> Mapfile:
    return Mapfile.parse(lab["guest"].run(f"cat /tmp/copy-{n}.map"))


def _identical(lab, n: int) -> bool:
    return lab["src"].read_bytes() == lab["dsts"][n - 1].read_bytes()


def _outage(lab, side: str, n: int, freeze: float, log: str) -> dict:
    """Freeze ``side``'s tgtd 4 s into the copy for ``freeze`` seconds; timings."""
    tgt = lab["tgt"][side]
    _wait_log(lab, log, r"copy ", 60)
    time.sleep(4)
    tgt.proc.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    _wait_log(lab, log, r"path to 10\.0\.2\.2 lost, waiting", freeze + 30)
    seen = time.monotonic() - t0
    time.sleep(max(0.0, freeze - (time.monotonic() - t0)))
    tgt.proc.send_signal(signal.SIGCONT)
    t1 = time.monotonic()
    text = _wait_log(lab, log, r"__RC=\d+", 240)
    return {"waiting_shown_after": round(seen, 1), "frozen": round(t1 - t0, 1),
            "done_after_thaw": round(time.monotonic() - t1, 1), "text": text}


def _said(text: str, rep: dict | None = None) -> None:
    """What the copy said about the outage (for the log of the run)."""
    for line in text.splitlines():
        if "lost" in line or "__RC" in line:
            print("   ", line.strip()[:200])
    for w in (rep or {}).get("warnings", []):
        print("    report warning:", w[:200])


def test_attach_sets_a_short_replacement_timeout(lab):
    assert lab["tmo"] and set(lab["tmo"]) == {"15"}, lab["tmo"]


@pytest.mark.parametrize("side, n, freeze", [("src", 1, 40), ("dst", 2, 30)])
def test_an_outage_is_waited_out_and_the_copy_ends_identical(lab, side, n, freeze):
    role = {"src": "SOURCE", "dst": "TARGET"}[side]
    log = _copy(lab, n)
    got = _outage(lab, side, n, freeze, log)
    text = got.pop("text")
    lab["timings"][f"{role} outage"] = got
    assert "__RC=0" in text, text
    assert f"{role} path to 10.0.2.2 lost, waiting" in text
    assert re.search(r"\(gives up at 10:00\)", text)
    rep = _report(lab, text)
    _said(text, rep)
    assert rep["result"] == "ok" and rep["unreadable"]["bytes"] == 0, rep
    assert rep["copy"]["read_errors"] == 0
    waited = [w for w in rep["warnings"] if w.startswith(f"{role} path to 10.0.2.2 lost at")]
    assert waited and "waited, back" in waited[0], rep["warnings"]
    m = _mapfile(lab, n)
    assert m.bytes_with(FINISHED) == SIZE and m.bytes_with(BAD) == 0
    _wait_logged_in(lab)
    assert _identical(lab, n), f"TARGET LUN {n}'s backing file differs from the SOURCE"


def test_an_outage_past_the_limit_stops_resumable_then_resume_completes(lab):
    n, g = 3, lab["guest"]
    log = _copy(lab, n, "--outage-limit 20s")
    tgt = lab["tgt"]["src"]
    _wait_log(lab, log, r"copy ", 60)
    time.sleep(4)
    tgt.proc.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        text = _wait_log(lab, log, r"__RC=\d+", 150)
        stopped = time.monotonic() - t0
    finally:
        tgt.proc.send_signal(signal.SIGCONT)
    _said(text)
    assert "__RC=1" in text, text
    assert re.search(r"SOURCE path to 10\.0\.2\.2 lost: not back after 0:2\d \(the outage "
                     r"limit, 0:20\), gave up", text), text
    assert "nothing was recorded as unreadable" in text and "--resume" in text
    m = _mapfile(lab, n)
    assert m.bytes_with(BAD, NON_TRIMMED, NON_SCRAPED) == 0
    assert 0 < m.bytes_with(NON_TRIED) < SIZE and m.bytes_with(FINISHED) > 0
    _wait_logged_in(lab)
    t1 = time.monotonic()
    log = _copy(lab, n, "--resume", name="3-resume")
    text = _wait_log(lab, log, r"__RC=\d+", 180)
    lab["timings"]["past the limit"] = {"stopped_after_freeze": round(stopped, 1),
                                        "resume_run": round(time.monotonic() - t1, 1)}
    assert "__RC=0" in text, text
    assert "mapfile: resuming" in text
    rep = _report(lab, text)
    assert rep["result"] == "ok" and rep["unreadable"]["bytes"] == 0
    assert _identical(lab, n)
    g.run("true")
