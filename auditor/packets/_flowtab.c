/* The flow table's per-packet work, compiled: see flows.py (CaptureAnalyzer).
 *
 * FlowTable.assign() takes one decoded batch as columns and, packet by packet in file order,
 * finds the packet's flow by its bidirectional key (IP version, protocol, the lower and the
 * higher address:port), starts a new flow when the key is new or was silent for longer than
 * its protocol's timeout (TCP has its own), and adds the packet to the flow's sums (packets,
 * IP bytes and TCP flags per direction, first and last seen, PCAPdroid uid and app). It gives
 * each packet its flow's id (-1: none) and direction (0: the lower side sent it).
 *
 * FlowTable.expire() takes out the flows no later packet can join (their key started a newer
 * flow, or is silent past its timeout at a given time), so that a long read keeps only the
 * flows still going; ids are handed out in the order flows start and never change.
 *
 * It does what the numpy code of CaptureAnalyzer._assign does, with the same results
 * (flows.py numbers flows by their first packet at the end, so the order in which ids are
 * handed out here does not show). The silence before a packet is measured from the key's
 * previous packet in the file (not its latest time: time may go backwards), however the file
 * is cut into batches.
 *
 * Keys live in the flows; the hash table holds (hash, current flow of the key) pairs with
 * linear probing, kept at most half full.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#define TCP 6
#define TCP_SYN 0x02
#define TCP_ACK 0x10
#define SYN_ONLY 0x200
#define SYN_ACK 0x400

typedef struct {
    uint64_t a_hi, a_lo, b_hi, b_lo;
    int64_t id; /* flows are numbered in the order they start; an index moves, an id does not */
    int64_t first_pkt, first_ns, last_ns, prev_ts;
    int64_t pk_ab, pk_ba, by_ab, by_ba;
    int32_t pa, pb, link, fl_ab, fl_ba, uid, app;
    int16_t proto;
    uint8_t ver;
    int8_t first_dir;
    uint8_t dead; /* its key started a newer flow: no packet can join it any more */
} Flow;

typedef struct {
    uint64_t hash;
    int64_t flow; /* -1: empty */
} Slot;

typedef struct {
    PyObject_HEAD
    Flow *flows;
    Py_ssize_t n, cap;
    Slot *slots;
    size_t mask; /* slots - 1, a power of two minus one */
    size_t used;
    int64_t timeout;     /* a key of any protocol but TCP silent longer starts a new flow */
    int64_t tcp_timeout; /* ... and a TCP key */
    int64_t next_id;
} FlowTable;

static inline uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return x;
}

static inline uint64_t key_hash(uint8_t ver, int16_t proto, uint64_t a_hi, uint64_t a_lo,
                                uint64_t b_hi, uint64_t b_lo, int32_t pa, int32_t pb) {
    uint64_t h = mix(a_lo ^ 0x9E3779B97F4A7C15ULL);
    h = mix(h ^ b_lo);
    h = mix(h ^ a_hi ^ (b_hi * 0xD6E8FEB86659FD93ULL));
    h = mix(h ^ ((uint64_t)(uint32_t)pa << 32 | (uint32_t)pb) ^
            ((uint64_t)ver << 56) ^ ((uint64_t)(uint16_t)proto << 40));
    return h;
}

