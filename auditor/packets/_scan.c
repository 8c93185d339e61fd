/*
 * auditor.packets._scan: the record walk of pcap and pcapng files, compiled.
 *
 * The walk from one record header to the next is the one step of reading a capture that
 * cannot be vectorised (a record's position depends on the length of the one before), and in
 * Python it is most of the reader's time. pcap_records and scan_pcapng walk exactly as
 * _scan_pcap and _scan_pcapng in pcapfile.py do (pcapng_records as scan_pcapng), and the tests
 * check that the two agree on hostile input. When this module is not built (no compiler),
 * pcapfile.py uses its own.
 *
 * All read only the bytes [pos, end) of the buffer, after checking that
 * 0 <= pos <= end <= len(buffer); every read of a header is preceded by a check that the
 * header lies before `end`. Lengths are 32-bit and positions 64-bit, so no sum overflows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define EPB 0x00000006u
#define SPB 0x00000003u
#define PB 0x00000002u
#define SHB 0x0A0D0D0Au
#define IDB 0x00000001u

static inline uint32_t
read_u32(const unsigned char *p, int big)
{
    if (big)
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

/* The block types pcapfile._SKIPPED_BLOCKS lists: read past, never the caller's business. */
static inline int
skipped_block(uint32_t type)
{
    switch (type) {
    case 0x00000004u: /* name resolution */
    case 0x00000005u: /* interface statistics */
    case 0x00000007u:
    case 0x00000008u:
    case 0x00000009u:
    case 0x0000000Au: /* decryption secrets */
    case 0x00000BADu: /* custom */
    case 0x40000BADu: /* custom, not to be copied */
        return 1;
    default:
        return 0;
    }
}

/* One walk over pcapng blocks; with out == NULL it only counts. Returns the number of packet
 * blocks and sets *stop. */
static Py_ssize_t
walk_pcapng(const unsigned char *b, int64_t pos, int64_t end, int big, int64_t *out,
            int64_t *stop)
{
    Py_ssize_t n = 0;
    while (pos + 12 <= end) {
        uint32_t type = read_u32(b + pos, big);
        uint32_t length = read_u32(b + pos + 4, big);
        int64_t next = pos + (int64_t)length;
        if (next > end || length < 12 || (length & 3u) != 0)
            break;
        if (type == EPB || type == SPB || type == PB) {
            if (out != NULL)
                out[n] = pos;
            n++;
        }
        else if (type == SHB || type == IDB || !skipped_block(type)) {
            break;
        }
        pos = next;
    }
    *stop = pos;
    return n;
}

typedef Py_ssize_t (*walker)(const unsigned char *, int64_t, int64_t, int, int64_t *, int64_t *);

static PyObject *
scan(PyObject *args, walker walk)
{
    Py_buffer view;
    long long pos, end;
    int big;
    if (!PyArg_ParseTuple(args, "y*LLp", &view, &pos, &end, &big))
        return NULL;
    if (pos < 0 || end < pos || end > (long long)view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "scan range outside the buffer");
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)view.buf;
    int64_t stop = pos;
    Py_ssize_t count;
    Py_BEGIN_ALLOW_THREADS
    count = walk(b, pos, end, big, NULL, &stop);
    Py_END_ALLOW_THREADS
    PyObject *offsets = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(int64_t));
    if (offsets == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (count) {
        int64_t *out = (int64_t *)PyBytes_AS_STRING(offsets);
        Py_BEGIN_ALLOW_THREADS
        walk(b, pos, end, big, out, &stop);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&view);
    PyObject *result = Py_BuildValue("(NL)", offsets, (long long)stop);
    return result;
}


/* Walk the pcap records once, keeping their offsets in a growing array, then read each
 * record's header and first `head` data bytes by offset (no longer a chain of dependent
 * loads, so the memory system serves many at once). */
