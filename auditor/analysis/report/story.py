"""What a report tells a reader, built from ``findings.json`` alone: the findings grouped by
recipient in severity order, the plain sentences of the summary, and what could not be
inspected. ``report.html`` and ``summary.md`` render the same story, so they say the same
thing in the same order.

Long because: the story is one narrative in one order, which both renderers follow; split,
the order would live in two places.

Every sentence carries the links (findings, recipients, sections) it rests on, and says no
more than the document does: a recipient named on medium or low confidence evidence is
"attributed", an unknown operator is never named after its hosting network, and a capture
that could not see something says so. Sentences hold captured text (names, hosts): the
renderers escape them.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

from auditor.intel.lookalike import key_of_shown

SEVERITIES = ("critical", "high", "medium", "low", "info")
UNKNOWN = "(unknown operator)"
SEVERAL = "(several recipients)"
MAX_LINKS = 8

IDENTIFIER_WORDS = {
    "imei": "IMEI",
    "android_id": "Android ID",
    "serial": "serial number",
    "wifi_mac": "Wi-Fi MAC address",
    "advertising_id": "advertising ID",
    "phone_number": "phone number",
    "account": "account name",
    "imsi": "IMSI",
    "iccid": "SIM serial number (ICCID)",
}
BASIS_WORDS = {
    "kb-host": "auditor's knowledge base (host)",
    "kb-domain": "auditor's knowledge base (domain)",
    "intel-import": "imported intelligence",
    "dataset": "a tracker data set",
    "certificate": "the server's certificate",
    "cname": "a DNS CNAME chain",
}
CONFIDENCE_RANK = {"high": 0, "medium": 1, "low": 2, "none": 3}
# what left the phone, per rule; the rest say how often, or where, or what was not seen
_THE = {"Netherlands", "Philippines", "Bahamas", "Gambia", "Maldives", "Czech Republic"}
_SENT_RULES = ("identifier-sent", "cleartext-identifier", "app-list", "personal-data")


@dataclass(frozen=True, slots=True)
class Link:
    anchor: str  # an id in report.html: "f-...", "r-2", "coverage"
    label: str  # what the reader sees: "F3", "Xiaomi Corporation", "coverage"


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str  # plain and unescaped: it holds captured names
    links: tuple[Link, ...] = ()
    hedged: bool = False


@dataclass(slots=True)
class Item:
    """A finding as the report numbers it (F1, F2 ... in the order shown)."""

    label: str
    anchor: str
    finding: dict[str, Any]


@dataclass(slots=True)
class Group:
    """One recipient and the findings about it."""

    key: str
    anchor: str
    name: str
    country: str | None
    worst: str
    verdict: dict[str, Any]
    endpoints: list[dict[str, Any]]
    items: list[Item] = field(default_factory=list)
    sentences: list[Sentence] = field(default_factory=list)


@dataclass(slots=True)
class Story:
    session: str
    sessions: list[str]
    device: str
    scenario: str | None
    overview: list[Sentence]
    groups: list[Group]
    others: list[Sentence]
    claims: list[Sentence]
    gaps: list[Sentence]
    items: dict[str, Item]  # by finding id
    flow_ids: list[str]  # every flow a finding cites, in first-cited order


def severity_rank(sev: Any) -> int:
    return SEVERITIES.index(sev) if sev in SEVERITIES else len(SEVERITIES)


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def join_words(items: list[str], *, limit: int = 0, more: str = "more") -> str:
    """``a, b and c``; with ``limit``, ``a, b and 3 more``."""
    items = [i for i in items if i]
    if limit and len(items) > limit:
        items = [*items[:limit], f"{len(items) - limit} {more}"]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _was(n: int) -> str:
    return "was" if n == 1 else "were"


def device_text(dev: dict[str, Any] | None) -> str:
    """``Xiaomi M2007J3SG (Android 10)``; ``unknown device`` when the profile says nothing."""
    dev = dev or {}
    words = [str(dev[k]).strip() for k in ("manufacturer", "model") if dev.get(k)]
    words = [w for w in words if w]
    if len(words) == 2 and words[1].lower().startswith(words[0].lower()):
        words = words[1:]
    name = " ".join(words) or "unknown device"
    release = str(dev.get("android_release") or "").strip()
    return f"{name} (Android {release})" if release else name


def flow_anchor(flow_id: str) -> str:
    """A safe, stable id for a flow's row (flow ids hold '/', '#' and captured file names)."""
    return "flow-" + hashlib.sha256(str(flow_id).encode("utf-8", "replace")).hexdigest()[:12]


