/*
 * auditor.packets._dns: the DNS message parser of names.py, compiled.
 *
 * parse() does what names._parse_dns_python does (with read_name, _svcb and _label_text),
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
    /* collect(): each name's text (and TTL) once per call (a dict value -> itself), so that
     * the rows of the many messages asking for the same names share one object; NULL: not
     * shared */
    PyObject *texts;
} Parser;

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
seen_get(const Parser *p, uint32_t at)
{
    Py_ssize_t k = seen_find(p, at);
    return (k < p->n_seen && p->seen_at[k] == at) ? p->seen_text[k] : NULL;
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
        return 0;
    }
    if (p->n_seen >= SEEN_ROOM) { /* cannot happen: at most SEEN_ROOM names are read */
        PyErr_SetString(PyExc_SystemError, "_dns: too many names");
        return -1;
    }
    memmove(p->seen_at + k + 1, p->seen_at + k, (size_t)(p->n_seen - k) * sizeof(uint16_t));
    memmove(p->seen_text + k + 1, p->seen_text + k,
            (size_t)(p->n_seen - k) * sizeof(PyObject *));
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
    PyObject *s = ascii_text(text, len);
    if (s == NULL)
        return NULL;
    if (p->texts != NULL) {
        PyObject *known = PyDict_SetDefault(p->texts, s, s);
        Py_XINCREF(known);
        Py_DECREF(s);
        if (known == NULL)
            return NULL;
        s = known;
    }
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
            PyObject *h = size == 4 ? ntop4(b + pos + i) : ntop6(b + pos + i);
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

/* The answer record at *pos, as a DnsResource; *pos moves past it. */
static PyObject *
answer(Parser *p, Py_ssize_t *pos)
{
    const unsigned char *b = p->b;
    Py_ssize_t at;
    PyObject *name = read_name(p, *pos, 1, &at);
    if (name == NULL)
        return NULL;
    if (at + 10 > p->n) {
        Py_DECREF(name);
        return malformed(p, "record header runs past the message");
    }
    const uint32_t rtype = be16(b + at), ttl = be32(b + at + 4), rdlen = be16(b + at + 8);
    at += 10;
    const Py_ssize_t end = at + (Py_ssize_t)rdlen;
    if (end > p->n) {
        Py_DECREF(name);
        return malformed(p, "record data runs past the message");
    }
    PyObject *value = NULL, *hints = NULL;
    Py_ssize_t ignored;
    if (rtype == TYPE_A && rdlen == 4)
        value = ntop4(b + at);
    else if (rtype == TYPE_AAAA && rdlen == 16)
        value = ntop6(b + at);
    else if (rtype == TYPE_NS || rtype == TYPE_CNAME || rtype == TYPE_PTR)
        value = read_name(p, at, 1, &ignored);
    else if (rtype == TYPE_HTTPS || rtype == TYPE_SVCB)
        svcb(p, at, end, &value, &hints);
    else
        value = Py_NewRef(Py_None);
    if (value == NULL) {
        Py_DECREF(name);
        return NULL;
    }
    if (hints == NULL)
        hints = Py_NewRef(empty_tuple);
    PyObject *fields[N_RESOURCE] = {name, PyLong_FromUnsignedLong(rtype),
                                    PyLong_FromUnsignedLong(ttl), value, hints};
    if (p->texts != NULL && fields[2] != NULL) { /* a TTL too: one int per value and call */
        PyObject *known = PyDict_SetDefault(p->texts, fields[2], fields[2]);
        Py_XINCREF(known);
        Py_SETREF(fields[2], known);
    }
    if (fields[1] == NULL || fields[2] == NULL) {
        for (int k = 0; k < N_RESOURCE; k++)
            Py_XDECREF(fields[k]);
        return NULL;
    }
    *pos = end;
    return instance(resource_type, resource_slots, fields, N_RESOURCE);
}

