"""The campaign matrix: handset (vendor, model, build) x recipient, built from each session's
``findings.json`` alone.

A recipient is an organisation as the analysis named it (with its country); traffic whose
operator is unknown is one column, ``(unknown operator)``. A cell holds what one handset sent
to one recipient: flows, bytes and their rates per hour of that session's recording, the
identifiers found sent (from the ``identifier-sent`` and ``cleartext-identifier`` findings)
with their encodings, and the hosts. The extraction is the diff's (``auditor.analysis.diff``),
so a campaign and a diff read a findings.json the same way. ``docs/campaign.md`` describes
the JSON form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from auditor.analysis import diff

MATRIX_SCHEMA_VERSION = 1
UNKNOWN = diff.UNKNOWN


@dataclass(frozen=True, slots=True)
class HandsetEntry:
    """One handset of the campaign and how its audit ended."""

    serial: str
    vendor: str | None
    model: str | None
    build: str | None  # the fingerprint's build id and incremental, e.g. QKQ1.200419.002/V12.0.3.0
    fingerprint: str | None
    outcome: str  # complete | device_lost | failed | interrupted
    stopped_by: str | None
    restored: bool | None
    detail: str
    session: str | None  # relative to the campaign folder
    report: str | None  # the session's report.html, relative to the campaign folder
    duration_seconds: float | None
    flows: int | None

    def label(self) -> str:
        parts = [p for p in (self.vendor, self.model, self.build) if p]
        return " ".join(parts) if parts else self.serial

    def to_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "vendor": self.vendor,
            "model": self.model,
            "build": self.build,
            "fingerprint": self.fingerprint,
            "outcome": self.outcome,
            "stopped_by": self.stopped_by,
            "restored": self.restored,
            "detail": self.detail,
            "session": self.session,
            "report": self.report,
            "duration_seconds": self.duration_seconds,
            "flows": self.flows,
        }


@dataclass(frozen=True, slots=True)
class Recipient:
    recipient: str  # the column's key: the organisation, or (unknown operator)
    organisation: str | None
    country: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "organisation": self.organisation,
            "country": self.country,
        }


@dataclass(frozen=True, slots=True)
class Cell:
    serial: str
    recipient: str
    flows: int
    flows_per_hour: float | None
    bytes_up: int
    bytes_up_per_hour: float | None
    bytes_down: int
    identifiers: tuple[str, ...]
    encodings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    hosts: tuple[str, ...] = ()
    report: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "recipient": self.recipient,
            "flows": self.flows,
            "flows_per_hour": self.flows_per_hour,
            "bytes_up": self.bytes_up,
            "bytes_up_per_hour": self.bytes_up_per_hour,
            "bytes_down": self.bytes_down,
            "identifiers": list(self.identifiers),
            "encodings": {k: list(v) for k, v in sorted(self.encodings.items())},
            "hosts": list(self.hosts),
            "report": self.report,
        }


def build_of(fingerprint: str | None) -> str | None:
    """``brand/product/device:release/ID/incremental:type/tags`` -> ``ID/incremental``."""
    if not fingerprint:
        return None
    parts = fingerprint.split("/")
    if len(parts) < 5:
        return fingerprint
    build_id, incremental = parts[3], parts[4].split(":")[0]
    return f"{build_id}/{incremental}" if incremental else build_id


def device_fields(device: Mapping[str, Any]) -> dict[str, str | None]:
    """vendor, model, build and fingerprint from a findings.json's or a manifest's device."""

    def text(key: str) -> str | None:
        v = device.get(key)
        return str(v) if isinstance(v, str | int) and str(v) else None

    fingerprint = text("fingerprint")
    return {
        "vendor": text("manufacturer") or text("brand"),
        "model": text("model"),
        "build": build_of(fingerprint),
        "fingerprint": fingerprint,
    }


def cells_of(
    serial: str, doc: Mapping[str, Any], report: str | None = None
) -> tuple[list[Cell], dict[str, Recipient]]:
    """One handset's cells from its session's findings.json, and the recipients they name."""
    seconds = diff.recorded_seconds(doc)
    per = diff.recipients_of(doc)
    ids = diff.identifiers_of(doc)
    keys = set(per) | {rec for rec, _ in ids}
    recipients: dict[str, Recipient] = {}
    cells = []
    for key in sorted(keys):
        r = per.get(key) or {}
        org = r.get("organisation")
        if org is None and key != UNKNOWN:
            org = key  # named only by an identifier finding
        country = r.get("country")
        recipients[key] = Recipient(
            key, str(org) if org else None, str(country) if country else None
        )
        names = sorted(name for rec, name in ids if rec == key)
        flows = int(r.get("flows") or 0)
        up = int(r.get("bytes_up") or 0)
        cells.append(
            Cell(
                serial=serial,
                recipient=key,
                flows=flows,
                flows_per_hour=diff.per_hour(flows, seconds),
                bytes_up=up,
                bytes_up_per_hour=diff.per_hour(up, seconds),
                bytes_down=int(r.get("bytes_down") or 0),
                identifiers=tuple(names),
                encodings={n: tuple(sorted(ids[(key, n)]["encodings"])) for n in names},
                hosts=tuple(sorted(r.get("hosts") or ())),
                report=report,
            )
        )
    return cells, recipients


def build_matrix(
    campaign: Mapping[str, Any],
    handsets: Sequence[HandsetEntry],
    docs: Mapping[str, Mapping[str, Any]],
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """The matrix document (matrix.json): ``docs`` maps a serial to its findings.json."""
    recipients: dict[str, Recipient] = {}
    cells: list[Cell] = []
    by_serial = {h.serial: h for h in handsets}
    for serial in sorted(docs):
        got, named = cells_of(serial, docs[serial], by_serial[serial].report)
        cells += got
        for key, rec in named.items():
            old = recipients.get(key)
            if old is None or (old.country is None and rec.country):
                recipients[key] = rec
    order = sorted(recipients, key=lambda k: (k == UNKNOWN, k.casefold(), k))
    return {
        "schema_version": MATRIX_SCHEMA_VERSION,
        "campaign": dict(campaign),
        "handsets": [h.to_dict() for h in sorted(handsets, key=lambda h: h.serial)],
        "recipients": [recipients[k].to_dict() for k in order],
        "cells": [
            c.to_dict() for c in sorted(cells, key=lambda c: (c.serial, order.index(c.recipient)))
        ],
        "warnings": sorted(warnings),
    }