def _finding_anchor(fid: str, taken: set[str]) -> str:
    base = "f-" + (re.sub(r"[^a-z0-9-]+", "-", str(fid).lower()).strip("-") or "x")
    anchor, n = base, 1
    while anchor in taken:
        n += 1
        anchor = f"{base}-{n}"
    taken.add(anchor)
    return anchor


def _key(f: dict[str, Any]) -> str:
    if f.get("organisation"):
        return str(f["organisation"])
    recipients = (f.get("data") or {}).get("recipients") or []
    return SEVERAL if len(recipients) > 1 else UNKNOWN


def _utc(ts: Any) -> str:
    s = str(ts or "")
    return s[:19].replace("T", " ") + " UTC" if len(s) >= 19 else s


def _span(first: str, last: str) -> str:
    """``between 2026-12-06 08:00:32 and 08:01:03 UTC`` (the date once when it is the same)."""
    a, b = _utc(first), _utc(last)
    if a == b:
        return f"at {a}"
    if a[:10] == b[:10] and len(b) > 11:
        return f"between {a.removesuffix(' UTC')} and {b[11:]}"
    return f"between {a} and {b}"


def _law_names(basis: str) -> str:
    """The laws of a legal-exposure basis: the text before its first ': '."""
    return str(basis).split(": ", 1)[0]


def _country(cc: Any, names: dict[str, str]) -> str:
    if not cc:
        return ""
    name = names.get(str(cc))
    if not name:
        return str(cc)
    the = "the " if name.startswith("United ") or name in _THE else ""
    return f"{the}{name} ({cc})"


def build_story(doc: dict[str, Any]) -> Story:
    findings = sorted(
        doc.get("findings") or [],
        key=lambda f: (severity_rank(f.get("severity")), str(f.get("rule")), str(f.get("title"))),
    )
    verdicts = {str(v.get("organisation") or UNKNOWN): v for v in doc.get("verdicts") or []}
    endpoints: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in doc.get("endpoints") or []:
        endpoints[str(e.get("organisation") or UNKNOWN)].append(e)
    names = _country_names(doc)

    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in findings:
        by_key[_key(f)].append(f)
    order = sorted(
        by_key,
        key=lambda k: (
            severity_rank(by_key[k][0].get("severity")),
            k in (UNKNOWN, SEVERAL),
            -int((verdicts.get(k) or {}).get("bytes_up") or 0),
            -len(by_key[k]),
            k,
        ),
    )
    groups: list[Group] = []
    items: dict[str, Item] = {}
    taken: set[str] = set()
    flow_ids: dict[str, None] = {}
    n = 0
    for i, key in enumerate(order, 1):
        v = verdicts.get(key) or {"organisation": key}
        g = Group(
            key=key,
            anchor=f"r-{i}",
            name={UNKNOWN: "unknown operator", SEVERAL: "several recipients"}.get(key, key),
            country=v.get("country"),
            worst=str(by_key[key][0].get("severity")),
            verdict=v,
            endpoints=endpoints.get(key, []),
        )
        for f in by_key[key]:
            n += 1
            item = Item(f"F{n}", _finding_anchor(str(f.get("id")), taken), f)
            g.items.append(item)
            items[str(f.get("id"))] = item
            flow_ids.update((str(x), None) for x in f.get("flow_ids") or [])
        g.sentences = _group_sentences(g, names, _searched(doc))
        groups.append(g)

    sessions = [str(s) for s in (doc.get("session") or {}).get("ids") or []]
    session = str((doc.get("session") or {}).get("id") or "")
    method = doc.get("method") or {}
    scenario = (method.get("scenario") or {}).get("name") or None
    if not scenario:
        named = [s for s in (doc.get("coverage") or {}).get("scenarios") or [] if s and s != "-"]
        scenario = ", ".join(dict.fromkeys(str(s) for s in named)) or None
    story = Story(
        session=session,
        sessions=sessions or ([session] if session else []),
        device=device_text(doc.get("device")),
        scenario=str(scenario) if scenario else None,
        overview=[],
        groups=groups,
        others=_others(doc, set(by_key)),
        claims=_claims(doc),
        gaps=_gaps(doc, findings, items),
        items=items,
        flow_ids=list(flow_ids),
    )
    story.overview = _overview(doc, story, findings)
    return story


