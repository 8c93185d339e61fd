/*
 * auditor.packets._decode: link, IP and TCP/UDP headers of a batch of records, compiled.
 *
 * decode() does per packet what Decoder._decode_numpy in decode.py does with numpy over the
 * whole batch, with the same results (the tests compare the two on real, generated and
 * hostile captures): the link header (NULL, LOOP, Ethernet with up to two VLAN tags, raw IP,
 * LINUX_SLL, LINUX_SLL2; radiotap and 802.11, NFLOG, PKTAP: see link_layer), IPv4 or IPv6
 * with up to 8 extension headers, TCP or UDP ports and
 * flags, where the payload starts and how much of it was captured, and PCAPdroid's trailer.
 * The caller allocates the output columns and passes them in as writable buffers; decode()
 * returns the tallies the warnings and counts are made of, and the distinct PCAPdroid app
 * names of the batch (the app-name table across batches stays in Python).
 *
 * Where bytes are read from: a header of `w` bytes at offset `off` of a packet comes from
 * the packet's row of `head` when off + w <= its width (as decode.bytes_at reads them), else
 * from `buf` at data[i] + off. Every read of `buf` lies inside the packet's captured bytes,
 * [data[i], data[i] + caplen[i]), checked to be inside `buf` before the packet is looked at;
 * every read of `head` inside the packet's row. So no input, however hostile, makes a read
 * leave the buffers. Past caplen nothing is read from `buf`, and no result depends on the
 * bytes of `head` past caplen (the link header is read from `head` before caplen is checked,
 * as in numpy, and is discarded when caplen is too short); the payload head keeps only the
 * captured payload bytes, zeros after them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PAYLOAD_HEAD 16
#define TRAILER 32
#define TRAILER_MAGIC 0x01072021u
#define APP_NAME 20
#define MIN_HEAD 64 /* the fixed headers: link (22 bytes at most) and IPv6 (40) */
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETHERNET_MAX_LENGTH 1500
#define NFULA_PAYLOAD 9
#define NFLOG_MAX_TLVS 64
#define PKTAP_HEADER 108
#define RADIOTAP_MAX_WORDS 16

/* Kinds of frames that hold no IP this decoder reads: the pseudo ethertype LINK_KIND + kind
 * (decode.LINK_KINDS names them, in this order; LINK_KINDS below is checked against it). */
#define LINK_KIND 0x20000
#define PKTAP_INNER 0x30000
enum {
    K_NULL_UNKNOWN,
    K_WLAN_MANAGEMENT,
    K_WLAN_CONTROL,
    K_WLAN_EXTENSION,
    K_WLAN_NO_DATA,
    K_WLAN_ENCRYPTED,
    K_WLAN_AMSDU,
    K_WLAN_NOT_SNAP,
    K_WLAN_BAD,
    K_RADIOTAP_BAD,
    K_NFLOG_FAMILY,
    K_NFLOG_BAD_TLV,
    K_NFLOG_NO_PAYLOAD,
    K_PKTAP_BAD,
    K_PKTAP_NO_PACKET,
    N_KINDS
};

static const char *const KIND_NAMES[N_KINDS] = {
    "null-header-unknown", "wlan-management-frame", "wlan-control-frame",
    "wlan-extension-frame", "wlan-no-data-frame", "wlan-encrypted-frame", "wlan-amsdu-frame",
    "wlan-not-llc-snap", "wlan-bad-frame", "radiotap-bad-header", "nflog-unknown-family",
    "nflog-bad-tlv", "nflog-no-payload", "pktap-bad-header", "pktap-no-packet",
};

/* The tallies decode() returns, in this order (TALLIES names them for Python). */
enum {
    T_UNKNOWN_LINK,     /* rows of a link type this decoder does not read */
    T_TRUNCATED_LINK,   /* caplen not past the link header (empty records left out) */
    T_NON_IP,           /* rows whose pseudo ethertype is in non_ip[0:k] */
    T_V4_TRUNCATED,
    T_V4_BAD_VERSION,
    T_V4_BAD_IHL,
    T_V4_LENGTH_ZERO,
    T_V4_BAD_LENGTH,
    T_V6_TRUNCATED,
    T_V6_BAD_VERSION,
    T_V6_LENGTH_ZERO,
    T_V6_EXT_TRUNCATED,
    T_IPV4,
    T_IPV6,
    T_FRAGMENT,
    T_L4_TRUNCATED,
    T_BAD_TCP,
    T_TCP,
    T_UDP,
    T_OTHER_IP,
    T_CUT,
    T_TRAILER,
    N_TALLIES
};

static const char *const TALLY_NAMES[N_TALLIES] = {
    "unknown-link", "truncated-link", "non-ip", "v4-truncated", "v4-bad-version",
    "v4-bad-ihl", "v4-length-zero", "v4-bad-length", "v6-truncated", "v6-bad-version",
    "v6-length-zero", "v6-ext-truncated", "ipv4", "ipv6", "fragment", "l4-truncated",
    "bad-tcp", "tcp", "udp", "other-ip", "cut-by-snaplen", "trailer",
};

