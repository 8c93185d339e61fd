"""Host names written to pass for others, and how they are shown and matched.

A capture may hold a name that looks like a known one but is not: an invisible character
inside it (``tracking.miui`` + U+200B + ``.com``), a compatibility variant of a letter
(ligatures, mathematical or circled letters, superscripts), letters of two scripts in one
label (``хiaomi.com``, its first letter Cyrillic), or a label all in Cyrillic or Greek whose
every letter has a Latin double (``аррӏе.com``). IDNA's UTS #46 mapping quietly removes the
invisible characters and folds the variants, so the lookalike would be taken for the plain
name and attributed as such.

:func:`inspect_host` gives each name one key, the form the knowledge base and intel files
are matched on: lower case, IDNA A-labels, and for a label holding invisible or variant
characters the Punycode (RFC 3492) of the label as written, never of the label with those
characters removed or folded. Only RFC 5895's mapping is applied: case, fullwidth and
halfwidth forms (``ｔｒａｃｋｉｎｇ．miui．com`` is ``tracking.miui.com``), NFC, and the
ideographic full stop as a dot. A lookalike therefore matches only an entry written for itself.
Its :attr:`HostName.shown` form is the key behind a marker and the reasons, e.g.
``⚠ xn--iaomi-pze.com (mixed scripts: Latin+Cyrillic)``; an A-label that decodes to a
lookalike (what DNS and TLS actually carry) is recognised the same way, so the key of a
lookalike, read back, gives the same shown form.

Scripts follow UTS #39 (Unicode Security Mechanisms), section 5.2, "Highly Restrictive":
one script per label, or Latin with Han and Hiragana/Katakana, with Han and Bopomofo, or with
Han and Hangul. Python's ``unicodedata`` has no Script property, so the script of a letter
or a non-spacing mark is read from its Unicode name (``CYRILLIC SMALL LETTER HA``, ``ORIYA
VOWEL SIGN U``): exact for the letters IDNA 2008 allows in Latin, Cyrillic and Greek, whose
names all begin with their script; ``COMBINING ...`` marks take the script of their letter.
The Latin doubles of Cyrillic and Greek letters are the entries of Unicode's confusables.txt
(UTS #39 data, version 14.0.0, © Unicode, Inc., Unicode License; read from
github.com/woodgern/confusables, confusables/assets/confusables.txt at commit
f1d9302486f0ad724444c44732039853edc07424) whose source is a lower-case Cyrillic or Greek
letter valid in IDNA 2008 and whose target is one ASCII letter or digit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

MARKER = "⚠"
"""Put before the shown form of every lookalike name."""

HOSTLABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")

# confusables.txt 14.0.0: lower-case Cyrillic and Greek letters -> the ASCII they pass for
_DOUBLES = (
    "б6 αa аa сc ԁd еe ҽe һh ιi іi ꙇi ӏi ϳj јj οo σo оo ρp рp ԛq ᴦr гr ѕs υu νv ѵv ѡw ԝw "
    "хx γy уy үy"
)
LATIN_DOUBLES: dict[str, str] = {w[0]: w[-1] for w in _DOUBLES.split()}

# Default_Ignorable_Code_Point (DerivedCoreProperties.txt) that are not format characters
# (Cf, caught by category): combining grapheme joiner, Hangul fillers, Khmer inherent
# vowels, Mongolian free variation selectors, variation selectors.
_IGNORABLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u3164\ufe00-\ufe0f\uffa0"
    "\U000e0100-\U000e01ef]"
)
# spaces, controls, surrogates, private use, unassigned: no name holds them
_NOT_IN_NAMES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cs", "Co", "Cn"})
# RFC 5895 (the mapping IDNA 2008 suggests), section 2: the ideographic full stop is a dot
# (as in IDNA 2003, RFC 3490 section 3.1); fullwidth and halfwidth forms are the characters
# they are wide or narrow forms of (_width). Anything else UTS #46 would fold or drop is kept.
_WIDTH = {"\u3002": ".", "\uff61": "."}

# Cyrillic or Greek is expected under these country codes: a whole-script name there is
# the script's own, not a lookalike of a Latin one
_OWN_TLDS = {
    "Cyrillic": frozenset("bg by kg kz mk mn rs ru su tj ua uz".split()),
    "Greek": frozenset({"gr", "cy"}),
}
# UTS #39 5.2: the sets of scripts one label may mix (with Latin) at Highly Restrictive
_CJK_SETS = (
    frozenset({"Latin", "Han", "Hiragana", "Katakana"}),
    frozenset({"Latin", "Han", "Bopomofo"}),
    frozenset({"Latin", "Han", "Hangul"}),
)
# script names that take two words in character names
_TWO_WORD = frozenset(
    "CANADIAN CAUCASIAN GUNJALA HANIFI IMPERIAL INSCRIPTIONAL MASARAM MEETEI NEW OL OLD PAU "
    "PSALTER SIGNWRITING SYLOTI TAI ZANABAZAR".split()
)


class Trick(StrEnum):
    INVISIBLE = "invisible"  # format or default-ignorable characters
    VARIANT = "variant"  # compatibility forms of letters, digits or dots
    MIXED_SCRIPTS = "mixed-scripts"  # letters of scripts UTS #39 does not let one label mix
    WHOLE_SCRIPT = "whole-script"  # all Cyrillic or Greek, every letter with a Latin double
    BAD_A_LABEL = "bad-a-label"  # "xn--" that is not the A-label of a valid U-label


@dataclass(frozen=True, slots=True)
class HostName:
    """A host name as the knowledge base matches it (``key``) and as a report shows it."""

    key: str
    tricks: tuple[tuple[Trick, str], ...] = ()  # each trick and what it is, in words
    looks_like: str | None = None  # the plain name the lookalike passes for, when known

    @property
    def suspicious(self) -> bool:
        return bool(self.tricks)

    @property
    def shown(self) -> str:
        """The key, and for a lookalike the marker and the reasons: never the lookalike
        itself, which would read as the name it imitates."""
        if not self.tricks:
            return self.key
        return f"{MARKER} {self.key} ({'; '.join(words for _, words in self.tricks)})"

    def warning(self) -> str:
        like = f", written to pass for {self.looks_like}" if self.looks_like else ""
        return (
            f"look-alike host name {self.shown}{like}: shown by its A-label and matched to "
            "the knowledge base only as itself"
        )


def inspect_host(raw: object) -> HostName | None:
    """The key of a host name and the tricks it plays, or None for anything that is not a
    host name (an address literal, markup, controls, empty or oversize labels). Never
    raises."""
    if not isinstance(raw, str) or not raw or len(raw) > 1024:
        return None
    try:
        h = _bare(raw)
        if h is None:
            return None
        if h.isascii():
            if "xn--" not in h:
                return HostName(h) if len(h) <= 253 and _NAME_RE.fullmatch(h) else None
            return _inspect_ascii(h)
        return _inspect_unicode(h)
    except (ValueError, UnicodeError, IndexError):  # pragma: no cover - the codecs' own
        return None


def ascii_key(raw: str) -> str | None:
    """:func:`inspect_host`'s key of a plain ASCII name (no ``xn--``), cheaply; None for
    every other name (which needs :func:`inspect_host`)."""
    h = _bare(raw) if raw.isascii() and len(raw) <= 1024 else None
    if h is None or "xn--" in h or len(h) > 253 or not _NAME_RE.fullmatch(h):
        return None
    return h


def _bare(raw: str) -> str | None:
    """The name without blanks, port and root dot, width forms and other dots mapped, ASCII
    in lower case; None for an address literal or a bad port."""
    h = raw.strip()
    if h.startswith("[") or h.count(":") > 1:
        return None  # an IPv6 literal is an address, not a name
    if ":" in h:
        h, _, port = h.partition(":")
        if not (port.isascii() and port.isdigit()):
            return None
    if not h.isascii():
        h = "".join(c if c.isascii() else _WIDTH.get(c) or _width(c) for c in h)
    if h.endswith("."):
        h = h[:-1]  # the root: "a.example." is "a.example", "a.example.." has an empty label
    return h.lower() if h.isascii() else h


def _inspect_ascii(h: str) -> HostName | None:
    labels = h.split(".")
    if len(h) > 253 or not all(HOSTLABEL_RE.match(x) for x in labels):
        return None
    return _judge(h, labels, [_from_alabel(x) for x in labels])


def _inspect_unicode(h: str) -> HostName | None:
    text = unicodedata.normalize("NFC", h.lower())
    odd = False
    for c in text:
        if c.isascii():
            continue
        cat = unicodedata.category(c)
        if cat in _NOT_IN_NAMES:
            return None
        if cat == "Cf" or _IGNORABLE.match(c):
            odd = True
    odd = odd or not unicodedata.is_normalized("NFKC", text)
    texts = text.split(".")
    if not odd:  # the usual IDN: one UTS #46 pass over the whole name
        key = _uts46(h, whole=True)
        if key is None:
            return None
        labels = key.split(".")
        if len(labels) != len(texts):
            return None
        return _judge(key, labels, [(t, None) for t in texts])
    labels = []
    for label in h.split("."):
        key, _ = _to_alabel(label)
        if key is None:
            return None
        labels.append(key)
    name = ".".join(labels)
    if len(name) > 253:
        return None
    return _judge(name, labels, [(t, None) for t in texts])


@lru_cache(maxsize=4096)
def _width(c: str) -> str:
    """RFC 5895's mapping of a fullwidth or halfwidth form: its <wide> or <narrow>
    decomposition (``ｔ`` -> ``t``, ``．`` -> ``.``)."""
    dec = unicodedata.decomposition(c)
    if dec.startswith(("<wide> ", "<narrow> ")):
        return "".join(chr(int(x, 16)) for x in dec.split(" ")[1:])
    return c


def _odd_chars(text: str) -> tuple[list[str], list[str]]:
    """The invisible and the variant characters of a label."""
    invisible, variant = [], []
    for c in text:
        if c.isascii():
            continue
        if unicodedata.category(c) == "Cf" or _IGNORABLE.match(c):
            invisible.append(c)
        elif unicodedata.normalize("NFKC", c) != c:
            variant.append(c)
    return invisible, variant


def _to_alabel(label: str) -> tuple[str | None, str]:
    """The key of one label as written, and its text as inspected (lower case, NFC)."""
    if label.isascii():
        low = label.lower()
        return (low if HOSTLABEL_RE.match(low) else None), low
    text = unicodedata.normalize("NFC", label.lower())
    if any(unicodedata.category(c) in _NOT_IN_NAMES for c in text):
        return None, text
    invisible, variant = _odd_chars(text)
    if invisible or variant:
        # the label as written: what is left once the odd characters are set aside must
        # still be a label, and the key keeps them (raw Punycode, never UTS #46's mapping)
        rest = "".join(c for c in text if c not in invisible and c not in variant)
        if rest and not rest.isascii() and _uts46(rest) is None:
            return None, text
        if rest.isascii() and rest and not re.fullmatch(r"[a-z0-9_-]+", rest):
            return None, text
        raw_key = "xn--" + text.encode("punycode").decode("ascii")
        return (raw_key if HOSTLABEL_RE.match(raw_key) else None), text
    return _uts46(label), text


def _uts46(text: str, *, whole: bool = False) -> str | None:
    """IDNA 2008 A-labels of a label (or, ``whole``, of a name) by UTS #46."""
    if len(text) > 253:
        return None
    try:
        import idna

        out = str(idna.encode(text, uts46=True).decode("ascii"))
    except (ValueError, UnicodeError, IndexError):
        return None
    if whole:
        return out if len(out) <= 253 and _NAME_RE.fullmatch(out) else None
    return out if "." not in out and HOSTLABEL_RE.match(out) else None