@cache
def _known_countries() -> dict[str, str]:
    """Country names from the knowledge base's jurisdictions (codes stay codes without it)."""
    try:
        text = files("auditor.intel").joinpath("data/jurisdictions.yaml").read_text("utf-8")
        countries = (yaml.safe_load(text) or {}).get("countries") or {}
    except (OSError, ValueError, yaml.YAMLError):  # pragma: no cover - the file ships
        return {}
    return {
        str(k): str(v["name"])
        for k, v in countries.items()
        if isinstance(v, dict) and v.get("name")
    }


def _searched(doc: dict[str, Any]) -> str:
    """How a recipient without an identifier finding is described: what auditor could look
    for, and in what."""
    cov = doc.get("coverage") or {}
    total = int(cov.get("connections") or 0)
    unread = int(cov.get("seen_only_in_packets") or 0) + int(cov.get("not_decrypted") or 0)
    if total and unread >= total:
        return "none of their content could be read (seen only as packets or not decrypted)"
    if not doc.get("identifiers_searched"):
        return "no device identifier was known to search for in them"
    return "auditor found no device identifier in what it could read of them"


def _country_names(doc: dict[str, Any]) -> dict[str, str]:
    """Country names as the document's legal facts give them, else as the knowledge base
    does."""
    names: dict[str, str] = dict(_known_countries())
    for rows in (doc.get("verdicts") or [], doc.get("endpoints") or []):
        for r in rows:
            for x in r.get("legal_exposure") or []:
                if x.get("country") and x.get("country_name"):
                    names[str(x["country"])] = str(x["country_name"])
    return names


def _links(g: Group, items: list[Item]) -> tuple[Link, ...]:
    out = [Link(i.anchor, i.label) for i in items[:MAX_LINKS]]
    if len(items) > MAX_LINKS:
        out.append(Link(g.anchor, f"{len(items) - MAX_LINKS} more"))
    return tuple(out)


def _of(g: Group, *rules: str) -> list[Item]:
    return [i for i in g.items if i.finding.get("rule") in rules]


def _who(g: Group) -> tuple[str, bool]:
    """The recipient in words, and whether the words are hedged."""
    if g.key == SEVERAL:
        return "Several recipients", False
    if g.key != UNKNOWN:
        levels = {str(e.get("confidence") or "none") for e in g.endpoints} or {"high"}
        worst = max(levels, key=lambda c: CONFIDENCE_RANK.get(c, 3))
        if worst == "high":
            return g.key, False
        return f"Servers attributed to {g.key}", True
    hosting: Counter[str] = Counter()
    for e in g.endpoints:
        for h in e.get("hosting") or []:
            if h.get("label"):
                hosting[str(h["label"])] += int(h.get("flows") or 0)
    if not hosting:
        return "An unknown operator (nothing names who runs its servers)", False
    labels = [label for label, _ in sorted(hosting.items(), key=lambda x: (-x[1], x[0]))]
    return f"An unknown operator, hosted by {join_words(labels, limit=3)}", False


