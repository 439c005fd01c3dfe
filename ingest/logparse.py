"""Kernel, driver and service log lines → typed `LogEvent` fields.

Each rule is a kind, a severity and a regular expression whose named groups become fields
(digits become ints). The first rule that matches wins; a line no rule knows is kept as
kind "raw". `parse_line` also strips a syslog / journal / dmesg prefix and reads its time.

>>> p = parse_line("NVRM: Xid (PCI:0000:3b:00): 79, pid=1911, GPU has fallen off the bus.")
>>> p.kind, p.severity, p.fields["xid"], p.fields["pci"], p.fields["pid"]
('xid', 'critical', 79, '0000:3b:00', 1911)
>>> parse_line("hello world").kind
'raw'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

# XID codes and how bad they are (NVIDIA's XID catalogue; detectors/xid_table.yaml maps them to
# actions); unknown codes are errors.
XID_SEVERITY = {
    13: "warning",
    31: "warning",
    43: "info",
    45: "warning",
    46: "critical",
    48: "critical",
    62: "critical",
    63: "warning",
    64: "critical",
    74: "critical",
    79: "critical",
    92: "warning",
    94: "error",
    95: "critical",
    109: "critical",
    119: "critical",
    120: "critical",
    140: "critical",
    143: "critical",
    154: "critical",
}


@dataclass(frozen=True)
class Rule:
    kind: str
    severity: str
    pattern: re.Pattern
    ints: tuple[str, ...] = ()
    # Plain substrings of which one must occur for the rule to match: checking them first
    # skips most regular expressions on most lines.
    needles: tuple[str, ...] = ()


def _r(kind: str, severity: str, regex: str, ints: tuple[str, ...] = (), needles: tuple[str, ...] = ()) -> Rule:
    return Rule(kind, severity, re.compile(regex), ints, needles)


_PCI = r"[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-9a-fA-F])?"

RULES: list[Rule] = [
    _r(
        "xid",
        "error",
        r"NVRM: Xid \((?:PCI:)?(?P<pci>[0-9a-fA-F:.]+)\): (?P<xid>\d+),\s*"
        r"(?:pid=(?:'<unknown>'|(?P<pid>\d+)),\s*)?(?:name=(?P<process>[^,]{0,256}),\s*)?(?P<text>.*)",
        ("xid", "pid"),
        needles=("Xid",),
    ),
    # \A(?>(?s:.*?)NVRM: ): the first "NVRM: " only (atomic), so a line of many is not rescanned from each
    _r(
        "gpu_fell_off_bus",
        "critical",
        r"\A(?>(?s:.*?)NVRM: )(?:GPU (?:at )?(?:PCI:)?(?P<pci>" + _PCI + r")?:?\s*)?"
        r".*GPU has fallen off the bus",
        needles=("fallen off the bus",),
    ),
    _r(
        "gpu_uuid",
        "info",
        r"NVRM: GPU at (?:PCI:)?(?P<pci>[0-9a-fA-F:.]+): (?P<uuid>GPU-[0-9a-fA-F-]+)",
        needles=("GPU at",),
    ),
    _r(
        "sxid",
        "error",
        r"nvidia-nvswitch(?P<switch>\d+): SXid \(PCI:(?P<pci>[^)]{1,64})\): (?P<sxid>\d+), "
        r"(?P<fatality>Fatal|Non-fatal),?\s*(?P<text>.*)",
        ("switch", "sxid"),
        needles=("SXid",),
    ),
    # (an "NVRM: .*" prefix before the needle captured nothing and cost a scan per "NVRM: ": dropped)
    _r("row_remap", "warning", r"Row Remapper: (?P<text>New row marked for remapping.*)", needles=("Row Remapper",)),
    _r(
        "row_remap_failure", "critical", r"\A(?>(?s:.*?)Row Remapper: )(?P<text>.*[fF]ail.*)", needles=("Row Remapper",)
    ),
    _r(
        "page_retirement",
        "warning",
        r"Dynamic Page Retirement: (?P<text>New retired page.*)",
        needles=("Page Retirement",),
    ),
    _r(
        "page_retirement_failure",
        "critical",
        r"Dynamic Page Retirement: (?P<text>Fatal error.*)",
        needles=("Page Retirement",),
    ),
    _r(
        "oom_kill",
        "error",
        r"(?:Out of memory|Memory cgroup out of memory): Killed process (?P<pid>\d+) "
        r"\((?P<process>[^)]{0,256})\) total-vm:(?P<total_vm_kb>\d+)kB, anon-rss:(?P<anon_rss_kb>\d+)kB, "
        r"file-rss:(?P<file_rss_kb>\d+)kB",
        ("pid", "total_vm_kb", "anon_rss_kb", "file_rss_kb"),
        needles=("Killed process",),
    ),
    _r(
        "oom_kill",
        "error",
        r"Killed process (?P<pid>\d+) \((?P<process>[^)]{0,256})\) total-vm:(?P<total_vm_kb>\d+)kB, "
        r"anon-rss:(?P<anon_rss_kb>\d+)kB, file-rss:(?P<file_rss_kb>\d+)kB",
        ("pid", "total_vm_kb", "anon_rss_kb", "file_rss_kb"),
        needles=("Killed process",),
    ),
    _r(
        "hung_task",
        "error",
        r"INFO: task (?P<process>[\S ]{1,64}):(?P<pid>\d+) blocked for more than (?P<seconds>\d+) seconds\.",
        ("pid", "seconds"),
        needles=("blocked for more than",),
    ),
    _r(
        "kernel_oops",
        "critical",
        r"(?P<text>BUG: unable to handle (?:kernel )?(?:NULL pointer dereference|page fault).*"
        r"|divide error: 0000 \[#\d+\] SMP.*|Kernel panic - not syncing.*"
        r"|general protection fault.*|Oops: \d+ \[#\d+\].*)",
        needles=("BUG: ", "divide error", "Kernel panic", "general protection", "Oops: "),
    ),
    # The first "(…)" holding something (as `.*?\(([^)]+)\)` would find), without backtracking:
    # anchored and possessive, so it is one pass (the lazy form was cubic in the line's length).
    _r(
        "fs_readonly",
        "critical",
        r"\A(?P<fs>EXT4-fs|XFS|BTRFS)?[^(]*+(?:\(\)[^(]*+)*+\((?P<device>[^)]+)\)"
        r".*Remounting filesystem read-only",
        needles=("read-only",),
    ),
    _r(
        "fs_error",
        "error",
        r"EXT4-fs error \(device (?P<device>[^)]{1,256})\): (?P<text>.*)",
        needles=("EXT4-fs error",),
    ),
    _r(
        "fs_error",
        "critical",
        r"\A(?>(?s:.*?)XFS \()(?P<device>[^)]{1,256})\): .*Shutting down filesystem",
        needles=("Shutting down filesystem",),
    ),
    _r(
        "io_error",
        "error",
        r"(?:Buffer I/O error on dev(?:ice)? (?P<device>[^,\s]+)|"
        r"(?:blk_update_request|I/O error), dev (?P<device2>[^,\s]+)).*",
        needles=("I/O error",),
    ),
    # Non-Fatal must be tested before Fatal.
    _r(
        "pcie_aer",
        "warning",
        r"(?:pcieport )?(?:(?P<pci>" + _PCI + r"): )?AER: (?P<aer>Corrected) error received",
        needles=("AER:",),
    ),
    _r(
        "pcie_aer",
        "error",
        r"(?:pcieport )?(?:(?P<pci>" + _PCI + r"): )?AER: (?P<aer>Uncorrected \(Non-Fatal\)) error received",
        needles=("AER:",),
    ),
    _r(
        "pcie_aer",
        "critical",
        r"(?:pcieport )?(?:(?P<pci>" + _PCI + r"): )?AER: (?P<aer>Uncorrected \(Fatal\)) error received",
        needles=("AER:",),
    ),
    _r("mce", "error", r"mce: \[Hardware Error\]:?\s*(?P<text>.*)", needles=("mce:",)),
    _r(
        "service_crash",
        "error",
        r"(?<![\w@.-])(?P<service>[\w@.-]+)\.service: Main process exited, code=(?P<code>\w+), "
        r"status=(?P<status>[\w/]+)",
        needles=(".service: Main process exited",),
    ),
    _r(
        "service_crash",
        "error",
        r"(?<![\w@.-])(?P<service>[\w@.-]+)\.service: Failed with result '(?P<result>[\w-]+)'",
        needles=(".service: Failed with result",),
    ),
    _r(
        "service_restart",
        "warning",
        r"(?<![\w@.-])(?P<service>[\w@.-]+)\.service: Scheduled restart job, restart counter is at "
        r"(?P<restart_count>\d+)",
        ("restart_count",),
        needles=("Scheduled restart job",),
    ),
    _r(
        "service_crash",
        "error",
        r"(?:INFO |WARN |CRIT )?exited: (?P<service>\S+) \((?:exit status (?P<status>\d+)|"
        r"terminated by (?P<signal>\w+))(?:; not expected)\)",
        ("status",),
        needles=("exited: ",),
    ),
    _r(
        "service_crash",
        "critical",
        r"(?:INFO |WARN |CRIT )?gave up: (?P<service>\S+) entered FATAL state(?P<text>.*)",
        needles=("gave up: ",),
    ),
    _r(
        "service_restart",
        "info",
        r"(?:INFO )?spawned: '(?P<service>[^']+)' with pid (?P<pid>\d+)",
        ("pid",),
        needles=("spawned: ",),
    ),
]

# One scan finds which rules can match a line at all; only those run their expressions.
_NEEDLE_RULES: dict[str, list[int]] = {}
for _i, _rule in enumerate(RULES):
    for _n in _rule.needles:
        _NEEDLE_RULES.setdefault(_n, []).append(_i)
_NEEDLES = re.compile("|".join(re.escape(n) for n in sorted(_NEEDLE_RULES, key=len, reverse=True)))
_ALWAYS = [i for i, rule in enumerate(RULES) if not rule.needles]


def _candidate_rules(message: str) -> list[Rule]:
    found = set(_ALWAYS)
    for m in _NEEDLES.finditer(message):
        found.update(_NEEDLE_RULES[m.group(0)])
    return [RULES[i] for i in sorted(found)]


_MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}

# Lines with a time prefix: RFC 3339 (rsyslog, journalctl -o short-iso), classic syslog, dmesg.
_ISO = re.compile(r"^(?P<ts>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\s+(?P<rest>.*)$")
_SYSLOG = re.compile(r"^(?P<ts>[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2})\s+(?P<rest>.*)$")
_DMESG = re.compile(r"^\[\s*\d+\.\d+\]\s+(?P<rest>.*)$")
# After the time: "hostname program[pid]: message" (both optional).
_SOURCE = re.compile(r"^(?P<hostname>[A-Za-z0-9._-]+)\s+(?P<program>[\w./@-]+)(?:\[(?P<ppid>\d+)\])?:\s+(?P<msg>.*)$")


@dataclass
class Parsed:
    kind: str
    severity: str
    fields: dict = field(default_factory=dict)
    time: datetime | None = None  # from the line's own prefix, when it has one


def _line_time(ts: str, now: datetime) -> datetime | None:
    try:
        if ts[:4].isdigit():
            t = datetime.fromisoformat(ts.replace(",", ".").replace(" ", "T", 1))
            return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
        t = datetime(now.year, _MONTHS[ts[:3]], int(ts[4:6]), int(ts[7:9]), int(ts[10:12]), int(ts[13:15]), tzinfo=UTC)
        # Classic syslog has no year: a December line read in January belongs to last year.
        return t.replace(year=now.year - 1) if (t - now).days > 300 else t
    except (ValueError, KeyError, OverflowError):  # year 9999 with an offset overflows in astimezone
        return None


# Only this much of a line is parsed (a kernel line is at most 1024 bytes); the whole line is kept
# in the LogEvent. Every pattern above runs in time linear in its input, and this bounds the constant.
MAX_PARSE_CHARS = 4096


def parse_line(line: str, now: datetime | None = None) -> Parsed:
    """Classify one log line (its first MAX_PARSE_CHARS characters); never raises."""
    now = now or datetime.now(UTC)
    message, when = line[:MAX_PARSE_CHARS].rstrip("\r\n"), None
    candidates = []  # (message, program): with the "host program[pid]:" part taken off, then without
    for prefix in (_ISO, _SYSLOG):
        m = prefix.match(message)
        if m:
            when = _line_time(m.group("ts"), now)
            message = m.group("rest")
            src = _SOURCE.match(message)
            if src:
                candidates.append((src.group("msg"), src.group("program")))
            break
    candidates.append((message, None))
    cleaned = []
    for message, program in candidates:
        m = _DMESG.match(message)
        message = m.group("rest") if m else message
        if message.startswith("kernel: "):
            message, program = message[len("kernel: ") :], "kernel"
            m = _DMESG.match(message)
            message = m.group("rest") if m else message
        cleaned.append((message, program))
    for rule, (message, program) in ((r, c) for c in cleaned for r in _candidate_rules(c[0])):
        m = rule.pattern.search(message)
        if not m:
            continue
        fields: dict[str, str | int] = {k: v for k, v in m.groupdict().items() if v is not None and v != ""}
        if "device2" in fields:
            fields["device"] = fields.pop("device2")
        for name in rule.ints:
            if name in fields:
                fields[name] = int(fields[name])
        for name, value in list(fields.items()):
            if isinstance(value, str):
                fields[name] = value.strip()[:1024]
        severity = rule.severity
        if rule.kind == "xid":
            severity = XID_SEVERITY.get(int(fields["xid"]), "error")  # "xid" is one of the rule's ints
        if program:
            fields["program"] = program
        return Parsed(rule.kind, severity, fields, when)
    program = cleaned[0][1]
    return Parsed("raw", "info", {"program": program} if program else {}, when)
