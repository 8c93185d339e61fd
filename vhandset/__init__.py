"""The virtual handset: a test double of an Android phone that speaks the real ADB protocol.

It is not part of auditor: it exercises auditor. ``vhandset`` (the phone: its ADB daemon, shell,
Android services, network stack and background traffic) and ``vhandset.offline`` (the offline
internet it talks to: an HTTP proxy answering like the vendors' services, a CA, a DNS server)
import nothing from ``auditor`` beyond this public API, named here so a test can hold it:

- ``auditor.packets.pcapwrite``: ``global_header``, ``record``, ``PcapWriter`` and the
  ``LINKTYPE_*`` (``LINKTYPES``) and ``DEFAULT_SNAPLEN`` constants, the classic pcap framing
  the phone's tcpdump and PCAPdroid write;
- the data file ``auditor/analysis/gproto/schemas.desc``: the published protobuf schemas the
  phone's apps encode their messages with.

Whatever the phone must compute as Android does (``subject_hash_old``, the ``http_proxy``
setting) it computes itself, from Android's sources, and never with the auditor code it
exists to test. auditor imports this package only in its ``demo`` and ``simulate`` commands.
"""