def _group_sentences(g: Group, names: dict[str, str], searched: str) -> list[Sentence]:
    out: list[Sentence] = []
    who, hedged = _who(g)
    anchor = (Link(g.anchor, "details"),)
    # what left the phone
    sent: list[str] = []
    sent_items = _of(g, *_SENT_RULES)
    id_items = _of(g, "identifier-sent", "cleartext-identifier")
    idents = sorted({x for i in id_items for x in i.finding.get("identifiers") or []})
    if idents:
        sent.append("the " + join_words([_identifier_form(x, id_items) for x in idents]))
    for i in _of(g, "app-list"):
        count = (i.finding.get("data") or {}).get("count")
        sent.append(
            "the list of installed apps"
            + (f" ({plural(int(count), 'package name')})" if count else "")
        )
        break
    kinds = sorted(
        {
            k
            for i in _of(g, "personal-data")
            for k in (i.finding.get("data") or {}).get("kinds") or {}
        }
    )
    if kinds:
        sent.append(f"values shaped like personal data ({', '.join(kinds)})")
    uploads = _of(g, "encrypted-upload")
    if uploads:
        count = sum(int((i.finding.get("data") or {}).get("uploads") or 0) for i in uploads)
        sent.append(f"{plural(count, 'encrypted upload')} whose content could not be read")
        sent_items += uploads
    flows = int(g.verdict.get("flows") or 0)
    if sent:
        out.append(Sentence(f"{who} received {join_words(sent)}.", _links(g, sent_items), hedged))
    else:
        out.append(
            Sentence(
                f"{who} exchanged {plural(flows, 'connection')} with the phone; {searched}.",
                _links(g, g.items),
                hedged,
            )
        )
    clear = _of(g, "cleartext-identifier")
    if clear:
        ids = sorted({x for i in clear for x in i.finding.get("identifiers") or []})
        out.append(
            Sentence(
                f"The {join_words([IDENTIFIER_WORDS.get(x, x) for x in ids])} travelled "
                "unencrypted, over plain HTTP, readable by anyone on the way.",
                _links(g, clear),
            )
        )
    # where, and whose law reaches it
    legal = _legal_sentence(g, names)
    if legal:
        out.append(
            Sentence(
                legal, _links(g, _of(g, "state-linked-contact", "transfer-no-adequacy")) or anchor
            )
        )
    servers = _server_sentence(g, names)
    if servers:
        out.append(Sentence(servers, anchor))
    # how often
    often = [f"{plural(flows, 'connection')}, {int(g.verdict.get('bytes_up') or 0):,} bytes sent"]
    seen = sorted(
        str(e.get(k)) for e in g.endpoints for k in ("first_seen", "last_seen") if e.get(k)
    )
    if seen:
        often[0] += f", {_span(seen[0], seen[-1])}"
    beacons = _of(g, "beacon")
    for i in beacons[:3]:
        d = i.finding.get("data") or {}
        if d.get("period_s"):
            often.append(f"{i.finding.get('host')} was contacted every ~{d['period_s']} s")
    idle = _of(g, "idle-traffic")
    if idle:
        n_idle = sum(len(i.finding.get("flow_ids") or []) for i in idle)
        often.append(f"{plural(n_idle, 'connection')} came while the phone was idle")
    text = join_words(often)
    out.append(Sentence(text[0].upper() + text[1:] + ".", _links(g, beacons + idle) or anchor))
    for i in _of(g, "keyword-list")[:2]:
        d = i.finding.get("data") or {}
        out.append(
            Sentence(
                f"It sent the phone a list of {d.get('count', 'many')} entries "
                f"({d.get('path') or 'a response'}): configuration that can filter or censor "
                "what the phone shows.",
                (Link(i.anchor, i.label),),
            )
        )
    hedge = _hedge_sentence(g)
    if hedge:
        out.append(hedge)
    return out