def _from_alabel(label: str) -> tuple[str, str | None]:
    """The text of one ASCII label (its U-label for an A-label) and, for an "xn--" label
    that is not a valid A-label, why."""
    if not label.startswith("xn--"):
        return label, None
    try:
        text = label[4:].encode("ascii").decode("punycode")
    except (UnicodeError, ValueError, IndexError, OverflowError):
        return label, "invalid A-label"
    if text.isascii() or unicodedata.normalize("NFC", text.lower()) != text:
        return label, "invalid A-label"
    invisible, variant = _odd_chars(text)
    if invisible or variant:
        return text, None  # a key of auditor's own (above): judged on its characters
    try:
        import idna

        if idna.alabel(text).decode("ascii") != label:
            return label, "invalid A-label"
    except (ValueError, UnicodeError, IndexError):
        return label, "invalid A-label"
    return text, None


def _codes(chars: Iterable[str], limit: int = 3) -> str:
    seen = list(dict.fromkeys(chars))
    words = [f"U+{ord(c):04X}" for c in seen[:limit]]
    if len(seen) > limit:
        words.append(f"{len(seen) - limit} more")
    return ", ".join(words)


def _judge(key: str, labels: list[str], unicode_labels: list[tuple[str, str | None]]) -> HostName:
    tricks: dict[Trick, str] = {}
    invisible_all: list[str] = []
    variant_all: list[str] = []
    mixes: list[str] = []
    wholes: list[str] = []
    tld = labels[-1]
    like: list[str] = []
    plain_like = True
    for text, bad in unicode_labels:
        if text.isascii() and not bad:
            like.append(text)
            continue
        if bad:
            tricks.setdefault(Trick.BAD_A_LABEL, bad)
            like.append(text)
            continue
        invisible, variant = _odd_chars(text)
        invisible_all += invisible
        variant_all += variant
        scripts = _scripts(c for c in text if c not in invisible and c not in variant)
        mix = _mix(scripts)
        if mix:
            mixes.append(mix)
        elif len(scripts) == 1:
            (only,) = scripts
            letters = [c for c in text if unicodedata.category(c).startswith("L")]
            if (
                only in _OWN_TLDS
                and tld not in _OWN_TLDS[only]
                and not tld.startswith("xn--")
                and letters
                and all(c in LATIN_DOUBLES for c in letters)
            ):
                wholes.append(only)
        # what the label reads as: the invisible characters gone, the variants folded, the
        # doubles made Latin
        seen = "".join(c for c in text if c not in invisible)
        seen = "".join(LATIN_DOUBLES.get(c, c) for c in unicodedata.normalize("NFKC", seen))
        like.append(seen.lower())
        plain_like = plain_like and seen.isascii()
    if invisible_all:
        tricks[Trick.INVISIBLE] = f"invisible {_codes(invisible_all)}"
    if variant_all:
        tricks[Trick.VARIANT] = f"variant characters {_codes(variant_all)}"
    if mixes:
        tricks[Trick.MIXED_SCRIPTS] = "mixed scripts: " + ", ".join(dict.fromkeys(mixes))
    if wholes:
        tricks[Trick.WHOLE_SCRIPT] = "all-" + "/".join(dict.fromkeys(wholes)) + " lookalike"
    order = list(Trick)
    ordered = tuple(sorted(tricks.items(), key=lambda kv: order.index(kv[0])))
    looks = ".".join(like) if ordered and plain_like else None
    if looks is not None and (looks == key or not all(HOSTLABEL_RE.match(x) for x in like)):
        looks = None
    return HostName(key, ordered, looks)


