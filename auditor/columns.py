"""Column names of auditor's flow table, defined once.

Every pandas DataFrame of flows (from a live capture, an import or packets) uses these names;
code never spells a column as a bare string.
"""

from typing import Final

FLOW_ID: Final = "flow_id"
RECORD_TYPE: Final = "record_type"  # http | tls_failed | packet_flow
SOURCE: Final = "source"  # mitmproxy | packets | import
START: Final = "start"  # request start (UTC datetime)
END: Final = "end"  # response end, or the last timestamp known
CLIENT_IP: Final = "client_ip"
CLIENT_PORT: Final = "client_port"
SERVER_IP: Final = "server_ip"
SERVER_PORT: Final = "server_port"
SNI: Final = "sni"
TLS_VERSION: Final = "tls_version"
ALPN: Final = "alpn"
METHOD: Final = "method"
SCHEME: Final = "scheme"
HOST: Final = "host"
PORT: Final = "port"
PATH: Final = "path"
URL: Final = "url"
STATUS: Final = "status"
REQUEST_CONTENT_TYPE: Final = "request_content_type"
RESPONSE_CONTENT_TYPE: Final = "response_content_type"
REQUEST_BODY_SHA256: Final = "request_body_sha256"
RESPONSE_BODY_SHA256: Final = "response_body_sha256"
REQUEST_WIRE_SIZE: Final = "request_wire_size"
RESPONSE_WIRE_SIZE: Final = "response_wire_size"
REQUEST_DECODED_SIZE: Final = "request_decoded_size"
RESPONSE_DECODED_SIZE: Final = "response_decoded_size"
REQUEST_TRUNCATED: Final = "request_truncated"
RESPONSE_TRUNCATED: Final = "response_truncated"
BYTES_UP: Final = "bytes_up"  # request line + headers + wire body
BYTES_DOWN: Final = "bytes_down"  # status line + headers + wire body
ERROR: Final = "error"

FLOW_COLUMNS: Final[tuple[str, ...]] = (
    FLOW_ID,
    RECORD_TYPE,
    SOURCE,
    START,
    END,
    CLIENT_IP,
    CLIENT_PORT,
    SERVER_IP,
    SERVER_PORT,
    SNI,
    TLS_VERSION,
    ALPN,
    METHOD,
    SCHEME,
    HOST,
    PORT,
    PATH,
    URL,
    STATUS,
    REQUEST_CONTENT_TYPE,
    RESPONSE_CONTENT_TYPE,
    REQUEST_BODY_SHA256,
    RESPONSE_BODY_SHA256,
    REQUEST_WIRE_SIZE,
    RESPONSE_WIRE_SIZE,
    REQUEST_DECODED_SIZE,
    RESPONSE_DECODED_SIZE,
    REQUEST_TRUNCATED,
    RESPONSE_TRUNCATED,
    BYTES_UP,
    BYTES_DOWN,
    ERROR,
)

# Added by the analyser (auditor.analysis.flowtable)
NAME: Final = "name"  # the destination's name, from the best evidence available
NAME_EVIDENCE: Final = "name_evidence"  # http-host | tls-sni | quic-sni | dns-answer | ip
APP_UIDS: Final = "app_uids"  # owning UIDs from the socket snapshots ("" when unknown)
APPS: Final = "apps"  # package names of those UIDs, ";"-joined
APP_EVIDENCE: Final = "app_evidence"  # pcapdroid | local-port | time-window | ambiguous | none
STEP: Final = "step"  # the scenario step running when the flow started
IDLE: Final = "idle"  # the flow started during an idle step
ORGANISATION: Final = "organisation"  # the knowledge base's id, e.g. "xiaomi"
ORGANISATION_NAME: Final = "organisation_name"  # its display name
PARENT: Final = "parent"
COUNTRY: Final = "country"  # headquarters country of the organisation (ISO 3166 alpha-2)
CATEGORIES: Final = "categories"
STATE_LINKED: Final = "state_linked"
SERVER_COUNTRY: Final = "server_country"
ASN: Final = "asn"
MATCHED_BY: Final = "matched_by"
# Attribution on evidence (auditor.intel): the recipient comes only from evidence about the
# name; the hosting (AS, its organisation, the server's country) says where, never whose
BASIS: Final = "basis"  # the evidence rung that named the recipient (auditor.intel.model.Basis)
CONFIDENCE: Final = "confidence"  # high | medium | low | none
CONFLICT: Final = "conflict"  # another rung named another organisation (True/False)
HOSTING_ORG: Final = "hosting_org"  # knowledge-base id of the network's organisation, if known
HOSTING_NAME: Final = "hosting_name"  # that organisation's name, else the AS organisation
ASN_ORG: Final = "asn_org"  # the AS organisation name as the IP database gives it
STATE_CONTROL: Final = "state_control"  # the recipient is owned or controlled by a state
LEGAL_EXPOSURE: Final = "legal_exposure"  # ";"-joined countries whose laws can compel access

# Name evidence beside the flow (auditor.analysis.flowtable, from the recorder's upstream
# certificates, TLS <= 1.2 handshakes in the packets, and DNS answers)
CERT_ORG: Final = "cert_org"  # subject O= of the server's leaf certificate
CERT_COUNTRY: Final = "cert_country"  # subject C= of that certificate
CERT_CN: Final = "cert_cn"  # subject CN=
CERT_NAMES: Final = "cert_names"  # the SAN DNS names, ";"-joined
CERT_ISSUER: Final = "cert_issuer"  # issuer O= (else CN=)
CERT_SHA256: Final = "cert_sha256"  # SHA-256 of the leaf certificate (DER), hex
CERT_SOURCE: Final = "cert_source"  # proxy | packets
CNAMES: Final = "cnames"  # the DNS CNAME chain from the flow's name, ";"-joined, in order
# The leaf certificate's fields as the packet reader and the flow table give them, and every
# name-evidence column the attribution reads (auditor.intel.kb.classify_hosts)
CERT_COLUMNS: Final = (CERT_ORG, CERT_COUNTRY, CERT_CN, CERT_NAMES, CERT_ISSUER, CERT_SHA256)
NAME_EVIDENCE_COLUMNS: Final = (*CERT_COLUMNS, CERT_SOURCE, CNAMES)

# Packet flows (auditor.analysis.packetflows); proxy rows carry them too
TRANSPORT: Final = "transport"  # tcp | udp | quic | icmp ...
SEEN_BY: Final = "seen_by"  # proxy | packets
BYPASS: Final = "bypass"  # left the phone outside the proxy while a proxy was set
PACKETS_UP: Final = "packets_up"
PACKETS_DOWN: Final = "packets_down"
CAPTURE_FILE: Final = "capture_file"  # the session's capture file the flow was read from
TCP_STATE: Final = "tcp_state"  # established | syn-only | closed | reset | mid-stream
PCAP_UID: Final = "pcap_uid"  # the uid PCAPdroid's trailer gave (-1: none)
PCAP_APP: Final = "pcap_app"  # the app name PCAPdroid's trailer gave
DNS_QUERIES: Final = "dns_queries"  # names the flow asked a DNS server for, ";"-joined