_HASHES = ("md5", "sha1", "sha256", "sha512", "sha224", "sha384", "crc32", "murmur")


def _identifier_form(name: str, items: list[Item]) -> str:
    """``IMEI``, ``IMEI (hashed)`` or ``IMEI (in clear and hashed)``, from how the evidence
    found it: a hash of an identifier still identifies the phone, but the reader should know."""
    words = IDENTIFIER_WORDS.get(name, name)
    hashed = set()
    for i in items:
        for ev in i.finding.get("evidence") or []:
            if ev.get("identifier") == name:
                last = str(ev.get("encoding") or "").split(">")[-1].strip().lower()
                hashed.add(any(last.startswith(h) for h in _HASHES))
    if hashed == {True}:
        return f"{words} (hashed)"
    if hashed == {True, False}:
        return f"{words} (in clear and hashed)"
    return words


def _legal_sentence(g: Group, names: dict[str, str]) -> str:
    if g.key in (UNKNOWN, SEVERAL):
        return ""
    parts: list[str] = []
    hq = g.country
    exposure = [
        x for x in g.verdict.get("legal_exposure") or [] if x.get("via") != "server location"
    ]
    own = [x for x in exposure if x.get("via") == "headquarters"]
    if hq:
        text = f"{g.key} is headquartered in {_country(hq, names)}"
        if own:
            laws = "; ".join(dict.fromkeys(_law_names(x.get("basis", "")) for x in own))
            text += f", whose laws ({laws}) can compel it to give access to data"
        parts.append(text)
    for x in exposure:
        if x.get("via") == "parent headquarters":
            parts.append(
                f"its parent {x.get('organisation')} is headquartered in "
                f"{_country(x.get('country'), names)}, whose laws "
                f"({_law_names(x.get('basis', ''))}) can compel access"
            )
    for s in g.verdict.get("state_control") or []:
        parts.append(f"a state controls it: {' '.join(str(s.get('statement') or '').split())}")
    if not parts:
        return ""
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _server_sentence(g: Group, names: dict[str, str]) -> str:
    flows: Counter[str] = Counter()
    laws: dict[str, str] = {}
    for e in g.endpoints:
        for h in e.get("hosting") or []:
            if h.get("country"):
                flows[str(h["country"])] += int(h.get("flows") or 0)
        if not e.get("hosting") and e.get("server_country"):
            flows[str(e["server_country"])] += int(e.get("flows") or 0)
        for x in e.get("legal_exposure") or []:
            if x.get("via") == "server location" and x.get("country"):
                laws[str(x["country"])] = _law_names(x.get("basis", ""))
    if not flows:
        return ""
    where = [c for c, _ in sorted(flows.items(), key=lambda x: (-x[1], x[0]))]
    text = f"Its servers stood in {join_words([_country(c, names) for c in where], limit=5)}"
    exposed = [f"{_country(c, names)}: {laws[c]}" for c in where if c in laws]
    if exposed:
        text += f"; laws that can compel access where they stood: {'; '.join(exposed)}"
    return text + "."


def _hedge_sentence(g: Group) -> Sentence | None:
    if g.key in (UNKNOWN, SEVERAL):
        return None
    weak = [e for e in g.endpoints if (e.get("confidence") or "none") != "high"]
    conflicts = [c for e in g.endpoints for c in e.get("conflicts") or []]
    parts = []
    if weak:
        how = sorted({BASIS_WORDS.get(str(e.get("basis")), str(e.get("basis"))) for e in weak})
        levels = sorted(
            {str(e.get("confidence")) for e in weak}, key=lambda c: CONFIDENCE_RANK.get(c, 3)
        )
        hosts = [str(e.get("host")) for e in weak]
        parts.append(
            f"{join_words(hosts, limit=3, more='more hosts')} {'is' if len(hosts) == 1 else 'are'} "
            f"attributed to {g.key} only by {join_words(how)} ({' or '.join(levels)} confidence): "
            + ("possible, not established" if "low" in levels else "likely, not certain")
        )
    if conflicts:
        other = sorted({str(c.get("name")) for c in conflicts})
        parts.append(f"other evidence names {join_words(other, limit=3)} instead")
    if not parts:
        return None
    text = "; ".join(parts)
    return Sentence(text[0].upper() + text[1:] + ".", (Link(g.anchor, "details"),), True)