static int grow_slots(FlowTable *t) {
    size_t size = (t->mask + 1) * 2;
    Slot *slots = PyMem_Malloc(size * sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < size; i++) {
        slots[i].flow = -1;
        slots[i].hash = 0;
    }
    for (size_t i = 0; i <= t->mask; i++) {
        if (t->slots[i].flow < 0)
            continue;
        size_t j = (size_t)t->slots[i].hash & (size - 1);
        while (slots[j].flow >= 0)
            j = (j + 1) & (size - 1);
        slots[j] = t->slots[i];
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->mask = size - 1;
    return 0;
}

static int64_t new_flow(FlowTable *t) {
    if (t->n == t->cap) {
        Py_ssize_t cap = t->cap * 2;
        Flow *flows = PyMem_Realloc(t->flows, (size_t)cap * sizeof(Flow));
        if (flows == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->flows = flows;
        t->cap = cap;
    }
    Flow *f = &t->flows[t->n];
    memset(f, 0, sizeof(Flow));
    f->id = t->next_id++;
    f->first_ns = INT64_MAX;
    f->last_ns = INT64_MIN;
    f->uid = -1;
    f->app = -1;
    return t->n++;
}

static int FlowTable_init(FlowTable *t, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"timeout_ns", "tcp_timeout_ns", NULL};
    long long timeout, tcp_timeout = INT64_MAX;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L|L", kwlist, &timeout, &tcp_timeout))
        return -1;
    PyMem_Free(t->flows);
    PyMem_Free(t->slots);
    t->flows = NULL;
    t->slots = NULL;
    t->cap = 1024;
    t->n = 0;
    t->flows = PyMem_Malloc((size_t)t->cap * sizeof(Flow));
    t->mask = 2047;
    t->slots = PyMem_Malloc((t->mask + 1) * sizeof(Slot));
    if (t->flows == NULL || t->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i <= t->mask; i++) {
        t->slots[i].flow = -1;
        t->slots[i].hash = 0;
    }
    t->used = 0;
    t->timeout = timeout;
    t->tcp_timeout = tcp_timeout;
    t->next_id = 0;
    return 0;
}

static void FlowTable_dealloc(FlowTable *t) {
    PyMem_Free(t->flows);
    PyMem_Free(t->slots);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

/* The columns of one batch, each a contiguous buffer of n items of its width. */
enum {
    C_FLOWABLE, C_VER, C_SRC_HI, C_SRC_LO, C_DST_HI, C_DST_LO, C_PROTO, C_SPORT, C_DPORT,
    C_TS, C_BYTES, C_FLAGS, C_UID, C_APP, C_LINK, C_FID, C_DIR, C_COUNT
};
static const Py_ssize_t WIDTH[C_COUNT] = {1, 1, 8, 8, 8, 8, 2, 4, 4, 8, 8, 4, 4, 4, 4, 8, 1};
static const char *NAMES[C_COUNT] = {
    "flowable", "ip_version", "src_hi", "src_lo", "dst_hi", "dst_lo", "proto", "sport",
    "dport", "ts_ns", "ip_bytes", "tcp_flags", "uid", "app", "link_type", "fid", "direction"};

static PyObject *FlowTable_assign(FlowTable *t, PyObject *args) {
    long long first;
    Py_buffer b[C_COUNT];
    memset(b, 0, sizeof(b));
    if (!PyArg_ParseTuple(args, "Ly*y*y*y*y*y*y*y*y*y*y*y*y*y*y*w*w*:assign", &first,
                          &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6], &b[7], &b[8],
                          &b[9], &b[10], &b[11], &b[12], &b[13], &b[14], &b[15], &b[16]))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = b[C_FLOWABLE].len;
    if (t->flows == NULL || t->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FlowTable.__init__ was not called");
        goto done;
    }
    for (int c = 0; c < C_COUNT; c++) {
        if (b[c].len % WIDTH[c] || b[c].len / WIDTH[c] != n) { /* no n * width: no overflow */
            PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd items of %zd bytes",
                         NAMES[c], b[c].len, n, WIDTH[c]);
            goto done;
        }
    }
    const uint8_t *flowable = b[C_FLOWABLE].buf, *ver = b[C_VER].buf;
    const uint64_t *src_hi = b[C_SRC_HI].buf, *src_lo = b[C_SRC_LO].buf;
    const uint64_t *dst_hi = b[C_DST_HI].buf, *dst_lo = b[C_DST_LO].buf;
    const int16_t *proto = b[C_PROTO].buf;
    const int32_t *sport = b[C_SPORT].buf, *dport = b[C_DPORT].buf;
    const int64_t *ts = b[C_TS].buf, *bytes = b[C_BYTES].buf;
    const int32_t *flags = b[C_FLAGS].buf, *uid = b[C_UID].buf, *app = b[C_APP].buf;
    const int32_t *link = b[C_LINK].buf;
    int64_t *fid = b[C_FID].buf;
    int8_t *dir = b[C_DIR].buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!flowable[i]) {
            fid[i] = -1;
            dir[i] = 0;
            continue;
        }
        uint64_t sh = src_hi[i], sl = src_lo[i], dh = dst_hi[i], dl = dst_lo[i];
        int32_t sp = sport[i], dp = dport[i];
        int swap = sh > dh || (sh == dh && (sl > dl || (sl == dl && sp > dp)));
        uint64_t a_hi = swap ? dh : sh, a_lo = swap ? dl : sl;
        uint64_t b_hi = swap ? sh : dh, b_lo = swap ? sl : dl;
        int32_t pa = swap ? dp : sp, pb = swap ? sp : dp;
        uint8_t v = ver[i];
        int16_t p = proto[i];
        uint64_t h = key_hash(v, p, a_hi, a_lo, b_hi, b_lo, pa, pb);
        size_t j = (size_t)h & t->mask;
        int64_t cur = -1;
        while (t->slots[j].flow >= 0) {
            if (t->slots[j].hash == h) {
                Flow *f = &t->flows[t->slots[j].flow];
                if (f->a_lo == a_lo && f->b_lo == b_lo && f->a_hi == a_hi && f->b_hi == b_hi &&
                    f->pa == pa && f->pb == pb && f->ver == v && f->proto == p) {
                    cur = t->slots[j].flow;
                    break;
                }
            }
            j = (j + 1) & t->mask;
        }
        int64_t id = cur; /* an index into flows */
        if (cur >= 0) {
            Flow *f = &t->flows[cur];
            /* as numpy's int64 subtraction: wraps, never traps */
            int64_t gap = (int64_t)((uint64_t)ts[i] - (uint64_t)f->prev_ts);
            if (gap > (p == TCP ? t->tcp_timeout : t->timeout)) {
                id = -1;
                f->dead = 1;
            }
        }
        if (id < 0) {
            id = new_flow(t);
            if (id < 0)
                goto done;
            Flow *f = &t->flows[id];
            f->a_hi = a_hi;
            f->a_lo = a_lo;
            f->b_hi = b_hi;
            f->b_lo = b_lo;
            f->pa = pa;
            f->pb = pb;
            f->ver = v;
            f->proto = p;
            f->first_dir = (int8_t)swap;
            f->link = link[i];
            f->first_pkt = first + i;
            if (cur >= 0) {
                t->slots[j].flow = id;
            } else {
                t->slots[j].hash = h;
                t->slots[j].flow = id;
                if (++t->used * 2 > t->mask + 1 && grow_slots(t) < 0)
                    goto done;
            }
        }
        Flow *f = &t->flows[id];
        f->prev_ts = ts[i];
        int32_t fl = flags[i];
        int32_t syn = fl & (TCP_SYN | TCP_ACK);
        if (syn == TCP_SYN)
            fl |= SYN_ONLY;
        else if (syn == (TCP_SYN | TCP_ACK))
            fl |= SYN_ACK;
        if (swap) {
            f->pk_ba += 1;
            f->by_ba += bytes[i];
            f->fl_ba |= fl;
        } else {
            f->pk_ab += 1;
            f->by_ab += bytes[i];
            f->fl_ab |= fl;
        }
        if (ts[i] < f->first_ns)
            f->first_ns = ts[i];
        if (ts[i] > f->last_ns)
            f->last_ns = ts[i];
        if (uid[i] > f->uid)
            f->uid = uid[i];
        if (app[i] > f->app)
            f->app = app[i];
        fid[i] = f->id;
        dir[i] = (int8_t)swap;
    }
    result = PyLong_FromLongLong(t->next_id);