/* The output columns, in the order of the `out` tuple. */
enum {
    O_VERSION,
    O_SRC_HI,
    O_SRC_LO,
    O_DST_HI,
    O_DST_LO,
    O_PROTO,
    O_SPORT,
    O_DPORT,
    O_FLAGS,
    O_L4,
    O_PL_OFF,
    O_PL_LEN,
    O_PL_HEAD,
    O_IP_BYTES,
    O_FLOWABLE,
    O_UID,
    O_APP,
    O_NON_IP,
    N_OUT
};

/* kind: 'i' signed integer, 'u' unsigned integer, '?' bool */
static const struct {
    const char *name;
    char kind;
    Py_ssize_t itemsize;
    Py_ssize_t per_row;
} OUT_SPEC[N_OUT] = {
    {"ip_version", 'u', 1, 1},
    {"src_hi", 'u', 8, 1},
    {"src_lo", 'u', 8, 1},
    {"dst_hi", 'u', 8, 1},
    {"dst_lo", 'u', 8, 1},
    {"proto", 'i', 2, 1},
    {"sport", 'i', 4, 1},
    {"dport", 'i', 4, 1},
    {"tcp_flags", 'i', 4, 1},
    {"l4_off", 'i', 8, 1},
    {"payload_off", 'i', 8, 1},
    {"payload_len", 'i', 8, 1},
    {"payload_head", 'u', 1, PAYLOAD_HEAD},
    {"ip_bytes", 'i', 8, 1},
    {"flowable", '?', 1, 1},
    {"uid", 'i', 4, 1},
    {"app", 'i', 4, 1},
    {"non_ip", 'i', 4, 1},
};

static inline uint32_t
be16(const unsigned char *p)
{
    return ((uint32_t)p[0] << 8) | p[1];
}

static inline uint32_t
be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint32_t
le16(const unsigned char *p)
{
    return ((uint32_t)p[1] << 8) | p[0];
}

static inline uint32_t
le32(const unsigned char *p)
{
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

static inline uint64_t
be64(const unsigned char *p)
{
    return ((uint64_t)be32(p) << 32) | be32(p + 4);
}

static inline int
vlan_tpid(uint32_t et)
{
    return et == 0x8100 || et == 0x88A8 || et == 0x9100;
}

static inline int
ipv6_extension(int nh)
{
    return nh == 0 || nh == 43 || nh == 44 || nh == 51 || nh == 60 || nh == 135;
}

static inline int
af_inet6(uint32_t fam)
{
    return fam == 10 || fam == 23 || fam == 24 || fam == 28 || fam == 30;
}

/* ------------------------------------------------------------------ PCAPdroid app names */

/* The distinct 20-byte app names of the batch, in the order they first appear, found by an
 * open-addressing hash table (a batch may hold as many names as packets). */
typedef struct {
    unsigned char *names; /* count * APP_NAME bytes */
    Py_ssize_t count, room;
    int32_t *slots; /* index into names, -1: free */
    size_t mask;
    int32_t last; /* the name found last: consecutive packets tend to share it */
} Apps;

static uint32_t
hash_name(const unsigned char *p)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int k = 0; k < APP_NAME; k++)
        h = (h ^ p[k]) * 16777619u;
    return h;
}

static int
apps_rehash(Apps *a, size_t nslots)
{
    int32_t *slots = PyMem_RawMalloc(nslots * sizeof(int32_t));
    if (slots == NULL)
        return -1;
    memset(slots, 0xff, nslots * sizeof(int32_t));
    for (Py_ssize_t k = 0; k < a->count; k++) {
        size_t s = hash_name(a->names + k * APP_NAME) & (nslots - 1);
        while (slots[s] >= 0)
            s = (s + 1) & (nslots - 1);
        slots[s] = (int32_t)k;
    }
    PyMem_RawFree(a->slots);
    a->slots = slots;
    a->mask = nslots - 1;
    return 0;
}

/* The name's index among the batch's names (added when new); -1 when out of memory. */
static int32_t
apps_index(Apps *a, const unsigned char *name)
{
    if (a->last >= 0 && memcmp(a->names + (Py_ssize_t)a->last * APP_NAME, name, APP_NAME) == 0)
        return a->last;
    if (a->slots == NULL && apps_rehash(a, 64) < 0)
        return -1;
    size_t s = hash_name(name) & a->mask;
    while (a->slots[s] >= 0) {
        int32_t k = a->slots[s];
        if (memcmp(a->names + (Py_ssize_t)k * APP_NAME, name, APP_NAME) == 0)
            return a->last = k;
        s = (s + 1) & a->mask;
    }
    if (a->count == a->room) {
        Py_ssize_t room = a->room ? a->room * 2 : 32;
        unsigned char *grown = PyMem_RawRealloc(a->names, (size_t)room * APP_NAME);
        if (grown == NULL)
            return -1;
        a->names = grown;
        a->room = room;
    }
    memcpy(a->names + a->count * APP_NAME, name, APP_NAME);
    int32_t k = (int32_t)a->count++;
    if ((size_t)a->count * 2 > a->mask + 1) {
        if (apps_rehash(a, (a->mask + 1) * 2) < 0)
            return -1;
    }
    else {
        a->slots[s] = k;
    }
    return a->last = k;
}