def _weak_name(name: str, endpoints: list[dict[str, Any]]) -> str:
    """A recipient's name, hedged when some of its hosts were named on weaker evidence."""
    levels = [str(e.get("confidence") or "none") for e in endpoints]
    weak = [c for c in levels if c != "high"]
    if not weak:
        return name
    worst = max(weak, key=lambda c: CONFIDENCE_RANK.get(c, 3))
    partly = "partly " if len(weak) < len(levels) else ""
    return f"{name}, {partly}attributed with {worst} confidence"


def _others(doc: dict[str, Any], with_findings: set[str]) -> list[Sentence]:
    endpoints: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in doc.get("endpoints") or []:
        endpoints[str(e.get("organisation") or UNKNOWN)].append(e)
    quiet = [
        v
        for v in doc.get("verdicts") or []
        if str(v.get("organisation") or UNKNOWN) not in with_findings
    ]
    if not quiet:
        return []
    names = [
        "an unknown operator"
        if (v.get("organisation") or UNKNOWN) == UNKNOWN
        else _weak_name(str(v["organisation"]), endpoints[str(v["organisation"])])
        for v in quiet
    ]
    flows = sum(int(v.get("flows") or 0) for v in quiet)
    return [
        Sentence(
            f"{plural(len(quiet), 'other recipient')} ({'; '.join(names[:6])}"
            f"{f'; {len(names) - 6} more' if len(names) > 6 else ''}) exchanged "
            f"{plural(flows, 'connection')} with the phone, with no finding about them.",
            (Link("verdicts", "who received what"),),
            any(n != "an unknown operator" and "attributed with" in n for n in names),
        )
    ]


_CLAIM_WORDS = {
    "contradicted": "is contradicted by this capture",
    "supported_by_this_capture": "is supported by this capture (which shows only what it recorded)",
    "undetermined": "could not be settled by this capture",
}


def _claims(doc: dict[str, Any]) -> list[Sentence]:
    out = []
    for c in doc.get("claims") or []:
        words = _CLAIM_WORDS.get(str(c.get("verdict")), f"was judged {c.get('verdict')}")
        out.append(
            Sentence(
                f"The claim “{c.get('claim')}” {words}: {c.get('reason')}.",
                (Link("claims", "claims"),),
                c.get("verdict") != "contradicted",
            )
        )
    return out


