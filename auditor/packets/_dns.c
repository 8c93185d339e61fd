/*
 * auditor.packets._dns: the DNS message parser of dns.py (and the batch readers of names.py), compiled.
 *
 * parse() does what dns._parse_dns_python does (with read_name, _svcb and _label_text),
 * with the same results: the same DnsMessage, or MalformedError in the same cases (the
 * message text may differ). The tests compare the two on the real captures, on hand-built
 * corner cases and on mutated and random bytes. Reading follows the Python step by step:
 *
 * - the header; more than MAX_RECORDS questions or answers is an error;
 * - each question: its name, then type and class; each answer: its owner name, then type,
 *   class, TTL and rdata length, the rdata inside the message; A and AAAA decoded only with
 *   their exact length, NS, CNAME and PTR as a name read at the rdata's start (bounded by the
 *   message, not by the rdata), HTTPS and SVCB as target name and ipv4hint/ipv6hint;
 * - a name: labels and compression pointers, at most MAX_JUMPS pointers followed, at most
 *   MAX_NAME bytes of labels (each counted with its length byte, the final zero not), bytes
 *   outside 0x21-0x7E and '.' and '\' written as \DDD;
 * - `seen`: the text of each name read (questions, owners, NS/CNAME/PTR targets, not SVCB
 *   targets) by the offset it started at; a name that starts with a pointer to such an offset
 *   is that text, without following the pointer (so without counting its jumps);
 * - an error after at least one question or answer keeps what was read before it and sets
 *   `truncated`; with neither, it is raised.
 *
 * Every read of the message is preceded by a check that it lies inside the message, and every
 * position stays below len + 2**16, so no sum overflows. The DnsResource and DnsMessage
 * objects are built here: allocated as their class's __new__ does, then each field set
 * through the class's slot descriptor, as the dataclass __init__ does (object.__setattr__),
 * without the cost of running that __init__. setup() checks the classes' slots are the
 * fields this file sets.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#define MAX_RECORDS 512 /* names._MAX_RECORDS */
#define MAX_NAME 255
#define MAX_JUMPS 64
#define TEXT_ROOM 1024 /* a name's text: at most 4 * (255 - k) + k - 1 characters, k labels */
#define SEEN_ROOM (3 * MAX_RECORDS) /* names read with `seen`: questions, owners, targets */
#define POINTER_MAX 0x3FFF          /* the farthest offset a compression pointer reaches */

#define TYPE_A 1
#define TYPE_NS 2
#define TYPE_CNAME 5
#define TYPE_PTR 12
#define TYPE_AAAA 28
#define TYPE_SVCB 64
#define TYPE_HTTPS 65
#define SVC_IPV4HINT 4
#define SVC_IPV6HINT 6

static const char *const RESOURCE_FIELDS[] = {"name", "rtype", "ttl", "value", "hints"};
#define N_RESOURCE 5
static const char *const MESSAGE_FIELDS[] = {"id",        "response", "opcode",   "rcode",
                                             "questions", "answers",  "truncated"};
#define N_MESSAGE 7

/* What setup() was given: the classes, their slot descriptors (in the order of the fields
 * above) and the exception. */
static PyTypeObject *resource_type = NULL, *message_type = NULL;
static PyObject *resource_slots[N_RESOURCE], *message_slots[N_MESSAGE];
static PyObject *malformed_error = NULL;
static PyObject *empty_tuple = NULL;

/* Bytes a label shows as they are (names._PLAIN); any other is written as \DDD. */
static unsigned char plain[256];

typedef struct {
    const unsigned char *b;
    Py_ssize_t n;
    const char *why; /* set when the message is malformed (no Python exception then) */
    int why_byte;    /* the label type, for "unsupported label type" */
    /* `seen`: offsets (ascending) and texts (new references) of the names read so far;
     * names starting past POINTER_MAX are left out, as no pointer can reach them */
    Py_ssize_t n_seen;
    uint16_t seen_at[SEEN_ROOM];
    PyObject *seen_text[SEEN_ROOM];
    int32_t seen_ix[SEEN_ROOM]; /* each one's entry in the index (-1: none) */
    int32_t last_ix;            /* the entry of the text read_name/address_text last gave */
    /* collect(): the store's index of texts (see Index), so that a name or address read
     * again is that text, without making a new object; NULL for parse() */
    struct Index *ix;
} Parser;

/* ---------------------------------------------------------------------------- index */

/* The texts collect() has made for a store, kept with the store (a capsule in its `_index`)
 * across calls: by key (a name's text; an address's type byte, 1 or 2, then its 4 or 16
 * bytes: no name text starts with those bytes, as read_name writes them as \DDD) and by
 * the object itself, with the text's number in the store and its lower-case's, once asked.
 * It only saves work: the store's `ids` dict stays what numbers the texts, so a text the
 * index has not seen (or that Python added) is looked up there as before. */
typedef struct {
    PyObject *text; /* a strong reference */
    long id, lower; /* numbers in the store (-1: not asked yet) */
    uint64_t hash;
    size_t key_at;
    uint32_t key_len;
} Entry;

typedef struct Index {
    Entry *e;
    Py_ssize_t n, cap;
    unsigned char *keys;
    size_t keys_len, keys_cap;
    int32_t *by_key, *by_ptr; /* open addressing: entry numbers, -1 free */
    size_t mask;              /* both tables have mask + 1 slots */
} Index;

#define INDEX_CAPSULE "auditor.packets._dns.Index"
#define INDEX_MAX ((Py_ssize_t)1 << 30)