done:
    for (int c = 0; c < C_COUNT; c++)
        if (b[c].obj != NULL)
            PyBuffer_Release(&b[c]);
    return result;
}

/* the column of each flow whose index is in sel[0..m) (sel NULL: every flow) */
#define COLUMN(name, type, field)                                                        \
    do {                                                                                 \
        PyObject *col = PyBytes_FromStringAndSize(NULL, m * (Py_ssize_t)sizeof(type));   \
        if (col == NULL)                                                                 \
            goto fail;                                                                   \
        type *out = (type *)PyBytes_AS_STRING(col);                                      \
        for (Py_ssize_t i = 0; i < m; i++)                                               \
            out[i] = t->flows[sel ? sel[i] : i].field;                                   \
        int bad = PyDict_SetItemString(dict, name, col);                                 \
        Py_DECREF(col);                                                                  \
        if (bad)                                                                         \
            goto fail;                                                                   \
    } while (0)

static PyObject *flow_columns(FlowTable *t, const Py_ssize_t *sel, Py_ssize_t m) {
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    COLUMN("id", int64_t, id);
    COLUMN("ver", uint8_t, ver);
    COLUMN("proto", int16_t, proto);
    COLUMN("a_hi", uint64_t, a_hi);
    COLUMN("a_lo", uint64_t, a_lo);
    COLUMN("b_hi", uint64_t, b_hi);
    COLUMN("b_lo", uint64_t, b_lo);
    COLUMN("pa", int32_t, pa);
    COLUMN("pb", int32_t, pb);
    COLUMN("first_pkt", int64_t, first_pkt);
    COLUMN("first_dir", int8_t, first_dir);
    COLUMN("link", int32_t, link);
    COLUMN("first_ns", int64_t, first_ns);
    COLUMN("last_ns", int64_t, last_ns);
    COLUMN("prev_ns", int64_t, prev_ts);
    COLUMN("pk_ab", int64_t, pk_ab);
    COLUMN("pk_ba", int64_t, pk_ba);
    COLUMN("by_ab", int64_t, by_ab);
    COLUMN("by_ba", int64_t, by_ba);
    COLUMN("fl_ab", int32_t, fl_ab);
    COLUMN("fl_ba", int32_t, fl_ba);
    COLUMN("uid", int32_t, uid);
    COLUMN("app", int32_t, app);
    return dict;
fail:
    Py_DECREF(dict);
    return NULL;
}