def _gaps(
    doc: dict[str, Any], findings: list[dict[str, Any]], items: dict[str, Item]
) -> list[Sentence]:
    """What this report could not see, each in a sentence."""
    cov = doc.get("coverage") or {}
    here = (Link("coverage", "what could not be inspected"),)

    def links(rule: str) -> tuple[Link, ...]:
        found = [items[str(f.get("id"))] for f in findings if f.get("rule") == rule]
        found.sort(key=lambda i: int(i.label[1:]))
        out = [Link(i.anchor, i.label) for i in found[:MAX_LINKS]]
        if len(found) > MAX_LINKS:
            out.append(Link("coverage", f"{len(found) - MAX_LINKS} more"))
        return tuple(out) or here

    out: list[Sentence] = []
    total = int(cov.get("connections") or 0)
    failed = int(cov.get("not_decrypted") or 0)
    if failed:
        share = float(cov.get("not_decrypted_share") or (failed / total if total else 0))
        out.append(
            Sentence(
                f"{failed:,} of {plural(total, 'connection')} ({share:.1%}) could not be "
                "decrypted: where they went is known, what they carried is not.",
                links("uninspected"),
            )
        )
    bypass = int(cov.get("bypassed_proxy") or 0)
    if bypass:
        out.append(
            Sentence(
                f"{plural(bypass, 'connection')} bypassed the interception proxy: the packet "
                "capture shows where they went, not what they carried.",
                links("proxy-bypass"),
            )
        )
    only = int(cov.get("seen_only_in_packets") or 0) - bypass
    if only > 0:
        out.append(
            Sentence(
                f"{plural(only, 'connection')} {_was(only)} seen only in a packet capture, "
                "with no proxy to decrypt them: where they went is known, what they "
                "carried is not.",
                (Link("packets", "packets and the proxy"),),
            )
        )
    if total and not cov.get("packet_capture"):
        out.append(
            Sentence(
                "No packet capture was made: traffic that went around the proxy (DNS, QUIC, apps "
                "that ignore the proxy setting) would not appear in this report.",
                here,
                True,
            )
        )
    out += _quic_sentences(cov.get("quic") or [])
    for s in cov.get("sessions_incomplete") or []:
        why = f", stopped by {s['stopped_by']}" if s.get("stopped_by") else ""
        out.append(
            Sentence(
                f"Session {s.get('session')} did not end as planned (status "
                f"{s.get('status') or 'unknown'}{why}): traffic after that point is missing.",
                here,
            )
        )
    skipped = cov.get("skipped") or []
    skipped_total = int(cov.get("skipped_total") or sum(int(x.get("count") or 0) for x in skipped))
    if skipped_total:
        kinds: Counter[str] = Counter()
        for x in skipped:
            kinds[str(x.get("kind") or "item")] += int(x.get("count") or 0)
        detail = join_words(
            [f"{k} {n:,}" for k, n in kinds.most_common()], limit=4, more="other kinds"
        )
        out.append(
            Sentence(
                f"{plural(skipped_total, 'item')} {_was(skipped_total)} skipped "
                f"while reading the sessions{f' ({detail})' if detail else ''}: what they held is "
                "not in this report.",
                (Link("skipped", "skipped items"),),
            )
        )
    dropped, lost = int(cov.get("packets_dropped") or 0), int(cov.get("packets_lost") or 0)
    if dropped or lost:
        out.append(
            Sentence(
                f"The packet capture dropped {plural(dropped, 'packet')} and received "
                f"{lost:,} broken: connections may be missing.",
                (Link("packets", "packets and the proxy"),),
            )
        )
    if total and not doc.get("identifiers_searched"):
        out.append(
            Sentence(
                "No device identifiers were known for this session, so none were searched for "
                "(give them with --identifier NAME=VALUE): a sent identifier would not be found.",
                here,
                True,
            )
        )
    errors = doc.get("rule_errors") or []
    failed_rules = sorted({str(e.get("rule")) for e in errors})
    if errors:
        out.append(
            Sentence(
                f"{plural(len(errors), 'rule')} failed ({join_words(failed_rules)}): what they "
                "check is not in this report.",
                here,
            )
        )
    lookalikes = sorted(
        {str(e.get("host")) for e in doc.get("endpoints") or [] if key_of_shown(e.get("host"))}
    )
    if lookalikes:
        n = len(lookalikes)
        out.append(
            Sentence(
                f"{plural(n, 'host name')} {_was(n)} written to pass for another "
                f"({join_words(lookalikes, limit=3, more='more')}): invisible characters, "
                "variant forms or mixed scripts. Each is shown by its A-label behind ⚠ and "
                "matched to the knowledge base only as itself, never as the name it imitates.",
                (Link("endpoints", "endpoints"),),
            )
        )
    warnings = doc.get("warnings") or []
    if warnings:
        out.append(
            Sentence(
                f"{plural(len(warnings), 'problem')} {'was' if len(warnings) == 1 else 'were'} met "
                "while reading (truncated bodies, unreadable records and the like).",
                (Link("warnings", "warnings"),),
            )
        )
    return out