static PyObject *
pcap_records(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    long long pos, end, frac_ns;
    Py_ssize_t head;
    int big;
    if (!PyArg_ParseTuple(args, "y*LLpLn", &view, &pos, &end, &big, &frac_ns, &head))
        return NULL;
    if (pos < 0 || end < pos || end > (long long)view.len || head < 0 || head > 65536
        || frac_ns < 1 || frac_ns > 1000) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "bad arguments to pcap_records");
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)view.buf;
    const int64_t buflen = (int64_t)view.len;
    Py_ssize_t cap = 1024, n = 0;
    int64_t *offs = PyMem_RawMalloc((size_t)cap * sizeof(int64_t));
    if (offs == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    while (pos + 16 <= end) {
        int64_t next = pos + 16 + (int64_t)read_u32(b + pos + 8, big);
        if (next > end)
            break;
        if (n == cap) {
            int64_t *grown = PyMem_RawRealloc(offs, (size_t)cap * 2 * sizeof(int64_t));
            if (grown == NULL) {
                failed = 1;
                break;
            }
            offs = grown;
            cap *= 2;
        }
        offs[n++] = pos;
        pos = next;
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyMem_RawFree(offs);
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    PyObject *cols[5] = {NULL, NULL, NULL, NULL, NULL};
    for (int c = 0; c < 4; c++)
        cols[c] = PyByteArray_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    cols[4] = PyByteArray_FromStringAndSize(NULL, n * head);
    for (int c = 0; c < 5; c++) {
        if (cols[c] == NULL) {
            for (int k = 0; k < 5; k++)
                Py_XDECREF(cols[k]);
            PyMem_RawFree(offs);
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    int64_t *data = (int64_t *)PyByteArray_AS_STRING(cols[0]);
    int64_t *caplen = (int64_t *)PyByteArray_AS_STRING(cols[1]);
    int64_t *wirelen = (int64_t *)PyByteArray_AS_STRING(cols[2]);
    int64_t *ts = (int64_t *)PyByteArray_AS_STRING(cols[3]);
    unsigned char *heads = (unsigned char *)PyByteArray_AS_STRING(cols[4]);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t at = offs[i];
        const unsigned char *h = b + at;
        data[i] = at + 16;
        caplen[i] = (int64_t)read_u32(h + 8, big);
        wirelen[i] = (int64_t)read_u32(h + 12, big);
        ts[i] = (int64_t)read_u32(h, big) * 1000000000LL + (int64_t)read_u32(h + 4, big) * frac_ns;
        /* the first `head` bytes of the record's data; zeros past its captured length */
        int64_t have = buflen - (at + 16);
        if (have > caplen[i])
            have = caplen[i];
        Py_ssize_t copy = have < (int64_t)head ? (Py_ssize_t)(have > 0 ? have : 0) : head;
        unsigned char *row = heads + i * head;
        if (copy)
            memcpy(row, h + 16, (size_t)copy);
        if (copy < head)
            memset(row + copy, 0, (size_t)(head - copy));
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(offs);
    PyBuffer_Release(&view);
    return Py_BuildValue("(LNNNNN)", (long long)pos, cols[0], cols[1], cols[2], cols[3], cols[4]);
}

static PyObject *
scan_pcapng(PyObject *self, PyObject *args)
{
    (void)self;
    return scan(args, walk_pcapng);
}

/* The packet blocks in buffer[pos:end] (as scan_pcapng finds them), and for each its first
 * `width` bytes (zeros past the buffer) and its trailing length field, read while the block
 * is still in cache. */
static PyObject *
pcapng_records(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    long long pos, end;
    Py_ssize_t width;
    int big;
    if (!PyArg_ParseTuple(args, "y*LLpn", &view, &pos, &end, &big, &width))
        return NULL;
    if (pos < 0 || end < pos || end > (long long)view.len || width < 0 || width > 65536) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "bad arguments to pcapng_records");
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)view.buf;
    const int64_t buflen = (int64_t)view.len;
    int64_t stop = pos;
    Py_ssize_t count;
    Py_BEGIN_ALLOW_THREADS
    count = walk_pcapng(b, pos, end, big, NULL, &stop);
    Py_END_ALLOW_THREADS
    PyObject *offsets = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(int64_t));
    PyObject *rows = PyBytes_FromStringAndSize(NULL, count * width);
    PyObject *trailers = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(int64_t));
    if (offsets == NULL || rows == NULL || trailers == NULL) {
        Py_XDECREF(offsets);
        Py_XDECREF(rows);
        Py_XDECREF(trailers);
        PyBuffer_Release(&view);
        return NULL;
    }
    int64_t *out = (int64_t *)PyBytes_AS_STRING(offsets);
    unsigned char *row = (unsigned char *)PyBytes_AS_STRING(rows);
    int64_t *trail = (int64_t *)PyBytes_AS_STRING(trailers);
    Py_BEGIN_ALLOW_THREADS
    if (count) {
        walk_pcapng(b, pos, end, big, out, &stop);
        for (Py_ssize_t i = 0; i < count; i++) {
            const int64_t at = out[i];
            int64_t have = buflen - at;
            Py_ssize_t copy = have < (int64_t)width ? (Py_ssize_t)(have > 0 ? have : 0) : width;
            unsigned char *r = row + i * width;
            if (copy)
                memcpy(r, b + at, (size_t)copy);
            if (copy < width)
                memset(r + copy, 0, (size_t)(width - copy));
            /* the walk checked that the block lies whole before end: its last 4 bytes too */
            const uint32_t length = read_u32(b + at + 4, big);
            trail[i] = (int64_t)read_u32(b + at + length - 4, big);
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return Py_BuildValue("(NLNN)", offsets, (long long)stop, rows, trailers);
}

static PyMethodDef methods[] = {
    {"pcap_records", pcap_records, METH_VARARGS,
     "pcap_records(buffer, pos, end, big_endian, frac_ns, head)\n"
     "    -> (pos, data, caplen, wirelen, ts_ns, heads)\n\n"
     "The whole pcap records in buffer[pos:end] as columns (bytearrays of native int64):\n"
     "where each one's data starts, its captured and original length, its timestamp in ns\n"
     "(seconds * 1e9 + fraction * frac_ns), and the first `head` bytes of its data, one row\n"
     "per record, zeros past its captured length; then where the walk stopped."},
    {"pcapng_records", pcapng_records, METH_VARARGS,
     "pcapng_records(buffer, pos, end, big_endian, width) -> (offsets, pos, rows, trailers)\n\n"
     "As scan_pcapng, and for each packet block its first `width` bytes (one row each,\n"
     "zeros past the buffer) and its trailing length field (native int64)."},
    {"scan_pcapng", scan_pcapng, METH_VARARGS,
     "scan_pcapng(buffer, pos, end, big_endian) -> (offsets, pos)\n\n"
     "The offsets (native int64 bytes) of the packet blocks (EPB, SPB, PB) in\n"
     "buffer[pos:end], reading past the skipped block types, and where the walk stopped:\n"
     "a block that does not fit, a bad length, or a block the caller must read."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "auditor.packets._scan",
    "The record walk of pcap and pcapng files, compiled (see pcapfile.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__scan(void)
{
    return PyModule_Create(&module);
}
