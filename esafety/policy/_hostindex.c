/* The domain index's hot path in C: host -> category bits, one call per request.
 *
 * Same table and semantics as the pure-Python Table in domainindex.py (the reference; tests hold
 * the two equal). Each label suffix of a host is hashed with SipHash-1-3 under the index's own
 * random key, so nobody can choose a name that collides with a listed one, and looked up in an
 * open-addressing table of 64-bit keys with a parallel table of category masks.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define NON_ASCII (1ULL << 63)    /* classify: IDNA is Python's job; nothing looked up */
#define ADDRESS_LIKE (1ULL << 62) /* classify: may be an IP literal; Python decides */
#define HOST_MAX 1024             /* longer hosts (never valid names) are lowered on the heap */

static inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

#define SIPROUND                                                   \
    do {                                                           \
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);  \
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                     \
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                     \
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);  \
    } while (0)

static uint64_t siphash13(uint64_t k0, uint64_t k1, const unsigned char *in, size_t len)
{
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    const unsigned char *end = in + (len & ~(size_t)7);
    for (; in < end; in += 8) {
        uint64_t m = 0;
        for (int i = 7; i >= 0; i--) /* little-endian, whatever the host's byte order */
            m = (m << 8) | in[i];
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (int i = (int)(len & 7) - 1; i >= 0; i--)
        b |= (uint64_t)in[i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

typedef struct {
    PyObject_HEAD
    Py_buffer keys_view, masks_view;
    uint64_t *keys, *masks;
    uint64_t slot_mask, k0, k1;
    Py_ssize_t entries, capacity;
    int single_label, writable;
} Table;

static uint64_t find(const Table *t, const unsigned char *s, size_t len)
{
    uint64_t k = siphash13(t->k0, t->k1, s, len) | 1; /* 0 marks an empty slot */
    uint64_t i = k & t->slot_mask;
    for (uint64_t n = 0; n <= t->slot_mask; n++, i = (i + 1) & t->slot_mask) { /* bounded: a full table ends */
        uint64_t v = t->keys[i];
        if (v == k)
            return t->masks[i];
        if (!v)
            return 0;
    }
    return 0;
}

/* OR of the bits of the host and of every parent domain; the top-level label alone only when
 * some entry is a single label. */
static uint64_t lookup_bytes(const Table *t, const unsigned char *s, size_t len)
{
    size_t end = len;
    if (!t->single_label) { /* suffixes start at offsets <= the last dot: the top-level label is skipped */
        while (end && s[end - 1] != '.')
            end--;
        if (!end)
            return 0;
        end--;
    }
    uint64_t bits = 0;
    size_t start = 0;
    for (;;) {
        bits |= find(t, s + start, len - start);
        const unsigned char *dot = memchr(s + start, '.', len - start);
        if (!dot)
            return bits;
        start = (size_t)(dot - s) + 1;
        if (start > end)
            return bits;
    }
}

static int check_buffer(Py_buffer *view, const char *what)
{
    if (view->len % 8 || ((uintptr_t)view->buf & 7)) {
        PyErr_Format(PyExc_ValueError, "%s: not an aligned table of 64-bit words", what);
        return -1;
    }
    return 0;
}

static int get_table(PyObject *obj, Py_buffer *view, int *writable, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) == 0) {
        *writable = 1;
    } else {
        PyErr_Clear();
        if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
            return -1;
        *writable = 0;
    }
    if (check_buffer(view, what) < 0) {
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int Table_init(Table *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"keys", "masks", "k0", "k1", "single_label", "entries", NULL};
    PyObject *keys, *masks;
    unsigned long long k0, k1;
    int single_label;
    Py_ssize_t entries;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOKKpn", kwlist, &keys, &masks, &k0, &k1, &single_label,
                                     &entries))
        return -1;
    if (self->keys) {
        PyErr_SetString(PyExc_TypeError, "Table is already initialised");
        return -1;
    }
    int kw, mw;
    if (get_table(keys, &self->keys_view, &kw, "keys") < 0)
        return -1;
    if (get_table(masks, &self->masks_view, &mw, "masks") < 0) {
        PyBuffer_Release(&self->keys_view);
        return -1;
    }
    Py_ssize_t slots = self->keys_view.len / 8;
    if (slots < 2 || (slots & (slots - 1)) || self->masks_view.len != self->keys_view.len || entries < 0 ||
        entries >= slots) {
        PyBuffer_Release(&self->keys_view);
        PyBuffer_Release(&self->masks_view);
        PyErr_SetString(PyExc_ValueError, "keys and masks must be equal tables of a power-of-two size, not full");
        return -1;
    }
    self->keys = self->keys_view.buf;
    self->masks = self->masks_view.buf;
    self->slot_mask = (uint64_t)slots - 1;
    self->capacity = slots / 2; /* load <= 0.5 keeps probe runs short */
    self->k0 = k0;
    self->k1 = k1;
    self->single_label = single_label;
    self->entries = entries;
    self->writable = kw && mw;
    return 0;
}

