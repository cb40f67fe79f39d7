/*
 * famfs_py.omf._replay: decode a run of raw log entries in one call, for replay.
 *
 * Replay at mount looks at every entry of the log (a 256 MiB log holds ~490,000), and a
 * Python decode into dataclasses with its checks costs several microseconds per entry. This
 * module does the common case in C: an entry whose CRC matches (zlib's CRC-32 over the 536
 * bytes before it, as famfs_py.omf computes it), whose seqnum is its index, that is a file or
 * a directory, whose path and fmap pass every check famfs_py.omf.entries applies
 * (`path_problem`, `fmap_problems`) is "clean", and comes back as a short tuple. Anything
 * else comes back as None, and replay decodes that entry with famfs_py.omf (the reference,
 * which also words the reasons): the two must agree on which entries are clean, and
 * tests/test_model_replay.py checks that they do.
 *
 * scan(buffer, first_index, dev_size, alloc_unit, reserved) -> list, one item per entry:
 *   None                                              not clean: use the reference
 *   (head, name, mode, uid, gid, 0, None, None)       a clean directory (mkdir)
 *   (head, name, mode, uid, gid, size, payload, ext)  a clean file: payload is the entry's
 *       520 payload bytes (decoded later, on first use), ext its extents flattened as
 *       (offset, length, offset, length, ...)
 * head is the path before its last '/' ("" at the top), name what follows; both decoded as
 * famfs_py.omf decodes paths (UTF-8, surrogateescape). mode, uid, gid as logged.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#define ENTRY_SIZE 544
#define CRC_OFFSET 536
#define PAYLOAD_OFFSET 16
#define PAYLOAD_SIZE 520
#define MAX_PATHLEN 80
#define LOG_FILE 0
#define LOG_MKDIR 1
#define FILE_PATH_OFFSET 24 /* within the payload: size, flags, uid, gid, mode */
#define FMAP_OFFSET 104     /* within the payload */
#define MKDIR_PATH_OFFSET 12
#define EXT_SIMPLE 0
#define EXT_INTERLEAVE 1
#define MAX_SIMPLE_EXTENTS 16

static uint64_t u64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v; /* the format is little-endian, as is every host famfs runs on */
}

static uint32_t u32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Length of a usable path (famfs_py.omf.path_problem finds nothing), or -1. */
static Py_ssize_t path_length(const unsigned char *p) {
    const unsigned char *nul = memchr(p, 0, MAX_PATHLEN);
    if (nul == NULL)
        return -1; /* no NUL: longer than MAX_PATHLEN - 1 */
    Py_ssize_t len = nul - p;
    if (len == 0 || p[0] == '/')
        return -1;
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= len; i++) {
        if (i == len || p[i] == '/') {
            Py_ssize_t n = i - start;
            if (n == 0 || (n == 1 && p[start] == '.') ||
                (n == 2 && p[start] == '.' && p[start + 1] == '.'))
                return -1; /* empty, '.' or '..' component */
            start = i + 1;
        }
    }
    return len;
}

/* Whether one extent passes fmap_problems' per-extent checks. */
static int extent_ok(uint64_t off, uint64_t len, uint64_t dev_size, uint64_t au,
                     uint64_t reserved) {
    if (off == 0 || off < reserved || len == 0)
        return 0;
    if (off % au || len % au)
        return 0;
    if (dev_size && (unsigned __int128)off + len > dev_size)
        return 0;
    return 1;
}

/* The extents of a clean fmap as (offset, length, ...), or NULL with no error set when the
 * fmap has a problem. */
static PyObject *clean_extents(const unsigned char *fmap, uint64_t size, uint64_t dev_size,
                               uint64_t au, uint64_t reserved) {
    uint32_t ext_type = u32(fmap);
    uint32_t count = u32(fmap + 8);
    const unsigned char *ext;
    uint64_t n;
    if (ext_type == EXT_SIMPLE && count <= MAX_SIMPLE_EXTENTS) {
        ext = fmap + 16;
        n = count;
    } else if (ext_type == EXT_INTERLEAVE && count == 1) {
        uint64_t nstrips = u64(fmap + 16);
        uint64_t chunk = u64(fmap + 24);
        if (nstrips == 0 || nstrips > MAX_SIMPLE_EXTENTS || chunk == 0 || chunk % au)
            return NULL;
        ext = fmap + 32;
        n = nstrips;
    } else {
        return NULL;
    }
    if (size == 0 || n == 0)
        return NULL;
    unsigned __int128 capacity = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = u64(ext + 24 * i + 8), len = u64(ext + 24 * i + 16);
        if (!extent_ok(off, len, dev_size, au, reserved))
            return NULL;
        if (ext_type == EXT_INTERLEAVE && len != u64(ext + 16))
            return NULL; /* strips differ in length */
        capacity += len;
    }
    if (capacity < size)
        return NULL;
    PyObject *out = PyTuple_New((Py_ssize_t)(2 * n));
    if (out == NULL)
        return NULL;
    for (uint64_t i = 0; i < n; i++) {
        PyObject *off = PyLong_FromUnsignedLongLong(u64(ext + 24 * i + 8));
        PyObject *len = PyLong_FromUnsignedLongLong(u64(ext + 24 * i + 16));
        if (off == NULL || len == NULL) {
            Py_XDECREF(off);
            Py_XDECREF(len);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, 2 * i, off);
        PyTuple_SET_ITEM(out, 2 * i + 1, len);
    }
    return out;
}

