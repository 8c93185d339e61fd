"""Run the benchmarks: ``python -m bench [name ...]`` (``make bench`` runs them all)."""

import importlib
import sys

BENCHES = [
    "proxy_throughput",
    "classify_flows",
    "intel_lookup",
    "attribution",
    "scan_identifiers",
    "packets",
    "analyze",
    "pcap_scale",
    "fleet",
]


def main(argv: list[str]) -> int:
    for name in argv or BENCHES:
        mod = importlib.import_module(f"bench.{name}")
        mod.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