static void
apps_free(Apps *a)
{
    PyMem_RawFree(a->names);
    PyMem_RawFree(a->slots);
}

/* ------------------------------------------------------------------------------ decode */

typedef struct {
    const unsigned char *buf;
    int64_t buflen;
    const int64_t *data;
    const int64_t *caplen;
    const int32_t *link;
    const unsigned char *head; /* row 0 */
    Py_ssize_t head_stride;    /* bytes from one row to the next */
    int64_t head_width;
    Py_ssize_t n;
    void *out[N_OUT];
    int64_t tally[N_TALLIES];
    Apps apps;
    Py_ssize_t bad_row; /* a row whose data lies outside buf; -1: none */
    int no_memory;
} Job;

/* `w` bytes at offset `off` of the packet: from its head row when they lie in it (as
 * decode.bytes_at reads them), else from the packet's bytes in buf. The caller makes sure
 * that off >= 0 and that off + w <= caplen (or off + w <= MIN_HEAD, for the link header). */
static inline const unsigned char *
span(const Job *j, const unsigned char *row, const unsigned char *pkt, int64_t off, int64_t w)
{
    return off + w <= j->head_width ? row + off : pkt + off;
}

/* ------------------------------------------------------------------------- link layers */

/* Where a frame's network layer starts (l3), its ethertype (et: -1 for a raw link type whose
 * packet is not IP, LINK_KIND + kind or PKTAP_INNER + link type for a frame holding no IP
 * that is read here, above 0xffff otherwise an address family), and the bytes after the
 * packet (trail: a radiotap FCS). A link header cut by the snaplen gives l3 >= cap, counted
 * as a truncated link header. As Decoder._link in decode.py. */
typedef struct {
    int64_t l3, et, trail;
} Link;

static inline void
kind(Link *o, int k)
{
    o->l3 = 0;
    o->et = LINK_KIND + k;
}

static inline void
truncated(Link *o, int64_t cap)
{
    o->l3 = cap;
    o->et = 0;
}

/* NULL (host byte order) or LOOP (network byte order): a BSD address family, or as some tools
 * write an ethertype, in either byte order, read as Wireshark reads it (packet-null.c): above
 * 1500 an ethertype (its low 16 bits), else an address family. */
static int64_t
null_ethertype(const unsigned char *p, int loop)
{
    uint32_t v;
    if (loop) {
        v = be32(p);
    }
    else {
        const uint32_t le = le32(p);
        if (le >> 16)
            v = (p[3] == 0 && p[2] < 6) ? p[2] : be32(p);
        else
            v = (p[0] == 0 && p[1] < 6) ? p[1] : le;
    }
    if (v > ETHERNET_MAX_LENGTH) { /* its low 16 bits (the high ones may be anything) */
        v &= 0xFFFF;
        return v == ETH_P_IP ? ETH_P_IP : v == ETH_P_IPV6 ? ETH_P_IPV6 : LINK_KIND + K_NULL_UNKNOWN;
    }
    return v == 2 ? ETH_P_IP : af_inet6(v) ? ETH_P_IPV6 : LINK_KIND + K_NULL_UNKNOWN;
}

/* A link header of fixed layout at p, `avail` bytes of which may be read, `base` bytes into
 * the frame; 0 when `link` is not one of them. An outer header is read from the packet's
 * head row (avail: its width, more than any of them needs; the caller discards what caplen
 * does not cover), one inside PKTAP from the captured bytes. */
static int
fixed_link(int64_t link, const unsigned char *p, int64_t avail, int64_t base, Link *o)
{
#define NEED(k)                                                                               \
    if ((k) > avail) {                                                                        \
        truncated(o, base + (k));                                                             \
        return 1;                                                                             \
    }
    int64_t et, l3;
    switch (link) {
    case 1: /* Ethernet */
        NEED(14);
        et = be16(p + 12);
        l3 = 14;
        if (vlan_tpid((uint32_t)et)) {
            NEED(18);
            l3 = 18;
            et = be16(p + 16);
            if (vlan_tpid((uint32_t)et)) {
                NEED(22);
                l3 = 22;
                et = be16(p + 20);
            }
        }
        break;
    case 101:
    case 12:
    case 14: { /* raw IP */
        NEED(1);
        int nib = p[0] >> 4;
        et = nib == 4 ? ETH_P_IP : nib == 6 ? ETH_P_IPV6 : -1;
        l3 = 0;
        break;
    }
    case 228:
        NEED(1);
        et = (p[0] >> 4) == 4 ? ETH_P_IP : -1;
        l3 = 0;
        break;
    case 229:
        NEED(1);
        et = (p[0] >> 4) == 6 ? ETH_P_IPV6 : -1;
        l3 = 0;
        break;
    case 0:
    case 108:
        NEED(4);
        et = null_ethertype(p, link == 108);
        l3 = 4;
        break;
    case 113: /* LINUX_SLL */
        NEED(16);
        et = be16(p + 14);
        l3 = 16;
        break;
    case 276: /* LINUX_SLL2 */
        NEED(20);
        et = be16(p);
        l3 = 20;
        break;
    default:
        return 0;
    }
#undef NEED
    o->l3 = base + l3;
    o->et = et;
    return 1;
}