static PyObject *FlowTable_columns(FlowTable *t, PyObject *Py_UNUSED(ignored)) {
    if (t->flows == NULL && t->n) {
        PyErr_SetString(PyExc_RuntimeError, "FlowTable.__init__ was not called");
        return NULL;
    }
    return flow_columns(t, NULL, t->n);
}

/* The slots made again from the flows (in id order): each key's slot holds its latest flow,
 * and an earlier flow of the same key is dead (no packet can join it). The slots must have
 * room: at most half full. */
static void index_flows(FlowTable *t) {
    for (size_t i = 0; i <= t->mask; i++) {
        t->slots[i].flow = -1;
        t->slots[i].hash = 0;
    }
    t->used = 0;
    for (Py_ssize_t i = 0; i < t->n; i++) {
        Flow *f = &t->flows[i];
        uint64_t h = key_hash(f->ver, f->proto, f->a_hi, f->a_lo, f->b_hi, f->b_lo, f->pa, f->pb);
        size_t j = (size_t)h & t->mask;
        for (; t->slots[j].flow >= 0; j = (j + 1) & t->mask) {
            Flow *g = &t->flows[t->slots[j].flow];
            if (t->slots[j].hash == h && g->a_lo == f->a_lo && g->b_lo == f->b_lo &&
                g->a_hi == f->a_hi && g->b_hi == f->b_hi && g->pa == f->pa && g->pb == f->pb &&
                g->ver == f->ver && g->proto == f->proto)
                break;
        }
        if (t->slots[j].flow >= 0) {
            t->flows[t->slots[j].flow].dead = 1;
        } else {
            t->slots[j].hash = h;
            t->used++;
        }
        f->dead = 0;
        t->slots[j].flow = i;
    }
}

/* expire(before_ns): the flows no packet can join any more, taken out of the table: those
 * whose key started a newer flow, and those silent for longer than their protocol's timeout
 * at before_ns (a packet at before_ns or later would start a flow of its own). Their columns
 * ({name: bytes}, with "id"), in id order, or None when there is none. The table keeps the
 * others, in id order, and its memory shrinks with them. */