/* The question at *pos, as (name, type); *pos moves past it. */
static PyObject *
question(Parser *p, Py_ssize_t *pos)
{
    Py_ssize_t at;
    PyObject *name = read_name(p, *pos, 1, &at);
    if (name == NULL)
        return NULL;
    if (at + 4 > p->n) {
        Py_DECREF(name);
        return malformed(p, "question runs past the message");
    }
    PyObject *q = PyTuple_New(2);
    PyObject *qtype = PyLong_FromUnsignedLong(be16(p->b + at));
    if (q == NULL || qtype == NULL) {
        Py_XDECREF(q);
        Py_XDECREF(qtype);
        Py_DECREF(name);
        return NULL;
    }
    PyTuple_SET_ITEM(q, 0, name);
    PyTuple_SET_ITEM(q, 1, qtype);
    *pos = at + 4;
    return q;
}

/* A tuple of the `count` items (new references, stolen). */
static PyObject *
tuple_of(PyObject **items, Py_ssize_t count)
{
    PyObject *t = PyTuple_New(count);
    for (Py_ssize_t k = 0; k < count; k++) {
        if (t != NULL)
            PyTuple_SET_ITEM(t, k, items[k]);
        else
            Py_DECREF(items[k]);
    }
    return t;
}

static PyObject *
parse_message(Parser *p)
{
    const unsigned char *b = p->b;
    if (p->n < 12) {
        PyErr_SetString(malformed_error, "DNS message shorter than its header");
        return NULL;
    }
    const uint32_t ident = be16(b), flags = be16(b + 2), qd = be16(b + 4), an = be16(b + 6);
    if (qd > MAX_RECORDS || an > MAX_RECORDS) {
        PyErr_SetString(malformed_error, "implausible DNS section counts");
        return NULL;
    }
    PyObject *qs[MAX_RECORDS], *as[MAX_RECORDS];
    Py_ssize_t pos = 12, nq = 0, na = 0;
    while (nq < qd && (qs[nq] = question(p, &pos)) != NULL)
        nq++;
    while (nq == qd && na < an && (as[na] = answer(p, &pos)) != NULL)
        na++;
    PyObject *questions = NULL, *answers = NULL;
    if (PyErr_Occurred()) {
        while (nq > 0)
            Py_DECREF(qs[--nq]);
        while (na > 0)
            Py_DECREF(as[--na]);
        return NULL;
    }
    questions = tuple_of(qs, nq);
    answers = tuple_of(as, na);
    if (questions == NULL || answers == NULL)
        goto fail;
    if (p->why != NULL && nq == 0 && na == 0) {
        if (p->why_byte)
            PyErr_Format(malformed_error, "unsupported label type 0x%02x", p->why_byte);
        else
            PyErr_SetString(malformed_error, p->why);
        goto fail;
    }
    /* an error after a question or an answer: what came before it, truncated */
    PyObject *fields[N_MESSAGE] = {
        PyLong_FromUnsignedLong(ident),
        PyBool_FromLong(flags & 0x8000),
        PyLong_FromUnsignedLong((flags >> 11) & 0xF),
        PyLong_FromUnsignedLong(flags & 0xF),
        questions,
        answers,
        PyBool_FromLong(p->why != NULL),
    };
    if (fields[0] == NULL || fields[2] == NULL || fields[3] == NULL) {
        for (int k = 0; k < N_MESSAGE; k++)
            Py_XDECREF(fields[k]);
        return NULL;
    }
    return instance(message_type, message_slots, fields, N_MESSAGE);
fail:
    Py_XDECREF(questions);
    Py_XDECREF(answers);
    return NULL;
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
    p.texts = NULL;
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

/* Field k of a DnsMessage or DnsResource (new reference), through its slot descriptor. */
static PyObject *
field_of(PyObject *slot, PyObject *obj)
{
    return Py_TYPE(slot)->tp_descr_get(slot, obj, NULL);
}

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

/* names.NameCollector._learn of one answered message, in C: each address under the names
 * that lead to it (question, CNAME chain) in `name_addrs`, and (address, ts, name asked) on
 * the three `answered` lists. */
static int
learn(PyObject *questions, PyObject *answers, PyObject *ts, PyObject *name_addrs,
      PyObject *seen_addr, PyObject *seen_ts, PyObject *seen_name)
{
    int rc = -1;
    Py_ssize_t na = PyTuple_GET_SIZE(answers), nq = PyTuple_GET_SIZE(questions);
    PyObject *cname = PyDict_New(), *chains = PyList_New(0);
    if (cname == NULL || chains == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < na; k++) {
        PyObject *r = PyTuple_GET_ITEM(answers, k);
        PyObject *rtype = field_of(resource_slots[1], r);
        if (rtype == NULL)
            goto done;
        long t = PyLong_AsLong(rtype);
        Py_DECREF(rtype);
        if (t != TYPE_CNAME)
            continue;
        PyObject *name = field_of(resource_slots[0], r), *value = field_of(resource_slots[3], r);
        PyObject *lname = name ? lower_of(name) : NULL;
        PyObject *lvalue = NULL;
        if (value != NULL)
            lvalue = value == Py_None ? PyUnicode_FromString("") : lower_of(value);
        int bad = lname == NULL || lvalue == NULL || PyDict_SetItem(cname, lname, lvalue) < 0;
        Py_XDECREF(name);
        Py_XDECREF(value);
        Py_XDECREF(lname);
        Py_XDECREF(lvalue);
        if (bad)
            goto done;
    }
    for (Py_ssize_t k = 0; k < nq; k++) {
        PyObject *q = PyTuple_GET_ITEM(questions, k);
        PyObject *first = lower_of(PyTuple_GET_ITEM(q, 0));
        PyObject *chain = first ? PyList_New(1) : NULL;
        if (chain == NULL) {
            Py_XDECREF(first);
            goto done;
        }
        PyList_SET_ITEM(chain, 0, first);
        while (PyList_GET_SIZE(chain) < 16) {
            PyObject *next = PyDict_GetItemWithError(
                cname, PyList_GET_ITEM(chain, PyList_GET_SIZE(chain) - 1));
            if (next == NULL)
                break;
            if (PyList_Append(chain, next) < 0)
                break;
        }
        int bad = PyErr_Occurred() != NULL || PyList_Append(chains, chain) < 0;
        Py_DECREF(chain);
        if (bad)
            goto done;
    }
    for (Py_ssize_t k = 0; k < na; k++) {
        PyObject *r = PyTuple_GET_ITEM(answers, k);
        PyObject *rtype = field_of(resource_slots[1], r);
        PyObject *value = field_of(resource_slots[3], r);
        PyObject *hints = field_of(resource_slots[4], r);
        PyObject *addrs = NULL, *owner = NULL, *names = NULL, *asked = NULL, *name = NULL;
        int bad = rtype == NULL || value == NULL || hints == NULL;
        if (!bad) {
            long t = PyLong_AsLong(rtype);
            if ((t == TYPE_A || t == TYPE_AAAA) && value != Py_None
                && PyObject_IsTrue(value) == 1)
                addrs = PyTuple_Pack(1, value);
            else if (PyTuple_GET_SIZE(hints) > 0)
                addrs = Py_NewRef(hints);
        }
        if (!bad && addrs != NULL) {
            name = field_of(resource_slots[0], r);
            owner = name ? lower_of(name) : NULL;
            bad = owner == NULL;
            for (Py_ssize_t c = 0; !bad && c < PyList_GET_SIZE(chains); c++) {
                PyObject *chain = PyList_GET_ITEM(chains, c);
                Py_ssize_t at = PySequence_Index(chain, owner);
                if (at < 0) {
                    PyErr_Clear();
                    continue;
                }
                names = PyList_GetSlice(chain, 0, at + 1);
                asked = Py_NewRef(PyList_GET_ITEM(chain, 0));
                bad = names == NULL;
                break;
            }
            if (!bad && names == NULL) {
                names = PyList_New(1);
                bad = names == NULL;
                if (!bad) {
                    PyList_SET_ITEM(names, 0, Py_NewRef(owner));
                    asked = Py_NewRef(owner);
                }
            }
            for (Py_ssize_t i = 0; !bad && i < PyTuple_GET_SIZE(addrs); i++) {
                PyObject *a = PyTuple_GET_ITEM(addrs, i);
                for (Py_ssize_t j = 0; !bad && j < PyList_GET_SIZE(names); j++) {
                    PyObject *nm = PyList_GET_ITEM(names, j);
                    PyObject *set = PyDict_GetItemWithError(name_addrs, nm);
                    if (set == NULL) {
                        if (PyErr_Occurred()) {
                            bad = 1;
                            break;
                        }
                        set = PySet_New(NULL);
                        bad = set == NULL || PyDict_SetItem(name_addrs, nm, set) < 0;
                        Py_XDECREF(set); /* the dict holds it */
                        if (bad)
                            break;
                    }
                    bad = PySet_Add(set, a) < 0;
                }
                bad = bad || PyList_Append(seen_addr, a) < 0 || PyList_Append(seen_ts, ts) < 0
                      || PyList_Append(seen_name, asked) < 0;
            }
        }
        Py_XDECREF(rtype);
        Py_XDECREF(value);
        Py_XDECREF(hints);
        Py_XDECREF(addrs);
        Py_XDECREF(name);
        Py_XDECREF(owner);
        Py_XDECREF(names);
        Py_XDECREF(asked);
        if (bad)
            goto done;
    }
    rc = 0;
done:
    Py_XDECREF(cname);
    Py_XDECREF(chains);
    return rc;
}

/* collect(blob, ends, rows, packet, ts, numbers, qnames, answers, name_addrs, answered)
 *   -> (status, truncated)
 * The UDP DNS messages blob[ends[i-1]:ends[i]] for the positions i in `rows` (int64), as
 * NameCollector._dns parses them one by one: a row per question, its numbers appended to the
 * bytearray `numbers` as one ROW_BYTES record (names.DNS_ROW_NUMBERS: packet `packet[i]` int64,
 * qtype int32, id uint16, rcode uint8, response uint8, little-endian, packed), its name to
 * `qnames` and the message's answers to `answers`; the answers of NOERROR responses learnt
 * (names._learn) with the time `ts[i]`. `status` has a byte per row: 0 malformed, 1 a query,
 * 2 a response; `truncated` counts messages cut short. */
#define ROW_BYTES 16

static void
put_le(unsigned char *at, uint64_t v, int bytes)
{
    for (int k = 0; k < bytes; k++)
        at[k] = (unsigned char)(v >> (8 * k));
}

/* One row's numbers at the end of `numbers` (-1 on error). */
static int
put_row(PyObject *numbers, int64_t packet, long qtype, long id, long rcode, int response)
{
    Py_ssize_t at = PyByteArray_GET_SIZE(numbers);
    if (PyByteArray_Resize(numbers, at + ROW_BYTES) < 0)
        return -1;
    unsigned char *b = (unsigned char *)PyByteArray_AS_STRING(numbers) + at;
    put_le(b, (uint64_t)packet, 8);
    put_le(b + 8, (uint64_t)(uint32_t)(int32_t)qtype, 4);
    put_le(b + 12, (uint64_t)id, 2);
    b[14] = (unsigned char)rcode;
    b[15] = (unsigned char)response;
    return 0;
}

static PyObject *
collect(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer blob, ends, rows, packet, ts;
    PyObject *numbers, *qnames, *answer_rows, *name_addrs, *answered;
    if (resource_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_dns.setup() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*O!O!O!O!O!:collect", &blob, &ends, &rows, &packet,
                          &ts, &PyByteArray_Type, &numbers, &PyList_Type, &qnames, &PyList_Type,
                          &answer_rows, &PyDict_Type, &name_addrs, &PyTuple_Type, &answered))
        return NULL;
    PyObject *status = NULL, *result = NULL, *texts = NULL;
    Py_ssize_t n_ends = ends.len / 8, n = rows.len / 8, truncated = 0;
    if (PyTuple_GET_SIZE(answered) != 3 || packet.len != ends.len || ts.len != ends.len) {
        PyErr_SetString(PyExc_ValueError, "collect: arrays or lists of different sizes");
        goto out;
    }
    PyObject *seen_addr = PyTuple_GET_ITEM(answered, 0), *seen_ts = PyTuple_GET_ITEM(answered, 1),
             *seen_name = PyTuple_GET_ITEM(answered, 2);
    if (!PyList_Check(seen_addr) || !PyList_Check(seen_ts) || !PyList_Check(seen_name)) {
        PyErr_SetString(PyExc_TypeError, "collect: answered must hold three lists");
        goto out;
    }
    status = PyBytes_FromStringAndSize(NULL, n);
    texts = PyDict_New();
    if (status == NULL || texts == NULL)
        goto fail;
    unsigned char *st = (unsigned char *)PyBytes_AS_STRING(status);
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
        p.texts = texts;
        p.b = (const unsigned char *)blob.buf + a;
        p.n = b - a;
        PyObject *m = parse_message(&p);
        for (Py_ssize_t j = 0; j < p.n_seen; j++)
            Py_DECREF(p.seen_text[j]);
        if (m == NULL) {
            if (!PyErr_ExceptionMatches(malformed_error))
                goto fail;
            PyErr_Clear();
            st[k] = 0;
            continue;
        }
        PyObject *f[N_MESSAGE];
        for (int j = 0; j < N_MESSAGE; j++)
            f[j] = field_of(message_slots[j], m);
        Py_DECREF(m);
        int bad = 0;
        for (int j = 0; j < N_MESSAGE; j++)
            bad |= f[j] == NULL;
        PyObject *tso = bad ? NULL : PyLong_FromLongLong(tm[i]);
        bad |= tso == NULL;
        if (!bad) {
            int response = f[1] == Py_True;
            st[k] = response ? 2 : 1;
            truncated += f[6] == Py_True;
            PyObject *questions = f[4], *answers = f[5];
            Py_ssize_t nq = PyTuple_GET_SIZE(questions);
            PyObject *none_q = NULL;
            if (nq == 0 && PyTuple_GET_SIZE(answers) > 0) {
                none_q = Py_BuildValue("((si))", "", -1);
                bad = none_q == NULL;
                questions = none_q;
                nq = 1;
            }
            long id = bad ? 0 : PyLong_AsLong(f[0]), rcode = bad ? 0 : PyLong_AsLong(f[3]);
            for (Py_ssize_t q = 0; !bad && q < nq; q++) {
                PyObject *qt = PyTuple_GET_ITEM(questions, q);
                long qtype = PyLong_AsLong(PyTuple_GET_ITEM(qt, 1));
                bad = PyErr_Occurred() != NULL
                      || put_row(numbers, pk[i], qtype, id, rcode, response) < 0
                      || PyList_Append(qnames, PyTuple_GET_ITEM(qt, 0)) < 0
                      || PyList_Append(answer_rows, answers) < 0;
            }
            Py_XDECREF(none_q);
            if (!bad && response && PyLong_AsLong(f[3]) == 0 && PyTuple_GET_SIZE(answers) > 0)
                bad = learn(f[4], answers, tso, name_addrs, seen_addr, seen_ts, seen_name) < 0;
        }
        Py_XDECREF(tso);
        for (int j = 0; j < N_MESSAGE; j++)
            Py_XDECREF(f[j]);
        if (bad)
            goto fail;
    }
    result = Py_BuildValue("(On)", status, truncated);
fail:
    Py_XDECREF(status);
    Py_XDECREF(texts);
out:
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

/* client_hello(handshake) -> (sni, alpn, legacy_version): names.parse_client_hello in C,
 * with the same results and MalformedError in the same cases (checked by the tests against
 * the Python parser on real and mutated hellos). Here, not in a module of its own, because
 * this extension is the one built beside the name parsers; it shares their error. */
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
    const unsigned char *b = view.buf;
    const Py_ssize_t len = view.len;
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
    PyBuffer_Release(&view);
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
     "collect(blob, ends, rows, packet, ts, numbers, qnames, answers, name_addrs, answered)\n"
     "    -> (status, truncated)\n\n"
     "Many UDP DNS messages of a NameJob parsed and learnt as NameCollector._dns does."},
    {"client_hello", client_hello, METH_VARARGS,
     "client_hello(handshake) -> (sni, alpn, legacy_version)\n\n"
     "names.parse_client_hello of a complete ClientHello handshake message, compiled."},
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