/* An 802.11 frame at w: a data frame carrying LLC/SNAP gives its ethertype (QoS, four
 * addresses, HT control and radiotap's padding taken into account), another one a kind. */
static void
wlan(const Job *j, const unsigned char *row, const unsigned char *pkt, int64_t cap, int64_t w,
     int fcs, int pad, Link *o)
{
    o->trail = fcs ? 4 : 0;
    const int64_t capx = cap - o->trail;
    if (capx < w + 2) {
        truncated(o, cap);
        return;
    }
    const unsigned char *fc = span(j, row, pkt, w, 2);
    if (fc[0] & 3) {
        kind(o, K_WLAN_BAD);
        return;
    }
    const int type = (fc[0] >> 2) & 3, sub = fc[0] >> 4;
    if (type != 2) {
        kind(o, type == 0 ? K_WLAN_MANAGEMENT : type == 1 ? K_WLAN_CONTROL : K_WLAN_EXTENSION);
        return;
    }
    if (sub & 4) {
        kind(o, K_WLAN_NO_DATA);
        return;
    }
    const int qos = (sub & 8) != 0, four = (fc[1] & 3) == 3;
    int64_t size = 24 + 6 * four + 2 * qos + ((qos && (fc[1] & 0x80)) ? 4 : 0);
    if (pad)
        size = (size + 3) & ~(int64_t)3;
    if (capx < w + size) {
        truncated(o, cap);
        return;
    }
    if (fc[1] & 0x40) {
        kind(o, K_WLAN_ENCRYPTED);
        return;
    }
    if (qos && (span(j, row, pkt, w + 24 + 6 * four, 1)[0] & 0x80)) {
        kind(o, K_WLAN_AMSDU);
        return;
    }
    if (capx < w + size + 8) {
        truncated(o, cap);
        return;
    }
    const unsigned char *llc = span(j, row, pkt, w + size, 8);
    if (llc[0] != 0xAA || llc[1] != 0xAA || llc[2] != 3 || llc[3] != 0 || llc[4] != 0
        || (llc[5] != 0 && llc[5] != 0xF8)) {
        kind(o, K_WLAN_NOT_SNAP);
        return;
    }
    o->l3 = w + size + 8;
    o->et = be16(llc + 6);
}

/* A radiotap header (its length, and the Flags field for FCS and padding), then 802.11. */
static void
radiotap(const Job *j, const unsigned char *row, const unsigned char *pkt, int64_t cap, Link *o)
{
    if (cap < 8) {
        truncated(o, cap);
        return;
    }
    const unsigned char *h = span(j, row, pkt, 0, 8);
    const int64_t length = le16(h + 2);
    const uint32_t present = le32(h + 4);
    if (h[0] != 0 || length < 8) {
        kind(o, K_RADIOTAP_BAD);
        return;
    }
    if (length > cap) {
        truncated(o, cap);
        return;
    }
    int64_t words = 1;
    for (uint32_t word = present; word >> 31; words++) {
        if (words == RADIOTAP_MAX_WORDS || 4 + 4 * words + 4 > length) {
            kind(o, K_RADIOTAP_BAD);
            return;
        }
        word = le32(span(j, row, pkt, 4 + 4 * words, 4));
    }
    int64_t at = 4 + 4 * words;
    if (present & 1) /* TSFT: 8 bytes, 8-aligned */
        at = ((at + 7) & ~(int64_t)7) + 8;
    int flags = 0;
    if (present & 2) {
        if (at + 1 > length) {
            kind(o, K_RADIOTAP_BAD);
            return;
        }
        flags = span(j, row, pkt, at, 1)[0];
    }
    wlan(j, row, pkt, cap, length, (flags & 0x10) != 0, (flags & 0x20) != 0, o);
}

/* Linux NFLOG: a 4-byte header (address family first), then TLVs in the byte order of the
 * host that logged (told by the first TLV's length); the packet is NFULA_PAYLOAD's value. */
static void
nflog(const Job *j, const unsigned char *row, const unsigned char *pkt, int64_t cap, Link *o)
{
    if (cap < 4) {
        truncated(o, cap);
        return;
    }
    const int family = span(j, row, pkt, 0, 1)[0];
    if (family != 2 && family != 10) {
        kind(o, K_NFLOG_FAMILY);
        return;
    }
    int big = 0;
    if (cap >= 8) {
        const unsigned char *t = span(j, row, pkt, 4, 4);
        const int64_t le = le16(t), be = be16(t);
        big = !(le >= 4 && le <= cap - 4) && be >= 4 && be <= cap - 4;
    }
    int64_t pos = 4;
    for (int k = 0;; k++) {
        if (pos + 4 > cap) {
            if (pos == cap)
                kind(o, K_NFLOG_NO_PAYLOAD);
            else
                truncated(o, cap);
            return;
        }
        if (k == NFLOG_MAX_TLVS) {
            kind(o, K_NFLOG_BAD_TLV);
            return;
        }
        const unsigned char *t = span(j, row, pkt, pos, 4);
        const int64_t length = big ? be16(t) : le16(t);
        const uint32_t type = (big ? be16(t + 2) : le16(t + 2)) & 0x7FFF;
        if (length < 4) {
            kind(o, K_NFLOG_BAD_TLV);
            return;
        }
        if (type == NFULA_PAYLOAD) {
            o->l3 = pos + 4;
            o->et = family == 2 ? ETH_P_IP : ETH_P_IPV6;
            return;
        }
        pos += (length + 3) & ~(int64_t)3;
    }
}