static void Table_dealloc(Table *self)
{
    if (self->keys) {
        PyBuffer_Release(&self->keys_view);
        PyBuffer_Release(&self->masks_view);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Table_lookup(Table *self, PyObject *host)
{
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(host, &len);
    if (s)
        return PyLong_FromUnsignedLongLong(lookup_bytes(self, (const unsigned char *)s, (size_t)len));
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return NULL;
    /* Lone surrogates (undecodable bytes in a hostile Host): its parents are still plain names. */
    PyErr_Clear();
    PyObject *b = PyUnicode_AsEncodedString(host, "utf-8", "surrogatepass");
    if (!b)
        return NULL;
    uint64_t bits = lookup_bytes(self, (const unsigned char *)PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
    Py_DECREF(b);
    return PyLong_FromUnsignedLongLong(bits);
}

/* classify(host) -> (normalised host, bits): lower-cased, trailing dots gone, then looked up. A
 * non-ASCII host or one that may be an address (a trailing digit, a colon, "0x") is returned with
 * a mark instead, for Python to finish. The host object itself is returned when already normal. */
static PyObject *Table_classify(Table *self, PyObject *host)
{
    if (!PyUnicode_Check(host)) {
        PyErr_SetString(PyExc_TypeError, "host must be a str");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(host))
        return Py_BuildValue("(OK)", host, NON_ASCII);
    const unsigned char *raw = PyUnicode_1BYTE_DATA(host);
    Py_ssize_t len = PyUnicode_GET_LENGTH(host);
    while (len && raw[len - 1] == '.')
        len--;
    unsigned char stack[HOST_MAX], *low = len <= HOST_MAX ? stack : PyMem_Malloc((size_t)len);
    if (!low)
        return PyErr_NoMemory();
    int changed = len != PyUnicode_GET_LENGTH(host), address_like = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char c = raw[i];
        if (c >= 'A' && c <= 'Z') {
            c += 'a' - 'A';
            changed = 1;
        }
        if (c == ':' || (c == 'x' && i && low[i - 1] == '0'))
            address_like = 1;
        low[i] = c;
    }
    if (len && low[len - 1] >= '0' && low[len - 1] <= '9')
        address_like = 1;
    PyObject *name = !changed ? (Py_INCREF(host), host)
                     : len ? PyUnicode_FromStringAndSize((const char *)low, len) : PyUnicode_New(0, 127);
    uint64_t bits = address_like ? ADDRESS_LIKE : lookup_bytes(self, low, (size_t)len);
    if (low != stack)
        PyMem_Free(low);
    if (!name)
        return NULL;
    PyObject *out = PyTuple_New(2), *b = PyLong_FromUnsignedLongLong(bits);
    if (!out || !b) {
        Py_XDECREF(out);
        Py_XDECREF(b);
        Py_DECREF(name);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, name);
    PyTuple_SET_ITEM(out, 1, b);
    return out;
}

/* insert(domains, bit): add normalised domains with a category bit; a domain already present
 * ORs the bit into its mask. */
static PyObject *Table_insert(Table *self, PyObject *args)
{
    PyObject *domains;
    unsigned long long bit;
    if (!PyArg_ParseTuple(args, "OK", &domains, &bit))
        return NULL;
    if (!self->writable) {
        PyErr_SetString(PyExc_TypeError, "a loaded index is read-only");
        return NULL;
    }
    PyObject *it = PyObject_GetIter(domains);
    if (!it)
        return NULL;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        Py_ssize_t len;
        const char *s = PyUnicode_Check(item) ? PyUnicode_AsUTF8AndSize(item, &len) : NULL;
        if (!s) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "domains must be str");
            Py_DECREF(item);
            Py_DECREF(it);
            return NULL;
        }
        uint64_t k = siphash13(self->k0, self->k1, (const unsigned char *)s, (size_t)len) | 1;
        uint64_t i = k & self->slot_mask;
        while (self->keys[i] && self->keys[i] != k)
            i = (i + 1) & self->slot_mask;
        if (!self->keys[i]) {
            if (self->entries >= self->capacity) {
                Py_DECREF(item);
                Py_DECREF(it);
                PyErr_SetString(PyExc_ValueError, "more items than the count given");
                return NULL;
            }
            self->keys[i] = k;
            self->entries++;
        }
        self->masks[i] |= bit;
        if (!memchr(s, '.', (size_t)len))
            self->single_label = 1;
        Py_DECREF(item);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Table_get_entries(Table *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->entries);
}