static PyObject *FlowTable_expire(FlowTable *t, PyObject *args) {
    long long before;
    if (!PyArg_ParseTuple(args, "L:expire", &before))
        return NULL;
    if (t->flows == NULL || t->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FlowTable.__init__ was not called");
        return NULL;
    }
    Py_ssize_t m = 0;
    Py_ssize_t *sel = PyMem_Malloc((size_t)(t->n ? t->n : 1) * sizeof(Py_ssize_t));
    if (sel == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < t->n; i++) {
        Flow *f = &t->flows[i];
        int64_t gap = (int64_t)((uint64_t)before - (uint64_t)f->prev_ts);
        if (f->dead || gap > (f->proto == TCP ? t->tcp_timeout : t->timeout))
            sel[m++] = i;
    }
    if (m == 0) {
        PyMem_Free(sel);
        Py_RETURN_NONE;
    }
    /* the slots for what is left (at most a quarter full), made before anything changes:
     * without memory the table stays as it was */
    size_t size = 2048;
    while (size < 4 * (size_t)(t->n - m))
        size *= 2;
    Slot *slots = PyMem_Malloc(size * sizeof(Slot));
    if (slots == NULL) {
        PyMem_Free(sel);
        return PyErr_NoMemory();
    }
    PyObject *out = flow_columns(t, sel, m);
    if (out == NULL) {
        PyMem_Free(sel);
        PyMem_Free(slots);
        return NULL;
    }
    /* keep the others, in order */
    Py_ssize_t k = 0, s = 0;
    for (Py_ssize_t i = 0; i < t->n; i++) {
        if (s < m && sel[s] == i) {
            s++;
            continue;
        }
        if (k != i)
            t->flows[k] = t->flows[i];
        k++;
    }
    PyMem_Free(sel);
    t->n = k;
    if (t->cap > 1024 && t->n * 4 < t->cap) {
        Py_ssize_t cap = t->cap;
        while (cap > 1024 && t->n * 4 < cap)
            cap /= 2;
        Flow *flows = PyMem_Realloc(t->flows, (size_t)cap * sizeof(Flow));
        if (flows != NULL) { /* else the larger block stays: no harm */
            t->flows = flows;
            t->cap = cap;
        }
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->mask = size - 1;
    index_flows(t);
    return out;
}

/* restore(columns): flows given up by expire() put back ({name: bytes} as expire gave them,
 * with "id", in id order; none of their ids in the table), as if they had never left: the
 * table in id order again, each key's slot held by its latest flow, the others dead. For a
 * read where a packet came too late for flows already given up. */
static PyObject *FlowTable_restore(FlowTable *t, PyObject *args) {
    PyObject *dict;
    if (!PyArg_ParseTuple(args, "O!:restore", &PyDict_Type, &dict))
        return NULL;
    if (t->flows == NULL || t->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FlowTable.__init__ was not called");
        return NULL;
    }
    static const char *names[] = {"id", "ver", "proto", "a_hi", "a_lo", "b_hi", "b_lo", "pa",
                                  "pb", "first_pkt", "first_dir", "link", "first_ns", "last_ns",
                                  "prev_ns", "pk_ab", "pk_ba", "by_ab", "by_ba", "fl_ab",
                                  "fl_ba", "uid", "app"};
    static const Py_ssize_t widths[] = {8, 1, 2, 8, 8, 8, 8, 4, 4, 8, 1, 4, 8, 8,
                                        8, 8, 8, 8, 8, 4, 4, 4, 4};
    enum { NCOL = 23 };
    Py_buffer b[NCOL];
    memset(b, 0, sizeof(b));
    PyObject *result = NULL;
    Flow *merged = NULL;
    Slot *slots = NULL;
    Py_ssize_t m = -1;
    for (int c = 0; c < NCOL; c++) {
        PyObject *col = PyDict_GetItemString(dict, names[c]); /* borrowed */
        if (col == NULL) {
            PyErr_Format(PyExc_KeyError, "restore: no column %s", names[c]);
            goto done;
        }
        if (PyObject_GetBuffer(col, &b[c], PyBUF_SIMPLE) < 0)
            goto done;
        if (b[c].len % widths[c] || (m >= 0 && b[c].len / widths[c] != m)) {
            PyErr_Format(PyExc_ValueError, "restore: column %s has %zd bytes", names[c], b[c].len);
            goto done;
        }
        m = b[c].len / widths[c];
    }
    const int64_t *id = b[0].buf;
    for (Py_ssize_t i = 1; i < m; i++)
        if (id[i] <= id[i - 1]) {
            PyErr_SetString(PyExc_ValueError, "restore: ids not in increasing order");
            goto done;
        }
    Py_ssize_t n = t->n + m, cap = t->cap;
    while (cap < n)
        cap *= 2;
    size_t size = 2048;
    while (size < 4 * (size_t)n)
        size *= 2;
    merged = PyMem_Malloc((size_t)cap * sizeof(Flow));
    slots = PyMem_Malloc(size * sizeof(Slot));
    if (merged == NULL || slots == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* the two in id order, merged */
    Py_ssize_t i = 0, j = 0, k = 0;
    while (i < t->n || j < m) {
        if (j >= m || (i < t->n && t->flows[i].id < id[j])) {
            merged[k++] = t->flows[i++];
            continue;
        }
        if (i < t->n && t->flows[i].id == id[j]) {
            PyErr_SetString(PyExc_ValueError, "restore: a flow that is in the table");
            goto done;
        }
        Flow *f = &merged[k++];
        memset(f, 0, sizeof(Flow));
#define TAKE(c, type, field) f->field = ((const type *)b[c].buf)[j]
        TAKE(0, int64_t, id);
        TAKE(1, uint8_t, ver);
        TAKE(2, int16_t, proto);
        TAKE(3, uint64_t, a_hi);
        TAKE(4, uint64_t, a_lo);
        TAKE(5, uint64_t, b_hi);
        TAKE(6, uint64_t, b_lo);
        TAKE(7, int32_t, pa);
        TAKE(8, int32_t, pb);
        TAKE(9, int64_t, first_pkt);
        TAKE(10, int8_t, first_dir);
        TAKE(11, int32_t, link);
        TAKE(12, int64_t, first_ns);
        TAKE(13, int64_t, last_ns);
        TAKE(14, int64_t, prev_ts);
        TAKE(15, int64_t, pk_ab);
        TAKE(16, int64_t, pk_ba);
        TAKE(17, int64_t, by_ab);
        TAKE(18, int64_t, by_ba);
        TAKE(19, int32_t, fl_ab);
        TAKE(20, int32_t, fl_ba);
        TAKE(21, int32_t, uid);
        TAKE(22, int32_t, app);
#undef TAKE
        j++;
    }
    PyMem_Free(t->flows);
    t->flows = merged;
    merged = NULL;
    t->n = n;
    t->cap = cap;
    PyMem_Free(t->slots);
    t->slots = slots;
    slots = NULL;
    t->mask = size - 1;
    index_flows(t);
    result = PyLong_FromSsize_t(m);
done:
    PyMem_Free(merged);
    PyMem_Free(slots);
    for (int c = 0; c < NCOL; c++)
        if (b[c].obj != NULL)
            PyBuffer_Release(&b[c]);
    return result;
}

static PyMethodDef FlowTable_methods[] = {
    {"assign", (PyCFunction)FlowTable_assign, METH_VARARGS,
     "assign(first, flowable, ip_version, src_hi, src_lo, dst_hi, dst_lo, proto, sport, dport,"
     " ts_ns, ip_bytes, tcp_flags, uid, app, link_type, fid_out, direction_out) -> flows"},
    {"columns", (PyCFunction)FlowTable_columns, METH_NOARGS,
     "columns() -> {name: bytes}: the per-flow columns (and \"id\"), in the order flows were made"},
    {"restore", (PyCFunction)FlowTable_restore, METH_VARARGS,
     "restore(columns) -> int: flows expire() gave up put back, as if they had never left"},
    {"expire", (PyCFunction)FlowTable_expire, METH_VARARGS,
     "expire(before_ns) -> {name: bytes} | None: the flows no packet can join any more, taken out"},
    {NULL, NULL, 0, NULL}};

static PyTypeObject FlowTableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "auditor.packets._flowtab.FlowTable",
    .tp_basicsize = sizeof(FlowTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FlowTable(timeout_ns, tcp_timeout_ns=max): flows by bidirectional key, batch by batch",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FlowTable_init,
    .tp_dealloc = (destructor)FlowTable_dealloc,
    .tp_methods = FlowTable_methods,
};

/* address_texts(version, hi, lo): each address as text, as socket.inet_ntop writes it ("" when
 * the version is neither 4 nor 6). IPv4 is in lo; IPv6 is hi then lo, big-endian. */
static PyObject *address_texts(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer v, hi, lo;
    if (!PyArg_ParseTuple(args, "y*y*y*:address_texts", &v, &hi, &lo))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t n = v.len;
    if (hi.len % 8 || lo.len != hi.len || hi.len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "hi and lo must hold 8 bytes per version byte");
        goto done;
    }
    out = PyList_New(n);
    if (out == NULL)
        goto done;
    const uint8_t *ver = v.buf;
    const uint64_t *h = hi.buf, *l = lo.buf;
    char text[INET6_ADDRSTRLEN];
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *s = "";
        if (ver[i] == 4) {
            uint32_t a = htonl((uint32_t)l[i]);
            s = inet_ntop(AF_INET, &a, text, sizeof(text));
        } else if (ver[i] == 6) {
            unsigned char a[16];
            for (int k = 0; k < 8; k++) {
                a[k] = (unsigned char)(h[i] >> (56 - 8 * k));
                a[8 + k] = (unsigned char)(l[i] >> (56 - 8 * k));
            }
            s = inet_ntop(AF_INET6, a, text, sizeof(text));
        }
        PyObject *str = PyUnicode_FromString(s == NULL ? "" : s);
        if (str == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, str);
    }
done:
    PyBuffer_Release(&v);
    PyBuffer_Release(&hi);
    PyBuffer_Release(&lo);
    return out;
}