/* Apple's PKTAP: a header of its own length (little-endian) naming the link type of the
 * frame that follows it. */
static void
pktap(const Job *j, const unsigned char *row, const unsigned char *pkt, int64_t cap, Link *o)
{
    if (cap < 12) {
        truncated(o, cap);
        return;
    }
    const unsigned char *h = span(j, row, pkt, 0, 12);
    const int64_t length = le32(h), record = le32(h + 4), inner = le32(h + 8);
    if (length < PKTAP_HEADER || record > 1) {
        kind(o, K_PKTAP_BAD);
        return;
    }
    if (length > cap) {
        truncated(o, cap);
        return;
    }
    if (record == 0) {
        kind(o, K_PKTAP_NO_PACKET);
        return;
    }
    if (!fixed_link(inner, pkt + length, cap - length, length, o)) {
        o->l3 = 0;
        o->et = PKTAP_INNER + (inner < 0xFFFF ? inner : 0xFFFF);
    }
}

/* 0 when the decoder does not read `link`. */
static int
link_layer(const Job *j, int32_t link, const unsigned char *row, const unsigned char *pkt,
           int64_t cap, Link *o)
{
    switch (link) {
    case 127:
        radiotap(j, row, pkt, cap, o);
        return 1;
    case 105:
        wlan(j, row, pkt, cap, 0, 0, 0, o);
        return 1;
    case 239:
        nflog(j, row, pkt, cap, o);
        return 1;
    case 149:
    case 258:
        pktap(j, row, pkt, cap, o);
        return 1;
    default:
        return fixed_link(link, row, j->head_width, 0, o);
    }
}