static PyObject *Table_get_single_label(Table *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->single_label);
}

static PyMethodDef Table_methods[] = {
    {"lookup", (PyCFunction)Table_lookup, METH_O, "lookup(host) -> OR of the bits of a normalised host and its parents"},
    {"classify", (PyCFunction)Table_classify, METH_O, "classify(host) -> (normalised host, bits or a mark)"},
    {"insert", (PyCFunction)Table_insert, METH_VARARGS, "insert(domains, bit): add normalised domains"},
    {NULL},
};

static PyGetSetDef Table_getset[] = {
    {"entries", (getter)Table_get_entries, NULL, "distinct domains held", NULL},
    {"single_label", (getter)Table_get_single_label, NULL, "some entry is a single label", NULL},
    {NULL},
};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "esafety.policy._hostindex.Table",
    .tp_basicsize = sizeof(Table),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Table(keys, masks, k0, k1, single_label, entries): the index over two buffers of 64-bit words",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Table_init,
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_methods = Table_methods,
    .tp_getset = Table_getset,
};

static PyObject *py_siphash13(PyObject *Py_UNUSED(mod), PyObject *args)
{
    unsigned long long k0, k1;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "KKy*", &k0, &k1, &data))
        return NULL;
    uint64_t h = siphash13(k0, k1, data.buf, (size_t)data.len);
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLongLong(h);
}

static PyMethodDef module_methods[] = {
    {"siphash13", py_siphash13, METH_VARARGS, "siphash13(k0, k1, data) -> 64-bit SipHash-1-3"},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hostindex", "The domain index's lookups in C (see domainindex.py).", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__hostindex(void)
{
    if (PyType_Ready(&TableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&TableType);
    if (PyModule_AddObject(m, "Table", (PyObject *)&TableType) < 0 ||
        PyModule_AddObject(m, "NON_ASCII", PyLong_FromUnsignedLongLong(NON_ASCII)) < 0 ||
        PyModule_AddObject(m, "ADDRESS_LIKE", PyLong_FromUnsignedLongLong(ADDRESS_LIKE)) < 0) {
        Py_DECREF(&TableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