def _quic_sentences(rows: list[dict[str, Any]]) -> list[Sentence]:
    """Whether QUIC was forced to TCP (coverage.quic), and the QUIC seen anyway: blocked, it
    is what slipped past the rules; not blocked, it is traffic no proxy could decrypt."""
    link = (Link("packets", "packets and the proxy"),)
    out: list[Sentence] = []
    for r in rows:
        if not isinstance(r, dict) or r.get("blocked") is None:
            continue  # the session does not say (an import)
        seen = r.get("seen") if isinstance(r.get("seen"), dict) else None
        flows = int((seen or {}).get("udp_443_flows") or 0)
        pkts = int((seen or {}).get("udp_443_packets") or 0)
        where = f"Session {r.get('session')}: " if len(rows) > 1 else ""
        if r["blocked"]:
            how = {"iptables": "by iptables on the phone", "pcapdroid": "by PCAPdroid"}.get(
                str(r.get("method")), "on the phone"
            )
            text = f"{where}QUIC (UDP port 443) was blocked {how}, so apps fell back to TCP "
            text += "through the proxy"
            if seen is None:
                text += "; no packet capture shows whether any QUIC got through."
            elif flows:
                text += (
                    f"; the packet capture still saw {plural(flows, 'UDP 443 flow')} "
                    f"({plural(pkts, 'packet')}), sent before the rules or past them."
                )
            else:
                text += "; the packet capture saw no QUIC."
        else:
            why = f" ({r['why']})" if r.get("why") else ""
            text = f"{where}QUIC was not blocked{why}"
            if flows:
                text += (
                    f": {plural(flows, 'UDP 443 flow')} ({plural(pkts, 'packet')}) went "
                    "around the proxy, where they went is known, not what they carried."
                )
            else:
                text += "; the packet capture saw no QUIC." if seen is not None else "."
        out.append(Sentence(text, link))
    return out


def _overview(doc: dict[str, Any], story: Story, findings: list[dict[str, Any]]) -> list[Sentence]:
    cov = doc.get("coverage") or {}
    total = int(cov.get("connections") or 0)
    what = f"{plural(total, 'connection')} from the {story.device}"
    if story.device == "unknown device":
        what = f"{plural(total, 'connection')} from a device whose profile is unknown"
    dur = float(cov.get("duration_seconds") or 0)
    span = f"{dur:,.0f} s of recording" if dur >= 1 else ""
    if story.scenario:
        span = f"{span} (scenario {story.scenario})" if span else f"scenario {story.scenario}"
    sessions = (
        f"session {story.session}"
        if len(story.sessions) <= 1
        else plural(len(story.sessions), "session")
    )
    text = f"This report covers {sessions}: {', '.join(x for x in (span, what) if x)}."
    out = [Sentence(text, (Link("coverage", "coverage"),))]
    if findings:
        counts = Counter(str(f.get("severity")) for f in findings)
        by = [f"{counts[s]} {s}" for s in SEVERITIES if counts[s]]
        recipients = [g for g in story.groups if g.key not in (UNKNOWN, SEVERAL)]
        about = plural(len(recipients), "named recipient")
        if any(g.key == UNKNOWN for g in story.groups):
            about += " and unknown operators"
        out.append(
            Sentence(
                f"auditor reports {plural(len(findings), 'finding')} ({', '.join(by)}) about "
                f"{about}, below by recipient, the most severe first.",
                (Link("findings", "findings by recipient"),),
            )
        )
    else:
        out.append(
            Sentence(
                "No rule flagged anything in what could be inspected; see below for what "
                "could not.",
                (Link("coverage", "what could not be inspected"),),
                True,
            )
        )
    return out