@lru_cache(maxsize=4096)
def script_of(c: str) -> str | None:
    """The script of a letter or mark, from its Unicode name; None for a character of no
    script (digits, hyphen) or of the script of the letter it is on (combining marks)."""
    cat = unicodedata.category(c)
    if not cat.startswith(("L", "M")):
        return None
    name = unicodedata.name(c, "")
    if cat.startswith("M") and name.startswith("COMBINING"):
        return None  # Inherited: the script of the letter it is on
    if not name:
        return "Unknown"
    if name.startswith(("CJK ", "KANGXI ", "IDEOGRAPHIC ")):
        return "Han"
    if name.startswith("KATAKANA-HIRAGANA"):
        return None  # the prolonged sound mark is common to both
    words = name.split(" ")
    first = words[0].split("-")[0]
    if first in _TWO_WORD and len(words) > 1:
        first = f"{first} {words[1]}"
    if first == "MODIFIER":
        return None
    return first.title()


def _scripts(text: Iterable[str]) -> set[str]:
    return {s for s in (script_of(c) for c in text) if s is not None}


def _mix(scripts: set[str]) -> str | None:
    """How the scripts of one label break UTS #39's Highly Restrictive level, or None."""
    if len(scripts) <= 1:
        return None
    if any(scripts <= allowed for allowed in _CJK_SETS):
        return None
    others = scripts - {"Latin"}
    first = ["Latin"] if "Latin" in scripts else []
    return "+".join(first + sorted(others))


