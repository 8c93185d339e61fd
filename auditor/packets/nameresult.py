"""What a name collector gives (:class:`NameResult`: its names, client sides, DNS and
certificates, as arrays that cross from the worker process pickled), and one result made of
two collectors' (:func:`merge_results`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from auditor.packets.dnstables import DnsTables
from auditor.records import CertificateInfo


@dataclass(frozen=True)
class NameResult:
    """What a :class:`~auditor.packets.names.NameCollector` learnt, as arrays (they cross
    from the worker process pickled, and are read by numpy): names per kind
    (:data:`NameColumn`: the flows with a name of that kind, their values in the order seen
    joined with ``;``, and the first of them), which side of a flow is the client (from
    payloads: flows, the order of the packet that told, the side), and the DNS: one row per
    question, its answers, and the addresses answers gave to names (:class:`DnsTables`)."""

    names: dict[str, NameColumn]
    hints: tuple[np.ndarray, np.ndarray, np.ndarray]  # flow, packet order, client side
    dns: DnsTables
    warnings: dict[str, int]
    counts: dict[str, int]
    certs: dict[int, CertificateInfo] = field(default_factory=dict)  # the leaf, per flow


NameColumn = tuple[np.ndarray, np.ndarray, np.ndarray]  # flows, joined values, first values


def name_columns(names: dict[str, dict[int, str | list[str]]]) -> dict[str, NameColumn]:
    """A collector's names (kind → flow → its value, or its values in the order seen) as one
    :data:`NameColumn` per kind."""
    out: dict[str, NameColumn] = {}
    for kind, of_kind in names.items():
        if not of_kind:
            continue
        values = list(of_kind.values())
        joined = [v if type(v) is str else ";".join(v) for v in values]
        first = [v if type(v) is str else v[0] for v in values]
        flows = np.fromiter(of_kind.keys(), np.int64, len(of_kind))
        out[kind] = (flows, _objects(joined), _objects(first))
    return out


def _objects(values: list[str]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def merge_results(*results: NameResult) -> NameResult:
    """One result from collectors that saw disjoint sets of packets, each flow's names
    from one of them (DNS rows in packet order; a flow's client side from the earliest
    packet; the UDP DNS of a job may be parsed by either collector, as it keeps no state)."""
    warnings: dict[str, int] = {}
    counts: dict[str, int] = {}
    certs: dict[int, CertificateInfo] = {}
    dns = DnsTables.empty()
    for r in results:
        certs.update(r.certs)
        for src, dst in ((r.warnings, warnings), (r.counts, counts)):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v
        dns = dns.merge(r.dns)
    # a flow's names of one kind from the last result that has them (as dict.update did)
    names: dict[str, NameColumn] = {}
    for kind in dict.fromkeys(k for r in results for k in r.names):
        parts = [r.names[kind] for r in results if kind in r.names]
        flows, joined, first = (np.concatenate([p[i] for p in parts]) for i in range(3))
        _, last = np.unique(flows[::-1], return_index=True)
        keep = np.sort(len(flows) - 1 - last)
        names[kind] = (flows[keep], joined[keep], first[keep])
    hints = earliest_hints([r.hints for r in results])
    return NameResult(names, hints, dns, warnings, counts, certs)


def earliest_hints(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Client-side hints (flows, packet orders, sides) as one per flow: the earliest packet
    that told (the least (order, side)), sorted by flow."""
    hf, ho, hs = (np.concatenate([p[i] for p in parts]).astype(np.int64) for i in range(3))
    order = np.lexsort((hs, ho, hf))
    hf, ho, hs = hf[order], ho[order], hs[order]
    first_of = np.ones(len(hf), dtype=bool)
    first_of[1:] = hf[1:] != hf[:-1]
    return hf[first_of], ho[first_of], hs[first_of]
