"""The virtual handset's packet filter: the ``filter`` table of iptables and ip6tables, as much
of it as an auditor uses to drop QUIC (UDP 443) so that apps fall back to TCP.

Rules live in memory and are lost on reboot, as on a phone (Android's netd builds its own
chains at every boot; nothing an ``adb shell`` adds is kept). Matching knows the protocol
(``-p``) and the destination port (``--dport``); the network stack asks :meth:`Netfilter.verdict`
before it sends a datagram. What the command prints and returns follows iptables 1.8
(``iptables -S``, the ``Bad rule`` message of ``-C``/``-D``, status 1 and 2, 3 without root).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

CHAINS = ("INPUT", "FORWARD", "OUTPUT")
TARGETS = ("ACCEPT", "DROP", "REJECT")
VERSION = "iptables v1.8.7 (legacy)"
NOT_ROOT = (
    "{version}: can't initialize {name} table `filter': Permission denied (you must be root)\n"
    "Perhaps {name} or your kernel needs to be upgraded.\n"
)
BAD_RULE = "{name}: Bad rule (does a matching rule exist in that chain?).\n"


class RuleError(ValueError):
    """A command line iptables would refuse (status 2)."""


@dataclass(frozen=True, slots=True)
class Rule:
    chain: str
    proto: str | None
    dport: int | None
    target: str
    reject_with: str | None = None

    def spec(self) -> str:
        """The rule as ``iptables -S`` prints it."""
        parts = [f"-A {self.chain}"]
        if self.proto:
            parts.append(f"-p {self.proto}")
            if self.dport is not None:
                parts.append(f"-m {self.proto} --dport {self.dport}")
        parts.append(f"-j {self.target}")
        if self.target == "REJECT":
            parts.append(f"--reject-with {self.reject_with or 'icmp-port-unreachable'}")
        return " ".join(parts)

    def matches(self, proto: str, dport: int) -> bool:
        return (self.proto in (None, "all", proto)) and self.dport in (None, dport)


def parse_rule(chain: str, words: list[str]) -> Rule:
    proto: str | None = None
    dport: int | None = None
    target: str | None = None
    reject_with: str | None = None
    i = 0
    while i < len(words):
        word = words[i]
        value = words[i + 1] if i + 1 < len(words) else None
        if word in ("-p", "--protocol") and value is not None:
            proto = value.lower()
        elif word in ("-m", "--match") and value is not None:
            if value not in ("udp", "tcp"):
                raise RuleError(f"Couldn't load match `{value}':No such file or directory")
        elif word in ("--dport", "--destination-port") and value is not None:
            if proto not in ("udp", "tcp"):
                raise RuleError(f'unknown option "{word}"')
            if not value.isdigit() or not 0 <= int(value) <= 65535:
                raise RuleError(f"invalid port/service `{value}' specified")
            dport = int(value)
        elif word in ("-j", "--jump") and value is not None:
            if value not in TARGETS:
                raise RuleError(f"Couldn't load target `{value}':No such file or directory")
            target = value
        elif word == "--reject-with" and value is not None and target == "REJECT":
            reject_with = value
        else:
            raise RuleError(f"Bad argument `{word}'")
        i += 2
    if target is None:
        raise RuleError("no target given")  # iptables accepts it; no audit writes one
    return Rule(chain, proto, dport, target, reject_with)


class Netfilter:
    """Both families' filter tables (``ipv4``: iptables, ``ipv6``: ip6tables)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rules: dict[str, list[Rule]] = {"ipv4": [], "ipv6": []}

    def flush_all(self) -> None:
        """At boot: nothing added from a shell survives."""
        with self._lock:
            self.rules = {"ipv4": [], "ipv6": []}

    def verdict(self, family: str, proto: str, dport: int) -> str:
        """What the OUTPUT chain does with a packet the phone sends: the first matching
        rule's target, else the policy (ACCEPT)."""
        with self._lock:
            for rule in self.rules[family]:
                if rule.chain == "OUTPUT" and rule.matches(proto, dport):
                    return rule.target
        return "ACCEPT"

    def command(self, name: str, args: list[str], is_root: bool) -> tuple[int, str, str]:
        """Run ``iptables``/``ip6tables`` ARGS: (status, stdout, stderr)."""
        family = "ipv6" if name.startswith("ip6") else "ipv4"
        version = VERSION.replace("iptables", name)
        words = list(args)
        while "-w" in words or "--wait" in words:  # the xtables lock: nobody else holds it
            at = words.index("-w") if "-w" in words else words.index("--wait")
            del words[at]
            if at < len(words) and words[at].isdigit():
                del words[at]
        if words in (["-V"], ["--version"]):
            return 0, version + "\n", ""
        if not is_root:
            return 3, "", NOT_ROOT.format(version=version, name=name)
        if words[:2] == ["-t", "filter"]:
            words = words[2:]
        elif words[:1] == ["-t"]:
            return 3, "", f"{name}: can't initialize {name} table `{words[1:2]}'\n"
        if not words:
            return 2, "", f"{version}: no command specified\nTry `{name} -h' for more.\n"
        op, rest = words[0], words[1:]
        try:
            return self._run(name, family, op, rest)
        except RuleError as exc:
            return 2, "", f"{version}: {exc}\nTry `{name} -h' for more information.\n"

    def _run(self, name: str, family: str, op: str, rest: list[str]) -> tuple[int, str, str]:
        if op in ("-S", "--list-rules"):
            chains = [c for c in CHAINS if not rest or rest[0] == c]
            if not chains:
                return 1, "", f"{name}: No chain/target/match by that name.\n"
            with self._lock:
                rules = list(self.rules[family])
            lines = [f"-P {c} ACCEPT" for c in chains]
            lines += [r.spec() for r in rules if r.chain in chains]
            return 0, "".join(line + "\n" for line in lines), ""
        if op not in ("-A", "--append", "-I", "--insert", "-D", "--delete", "-C", "--check"):
            raise RuleError(f'unknown option "{op}"')
        if not rest or rest[0] not in CHAINS:
            return 1, "", f"{name}: No chain/target/match by that name.\n"
        chain, words = rest[0], rest[1:]
        position = 0
        if op in ("-I", "--insert") and words and words[0].isdigit():
            position, words = int(words[0]) - 1, words[1:]
        rule = parse_rule(chain, words)
        with self._lock:
            table = self.rules[family]
            if op in ("-A", "--append"):
                table.append(rule)
            elif op in ("-I", "--insert"):
                table.insert(max(0, position), rule)
            elif rule in table:
                if op in ("-D", "--delete"):
                    table.remove(rule)
            else:
                return 1, "", BAD_RULE.format(name=name)
        return 0, "", ""