/* gather(buffer, starts, ends): the bytes buffer[starts[i]:ends[i]] of every i, joined. */
static PyObject *gather(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer buf, st, en;
    if (!PyArg_ParseTuple(args, "y*y*y*:gather", &buf, &st, &en))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t n = st.len / 8;
    if (st.len % 8 || en.len != st.len) {
        PyErr_SetString(PyExc_ValueError, "starts and ends must be int64 of one length");
        goto done;
    }
    const int64_t *a = st.buf, *b = en.buf;
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (a[i] < 0 || b[i] < a[i] || b[i] > buf.len) {
            PyErr_Format(PyExc_ValueError, "range %zd (%lld, %lld) is outside the buffer", i,
                         (long long)a[i], (long long)b[i]);
            goto done;
        }
        if (b[i] - a[i] > PY_SSIZE_T_MAX - total) {
            PyErr_SetString(PyExc_OverflowError, "the joined ranges are too long");
            goto done;
        }
        total += (Py_ssize_t)(b[i] - a[i]);
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        goto done;
    char *w = PyBytes_AS_STRING(out);
    const char *r = buf.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        memcpy(w, r + a[i], (size_t)(b[i] - a[i]));
        w += b[i] - a[i];
    }
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&st);
    PyBuffer_Release(&en);
    return out;
}

