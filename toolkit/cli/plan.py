"""``rtk plan``: check unattended plan files offline, print their JSON Schema.

    rtk plan check [--cmdline TEXT] [--json] FILE [FILE...]
    rtk plan schema

``check`` reads each FILE (JSON if it ends in .json, else YAML) as ``rtk.plan=`` would,
validates it against the schema (toolkit/unattended/plan.schema.json) and the checks
that follow it, combined with the kernel command line ``--cmdline`` when the plan is
meant for one (its ``rtk.plan=`` is not fetched: FILE stands for it), and checks that
the plan is complete for its mode. Nothing else: no network, no disk, no iSCSI, so the
NICs, the disk and the image are not looked for (the network settings are checked as
``rtk net set`` checks them, whatever NICs are here). One line per FILE when it is fine,
``FILE: ok (mode restore, disk serial:..., image ...)``, else one line per problem,
``FILE: PATH: what is wrong`` (never a CHAP secret). Exit codes: 0 every plan ok, 5 one
or more refused, 2 usage (no FILE, an invalid ``--cmdline``). ``schema`` prints the
schema, for an editor (docs/unattended.md, "The plan's schema").
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from toolkit.cli.common import subcommands
from toolkit.exitcodes import EXIT_OK, EXIT_REFUSED, EXIT_USAGE


def _summary(p) -> dict:
    """What the ok line says about the plan ``p`` (no secret, URLs without credentials)."""
    from toolkit.jobs.report import safe_url

    image = p.image and (safe_url(p.image.location) if p.image.kind == "url"
                         else p.image.location)
    source = image if p.mode == "copy" else None
    if p.mode == "copy" and not p.image and len(p.sources) == 1:
        source = f"iscsi:{p.sources[0].iqn}:{p.sources[0].lun}"
    return {"mode": p.mode, "disk": p.disk and str(p.disk),
            "consent": p.consent and str(p.consent),
            "image": image if p.mode != "copy" else None, "source": source,
            "sources": len(p.sources), "targets": len(p.targets),
            "chap": sum(1 for x in (*p.sources, *p.targets) if x.chap),
            "done": p.done, "report": p.report and safe_url(p.report),
            "pairs": [x.to_dict() for x in p.pairs]}


def _ok_line(s: dict) -> str:
    if not s["mode"]:
        return "no mode: values for a command line that gives rtk.mode="
    words = [f"mode {s['mode']}", f"disk {s['disk']}",
             f"source {s['source']}" if s["mode"] == "copy" else f"image {s['image']}"]
    if s["pairs"]:  # a copy job
        words = [f"mode {s['mode'] or '(from the command line)'}", f"{len(s['pairs'])} pairs: "
                 + "; ".join(f"{x['source']} -> {x['disk']}" for x in s["pairs"])]
    luns = [f"{n} {k}{'s' if n > 1 else ''}" for k, n in (("source", s["sources"]),
                                                          ("target", s["targets"])) if n]
    if luns:
        words.append(" and ".join(luns) + (f", {s['chap']} with CHAP" if s["chap"] else ""))
    return ", ".join(words + [f"then {s['done']}"])


def check_file(path: str, given: dict) -> tuple[dict | None, list[str]]:
    """(the plan's summary, []) or (None, its problems): ``path`` read and checked as
    ``rtk.plan=`` is, over it the command line values ``given``."""
    from toolkit.net.errors import NetRefused
    from toolkit.net.settings import validate
    from toolkit.unattended import plan as planmod

    try:
        values = planmod.from_file(planmod.read_plan_file(path))
        p = planmod.check(planmod.Plan(**{**planmod.merge(values, given), "plan": path}))
    except planmod.PlanError as e:
        return None, e.problems
    problems = []
    for i, s in enumerate(p.network):  # as the run checks them, but for the NICs here
        where = f"plan.network[{i}]" if "network" not in given else f"ip= ({s.iface})"
        try:
            validate(replace(s, dns=s.dns or p.nameservers), [s.nic])
        except NetRefused as e:
            problems.append(f"{where}: {e}")
    return (None, problems) if problems else (_summary(p), [])


def cmd_check(args: argparse.Namespace) -> int:
    from toolkit.unattended.cmdline import Cmdline
    from toolkit.unattended.plan import from_cmdline

    given: dict = {}
    if args.cmdline is not None:
        try:
            given = from_cmdline(Cmdline(args.cmdline))
        except ValueError as e:  # CmdlineError: names the parameter
            print(f"rtk plan check: --cmdline: {e}", file=sys.stderr)
            return EXIT_USAGE
        given.pop("plan", None)  # FILE stands for it: nothing is fetched
    results = []
    for path in args.files:
        summary, problems = check_file(path, given)
        results.append({"file": path, "ok": not problems, "errors": problems,
                        **(summary or {})})
    bad = sum(1 for r in results if not r["ok"])
    if args.json:
        json.dump({"ok": not bad, "plans": results}, sys.stdout, indent=2)
        print()
    else:
        for r in results:
            if r["ok"]:
                print(f"{r['file']}: ok ({_ok_line(r)})")
            for problem in r["errors"]:
                print(f"{r['file']}: {problem}")
        if len(results) > 1:
            print(f"checked {len(results)} plans: {len(results) - bad} ok, {bad} invalid")
    return EXIT_REFUSED if bad else EXIT_OK


def cmd_schema(_args: argparse.Namespace) -> int:
    from toolkit.unattended.plan import SCHEMA_TEXT

    sys.stdout.write(SCHEMA_TEXT)
    return EXIT_OK


def register(sub) -> None:
    """Add ``plan`` to ``rtk``'s subcommands."""
    p = sub.add_parser("plan", help="unattended plan files: check them offline, print the "
                                    "JSON Schema",
                       description="Check rtk.plan= files before machines boot with them.")
    psub = subcommands(p, "plan_command", "rtk plan")
    ck = psub.add_parser(
        "check", help="validate plan files offline (exit 0 all ok, 5 one or more invalid)",
        description="Validate each FILE as rtk.plan= would (schema, values, completeness "
                    "for its mode), without network or disks.")
    ck.add_argument("files", nargs="+", metavar="FILE", help="a JSON (.json) or YAML plan")
    ck.add_argument("--cmdline", metavar="TEXT",
                    help="the kernel command line the plans are meant for (its values "
                         "override the file's, as at boot; its rtk.plan= is not fetched)")
    ck.add_argument("--json", action="store_true", help="machine-readable output")
    ck.set_defaults(func=cmd_check)
    sc = psub.add_parser("schema", help="print the plan's JSON Schema (draft 2020-12)")
    sc.set_defaults(func=cmd_schema)