/* The tuple for one clean entry; Py_None (a new reference) for one that is not; NULL on
 * error (memory). */
static PyObject *one_entry(const unsigned char *e, uint64_t index, uint64_t dev_size, uint64_t au,
                           uint64_t reserved) {
    if (u64(e + CRC_OFFSET) != (uint64_t)crc32(0L, e, CRC_OFFSET) || u64(e) != index)
        Py_RETURN_NONE;
    const unsigned char *pl = e + PAYLOAD_OFFSET;
    uint32_t type = u32(e + 8);
    const unsigned char *path;
    uint32_t uid, gid, mode;
    uint64_t size = 0;
    PyObject *payload = NULL, *extents = NULL;
    if (type == LOG_FILE) {
        size = u64(pl);
        uid = u32(pl + 12);
        gid = u32(pl + 16);
        mode = u32(pl + 20);
        path = pl + FILE_PATH_OFFSET;
    } else if (type == LOG_MKDIR) {
        uid = u32(pl);
        gid = u32(pl + 4);
        mode = u32(pl + 8);
        path = pl + MKDIR_PATH_OFFSET;
    } else {
        Py_RETURN_NONE;
    }
    Py_ssize_t len = path_length(path);
    if (len < 0)
        Py_RETURN_NONE;
    if (type == LOG_FILE) {
        extents = clean_extents(pl + FMAP_OFFSET, size, dev_size, au, reserved);
        if (extents == NULL) {
            if (PyErr_Occurred())
                return NULL;
            Py_RETURN_NONE;
        }
        payload = PyBytes_FromStringAndSize((const char *)pl, PAYLOAD_SIZE);
        if (payload == NULL) {
            Py_DECREF(extents);
            return NULL;
        }
    } else {
        payload = Py_NewRef(Py_None);
        extents = Py_NewRef(Py_None);
    }
    Py_ssize_t slash = len;
    while (slash > 0 && path[slash - 1] != '/')
        slash--;
    Py_ssize_t head_len = slash > 0 ? slash - 1 : 0;
    PyObject *head = PyUnicode_DecodeUTF8((const char *)path, head_len, "surrogateescape");
    PyObject *name =
        PyUnicode_DecodeUTF8((const char *)path + slash, len - slash, "surrogateescape");
    if (head == NULL || name == NULL) {
        Py_XDECREF(head);
        Py_XDECREF(name);
        Py_DECREF(payload);
        Py_DECREF(extents);
        return NULL;
    }
    return Py_BuildValue("(NNIIIKNN)", head, name, mode, uid, gid, (unsigned long long)size,
                         payload, extents);
}

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer buf;
    unsigned long long first, dev_size, au, reserved;
    if (!PyArg_ParseTuple(args, "y*KKKK:scan", &buf, &first, &dev_size, &au, &reserved))
        return NULL;
    if (au == 0 || buf.len % ENTRY_SIZE) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError,
                        "scan needs whole log entries and a non-zero allocation unit");
        return NULL;
    }
    Py_ssize_t count = buf.len / ENTRY_SIZE;
    PyObject *out = PyList_New(count);
    if (out == NULL) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    const unsigned char *base = buf.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = one_entry(base + i * ENTRY_SIZE, first + (uint64_t)i, dev_size, au,
                                   reserved);
        if (item == NULL) {
            Py_DECREF(out);
            PyBuffer_Release(&buf);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    PyBuffer_Release(&buf);
    return out;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Decode a run of log entries; see the module's comment."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "famfs_py.omf._replay",
    "Decode a run of raw log entries in one call (replay's common case).", -1, methods,
};

PyMODINIT_FUNC PyInit__replay(void) { return PyModule_Create(&module); }