/* name_kinds(head, payload_len, proto, sport, dport, rows, http_prefixes, dns_ports, quic,
 * kinds, out): what each packet of `rows` may carry, from its first payload bytes, ports and
 * protocol (namekinds.kinds_numpy, which this does in one pass): kinds[0..4] are the codes of
 * an HTTP request head, a QUIC Initial or Google QUIC hello, a TLS ClientHello, a TLS server
 * flight and DNS; 0 is none. head is (n, w) uint8, w >= 6 (the bytes read here); payload_len
 * int64; proto int16; sport, dport int32; rows int64; http_prefixes int64 (a method's first
 * four bytes, big-endian); dns_ports int64; quic int64: QUIC v1, v2, v2's Initial type, the
 * first draft version and the one after the last; out int8 per row. */
#define KIND_BYTES 6
static PyObject *name_kinds(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer head, plen, proto, sport, dport, rows, pre, dnsp, quic, kinds, out;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*y*y*w*:name_kinds", &head, &plen, &proto,
                          &sport, &dport, &rows, &pre, &dnsp, &quic, &kinds, &out))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t n = plen.len / 8, m = rows.len / 8, np_ = pre.len / 8;
    Py_ssize_t w = n ? head.len / n : KIND_BYTES;
    if (plen.len % 8 || head.len != n * w || w < KIND_BYTES || proto.len != n * 2 ||
        sport.len != n * 4 || dport.len != n * 4 || rows.len % 8 || pre.len % 8 ||
        dnsp.len % 8 || quic.len != 5 * 8 || kinds.len != 5 || out.len != m) {
        PyErr_SetString(PyExc_ValueError, "name_kinds: arrays of the wrong size or type");
        goto done;
    }
    const uint8_t *hd = head.buf;
    const int64_t *ln_ = plen.buf, *row = rows.buf, *prefixes = pre.buf, *ports = dnsp.buf;
    const int64_t *q = quic.buf, v1 = q[0], v2 = q[1], v2_initial = q[2];
    const int64_t draft_from = q[3], draft_to = q[4];
    const Py_ssize_t n_ports = dnsp.len / 8;
    const int16_t *pr = proto.buf;
    const int32_t *sp_ = sport.buf, *dp_ = dport.buf;
    const int8_t *k = kinds.buf;
    int8_t *o = out.buf;
    uint8_t http_first[256] = {0};
    for (Py_ssize_t j = 0; j < np_; j++)
        http_first[(prefixes[j] >> 24) & 0xFF] = 1;
    for (Py_ssize_t i = 0; i < m; i++) {
        int64_t r = row[i];
        if (r < 0 || r >= n) {
            PyErr_Format(PyExc_ValueError, "name_kinds: row %lld is outside the batch",
                         (long long)r);
            goto done;
        }
        int64_t ln = ln_[r], sp = sp_[r], dp = dp_[r];
        int tcp = pr[r] == TCP, udp = pr[r] == 17;
        const uint8_t *hb = hd + r * w;
        if (!(udp || (tcp && (hb[0] == 22 || http_first[hb[0]] || sp == 53 || dp == 53)))) {
            o[i] = 0;
            continue;
        }
        int64_t h[KIND_BYTES];
        for (int j = 0; j < KIND_BYTES; j++)
            h[j] = j < ln ? hb[j] : -1; /* past the captured payload */
        int dns_port = 0;
        for (Py_ssize_t j = 0; j < n_ports && !dns_port; j++)
            dns_port = sp == ports[j] || dp == ports[j];
        int dns = (udp && dns_port && ln >= 12) || (tcp && (sp == 53 || dp == 53));
        int64_t b0 = h[0];
        int tls = tcp && b0 == 22 && h[1] == 3 && (ln < 6 || h[5] == 1);
        /* as numpy's int64 shifts and ors make them, -1 bytes included */
        int64_t version = (int64_t)(((uint64_t)h[1] << 24) | ((uint64_t)h[2] << 16) |
                                    ((uint64_t)h[3] << 8) | (uint64_t)h[4]);
        int64_t first4 = (int64_t)(((uint64_t)h[0] << 24) | ((uint64_t)h[1] << 16) |
                                   ((uint64_t)h[2] << 8) | (uint64_t)h[3]);
        int64_t ptype = (b0 < 0 ? -1 : b0 >> 4) & 3;
        int long_header = udp && ln >= 7 && (b0 & 0xC0) == 0xC0;
        int v1_like = version == v1 || (version >= draft_from && version < draft_to);
        int initial = (v1_like && ptype == 0) || (version == v2 && ptype == v2_initial);
        int on_443 = sp == 443 || dp == 443;
        int other_quic = on_443 && version != 0 && version != v1 && version != v2;
        int gquic_old = udp && on_443 && ln >= 14 && (b0 & 0xCA) == 0x08;
        int8_t found = 0;
        if (tcp && ln >= 4)
            for (Py_ssize_t j = 0; j < np_; j++)
                if (prefixes[j] == first4) {
                    found = k[0];
                    break;
                }
        if ((long_header && (initial || other_quic)) || gquic_old)
            found = k[1];
        if (tls)
            found = k[2];
        if (tcp && b0 == 22 && h[1] == 3 && h[2] <= 4 && h[5] == 2)
            found = k[3];
        if (dns)
            found = k[4];
        o[i] = found;
    }
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&head);
    PyBuffer_Release(&plen);
    PyBuffer_Release(&proto);
    PyBuffer_Release(&sport);
    PyBuffer_Release(&dport);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&pre);
    PyBuffer_Release(&dnsp);
    PyBuffer_Release(&quic);
    PyBuffer_Release(&kinds);
    PyBuffer_Release(&out);
    return ret;
}

static PyMethodDef module_methods[] = {
    {"gather", gather, METH_VARARGS,
     "gather(buffer, starts, ends) -> bytes: buffer[starts[i]:ends[i]] for each i, joined"},
    {"address_texts", address_texts, METH_VARARGS,
     "address_texts(version, hi, lo) -> list[str]: addresses as text, as inet_ntop writes them"},
    {"name_kinds", name_kinds, METH_VARARGS,
     "name_kinds(head, payload_len, proto, sport, dport, rows, http_prefixes, dns_ports, quic, "
     "kinds, out): what each row's packet may carry (namekinds.kinds_numpy)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_flowtab",
    .m_doc = "The flow table's per-packet work (see flows.py).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__flowtab(void) {
    if (PyType_Ready(&FlowTableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FlowTableType);
    if (PyModule_AddObject(m, "FlowTable", (PyObject *)&FlowTableType) < 0) {
        Py_DECREF(&FlowTableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