static void
run(Job *j)
{
    uint8_t *o_version = j->out[O_VERSION];
    uint64_t *o_src_hi = j->out[O_SRC_HI], *o_src_lo = j->out[O_SRC_LO];
    uint64_t *o_dst_hi = j->out[O_DST_HI], *o_dst_lo = j->out[O_DST_LO];
    int16_t *o_proto = j->out[O_PROTO];
    int32_t *o_sport = j->out[O_SPORT], *o_dport = j->out[O_DPORT], *o_flags = j->out[O_FLAGS];
    int64_t *o_l4 = j->out[O_L4], *o_pl_off = j->out[O_PL_OFF], *o_pl_len = j->out[O_PL_LEN];
    uint8_t *o_pl_head = j->out[O_PL_HEAD];
    int64_t *o_ip_bytes = j->out[O_IP_BYTES];
    uint8_t *o_flowable = j->out[O_FLOWABLE];
    int32_t *o_uid = j->out[O_UID], *o_app = j->out[O_APP], *o_non_ip = j->out[O_NON_IP];
    int64_t *t = j->tally;
    Py_ssize_t non_ip = 0;

    for (Py_ssize_t i = 0; i < j->n; i++) {
        const int64_t d = j->data[i];
        const int64_t rawcap = j->caplen[i];
        if (d < 0 || rawcap < 0 || d > j->buflen - rawcap) {
            j->bad_row = i;
            return;
        }
        const int32_t link = j->link[i];
        const unsigned char *row = j->head + i * j->head_stride;
        const unsigned char *pkt = j->buf + d;

        /* what the row gets when nothing more is known */
        int version = 0, proto = -1, frag = 0, later = 0, flowable = 0;
        uint64_t src_hi = 0, src_lo = 0, dst_hi = 0, dst_lo = 0;
        int32_t sport = 0, dport = 0, flags = 0, uid = -1, app = -1;
        int64_t l4 = -1, pl_off = -1, pl_len = 0, ip_bytes = 0, ip_end = 0;

        Link lk = {-1, 0, 0};
        if (!link_layer(j, link, row, pkt, rawcap, &lk)) {
            t[T_UNKNOWN_LINK]++;
            goto store;
        }
        if (rawcap == 0) /* an empty record: counted by the reader */
            goto store;
        const int64_t l3 = lk.l3, et = lk.et;
        const int64_t cap = rawcap - lk.trail; /* what precedes a radiotap FCS */
        if (cap <= l3) {
            t[T_TRUNCATED_LINK]++;
            goto store;
        }

        const int64_t base = l3;
        if (et == ETH_P_IP) {
            if (cap < base + 20) {
                t[T_V4_TRUNCATED]++;
                goto store;
            }
            const unsigned char *h = span(j, row, pkt, base, 20);
            if ((h[0] >> 4) != 4) {
                t[T_V4_BAD_VERSION]++;
                goto store;
            }
            const int64_t ihl = (int64_t)(h[0] & 15) * 4;
            if (ihl < 20) {
                t[T_V4_BAD_IHL]++;
                goto store;
            }
            int64_t total = be16(h + 2);
            if (total == 0) { /* segmentation offload: the captured bytes */
                t[T_V4_LENGTH_ZERO]++;
                total = cap - base;
            }
            const int bad_len = total < ihl;
            if (bad_len)
                t[T_V4_BAD_LENGTH]++;
            version = 4;
            src_lo = be32(h + 12);
            dst_lo = be32(h + 16);
            proto = h[9];
            const uint32_t fragment = be16(h + 6);
            frag = (fragment & 0x3FFF) != 0;
            later = (fragment & 0x1FFF) != 0;
            ip_end = base + total;
            ip_bytes = total;
            l4 = bad_len ? -1 : base + ihl;
        }
        else if (et == ETH_P_IPV6) {
            if (cap < base + 40) {
                t[T_V6_TRUNCATED]++;
                goto store;
            }
            const unsigned char *h = span(j, row, pkt, base, 40);
            if ((h[0] >> 4) != 6) {
                t[T_V6_BAD_VERSION]++;
                goto store;
            }
            int64_t plen = be16(h + 4);
            if (plen == 0) { /* a jumbogram, or offload: the captured bytes */
                t[T_V6_LENGTH_ZERO]++;
                plen = cap - base - 40;
                if (plen < 0)
                    plen = 0;
            }
            version = 6;
            src_hi = be64(h + 8);
            src_lo = be64(h + 16);
            dst_hi = be64(h + 24);
            dst_lo = be64(h + 32);
            ip_end = base + 40 + plen;
            ip_bytes = 40 + plen;
            int nh = h[6];
            int64_t off = base + 40;
            int alive = 1;
            const int64_t limit = ip_end < cap ? ip_end : cap;
            for (int k = 0; k < 8 && ipv6_extension(nh); k++) {
                if (off + 8 > limit) {
                    t[T_V6_EXT_TRUNCATED]++;
                    alive = 0;
                    break;
                }
                const unsigned char *m = span(j, row, pkt, off, 8);
                int64_t size;
                if (nh == 44) { /* fragment */
                    size = 8;
                    frag = 1;
                    later = (be16(m + 2) >> 3) != 0;
                }
                else if (nh == 51) { /* authentication header: in 4-byte units */
                    size = ((int64_t)m[1] + 2) * 4;
                }
                else {
                    size = ((int64_t)m[1] + 1) * 8;
                }
                if (off + size > ip_end) { /* a header longer than the datagram */
                    t[T_V6_EXT_TRUNCATED]++;
                    alive = 0;
                    break;
                }
                nh = m[0];
                off += size;
                if (later) /* what follows a later fragment's header is data, not headers */
                    break;
            }
            proto = nh;
            l4 = alive && !ipv6_extension(nh) ? off : -1;
        }
        else { /* not IP: summed up by the caller */
            o_non_ip[non_ip++] = (int32_t)et;
            goto store;
        }

        /* transport ports, flags and payload */
        const int tcp_or_udp = proto == 6 || proto == 17;
        int fits = 0;
        if (!later && tcp_or_udp && l4 >= 0) {
            const int64_t need = proto == 6 ? 20 : 8;
            if (cap >= l4 + need && ip_end >= l4 + need) {
                fits = 1;
                const unsigned char *m = span(j, row, pkt, l4, proto == 6 ? 14 : 4);
                sport = (int32_t)be16(m);
                dport = (int32_t)be16(m + 2);
                int64_t start;
                if (proto == 6) {
                    const int64_t doff = (int64_t)(m[12] >> 4) * 4;
                    flags = ((m[12] & 1) << 8) | m[13];
                    if (doff < 20) {
                        t[T_BAD_TCP]++;
                        start = -1;
                    }
                    else {
                        start = l4 + doff;
                    }
                    t[T_TCP]++;
                }
                else {
                    start = l4 + 8;
                    t[T_UDP]++;
                }
                pl_off = start;
                if (start >= 0) {
                    const int64_t stop = ip_end < cap ? ip_end : cap;
                    pl_len = stop > start ? stop - start : 0;
                }
            }
            else {
                t[T_L4_TRUNCATED]++;
            }
        }
        flowable = !later && (fits || !tcp_or_udp) && l4 >= 0;
        if (flowable && !fits)
            t[T_OTHER_IP]++;
        t[version == 4 ? T_IPV4 : T_IPV6]++;
        if (frag)
            t[T_FRAGMENT]++;
        if (ip_end > cap)
            t[T_CUT]++;
        /* PCAPdroid's trailer makes an Ethernet frame at least 32 bytes longer than its IP
         * datagram (cap - l3 - ip_bytes >= 32 puts it inside the captured bytes) */
        if (link == 1 && cap - l3 - ip_bytes >= TRAILER) {
            const unsigned char *tr = pkt + cap - TRAILER;
            if (be32(tr) == TRAILER_MAGIC) {
                int32_t k = apps_index(&j->apps, tr + 8);
                if (k < 0) {
                    j->no_memory = 1;
                    return;
                }
                uid = (int32_t)be32(tr + 4);
                app = k;
                t[T_TRAILER]++;
            }
        }

    store:
        o_version[i] = (uint8_t)version;
        o_src_hi[i] = src_hi;
        o_src_lo[i] = src_lo;
        o_dst_hi[i] = dst_hi;
        o_dst_lo[i] = dst_lo;
        o_proto[i] = (int16_t)proto;
        o_sport[i] = sport;
        o_dport[i] = dport;
        o_flags[i] = flags;
        o_l4[i] = l4;
        o_pl_off[i] = pl_off;
        o_pl_len[i] = pl_len;
        o_ip_bytes[i] = ip_bytes;
        o_flowable[i] = (uint8_t)flowable;
        o_uid[i] = uid;
        o_app[i] = app;
        unsigned char *ph = o_pl_head + i * PAYLOAD_HEAD;
        if (pl_len > 0) { /* inside the captured bytes: pl_off + pl_len <= cap */
            const int64_t k = pl_len < PAYLOAD_HEAD ? pl_len : PAYLOAD_HEAD;
            memcpy(ph, span(j, row, pkt, pl_off, k), (size_t)k);
            if (k < PAYLOAD_HEAD)
                memset(ph + k, 0, (size_t)(PAYLOAD_HEAD - k));
        }
        else {
            memset(ph, 0, PAYLOAD_HEAD);
        }
    }
    j->tally[T_NON_IP] = non_ip;
}

