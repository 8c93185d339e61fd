"""Build of the compiled parts of the capture reader, all in ``auditor/packets``:

- ``_scan``: the record walk of pcap and pcapng files;
- ``_decode``: link, IP and TCP/UDP headers of a batch of records;
- ``_flowtab``: the flow table's per-packet assignment and sums, which packets may carry a
  name (``namekinds``), address texts, payload joins;
- ``_dns``: the DNS message parser.

Everything else is in pyproject.toml. Each extension is optional: without a C compiler the
install goes on and the reader uses its numpy and Python code instead (slower, same results).
"""

from setuptools import Extension, setup


def _ext(name: str) -> Extension:
    return Extension(
        f"auditor.packets.{name}",
        sources=[f"auditor/packets/{name}.c"],
        optional=True,
        extra_compile_args=["-O2"],
    )


setup(ext_modules=[_ext("_scan"), _ext("_decode"), _ext("_flowtab"), _ext("_dns")])
