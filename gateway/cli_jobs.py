"""`graph-gateway jobs list|show|verify|repair|rollback`: the admin API from a terminal.

Tables for people, `--json` for scripts (the API's own JSON). It writes only to the streams it
is given (cli.py passes the real ones) and never shows a token. Exit codes: 0 done; 1 the API
answered an error, or a rollback left failed steps; 2 a usage error or no admin API to reach.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from gateway.admin_client import AdminAPIError, AdminClient, AdminConnectionError, admin_client

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
# Free text (names, reasons, error messages) is cut to this many characters in a table cell,
# so one long value does not push every other column off a terminal.
MAX_CELL = 60
# `jobs show` lists this many of the job's newest audit rows; `/admin/v1/audit?job=` has all.
SHOWN_AUDIT = 10
YES = frozenset({"y", "yes"})


@dataclass(frozen=True)
class Terminal:
    out: TextIO
    err: TextIO
    stdin: TextIO

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def dump(self, doc: Any) -> None:
        self.out.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


@dataclass(frozen=True)
class Access:
    """Where the admin API is and the tokens: the admin token for it, the Graph token (or
    None: the gateway's own GATEWAY_ROLLBACK_TOKEN) for the Graph calls it makes."""

    admin_url: str
    admin_token: str | None
    graph_token: str | None


Command = Callable[[AdminClient, argparse.Namespace, Access, Terminal], Awaitable[int]]


async def run(args: argparse.Namespace, access: Access, term: Terminal) -> int:
    """Run `jobs <args.jobs_command>`; its exit code."""
    if args.jobs_command == "rollback" and not args.dry_run and not (args.reason or "").strip():
        term.err.write(
            "graph-gateway jobs rollback: --reason TEXT is required to execute a rollback "
            "(it goes into every audit row); --dry-run only shows the plan\n"
        )
        return EXIT_USAGE
    try:
        async with admin_client(access.admin_url, access.admin_token) as client:
            return await COMMANDS[args.jobs_command](client, args, access, term)
    except AdminConnectionError as exc:
        term.err.write(f"graph-gateway: cannot reach the admin API at {access.admin_url}: {exc}\n")
        return EXIT_USAGE
    except AdminAPIError as exc:
        if args.json and isinstance(exc.body, dict):
            term.dump(exc.body)
        term.err.write(f"graph-gateway: the admin API answered {exc.status}: {exc.message}\n")
        return EXIT_API_ERROR


# --- commands --------------------------------------------------------------------------------


async def _list(client: AdminClient, args: argparse.Namespace, _: Access, term: Terminal) -> int:
    query = {"status": args.status, "account": args.account, "since": args.since}
    params = {k: v for k, v in query.items() if v is not None}
    if args.limit is not None:
        params["limit"] = str(args.limit)
    pages = []
    async with aclosing(client.pages("/admin/v1/jobs", params)) as listing:
        async for page in listing:
            pages.append(page)
            if not args.all:
                break
    jobs = [job for page in pages for job in page.get("data", [])]
    more = bool(pages[-1].get("paging", {}).get("next"))
    if args.json:
        term.dump(pages[0] if len(pages) == 1 else {"data": jobs, "paging": {}})
        return EXIT_OK
    if not jobs:
        term.say("No jobs.")
        return EXIT_OK
    term.say(
        _table(
            ("JOB", "STATUS", "ACCOUNT", "CAMPAIGN", "EXPECT", "CREATED"),
            [
                (
                    j["job_id"],
                    j["status"],
                    j["ad_account_id"],
                    j["campaign_name"],
                    _expect(j.get("expect", {})),
                    _when(j.get("created_at")),
                )
                for j in jobs
            ],
        )
    )
    if more:
        term.say("(more jobs: --all lists every page)")
    return EXIT_OK


async def _show(client: AdminClient, args: argparse.Namespace, _: Access, term: Terminal) -> int:
    job = await client.job(args.job_id)
    if args.json:
        term.dump(job)
        return EXIT_OK
    pre = job.get("verification", {}).get("status", "-")
    term.say(
        _fields(
            [
                ("job", job["job_id"]),
                ("status", job["status"]),
                ("account", job["ad_account_id"]),
                ("campaign", f"{job['campaign_name']} ({job.get('campaign_id') or 'not created'})"),
                ("external ref", job.get("external_ref") or "-"),
                ("created", _when(job.get("created_at"))),
                ("updated", _when(job.get("updated_at"))),
                ("pre-creation check", pre),
            ]
        )
    )
    slots = job.get("slots", {})
    columns = ("expected", "created", "in_flight", "unknown", "free")
    term.say("\nSlots")
    term.say(
        _table(
            ("TYPE", *(c.upper().replace("_", " ") for c in columns)),
            [(kind, *(str(row.get(c, 0)) for c in columns)) for kind, row in slots.items()],
        )
    )
    entities = job.get("entities", [])
    term.say(f"\nEntities ({len(entities)})")
    term.say(
        _table(
            ("GRAPH ID", "TYPE", "STATE", "SOURCE", "SLOT", "NAME"),
            [
                (
                    e.get("graph_id") or "-",
                    e["entity_type"],
                    e["state"],
                    e.get("source", "-"),
                    _str(e.get("slot_no")),
                    e.get("name") or "-",
                )
                for e in entities
            ],
        )
    )
    audit = job.get("audit", [])
    if audit:
        term.say(f"\nAudit (newest {min(len(audit), SHOWN_AUDIT)} of {len(audit)})")
        term.say(
            _table(
                ("WHEN", "ACTION", "OUTCOME", "GRAPH ID", "REASON"),
                [
                    (
                        _when(a.get("created_at")),
                        a["action"],
                        a["outcome"],
                        _str(a.get("graph_id")),
                        a.get("reason", ""),
                    )
                    for a in audit[:SHOWN_AUDIT]
                ],
            )
        )
    rollback = job.get("rollback")
    if rollback and rollback.get("available"):
        term.say(
            f"\nRollback available ({rollback['entities']} entities): "
            f"graph-gateway jobs rollback {job['job_id']} --reason TEXT"
        )
    return EXIT_OK


async def _verify(
    client: AdminClient, args: argparse.Namespace, access: Access, term: Terminal
) -> int:
    answer = await client.job_action(args.job_id, "verify", _token_body(access))
    if args.json:
        term.dump(answer)
        return EXIT_OK
    _say_verification(term, answer["job_id"], answer["verification"])
    return EXIT_OK


async def _repair(
    client: AdminClient, args: argparse.Namespace, access: Access, term: Terminal
) -> int:
    answer = await client.job_action(args.job_id, "repair", _token_body(access))
    if args.json:
        term.dump(answer)
        return EXIT_OK
    _say_verification(term, answer["job_id"], answer["verification"])
    repair = answer["repair"]
    counts = {k: len(repair.get(k, [])) for k in ("freed", "adopted", "not_adopted")}
    term.say(f"\nRepair: {_tally(counts)}; job status {answer['job_status']}")
    rows = [
        (
            kind.replace("_", " "),
            r.get("graph_id", "-"),
            r.get("entity_type", "-"),
            _str(r.get("slot_no")),
            r.get("why", ""),
        )
        for kind in ("freed", "adopted", "not_adopted")
        for r in repair.get(kind, [])
    ]
    if rows:
        term.say(_table(("DONE", "GRAPH ID", "TYPE", "SLOT", "WHY"), rows))
    return EXIT_OK


async def _rollback(
    client: AdminClient, args: argparse.Namespace, access: Access, term: Terminal
) -> int:
    async def post(body: Mapping[str, Any]) -> dict[str, Any]:
        if args.campaign:
            return await client.campaign_rollback(args.id, body)
        return await client.job_action(args.id, "rollback", body)

    plan = await post({"dry_run": True})
    if not args.json:
        _say_plan(term, plan)
    count = int(plan.get("count", 0))
    unfinished = plan.get("job_status") == "partially_rolled_back"
    if args.dry_run or (count == 0 and not unfinished):
        if args.json:
            term.dump(plan)
        elif count == 0:
            term.say("Nothing to delete.")
        return EXIT_OK
    if not args.yes:
        question = f"Delete {count} entities? [y/N] "
        if count == 0:
            question = "Nothing is left to delete; finish the rollback? [y/N] "
        term.err.write(question)
        term.err.flush()
        if term.stdin.readline().strip().lower() not in YES:
            if args.json:
                term.dump(plan)
            else:
                term.say("Nothing deleted.")
            return EXIT_OK
    # Pinned to the plan shown: if anything changed since (a job still running), the gateway
    # refuses (409) and deletes nothing, rather than delete what the operator never saw.
    body = {
        "dry_run": False,
        "reason": args.reason.strip(),
        "plan_id": plan.get("plan_id"),
        **_token_body(access),
    }
    report = await post(body)
    if args.json:
        term.dump(report)
    else:
        _say_report(term, report)
    if report.get("outcome") != "ok":
        term.err.write(
            f"graph-gateway: {len(report.get('failures', []))} step(s) failed; "
            "running the rollback again retries them\n"
        )
        return EXIT_API_ERROR
    return EXIT_OK


COMMANDS: Mapping[str, Command] = {
    "list": _list,
    "show": _show,
    "verify": _verify,
    "repair": _repair,
    "rollback": _rollback,
}


# --- rendering -------------------------------------------------------------------------------


def _token_body(access: Access) -> dict[str, str]:
    return {"access_token": access.graph_token} if access.graph_token else {}


def _target(doc: Mapping[str, Any]) -> str:
    what = f"job {doc['job_id']}" if doc.get("job_id") else f"campaign {doc.get('campaign_id')}"
    details = [f"account {doc.get('account_id') or '-'}"]
    if doc.get("job_id"):
        details.append(f"campaign {doc.get('campaign_id') or '-'}")
        details.append(f"job status {doc.get('job_status')}")
    return f"{what} ({', '.join(details)})"


def _say_plan(term: Terminal, plan: Mapping[str, Any]) -> None:
    steps = plan.get("steps", [])
    term.say(f"Rollback plan for {_target(plan)}")
    term.say(
        f"{plan.get('count', len(steps))} entities to delete in {plan.get('batches', 0)} "
        "batches, children first"
    )
    if steps:
        term.say(
            _table(
                ("BATCH", "TYPE", "GRAPH ID"),
                [(str(s["batch"]), s["entity_type"], s["graph_id"]) for s in steps],
            )
        )
    if plan.get("done"):
        term.say(f"Already deleted by an earlier run: {len(plan['done'])}")
    kept = plan.get("kept", [])
    if kept:
        term.say("Kept (not deleted):")
        term.say(
            _table(
                ("TYPE", "GRAPH ID", "WHY"),
                [(k["entity_type"], _str(k.get("graph_id")), k.get("why", "")) for k in kept],
            )
        )


def _say_report(term: Terminal, report: Mapping[str, Any]) -> None:
    term.say(
        f"\nRollback {report.get('run')} of {_target(report)}: "
        f"{'complete' if report.get('outcome') == 'ok' else 'PARTIAL'}; "
        f"{_tally(report.get('counts', {}))}"
    )
    steps = report.get("steps", [])
    if steps:
        term.say(
            _table(
                ("BATCH", "TYPE", "GRAPH ID", "OUTCOME", "ERROR"),
                [
                    (
                        str(s["batch"]),
                        s["entity_type"],
                        s["graph_id"],
                        s["outcome"],
                        (s.get("error") or {}).get("message", ""),
                    )
                    for s in steps
                ],
            )
        )


def _say_verification(term: Terminal, job_id: str, report: Mapping[str, Any]) -> None:
    state = "clean" if report.get("clean") else _tally(report.get("counts", {}))
    term.say(f"Job {job_id}: {state} ({report.get('checked', 0)} entities read back from Graph)")
    rows = [
        (
            kind,
            f["graph_id"],
            _str(f.get("entity_type")),
            _str(f.get("slot_no")),
            f.get("detail", ""),
        )
        for kind in ("missing", "untracked", "mismatched")
        for f in report.get(kind, [])
    ]
    if rows:
        term.say(_table(("FINDING", "GRAPH ID", "TYPE", "SLOT", "DETAIL"), rows))


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    cells = [list(headers), *([_cell(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _fields(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in pairs)


def _cell(value: str) -> str:
    value = " ".join(value.split())
    return value if len(value) <= MAX_CELL else value[: MAX_CELL - 1] + "…"


def _str(value: object) -> str:
    return "-" if value is None else str(value)


def _expect(expect: Mapping[str, Any]) -> str:
    """`{"campaign": 1, "adset": 50}` as "campaign 1, adset 50"."""
    return ", ".join(f"{kind} {n}" for kind, n in expect.items())


def _tally(counts: Mapping[str, Any]) -> str:
    """`{"ok": 3, "failed": 0}` as "3 ok, 0 failed"."""
    return ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in counts.items())


def _when(iso: str | None) -> str:
    """An ISO 8601 time as UTC to the second, the way a terminal table shows it."""
    if not iso:
        return "-"
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