/* -------------------------------------------------------------------------- arguments */

/* The buffer's format is one item of `kind` in native byte order. */
static int
format_is(const char *fmt, char kind)
{
    if (fmt == NULL)
        fmt = "B";
    if (*fmt == '@' || *fmt == '=' || *fmt == (PY_LITTLE_ENDIAN ? '<' : '>'))
        fmt++;
    if (fmt[0] == '\0' || fmt[1] != '\0')
        return 0;
    switch (kind) {
    case 'i':
        return strchr("bhilqn", fmt[0]) != NULL;
    case 'u':
        return strchr("BHILQN", fmt[0]) != NULL;
    default:
        return fmt[0] == kind;
    }
}

/* A contiguous one-dimensional (or flat) buffer of `count` items of `kind` and `itemsize`. */
static int
get_column(PyObject *obj, Py_buffer *view, int writable, const char *name, char kind,
           Py_ssize_t itemsize, Py_ssize_t count)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s: not a %scontiguous buffer", name,
                     writable ? "writable " : "");
        return -1;
    }
    if (view->itemsize != itemsize || !format_is(view->format, kind)
        || view->len != count * itemsize) {
        PyErr_Format(PyExc_ValueError,
                     "%s: expected %zd items of %zd bytes (kind '%c'), got %zd bytes of "
                     "format '%s'",
                     name, count, itemsize, kind, view->len,
                     view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *
decode(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o_buf, *o_data, *o_caplen, *o_link, *o_head, *o_out;
    if (!PyArg_ParseTuple(args, "OOOOOO!:decode", &o_buf, &o_data, &o_caplen, &o_link, &o_head,
                          &PyTuple_Type, &o_out))
        return NULL;
    if (PyTuple_GET_SIZE(o_out) != N_OUT) {
        PyErr_Format(PyExc_ValueError, "out: expected %d buffers, got %zd", N_OUT,
                     PyTuple_GET_SIZE(o_out));
        return NULL;
    }
    /* views[0..4]: buf, data, caplen, link_type, head; views[5..]: the outputs */
    Py_buffer views[5 + N_OUT];
    int held = 0;
    PyObject *result = NULL;
    Job job;
    memset(&job, 0, sizeof job);
    job.apps.last = -1;
    job.bad_row = -1;

    if (PyObject_GetBuffer(o_buf, &views[0], PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "buf: not a contiguous buffer");
        goto done;
    }
    held = 1;
    Py_buffer *data = &views[1];
    if (PyObject_GetBuffer(o_data, data, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "data: not a contiguous buffer");
        goto done;
    }
    held = 2;
    if (data->itemsize != 8 || !format_is(data->format, 'i')) {
        PyErr_SetString(PyExc_ValueError, "data: expected int64 items");
        goto done;
    }
    const Py_ssize_t n = data->len / 8;
    if (n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many records in one batch");
        goto done;
    }
    if (get_column(o_caplen, &views[2], 0, "caplen", 'i', 8, n) < 0)
        goto done;
    held = 3;
    if (get_column(o_link, &views[3], 0, "link_type", 'i', 4, n) < 0)
        goto done;
    held = 4;
    Py_buffer *head = &views[4];
    if (PyObject_GetBuffer(o_head, head, PyBUF_STRIDES | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "head: not a buffer with strides");
        goto done;
    }
    held = 5;
    if (head->itemsize != 1 || !format_is(head->format, 'u')) {
        PyErr_SetString(PyExc_ValueError, "head: expected uint8 items");
        goto done;
    }
    if (head->ndim == 2) {
        if (head->shape[0] != n || head->shape[1] < MIN_HEAD || head->strides[1] != 1) {
            PyErr_Format(PyExc_ValueError,
                         "head: expected %zd rows of at least %d contiguous bytes", n,
                         MIN_HEAD);
            goto done;
        }
        job.head_width = head->shape[1];
        job.head_stride = head->strides[0];
    }
    else {
        PyErr_SetString(PyExc_ValueError, "head: expected a two-dimensional array");
        goto done;
    }
    for (int c = 0; c < N_OUT; c++) {
        if (get_column(PyTuple_GET_ITEM(o_out, c), &views[5 + c], 1, OUT_SPEC[c].name,
                       OUT_SPEC[c].kind, OUT_SPEC[c].itemsize, n * OUT_SPEC[c].per_row)
            < 0)
            goto done;
        held = 6 + c;
        job.out[c] = views[5 + c].buf;
    }
    job.buf = views[0].buf;
    job.buflen = views[0].len;
    job.data = data->buf;
    job.caplen = views[2].buf;
    job.link = views[3].buf;
    job.head = head->buf;
    job.n = n;

    Py_BEGIN_ALLOW_THREADS
    run(&job);
    Py_END_ALLOW_THREADS

    if (job.no_memory) {
        PyErr_NoMemory();
        goto done;
    }
    if (job.bad_row >= 0) {
        PyErr_Format(PyExc_ValueError, "record %zd: data and caplen lie outside buf",
                     job.bad_row);
        goto done;
    }
    PyObject *tallies = PyTuple_New(N_TALLIES);
    PyObject *names = PyList_New(job.apps.count);
    if (tallies == NULL || names == NULL) {
        Py_XDECREF(tallies);
        Py_XDECREF(names);
        goto done;
    }
    for (int k = 0; k < N_TALLIES; k++) {
        PyObject *v = PyLong_FromLongLong(job.tally[k]);
        if (v == NULL) {
            Py_DECREF(tallies);
            Py_DECREF(names);
            goto done;
        }
        PyTuple_SET_ITEM(tallies, k, v);
    }
    for (Py_ssize_t k = 0; k < job.apps.count; k++) {
        PyObject *v = PyBytes_FromStringAndSize(
            (const char *)job.apps.names + k * APP_NAME, APP_NAME);
        if (v == NULL) {
            Py_DECREF(tallies);
            Py_DECREF(names);
            goto done;
        }
        PyList_SET_ITEM(names, k, v);
    }
    result = Py_BuildValue("(NN)", tallies, names);

done:
    apps_free(&job.apps);
    for (int k = 0; k < held; k++)
        PyBuffer_Release(&views[k]);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(buf, data, caplen, link_type, head, out, /) -> (tallies, app_names)\n\n"
     "Decode the headers of a batch of n records (see decode.py). buf: the chunk (bytes);\n"
     "data, caplen: n int64 (each record's data is buf[data[i]:data[i] + caplen[i]], which\n"
     "must lie inside buf); link_type: n int32; head: (n, >= 64) uint8, the first bytes of\n"
     "each record's data (rows may be strided; bytes in a row are contiguous). out: a tuple\n"
     "of writable contiguous buffers, one per name in OUTPUTS, each filled for every row:\n"
     "n items of the column's type (payload_head: n * 16 bytes; non_ip: only its first\n"
     "tallies['non-ip'] items are written, the pseudo ethertypes of the rows that are not\n"
     "IP; app: the index into app_names, -1 without a trailer). Returns the tallies, ints\n"
     "in the order of TALLIES, and the distinct 20-byte PCAPdroid app names in the order\n"
     "they first appear. Raises ValueError when a buffer has the wrong type or size or a\n"
     "record lies outside buf."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "auditor.packets._decode",
    "Link, IP and TCP/UDP headers of a batch of records, compiled (see decode.py).", -1,
    methods, NULL, NULL, NULL, NULL,
};

static PyObject *
names_tuple(const char *const *names, int count)
{
    PyObject *t = PyTuple_New(count);
    if (t == NULL)
        return NULL;
    for (int k = 0; k < count; k++) {
        PyObject *s = PyUnicode_FromString(names[k]);
        if (s == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, k, s);
    }
    return t;
}

PyMODINIT_FUNC
PyInit__decode(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    const char *outputs[N_OUT];
    for (int c = 0; c < N_OUT; c++)
        outputs[c] = OUT_SPEC[c].name;
    PyObject *t_out = names_tuple(outputs, N_OUT);
    PyObject *t_tally = names_tuple(TALLY_NAMES, N_TALLIES);
    PyObject *t_kinds = names_tuple(KIND_NAMES, N_KINDS);
    int failed = t_out == NULL || t_tally == NULL || t_kinds == NULL
                 || PyModule_AddObjectRef(m, "OUTPUTS", t_out) < 0
                 || PyModule_AddObjectRef(m, "TALLIES", t_tally) < 0
                 || PyModule_AddObjectRef(m, "LINK_KINDS", t_kinds) < 0;
    Py_XDECREF(t_out);
    Py_XDECREF(t_tally);
    Py_XDECREF(t_kinds);
    if (failed) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "PAYLOAD_HEAD", PAYLOAD_HEAD) < 0
        || PyModule_AddIntConstant(m, "MIN_HEAD", MIN_HEAD) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