static uint64_t
key_hash(const unsigned char *k, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ k[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static inline size_t
ptr_hash(const void *ptr)
{
    uint64_t v = (uint64_t)(uintptr_t)ptr;
    v ^= v >> 33;
    v *= 0xff51afd7ed558ccdULL;
    return (size_t)(v ^ (v >> 33));
}

static void
index_free(PyObject *capsule)
{
    Index *ix = PyCapsule_GetPointer(capsule, INDEX_CAPSULE);
    if (ix == NULL)
        return;
    for (Py_ssize_t k = 0; k < ix->n; k++)
        Py_DECREF(ix->e[k].text);
    PyMem_Free(ix->e);
    PyMem_Free(ix->keys);
    PyMem_Free(ix->by_key);
    PyMem_Free(ix->by_ptr);
    PyMem_Free(ix);
}

/* Both tables at `slots` slots (a power of two), filled from the entries (-1 on error). */
static int
index_rehash(Index *ix, size_t slots)
{
    int32_t *bk = PyMem_Malloc(slots * sizeof(int32_t)), *bp = PyMem_Malloc(slots * sizeof(int32_t));
    if (bk == NULL || bp == NULL) {
        PyMem_Free(bk);
        PyMem_Free(bp);
        PyErr_NoMemory();
        return -1;
    }
    memset(bk, 0xFF, slots * sizeof(int32_t));
    memset(bp, 0xFF, slots * sizeof(int32_t));
    const size_t mask = slots - 1;
    for (Py_ssize_t k = 0; k < ix->n; k++) {
        size_t i = (size_t)ix->e[k].hash & mask;
        while (bk[i] >= 0)
            i = (i + 1) & mask;
        bk[i] = (int32_t)k;
        i = ptr_hash(ix->e[k].text) & mask;
        while (bp[i] >= 0)
            i = (i + 1) & mask;
        bp[i] = (int32_t)k;
    }
    PyMem_Free(ix->by_key);
    PyMem_Free(ix->by_ptr);
    ix->by_key = bk;
    ix->by_ptr = bp;
    ix->mask = mask;
    return 0;
}

/* The entry of key `k`, or -1. */
static Py_ssize_t
index_find(const Index *ix, const unsigned char *k, size_t len, uint64_t h)
{
    for (size_t i = (size_t)h & ix->mask;; i = (i + 1) & ix->mask) {
        const int32_t at = ix->by_key[i];
        if (at < 0)
            return -1;
        const Entry *e = &ix->e[at];
        if (e->hash == h && e->key_len == len && memcmp(ix->keys + e->key_at, k, len) == 0)
            return at;
    }
}

/* The entry of the object `s` itself, or -1. */
static Py_ssize_t
index_of(const Index *ix, PyObject *s)
{
    for (size_t i = ptr_hash(s) & ix->mask;; i = (i + 1) & ix->mask) {
        const int32_t at = ix->by_ptr[i];
        if (at < 0)
            return -1;
        if (ix->e[at].text == s)
            return at;
    }
}

/* Adds text `s` (borrowed; the index takes a reference) under key `k` (-1 on error). */
static int
index_add(Index *ix, const unsigned char *k, size_t len, uint64_t h, PyObject *s)
{
    if (ix->n >= INDEX_MAX) /* left out: the store's dict still numbers it */
        return 0;
    if ((size_t)(ix->n + 1) * 2 > ix->mask + 1 && index_rehash(ix, (ix->mask + 1) * 2) < 0)
        return -1;
    if (ix->n == ix->cap) {
        Py_ssize_t cap = ix->cap ? ix->cap * 2 : 1024;
        Entry *e = PyMem_Realloc(ix->e, (size_t)cap * sizeof(Entry));
        if (e == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        ix->e = e;
        ix->cap = cap;
    }
    if (ix->keys_len + len > ix->keys_cap) {
        size_t cap = ix->keys_cap ? ix->keys_cap * 2 : 65536;
        while (cap < ix->keys_len + len)
            cap *= 2;
        unsigned char *keys = PyMem_Realloc(ix->keys, cap);
        if (keys == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        ix->keys = keys;
        ix->keys_cap = cap;
    }
    memcpy(ix->keys + ix->keys_len, k, len);
    Entry *e = &ix->e[ix->n];
    e->text = Py_NewRef(s);
    e->id = e->lower = -1;
    e->hash = h;
    e->key_at = ix->keys_len;
    e->key_len = (uint32_t)len;
    ix->keys_len += len;
    size_t i = (size_t)h & ix->mask;
    while (ix->by_key[i] >= 0)
        i = (i + 1) & ix->mask;
    ix->by_key[i] = (int32_t)ix->n;
    i = ptr_hash(s) & ix->mask;
    while (ix->by_ptr[i] >= 0)
        i = (i + 1) & ix->mask;
    ix->by_ptr[i] = (int32_t)ix->n;
    ix->n++;
    return 0;
}

/* The store's index (borrowed from its `_index` capsule, made when missing), or NULL. */
static Index *
index_of_store(PyObject *store)
{
    PyObject *cap = PyObject_GetAttrString(store, "_index");
    if (cap == NULL)
        return NULL;
    if (PyCapsule_IsValid(cap, INDEX_CAPSULE)) {
        Index *ix = PyCapsule_GetPointer(cap, INDEX_CAPSULE);
        Py_DECREF(cap); /* the store holds it */
        return ix;
    }
    if (cap != Py_None) {
        Py_DECREF(cap);
        PyErr_SetString(PyExc_TypeError, "collect: the store's _index is not an index");
        return NULL;
    }
    Py_DECREF(cap);
    Index *ix = PyMem_Calloc(1, sizeof(Index));
    if (ix == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    PyObject *made = PyCapsule_New(ix, INDEX_CAPSULE, index_free);
    if (made == NULL) {
        PyMem_Free(ix);
        return NULL;
    }
    int bad = index_rehash(ix, 4096) < 0 || PyObject_SetAttrString(store, "_index", made) < 0;
    Py_DECREF(made); /* the store holds it (or it is freed, with ix) */
    return bad ? NULL : ix;
}


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

static PyObject *
malformed(Parser *p, const char *why)
{
    p->why = why;
    return NULL;
}

/* ----------------------------------------------------------------------------- seen */

/* The index of the first entry at or after `at`. */
static Py_ssize_t
seen_find(const Parser *p, uint32_t at)
{
    Py_ssize_t lo = 0, hi = p->n_seen;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (p->seen_at[mid] < at)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The text of the name read at `at`, borrowed, or NULL. */
static PyObject *
seen_get(Parser *p, uint32_t at)
{
    Py_ssize_t k = seen_find(p, at);
    if (k < p->n_seen && p->seen_at[k] == at) {
        p->last_ix = p->seen_ix[k];
        return p->seen_text[k];
    }
    return NULL;
}

/* seen[at] = text. Names are read at ascending offsets, so this appends but for a name read
 * twice at one offset (an NS/CNAME/PTR rdata of length 0 and the next owner name). */
static int
seen_put(Parser *p, Py_ssize_t at, PyObject *text)
{
    if (at > POINTER_MAX)
        return 0;
    Py_ssize_t k = seen_find(p, (uint32_t)at);
    if (k < p->n_seen && p->seen_at[k] == at) {
        Py_INCREF(text);
        Py_SETREF(p->seen_text[k], text);
        p->seen_ix[k] = p->last_ix;
        return 0;
    }
    if (p->n_seen >= SEEN_ROOM) { /* cannot happen: at most SEEN_ROOM names are read */
        PyErr_SetString(PyExc_SystemError, "_dns: too many names");
        return -1;
    }
    memmove(p->seen_at + k + 1, p->seen_at + k, (size_t)(p->n_seen - k) * sizeof(uint16_t));
    memmove(p->seen_text + k + 1, p->seen_text + k,
            (size_t)(p->n_seen - k) * sizeof(PyObject *));
    memmove(p->seen_ix + k + 1, p->seen_ix + k, (size_t)(p->n_seen - k) * sizeof(int32_t));
    p->seen_ix[k] = p->last_ix;
    p->seen_at[k] = (uint16_t)at;
    Py_INCREF(text);
    p->seen_text[k] = text;
    p->n_seen++;
    return 0;
}

/* ---------------------------------------------------------------------------- names */

static PyObject *
ascii_text(const char *s, Py_ssize_t len)
{
    PyObject *u = PyUnicode_New(len, 127);
    if (u != NULL)
        memcpy(PyUnicode_1BYTE_DATA(u), s, (size_t)len);
    return u;
}

/* The name at `pos` as text (a new reference) and in *next the offset after it, as
 * names.read_name (with `seen` when use_seen). NULL with p->why set when malformed, NULL with
 * a Python exception on failure. */
static PyObject *
read_name(Parser *p, Py_ssize_t pos, int use_seen, Py_ssize_t *next)
{
    const unsigned char *b = p->b;
    const Py_ssize_t n = p->n;
    if (use_seen && pos + 1 < n && b[pos] >= 0xC0) {
        PyObject *known = seen_get(p, ((b[pos] & 0x3Fu) << 8) | b[pos + 1]);
        if (known != NULL) {
            *next = pos + 2;
            return Py_NewRef(known);
        }
    }
    const Py_ssize_t start = pos;
    Py_ssize_t end = -1;
    int jumps = 0, total = 0;
    char text[TEXT_ROOM];
    Py_ssize_t len = 0;
    for (;;) {
        if (pos >= n)
            return malformed(p, "name runs past the message");
        const unsigned int length = b[pos];
        if (length == 0) {
            pos++;
            break;
        }
        if (length < 0x40) {
            pos++;
            if (pos + (Py_ssize_t)length > n)
                return malformed(p, "label runs past the message");
            total += (int)length + 1;
            if (total > MAX_NAME)
                return malformed(p, "name longer than 255 bytes");
            /* total <= 255 bounds the text: see TEXT_ROOM */
            if (len)
                text[len++] = '.';
            for (const unsigned char *c = b + pos, *e = b + pos + length; c < e; c++) {
                if (plain[*c]) {
                    text[len++] = (char)*c;
                }
                else {
                    text[len++] = '\\';
                    text[len++] = (char)('0' + *c / 100);
                    text[len++] = (char)('0' + *c / 10 % 10);
                    text[len++] = (char)('0' + *c % 10);
                }
            }
            pos += length;
            continue;
        }
        if (length < 0xC0) {
            p->why_byte = (int)length;
            return malformed(p, "unsupported label type");
        }
        if (pos + 1 >= n)
            return malformed(p, "truncated compression pointer");
        if (end < 0)
            end = pos + 2;
        if (++jumps > MAX_JUMPS)
            return malformed(p, "compression pointer loop");
        pos = (Py_ssize_t)(((length & 0x3Fu) << 8) | b[pos + 1]);
    }
    PyObject *s;
    if (p->ix != NULL) {
        const uint64_t h = key_hash((const unsigned char *)text, (size_t)len);
        const Py_ssize_t at = index_find(p->ix, (const unsigned char *)text, (size_t)len, h);
        if (at >= 0)
            s = Py_NewRef(p->ix->e[at].text);
        else if ((s = ascii_text(text, len)) != NULL
                 && index_add(p->ix, (const unsigned char *)text, (size_t)len, h, s) < 0)
            Py_CLEAR(s);
        p->last_ix = (int32_t)(at >= 0 ? at : p->ix->n - 1);
    }
    else {
        s = ascii_text(text, len);
        p->last_ix = -1;
    }
    if (s == NULL)
        return NULL;
    if (use_seen && seen_put(p, start, s) < 0) {
        Py_DECREF(s);
        return NULL;
    }
    *next = end >= 0 ? end : pos;
    return s;
}

/* ------------------------------------------------------------------------ addresses */

/* As inet_ntop(AF_INET), as socket.inet_ntop writes it. */
static PyObject *
ntop4(const unsigned char *a)
{
    char text[16];
    Py_ssize_t len = 0;
    for (int k = 0; k < 4; k++) {
        unsigned int v = a[k];
        if (k)
            text[len++] = '.';
        if (v >= 100)
            text[len++] = (char)('0' + v / 100);
        if (v >= 10)
            text[len++] = (char)('0' + v / 10 % 10);
        text[len++] = (char)('0' + v % 10);
    }
    return ascii_text(text, len);
}

/* inet_ntop(AF_INET6) itself: socket.inet_ntop calls it. */
static PyObject *
ntop6(const unsigned char *a)
{
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(AF_INET6, a, text, sizeof(text)) == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    return ascii_text(text, (Py_ssize_t)strlen(text));
}

/* The text of the address at `a` (4 or 16 bytes), through the index when collecting. */
static PyObject *
address_text(Parser *p, const unsigned char *a, int size)
{
    p->last_ix = -1;
    if (p->ix == NULL)
        return size == 4 ? ntop4(a) : ntop6(a);
    unsigned char key[17];
    key[0] = size == 4 ? 1 : 2;
    memcpy(key + 1, a, (size_t)size);
    const uint64_t h = key_hash(key, (size_t)size + 1);
    const Py_ssize_t at = index_find(p->ix, key, (size_t)size + 1, h);
    if (at >= 0) {
        p->last_ix = (int32_t)at;
        return Py_NewRef(p->ix->e[at].text);
    }
    PyObject *s = size == 4 ? ntop4(a) : ntop6(a);
    if (s != NULL && index_add(p->ix, key, (size_t)size + 1, h, s) < 0)
        Py_CLEAR(s);
    p->last_ix = (int32_t)(p->ix->n - 1);
    return s;
}

/* ------------------------------------------------------------------------- records */

/* An instance of `type` with its fields (new references, stolen, none NULL) set through its
 * slot descriptors, as the dataclass __init__ sets them. */
static PyObject *
instance(PyTypeObject *type, PyObject *const *slots, PyObject **values, int count)
{
    PyObject *obj = type->tp_new(type, empty_tuple, NULL);
    for (int k = 0; k < count; k++) {
        if (obj != NULL && Py_TYPE(slots[k])->tp_descr_set(slots[k], obj, values[k]) < 0)
            Py_CLEAR(obj);
        Py_DECREF(values[k]);
    }
    return obj;
}

/* The target name and the ipv4hint/ipv6hint addresses of the SVCB rdata at [pos, end), as
 * names._svcb (the target is read without `seen` and is not bounded by `end`). */
static int
svcb(Parser *p, Py_ssize_t pos, Py_ssize_t end, PyObject **target, PyObject **hints)
{
    const unsigned char *b = p->b;
    if (end - pos < 3) {
        p->why = "short SVCB record";
        return -1;
    }
    PyObject *list = NULL;
    *target = read_name(p, pos + 2, 0, &pos);
    if (*target == NULL)
        return -1;
    while (pos + 4 <= end) {
        const uint32_t key = be16(b + pos), length = be16(b + pos + 2);
        pos += 4;
        if (pos + (Py_ssize_t)length > end) {
            p->why = "SVCB parameter runs past the record";
            goto fail;
        }
        const uint32_t size = key == SVC_IPV4HINT ? 4 : key == SVC_IPV6HINT ? 16 : 0;
        for (uint32_t i = 0; size && i + size <= length; i += size) {
            if (list == NULL && (list = PyList_New(0)) == NULL)
                goto fail;
            PyObject *h = address_text(p, b + pos + i, (int)size);
            if (h == NULL || PyList_Append(list, h) < 0) {
                Py_XDECREF(h);
                goto fail;
            }
            Py_DECREF(h);
        }
        pos += length;
    }
    *hints = list == NULL ? Py_NewRef(empty_tuple) : PyList_AsTuple(list);
    Py_XDECREF(list);
    if (*hints == NULL)
        goto fail_target;
    return 0;
fail:
    Py_XDECREF(list);
fail_target:
    Py_CLEAR(*target);
    return -1;
}

/* A record of the answer section as read: new references (value: None for types not
 * decoded; hints: a tuple, empty for all but HTTPS/SVCB). */
typedef struct {
    PyObject *name, *value, *hints;
    uint32_t rtype, ttl;
    int32_t name_ix, value_ix; /* their entries in the index (-1: none) */
} Record;

static void
record_clear(Record *r)
{
    Py_CLEAR(r->name);
    Py_CLEAR(r->value);
    Py_CLEAR(r->hints);
}

/* The answer record at *pos into *r; *pos moves past it. 0, or -1 (malformed: p->why set;
 * or a Python exception), with nothing held in *r. */
static int
read_record(Parser *p, Py_ssize_t *pos, Record *r)
{
    const unsigned char *b = p->b;
    Py_ssize_t at;
    r->name = r->value = r->hints = NULL;
    r->name = read_name(p, *pos, 1, &at);
    if (r->name == NULL)
        return -1;
    r->name_ix = p->last_ix;
    p->last_ix = -1;
    if (at + 10 > p->n) {
        record_clear(r);
        malformed(p, "record header runs past the message");
        return -1;
    }
    const uint32_t rtype = be16(b + at), ttl = be32(b + at + 4), rdlen = be16(b + at + 8);
    at += 10;
    const Py_ssize_t end = at + (Py_ssize_t)rdlen;
    if (end > p->n) {
        record_clear(r);
        malformed(p, "record data runs past the message");
        return -1;
    }
    Py_ssize_t ignored;
    if (rtype == TYPE_A && rdlen == 4)
        r->value = address_text(p, b + at, 4);
    else if (rtype == TYPE_AAAA && rdlen == 16)
        r->value = address_text(p, b + at, 16);
    else if (rtype == TYPE_NS || rtype == TYPE_CNAME || rtype == TYPE_PTR)
        r->value = read_name(p, at, 1, &ignored);
    else if (rtype == TYPE_HTTPS || rtype == TYPE_SVCB)
        svcb(p, at, end, &r->value, &r->hints);
    else
        r->value = Py_NewRef(Py_None);
    r->value_ix = rtype == TYPE_HTTPS || rtype == TYPE_SVCB ? -1 : p->last_ix;
    if (r->value == NULL) {
        record_clear(r);
        return -1;
    }
    if (r->hints == NULL)
        r->hints = Py_NewRef(empty_tuple);
    r->rtype = rtype;
    r->ttl = ttl;
    *pos = end;
    return 0;
}

/* The DnsResource of a record read (its references stolen, the record left empty). */
static PyObject *
resource_of(Record *r)
{
    PyObject *fields[N_RESOURCE] = {r->name, PyLong_FromUnsignedLong(r->rtype),
                                    PyLong_FromUnsignedLong(r->ttl), r->value, r->hints};
    r->name = r->value = r->hints = NULL;
    if (fields[1] == NULL || fields[2] == NULL) {
        for (int k = 0; k < N_RESOURCE; k++)
            Py_XDECREF(fields[k]);
        return NULL;
    }
    return instance(resource_type, resource_slots, fields, N_RESOURCE);
}

/* The question at *pos: its name (a new reference) and *qtype; *pos moves past it. NULL
 * when malformed (p->why set) or on a Python exception. */
static PyObject *
read_question(Parser *p, Py_ssize_t *pos, uint32_t *qtype)
{
    Py_ssize_t at;
    PyObject *name = read_name(p, *pos, 1, &at);
    if (name == NULL)
        return NULL;
    if (at + 4 > p->n) {
        Py_DECREF(name);
        return malformed(p, "question runs past the message");
    }
    *qtype = be16(p->b + at);
    *pos = at + 4;
    return name;
}

/* A message as collect() reads it, without building Python objects for it: the same reads
 * as parse_message, in the same order, so with the same outcome. */
typedef struct {
    uint32_t id, flags;
    Py_ssize_t nq, na;
    int truncated;
    PyObject *qname[MAX_RECORDS]; /* new references */
    int32_t qname_ix[MAX_RECORDS];
    uint32_t qtype[MAX_RECORDS];
    Record rec[MAX_RECORDS];
} Message;

static void
message_clear(Message *m)
{
    while (m->nq > 0)
        Py_CLEAR(m->qname[--m->nq]);
    while (m->na > 0)
        record_clear(&m->rec[--m->na]);
}

/* 1: read (perhaps truncated); 0: malformed (MalformedError set); -1: another error. */
static int
read_message(Parser *p, Message *m)
{
    const unsigned char *b = p->b;
    m->nq = m->na = 0;
    if (p->n < 12) {
        PyErr_SetString(malformed_error, "DNS message shorter than its header");
        return 0;
    }
    const uint32_t qd = be16(b + 4), an = be16(b + 6);
    m->id = be16(b);
    m->flags = be16(b + 2);
    if (qd > MAX_RECORDS || an > MAX_RECORDS) {
        PyErr_SetString(malformed_error, "implausible DNS section counts");
        return 0;
    }
    Py_ssize_t pos = 12;
    while (m->nq < (Py_ssize_t)qd
           && (m->qname[m->nq] = read_question(p, &pos, &m->qtype[m->nq])) != NULL) {
        m->qname_ix[m->nq] = p->last_ix;
        m->nq++;
    }
    while (m->nq == (Py_ssize_t)qd && m->na < (Py_ssize_t)an
           && read_record(p, &pos, &m->rec[m->na]) == 0)
        m->na++;
    if (PyErr_Occurred()) {
        message_clear(m);
        return -1;
    }
    if (p->why != NULL && m->nq == 0 && m->na == 0) {
        if (p->why_byte)
            PyErr_Format(malformed_error, "unsupported label type 0x%02x", p->why_byte);
        else
            PyErr_SetString(malformed_error, p->why);
        return 0;
    }
    m->truncated = p->why != NULL;
    return 1;
}

/* The message as a DnsMessage: read_message's outcome made objects (NULL with
 * MalformedError or another exception set). */
static PyObject *
parse_message(Parser *p)
{
    Message *m = PyMem_Malloc(sizeof(Message));
    if (m == NULL)
        return PyErr_NoMemory();
    m->nq = m->na = 0;
    PyObject *result = NULL, *questions = NULL, *answers = NULL;
    if (read_message(p, m) <= 0)
        goto out;
    questions = PyTuple_New(m->nq);
    answers = PyTuple_New(m->na);
    if (questions == NULL || answers == NULL)
        goto out;
    for (Py_ssize_t k = 0; k < m->nq; k++) {
        PyObject *qt = PyLong_FromUnsignedLong(m->qtype[k]);
        PyObject *q = qt ? PyTuple_Pack(2, m->qname[k], qt) : NULL;
        Py_XDECREF(qt);
        if (q == NULL)
            goto out;
        PyTuple_SET_ITEM(questions, k, q);
    }
    for (Py_ssize_t k = 0; k < m->na; k++) {
        PyObject *r = resource_of(&m->rec[k]);
        if (r == NULL)
            goto out;
        PyTuple_SET_ITEM(answers, k, r);
    }
    PyObject *fields[N_MESSAGE] = {
        PyLong_FromUnsignedLong(m->id),
        PyBool_FromLong(m->flags & 0x8000),
        PyLong_FromUnsignedLong((m->flags >> 11) & 0xF),
        PyLong_FromUnsignedLong(m->flags & 0xF),
        questions,
        answers,
        PyBool_FromLong(m->truncated),
    };
    questions = answers = NULL; /* stolen by fields */
    if (fields[0] == NULL || fields[2] == NULL || fields[3] == NULL) {
        for (int k = 0; k < N_MESSAGE; k++)
            Py_XDECREF(fields[k]);
        goto out;
    }
    result = instance(message_type, message_slots, fields, N_MESSAGE);
out:
    Py_XDECREF(questions);
    Py_XDECREF(answers);
    message_clear(m);
    PyMem_Free(m);
    return result;
}

static PyObject *
parse(PyObject *Py_UNUSED(module), PyObject *arg)
{
    if (resource_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_dns.setup() was not called");
        return NULL;
    }
    Py_buffer view;
    Parser p;
    p.why = NULL;
    p.why_byte = 0;
    p.n_seen = 0;
    p.last_ix = -1;
    p.ix = NULL;
    int buffered = !PyBytes_CheckExact(arg);
    if (buffered) {
        if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
            return NULL;
        p.b = view.buf;
        p.n = view.len;
    }
    else {
        p.b = (const unsigned char *)PyBytes_AS_STRING(arg);
        p.n = PyBytes_GET_SIZE(arg);
    }
    PyObject *result = parse_message(&p);
    for (Py_ssize_t k = 0; k < p.n_seen; k++)
        Py_DECREF(p.seen_text[k]);
    if (buffered)
        PyBuffer_Release(&view);
    return result;
}

/* --------------------------------------------------------------------- many messages */

/* `s` lower-cased (new reference): itself when it has no ASCII capital and is ASCII. */
static PyObject *
lower_of(PyObject *s)
{
    if (PyUnicode_IS_ASCII(s)) {
        const char *c = (const char *)PyUnicode_DATA(s);
        Py_ssize_t n = PyUnicode_GET_LENGTH(s);
        Py_ssize_t k = 0;
        while (k < n && !(c[k] >= 'A' && c[k] <= 'Z'))
            k++;
        if (k == n)
            return Py_NewRef(s);
    }
    return PyObject_CallMethod(s, "lower", NULL);
}

/* ---------------------------------------------------------------- the DNS store */

/* What collect() appends to: a names.DnsStore's attributes (borrowed references). */
typedef struct {
    PyObject *ids;   /* dict text -> its number */
    PyObject *texts; /* list of the texts, by number */
    PyObject *rows, *answers, *answered, *pairs; /* bytearrays of packed records */
    Index *ix;                                   /* the texts collect() made, or NULL */
} Store;

/* The number of text `s` in the store, added when new (-1 on error). */
static long text_number(Store *st, PyObject *s);

/* The number of text `s` in the store, added when new (-1 on error): from the index when it
 * made `s` (its entry `at`, or looked up when -2) and was told its number before. */
static long
text_id_at(Store *st, PyObject *s, Py_ssize_t at)
{
    if (at == -2)
        at = st->ix != NULL ? index_of(st->ix, s) : -1;
    if (at < 0)
        return text_number(st, s);
    if (st->ix->e[at].id < 0)
        st->ix->e[at].id = text_number(st, s);
    return st->ix->e[at].id;
}

static long
text_number(Store *st, PyObject *s)
{
    PyObject *known = PyDict_GetItemWithError(st->ids, s);
    if (known != NULL)
        return PyLong_AsLong(known);
    if (PyErr_Occurred())
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(st->texts);
    PyObject *num = PyLong_FromSsize_t(n);
    int bad = num == NULL || PyDict_SetItem(st->ids, s, num) < 0 || PyList_Append(st->texts, s) < 0;
    Py_XDECREF(num);
    return bad ? -1 : (long)n;
}

/* The number of `s` lower-cased (-1 on error). */
static long
text_id(Store *st, PyObject *s)
{
    return text_id_at(st, s, -2);
}

/* The number of `s` lower-cased (-1 on error); `at` as for text_id_at. */
static long
lower_id_at(Store *st, PyObject *s, Py_ssize_t at)
{
    if (at == -2)
        at = st->ix != NULL ? index_of(st->ix, s) : -1;
    if (at >= 0 && st->ix->e[at].lower >= 0)
        return st->ix->e[at].lower;
    PyObject *low = lower_of(s);
    if (low == NULL)
        return -1;
    long id = text_id_at(st, low, low == s ? at : -2);
    Py_DECREF(low);
    if (at >= 0) /* `at` is still its entry: entries only move when the index grows, by number */
        st->ix->e[at].lower = id;
    return id;
}

static void
put_le(unsigned char *at, uint64_t v, int bytes)
{
    for (int k = 0; k < bytes; k++)
        at[k] = (unsigned char)(v >> (8 * k));
}

/* Room for `size` more bytes at the end of bytearray `b` (NULL on error). */
static unsigned char *
grow(PyObject *b, Py_ssize_t size)
{
    Py_ssize_t at = PyByteArray_GET_SIZE(b);
    if (PyByteArray_Resize(b, at + size) < 0)
        return NULL;
    return (unsigned char *)PyByteArray_AS_STRING(b) + at;
}

/* names.DNS_ROW, DNS_ANSWER, DNS_ANSWERED and DNS_PAIR records (little-endian, packed) */
#define ROW_BYTES 20
#define ANSWER_BYTES 32
#define ANSWERED_BYTES 16
#define PAIR_BYTES 8

static int
put_row(Store *st, int64_t packet, long qtype, long qname, long id, long rcode, int response)
{
    unsigned char *b = grow(st->rows, ROW_BYTES);
    if (b == NULL)
        return -1;
    put_le(b, (uint64_t)packet, 8);
    put_le(b + 8, (uint64_t)(uint32_t)(int32_t)qtype, 4);
    put_le(b + 12, (uint64_t)(uint32_t)(int32_t)qname, 4);
    put_le(b + 16, (uint64_t)id, 2);
    b[18] = (unsigned char)rcode;
    b[19] = (unsigned char)response;
    return 0;
}

static int
put_answer(Store *st, int64_t row, long long ttl, long name, long rtype, long value, long hints)
{
    unsigned char *b = grow(st->answers, ANSWER_BYTES);
    if (b == NULL)
        return -1;
    put_le(b, (uint64_t)row, 8);
    put_le(b + 8, (uint64_t)ttl, 8);
    put_le(b + 16, (uint64_t)(uint32_t)(int32_t)name, 4);
    put_le(b + 20, (uint64_t)(uint32_t)(int32_t)rtype, 4);
    put_le(b + 24, (uint64_t)(uint32_t)(int32_t)value, 4);
    put_le(b + 28, (uint64_t)(uint32_t)(int32_t)hints, 4);
    return 0;
}

static int
put_answered(Store *st, int64_t ts, long addr, long asked)
{
    unsigned char *b = grow(st->answered, ANSWERED_BYTES);
    if (b == NULL)
        return -1;
    put_le(b, (uint64_t)ts, 8);
    put_le(b + 8, (uint64_t)(uint32_t)(int32_t)addr, 4);
    put_le(b + 12, (uint64_t)(uint32_t)(int32_t)asked, 4);
    return 0;
}

static int
put_pair(Store *st, long name, long addr)
{
    unsigned char *b = grow(st->pairs, PAIR_BYTES);
    if (b == NULL)
        return -1;
    put_le(b, (uint64_t)(uint32_t)(int32_t)name, 4);
    put_le(b + 4, (uint64_t)(uint32_t)(int32_t)addr, 4);
    return 0;
}

#define MAX_CHAIN 16

/* names.DnsStore._learn of one answered message, in C: each address under the names that
 * lead to it (question, CNAME chain) as (name, address) pairs, and (time, address, name
 * asked) of each. Names are compared lower-cased, by their numbers in the store. */
static int
learn(Store *st, const Message *m, int64_t ts)
{
    int rc = -1;
    const Py_ssize_t na = m->na, nq = m->nq;
    /* the CNAMEs (owner, target), lower-cased; a later one for the same owner wins, as in
     * the Python dict */
    long c_owner[MAX_RECORDS], c_target[MAX_RECORDS], chains[MAX_RECORDS][MAX_CHAIN];
    int chain_len[MAX_RECORDS];
    Py_ssize_t nc = 0;
    PyObject *empty = NULL;
    for (Py_ssize_t k = 0; k < na; k++) {
        const Record *r = &m->rec[k];
        if (r->rtype != TYPE_CNAME)
            continue;
        long o = lower_id_at(st, r->name, r->name_ix), v = -1;
        if (o >= 0) {
            if (r->value == Py_None) {
                if (empty == NULL)
                    empty = PyUnicode_FromString("");
                v = empty ? text_id(st, empty) : -1;
            }
            else
                v = lower_id_at(st, r->value, r->value_ix);
        }
        if (o < 0 || v < 0)
            goto done;
        c_owner[nc] = o;
        c_target[nc] = v;
        nc++;
    }
    for (Py_ssize_t q = 0; q < nq; q++) {
        long *chain = chains[q];
        long first = lower_id_at(st, m->qname[q], m->qname_ix[q]);
        if (first < 0)
            goto done;
        chain[0] = first;
        int len = 1;
        while (len < MAX_CHAIN) {
            long next = -1;
            for (Py_ssize_t c = nc - 1; c >= 0; c--) { /* the last CNAME of that owner */
                if (c_owner[c] == chain[len - 1]) {
                    next = c_target[c];
                    break;
                }
            }
            if (next < 0)
                break;
            chain[len++] = next;
        }
        chain_len[q] = len;
    }
    for (Py_ssize_t k = 0; k < na; k++) {
        const Record *r = &m->rec[k];
        PyObject *one[1];
        PyObject *const *addrs = NULL;
        Py_ssize_t n_addrs = 0, one_ix = -2;
        if ((r->rtype == TYPE_A || r->rtype == TYPE_AAAA) && r->value != Py_None
            && PyUnicode_Check(r->value) && PyUnicode_GET_LENGTH(r->value) > 0) {
            one[0] = r->value;
            one_ix = r->value_ix;
            addrs = one;
            n_addrs = 1;
        }
        else if (PyTuple_GET_SIZE(r->hints) > 0) {
            addrs = &PyTuple_GET_ITEM(r->hints, 0);
            n_addrs = PyTuple_GET_SIZE(r->hints);
        }
        if (addrs == NULL)
            continue;
        long owner = lower_id_at(st, r->name, r->name_ix);
        if (owner < 0)
            goto done;
        const long *names = &owner;
        int n_names = 1;
        long asked = owner;
        for (Py_ssize_t q = 0; q < nq; q++) {
            int at = -1;
            for (int j = 0; j < chain_len[q]; j++) {
                if (chains[q][j] == owner) {
                    at = j;
                    break;
                }
            }
            if (at >= 0) {
                names = chains[q];
                n_names = at + 1;
                asked = chains[q][0];
                break;
            }
        }
        for (Py_ssize_t i = 0; i < n_addrs; i++) {
            long a = text_id_at(st, addrs[i], addrs == one ? one_ix : -2);
            if (a < 0)
                goto done;
            for (int j = 0; j < n_names; j++)
                if (put_pair(st, names[j], a) < 0)
                    goto done;
            if (put_answered(st, ts, a, asked) < 0)
                goto done;
        }
    }
    rc = 0;
done:
    Py_XDECREF(empty);
    return rc;
}

/* The answers of a message under row `row` (-1 on error). */
static int
put_answers(Store *st, int64_t row, const Message *m)
{
    for (Py_ssize_t k = 0; k < m->na; k++) {
        const Record *r = &m->rec[k];
        long name = text_id_at(st, r->name, r->name_ix), value = -1, hints = -1;
        if (name < 0)
            return -1;
        if (r->value != Py_None && (value = text_id_at(st, r->value, r->value_ix)) < 0)
            return -1;
        if (PyTuple_GET_SIZE(r->hints) > 0) {
            PyObject *sep = PyUnicode_FromString(",");
            PyObject *joined = sep ? PyUnicode_Join(sep, r->hints) : NULL;
            hints = joined ? text_id(st, joined) : -1;
            Py_XDECREF(sep);
            Py_XDECREF(joined);
            if (hints < 0)
                return -1;
        }
        if (put_answer(st, row, (long long)r->ttl, name, (long)r->rtype, value, hints) < 0)
            return -1;
    }
    return 0;
}

/* collect(blob, ends, rows, packet, ts, store) -> (status, truncated)
 * The UDP DNS messages blob[ends[i-1]:ends[i]] for the positions i in `rows` (int64), as
 * NameCollector._dns parses them one by one, added to the names.DnsStore `store` as
 * DnsStore.add does: a DNS_ROW record per question (packet `packet[i]`), its answers, and
 * for NOERROR responses what the answers teach, with the time `ts[i]`. `status` has a byte
 * per row: 0 malformed, 1 a query, 2 a response; `truncated` counts messages cut short. */
static PyObject *
collect(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer blob, ends, rows, packet, ts;
    PyObject *store;
    if (resource_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_dns.setup() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*O:collect", &blob, &ends, &rows, &packet, &ts,
                          &store))
        return NULL;
    PyObject *status = NULL, *result = NULL, *empty_name = NULL;
    PyObject *held[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    static const char *const attrs[6] = {"ids", "texts", "rows", "answers", "answered", "pairs"};
    Py_ssize_t n_ends = ends.len / 8, n = rows.len / 8, truncated = 0;
    Store st;
    Message *m = PyMem_Malloc(sizeof(Message));
    if (m == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    m->nq = m->na = 0;
    if (packet.len != ends.len || ts.len != ends.len) {
        PyErr_SetString(PyExc_ValueError, "collect: arrays of different sizes");
        goto out;
    }
    for (int k = 0; k < 6; k++) {
        held[k] = PyObject_GetAttrString(store, attrs[k]);
        if (held[k] == NULL) {
            PyErr_SetString(PyExc_TypeError, "collect: the store is not a names.DnsStore");
            goto out;
        }
    }
    if (!PyDict_Check(held[0]) || !PyList_Check(held[1]) || !PyByteArray_Check(held[2])
        || !PyByteArray_Check(held[3]) || !PyByteArray_Check(held[4])
        || !PyByteArray_Check(held[5])) {
        PyErr_SetString(PyExc_TypeError, "collect: the store is not a names.DnsStore");
        goto out;
    }
    st.ids = held[0];
    st.texts = held[1];
    st.rows = held[2];
    st.answers = held[3];
    st.answered = held[4];
    st.pairs = held[5];
    st.ix = index_of_store(store);
    if (st.ix == NULL)
        goto out;
    status = PyBytes_FromStringAndSize(NULL, n);
    empty_name = PyUnicode_FromString("");
    if (status == NULL || empty_name == NULL)
        goto fail;
    long empty_id = -2; /* the number of "", once needed */
    unsigned char *sb = (unsigned char *)PyBytes_AS_STRING(status);
    const int64_t *e = ends.buf, *r = rows.buf, *pk = packet.buf, *tm = ts.buf;
    for (Py_ssize_t k = 0; k < n; k++) {
        int64_t i = r[k];
        int64_t a = i > 0 && i <= n_ends ? e[i - 1] : 0, b = i >= 0 && i < n_ends ? e[i] : -1;
        if (i < 0 || i >= n_ends || a < 0 || b < a || b > blob.len) {
            PyErr_SetString(PyExc_ValueError, "collect: a row outside the blob");
            goto fail;
        }
        Parser p;
        p.why = NULL;
        p.why_byte = 0;
        p.n_seen = 0;
        p.last_ix = -1;
        p.ix = st.ix;
        p.b = (const unsigned char *)blob.buf + a;
        p.n = b - a;
        int got = read_message(&p, m);
        for (Py_ssize_t j = 0; j < p.n_seen; j++)
            Py_DECREF(p.seen_text[j]);
        if (got <= 0) {
            if (got < 0 || !PyErr_ExceptionMatches(malformed_error))
                goto fail;
            PyErr_Clear();
            sb[k] = 0;
            continue;
        }
        const int response = (m->flags & 0x8000) != 0;
        const long id = (long)m->id, rcode = (long)(m->flags & 0xF);
        sb[k] = response ? 2 : 1;
        truncated += m->truncated;
        int bad = 0;
        const int64_t first = PyByteArray_GET_SIZE(st.rows) / ROW_BYTES;
        Py_ssize_t n_rows = m->nq;
        if (m->nq == 0 && m->na > 0) { /* an announcement (mDNS): one row, no name, type -1 */
            if (empty_id == -2)
                empty_id = text_id(&st, empty_name);
            bad = empty_id < 0 || put_row(&st, pk[i], -1, empty_id, id, rcode, response) < 0;
            n_rows = 1;
        }
        for (Py_ssize_t q = 0; !bad && q < m->nq; q++) {
            long qname = text_id_at(&st, m->qname[q], m->qname_ix[q]);
            bad = qname < 0
                  || put_row(&st, pk[i], (long)m->qtype[q], qname, id, rcode, response) < 0;
        }
        for (Py_ssize_t q = 0; !bad && q < n_rows; q++)
            bad = put_answers(&st, first + q, m) < 0;
        if (!bad && response && rcode == 0 && m->na > 0)
            bad = learn(&st, m, tm[i]) < 0;
        message_clear(m);
        if (bad)
            goto fail;
    }
    result = Py_BuildValue("(On)", status, truncated);
fail:
    Py_XDECREF(status);
    Py_XDECREF(empty_name);
out:
    if (m != NULL)
        message_clear(m);
    PyMem_Free(m);
    for (int k = 0; k < 6; k++)
        Py_XDECREF(held[k]);
    PyBuffer_Release(&blob);
    PyBuffer_Release(&ends);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&packet);
    PyBuffer_Release(&ts);
    return result;
}

/* ------------------------------------------------------------------ TLS ClientHello */

/* hello_error: MalformedError(why) (NULL). */
static PyObject *
hello_error(const char *why)
{
    PyErr_SetString(malformed_error, why);
    return NULL;
}

/* The SNI, ALPN and legacy version of the ClientHello handshake message at b[:len], as a
 * new (sni, alpn, legacy_version) tuple: names.parse_client_hello in C, with the same results
 * and MalformedError in the same cases (checked by the tests against the Python parser on
 * real and mutated hellos). NULL with the error set. */
static PyObject *
hello_tuple(const unsigned char *b, Py_ssize_t len)
{
    PyObject *sni = NULL, *alpn = NULL, *result = NULL;
    if (len < 4) {
        hello_error("incomplete ClientHello");
        goto out;
    }
    if (b[0] != 1) {
        PyErr_Format(malformed_error, "handshake type %d is not a ClientHello", (int)b[0]);
        goto out;
    }
    const Py_ssize_t total = 4 + (((Py_ssize_t)b[1] << 16) | ((Py_ssize_t)b[2] << 8) | b[3]);
    if (total > len) {
        hello_error("incomplete ClientHello");
        goto out;
    }
    if (total < 4 + 2 + 32 + 1) {
        hello_error("ClientHello too short");
        goto out;
    }
    const long version = (long)be16(b + 4);
    Py_ssize_t pos = 4 + 2 + 32;
    pos += 1 + b[pos];
    if (pos + 2 > total) {
        hello_error("ClientHello ends in the session id");
        goto out;
    }
    pos += 2 + be16(b + pos);
    if (pos + 1 > total) {
        hello_error("ClientHello ends in the cipher suites");
        goto out;
    }
    pos += 1 + b[pos];
    if (pos == total) {
        result = Py_BuildValue("(OOl)", Py_None, empty_tuple, version);
        goto out;
    }
    if (pos + 2 > total) {
        hello_error("ClientHello ends in the compression methods");
        goto out;
    }
    const Py_ssize_t ext_end = pos + 2 + be16(b + pos);
    if (ext_end > total) {
        hello_error("extensions run past the ClientHello");
        goto out;
    }
    pos += 2;
    while (pos + 4 <= ext_end) {
        const uint32_t etype = be16(b + pos), elen = be16(b + pos + 2);
        pos += 4;
        if (pos + (Py_ssize_t)elen > ext_end) {
            hello_error("extension runs past the extensions");
            goto out;
        }
        const unsigned char *e = b + pos;
        if (etype == 0 && sni == NULL) { /* server_name: the first host_name entry */
            if (elen < 2) {
                hello_error("short server_name extension");
                goto out;
            }
            Py_ssize_t end = 2 + be16(e), at = 2;
            if (end > elen)
                end = elen;
            while (at + 3 <= end) {
                const unsigned kind = e[at];
                const Py_ssize_t n = be16(e + at + 1);
                at += 3;
                if (at + n > end) {
                    hello_error("server name runs past the extension");
                    goto out;
                }
                if (kind == 0) {
                    sni = PyUnicode_DecodeUTF8((const char *)e + at, n, "backslashreplace");
                    if (sni == NULL)
                        goto out;
                    break;
                }
                at += n;
            }
        }
        else if (etype == 16 && (alpn == NULL || PyList_GET_SIZE(alpn) == 0)) {
            if (elen < 2) {
                hello_error("short ALPN extension");
                goto out;
            }
            Py_ssize_t end = 2 + be16(e), at = 2;
            if (end > elen)
                end = elen;
            if (alpn == NULL && (alpn = PyList_New(0)) == NULL)
                goto out;
            while (at < end) {
                const Py_ssize_t n = e[at++];
                if (at + n > end) {
                    hello_error("ALPN protocol runs past the extension");
                    goto out;
                }
                PyObject *proto =
                    PyUnicode_DecodeASCII((const char *)e + at, n, "backslashreplace");
                if (proto == NULL || PyList_Append(alpn, proto) < 0) {
                    Py_XDECREF(proto);
                    goto out;
                }
                Py_DECREF(proto);
                at += n;
            }
        }
        pos += elen;
    }
    {
        PyObject *protocols = alpn != NULL ? PyList_AsTuple(alpn) : Py_NewRef(empty_tuple);
        if (protocols != NULL) {
            result = Py_BuildValue("(OOl)", sni != NULL ? sni : Py_None, protocols, version);
            Py_DECREF(protocols);
        }
    }
out:
    Py_XDECREF(sni);
    Py_XDECREF(alpn);
    return result;
}

/* client_hello(handshake) -> (sni, alpn, legacy_version): hello_tuple of a buffer. Here, not
 * in a module of its own, because this extension is the one built beside the name parsers;
 * it shares their error. */
static PyObject *
client_hello(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer view;
    if (malformed_error == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_dns.setup() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*:client_hello", &view))
        return NULL;
    PyObject *result = hello_tuple(view.buf, view.len);
    PyBuffer_Release(&view);
    return result;
}

#define HELLO_OTHER 0 /* not a ClientHello record: names.looks_like_client_hello_record is false */
#define HELLO_READ 1  /* a ClientHello whole in its first record, read */
#define HELLO_SLOW 2  /* anything else (short, several records, malformed): the Python path */

/* client_hellos(blob, ends, rows, texts) -> (status, sni, alpn)
 * For the payloads blob[ends[i-1]:ends[i]] at the positions i in `rows`: whether each is a
 * ClientHello whole in its first TLS record (status HELLO_READ: its SNI, or None, and its
 * ALPN protocols joined with ",", or None), not a ClientHello record (HELLO_OTHER) or one for
 * NameCollector._tls_segment to read (HELLO_SLOW: it gives the same result for the first
 * kind, and its warnings for the damaged ones). Texts are shared through the dict `texts`. */
static PyObject *
client_hellos(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer blob, ends, rows;
    PyObject *texts;
    if (malformed_error == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_dns.setup() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*y*y*O!:client_hellos", &blob, &ends, &rows, &PyDict_Type,
                          &texts))
        return NULL;
    const Py_ssize_t n_ends = ends.len / 8, n = rows.len / 8;
    const int64_t *e = ends.buf, *r = rows.buf;
    PyObject *status = PyBytes_FromStringAndSize(NULL, n), *snis = PyList_New(n),
             *alpns = PyList_New(n), *result = NULL;
    if (status == NULL || snis == NULL || alpns == NULL)
        goto out;
    unsigned char *sb = (unsigned char *)PyBytes_AS_STRING(status);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyList_SET_ITEM(snis, k, Py_NewRef(Py_None));
        PyList_SET_ITEM(alpns, k, Py_NewRef(Py_None));
        const int64_t i = r[k];
        const int64_t a = i > 0 && i <= n_ends ? e[i - 1] : 0, z = i >= 0 && i < n_ends ? e[i] : -1;
        if (i < 0 || i >= n_ends || a < 0 || z < a || z > blob.len) {
            PyErr_SetString(PyExc_ValueError, "client_hellos: a row outside the blob");
            goto out;
        }
        const unsigned char *b = (const unsigned char *)blob.buf + a;
        const Py_ssize_t len = (Py_ssize_t)(z - a);
        sb[k] = HELLO_SLOW;
        if (len < 6)
            continue;
        if (!(b[0] == 22 && b[1] == 3 && b[5] == 1)) {
            sb[k] = HELLO_OTHER;
            continue;
        }
        const Py_ssize_t record = be16(b + 3);
        if (record < 4 || record > 16384 + 2048 || 5 + record > len)
            continue;
        const Py_ssize_t total = 4 + (((Py_ssize_t)b[6] << 16) | ((Py_ssize_t)b[7] << 8) | b[8]);
        if (total > record)
            continue;
        PyObject *hello = hello_tuple(b + 5, record);
        if (hello == NULL) {
            if (!PyErr_ExceptionMatches(malformed_error))
                goto out;
            PyErr_Clear(); /* read again by the Python path, which counts it */
            continue;
        }
        PyObject *sni = PyTuple_GET_ITEM(hello, 0), *protocols = PyTuple_GET_ITEM(hello, 1);
        int bad = 0;
        if (sni != Py_None) {
            PyObject *shared = PyDict_SetDefault(texts, sni, sni);
            bad = shared == NULL;
            if (!bad)
                PyList_SetItem(snis, k, Py_NewRef(shared));
        }
        if (!bad && PyTuple_GET_SIZE(protocols) > 0) {
            PyObject *sep = PyUnicode_FromString(",");
            PyObject *joined = sep ? PyUnicode_Join(sep, protocols) : NULL;
            PyObject *shared = joined ? PyDict_SetDefault(texts, joined, joined) : NULL;
            bad = shared == NULL;
            if (!bad)
                PyList_SetItem(alpns, k, Py_NewRef(shared));
            Py_XDECREF(sep);
            Py_XDECREF(joined);
        }
        Py_DECREF(hello);
        if (bad)
            goto out;
        sb[k] = HELLO_READ;
    }
    result = PyTuple_Pack(3, status, snis, alpns);
out:
    Py_XDECREF(status);
    Py_XDECREF(snis);
    Py_XDECREF(alpns);
    PyBuffer_Release(&blob);
    PyBuffer_Release(&ends);
    PyBuffer_Release(&rows);
    return result;
}

/* The slot descriptors of `type` for `fields` (new references in out[], NULL before), after
 * checking its __slots__ are those. */
static int
slots_of(PyObject *type, const char *const *fields, int count, PyObject **out)
{
    PyObject *declared = PyObject_GetAttrString(type, "__slots__");
    if (declared == NULL && !PyErr_ExceptionMatches(PyExc_AttributeError))
        return -1;
    PyErr_Clear();
    int same = declared != NULL && PyTuple_Check(declared) && PyTuple_GET_SIZE(declared) == count;
    for (int k = 0; same && k < count; k++) {
        PyObject *name = PyTuple_GET_ITEM(declared, k);
        same = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, fields[k]) == 0;
    }
    Py_XDECREF(declared);
    if (!same) {
        PyErr_Format(PyExc_TypeError, "%s.__slots__ are not the fields _dns.c sets",
                     ((PyTypeObject *)type)->tp_name);
        return -1;
    }
    for (int k = 0; k < count; k++) {
        PyObject *d = PyObject_GetAttrString(type, fields[k]);
        if (d == NULL)
            return -1;
        if (!Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            Py_DECREF(d);
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", ((PyTypeObject *)type)->tp_name,
                         fields[k]);
            return -1;
        }
        out[k] = d;
    }
    return 0;
}

static PyObject *
setup(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *resource, *message, *error;
    if (!PyArg_ParseTuple(args, "O!O!O!:setup", &PyType_Type, &resource, &PyType_Type, &message,
                          &PyType_Type, &error))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)error, (PyTypeObject *)PyExc_Exception)) {
        PyErr_SetString(PyExc_TypeError, "setup: the error must be an Exception class");
        return NULL;
    }
    if (((PyTypeObject *)resource)->tp_new == NULL || ((PyTypeObject *)message)->tp_new == NULL) {
        PyErr_SetString(PyExc_TypeError, "setup: the record classes must be instantiable");
        return NULL;
    }
    PyObject *r_slots[N_RESOURCE] = {NULL}, *m_slots[N_MESSAGE] = {NULL};
    if (slots_of(resource, RESOURCE_FIELDS, N_RESOURCE, r_slots) < 0
        || slots_of(message, MESSAGE_FIELDS, N_MESSAGE, m_slots) < 0) {
        for (int k = 0; k < N_RESOURCE; k++)
            Py_XDECREF(r_slots[k]);
        for (int k = 0; k < N_MESSAGE; k++)
            Py_XDECREF(m_slots[k]);
        return NULL;
    }
    for (int k = 0; k < N_RESOURCE; k++)
        Py_XSETREF(resource_slots[k], r_slots[k]);
    for (int k = 0; k < N_MESSAGE; k++)
        Py_XSETREF(message_slots[k], m_slots[k]);
    Py_INCREF(resource);
    Py_XSETREF(resource_type, (PyTypeObject *)resource);
    Py_INCREF(message);
    Py_XSETREF(message_type, (PyTypeObject *)message);
    Py_INCREF(error);
    Py_XSETREF(malformed_error, error);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"parse", parse, METH_O,
     "parse(msg) -> DnsMessage\n\n"
     "The header, questions and answer section of one DNS message (any bytes-like object),\n"
     "as names.parse_dns gives them; raises the error given to setup() when malformed."},
    {"collect", collect, METH_VARARGS,
     "collect(blob, ends, rows, packet, ts, store) -> (status, truncated)\n\n"
     "Many UDP DNS messages of a NameJob parsed into a names.DnsStore, as\n"
     "NameCollector._dns does one by one."},
    {"client_hello", client_hello, METH_VARARGS,
     "client_hello(handshake) -> (sni, alpn, legacy_version)\n\n"
     "names.parse_client_hello of a complete ClientHello handshake message, compiled."},
    {"client_hellos", client_hellos, METH_VARARGS,
     "client_hellos(blob, ends, rows, texts) -> (status, sni, alpn)\n\n"
     "The ClientHellos whole in their first record among payloads of a NameJob."},
    {"setup", setup, METH_VARARGS,
     "setup(DnsResource, DnsMessage, MalformedError) -> None\n\n"
     "The classes parse() builds and raises (once, before parse() is used)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "auditor.packets._dns",
    "The DNS message parser of names.py, compiled (see names.parse_dns).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__dns(void)
{
    for (int c = 0; c < 256; c++)
        plain[c] = c >= 0x21 && c <= 0x7E && c != '.' && c != '\\';
    if (empty_tuple == NULL && (empty_tuple = PyTuple_New(0)) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