def key_of_shown(text: object) -> str | None:
    """The key behind a shown form (``⚠ KEY (reasons)``) when ``text`` is exactly what
    :attr:`HostName.shown` gives for that key; else None (a name that merely starts with
    the marker is no shown form)."""
    if not isinstance(text, str) or not text.startswith(MARKER + " ") or len(text) > 2048:
        return None
    key = text[len(MARKER) + 1 :].split(" ", 1)[0]
    name = inspect_host(key)
    if name is None or name.key != key or name.shown != text:
        return None
    return key


def shown_names(values: Iterable[object]) -> dict[object, str]:
    """For each distinct value that is a lookalike host name, its shown form."""
    out: dict[object, str] = {}
    for v in dict.fromkeys(values):
        if isinstance(v, str) and (not v.isascii() or "xn--" in v):
            name = inspect_host(v)
            if name is not None and name.suspicious:
                out[v] = name.shown
    return out


def name_warnings(values: Iterable[object]) -> list[str]:
    """One warning per distinct lookalike among ``values`` (raw names or shown forms),
    sorted."""
    seen: dict[str, HostName] = {}
    for v in dict.fromkeys(values):
        if not isinstance(v, str) or not v or (v.isascii() and "xn--" not in v):
            continue  # plain ASCII without an A-label can trick no one (and costs nothing)
        key = key_of_shown(v)
        name = inspect_host(key if key is not None else v)
        if name is not None and name.suspicious:
            seen.setdefault(name.key, name)
    return [seen[k].warning() for k in sorted(seen)]


def shown_url(url: object) -> object:
    """A URL with a lookalike host replaced by its shown form (scheme, port, path and query
    kept); any other value as it is."""
    if not isinstance(url, str) or "://" not in url or (url.isascii() and "xn--" not in url):
        return url
    scheme, _, rest = url.partition("://")
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, at, hostport = netloc.rpartition("@")
    host, colon, port = hostport, "", ""
    if not hostport.startswith("[") and ":" in hostport:
        host, colon, port = hostport.partition(":")
    name = inspect_host(host)
    if name is None or not name.suspicious:
        return url
    return f"{scheme}://{userinfo}{at}{name.shown}{colon}{port}{tail}"
