/* famfs_py.dax._region: a mapping of device memory that Python code can hold safely.
 *
 * `Region` owns one mmap'd range and exports a buffer over a window of it (memoryview,
 * numpy.frombuffer, ...). Python 3.11 cannot give an object the buffer protocol, and
 * mmap.mmap cannot map a window of a larger, aligned mapping (device dax refuses any mapping
 * whose address, offset or length is not a multiple of the device's alignment), so this small
 * type does the two things famfs-py needs:
 *   - close() while views are alive succeeds: the range is unmapped when the last view goes;
 *   - revoke() replaces the whole range with inaccessible memory at once (the device is being
 *     removed): a view still held then faults instead of reading memory a later mapping reuses.
 * mmap()/munmap() are exposed too, raising OSError, so that no other module calls libc. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

enum { OPEN = 0, CLOSING = 1, UNMAPPED = 2 };

typedef struct {
    PyObject_HEAD
    char *map_addr;     /* the owned mapping */
    Py_ssize_t map_len;
    char *buf;          /* the exported window, inside the mapping */
    Py_ssize_t len;
    int readonly;
    int state;
    int revoked;
    Py_ssize_t exports;
} Region;

static int unmap(Region *self) {
    if (self->state == UNMAPPED)
        return 0;
    self->state = UNMAPPED;
    if (self->map_len > 0 && munmap(self->map_addr, (size_t)self->map_len) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static PyObject *Region_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"address", "map_length", "offset", "length", "readonly", NULL};
    unsigned long long address = 0;
    Py_ssize_t map_length = 0, offset = 0, length = -1;
    int readonly = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Kn|nnp", kwlist, &address, &map_length,
                                     &offset, &length, &readonly))
        return NULL;
    if (length < 0)
        length = map_length - offset;
    if (map_length < 0 || offset < 0 || offset + length > map_length) {
        PyErr_SetString(PyExc_ValueError, "the window is outside the mapping");
        return NULL;
    }
    Region *self = (Region *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->map_addr = (char *)(uintptr_t)address;
    self->map_len = map_length;
    self->buf = self->map_addr + offset;
    self->len = length;
    self->readonly = readonly;
    self->state = OPEN;
    self->revoked = 0;
    self->exports = 0;
    return (PyObject *)self;
}

static void Region_dealloc(Region *self) {
    /* a view keeps its exporter alive, so no view is left here */
    if (self->state != UNMAPPED && self->map_len > 0)
        munmap(self->map_addr, (size_t)self->map_len);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Region_getbuffer(Region *self, Py_buffer *view, int flags) {
    if (self->state != OPEN) {
        PyErr_SetString(PyExc_ValueError, "the mapping is closed");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->buf, self->len, self->readonly,
                          flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void Region_releasebuffer(Region *self, Py_buffer *view) {
    (void)view;
    self->exports--;
    if (self->exports == 0 && self->state == CLOSING) {
        if (unmap(self) < 0)
            PyErr_WriteUnraisable((PyObject *)self);
    }
}

static PyObject *Region_close(Region *self, PyObject *Py_UNUSED(ignored)) {
    if (self->state == OPEN) {
        self->state = CLOSING;
        if (self->exports == 0 && unmap(self) < 0)
            return NULL;
    }
    return PyBool_FromLong(self->state == UNMAPPED);
}

static PyObject *Region_revoke(Region *self, PyObject *Py_UNUSED(ignored)) {
    if (self->state == UNMAPPED || self->revoked || self->map_len == 0)
        Py_RETURN_FALSE;
    void *got = mmap(self->map_addr, (size_t)self->map_len, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    if (got == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    self->revoked = 1;
    Py_RETURN_TRUE;
}

static Py_ssize_t Region_length(Region *self) { return self->len; }

static PyObject *Region_get_address(Region *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)self->buf);
}

static PyObject *Region_get_closed(Region *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->state != OPEN);
}

static PyObject *Region_get_unmapped(Region *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->state == UNMAPPED);
}

static PyObject *Region_get_revoked(Region *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->revoked);
}

static PyObject *Region_get_exports(Region *self, void *closure) {
    (void)closure;
    return PyLong_FromSsize_t(self->exports);
}

static PyObject *Region_get_readonly(Region *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->readonly);
}

static PyMethodDef Region_methods[] = {
    {"close", (PyCFunction)Region_close, METH_NOARGS,
     "Unmap now, or when the last view is released. Returns True once unmapped."},
    {"revoke", (PyCFunction)Region_revoke, METH_NOARGS,
     "Replace the whole mapping with inaccessible memory now (views then fault)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Region_getset[] = {
    {"address", (getter)Region_get_address, NULL, "address of the window's first byte", NULL},
    {"closed", (getter)Region_get_closed, NULL, "close() was called", NULL},
    {"unmapped", (getter)Region_get_unmapped, NULL, "the memory is unmapped", NULL},
    {"revoked", (getter)Region_get_revoked, NULL, "revoke() was called", NULL},
    {"exports", (getter)Region_get_exports, NULL, "views alive now", NULL},
    {"readonly", (getter)Region_get_readonly, NULL, "the window is read-only", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Region_as_sequence = {.sq_length = (lenfunc)Region_length};

static PyBufferProcs Region_as_buffer = {
    .bf_getbuffer = (getbufferproc)Region_getbuffer,
    .bf_releasebuffer = (releasebufferproc)Region_releasebuffer,
};

static PyTypeObject RegionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "famfs_py.dax._region.Region",
    .tp_basicsize = sizeof(Region),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Region(address, map_length, offset=0, length=-1, readonly=False): owns the "
              "mapping [address, address+map_length) and exports [offset, offset+length).",
    .tp_new = Region_new,
    .tp_dealloc = (destructor)Region_dealloc,
    .tp_methods = Region_methods,
    .tp_getset = Region_getset,
    .tp_as_sequence = &Region_as_sequence,
    .tp_as_buffer = &Region_as_buffer,
};

static PyObject *py_mmap(PyObject *module, PyObject *args) {
    (void)module;
    unsigned long long address;
    Py_ssize_t length;
    int prot, flags, fd;
    long long offset;
    if (!PyArg_ParseTuple(args, "KniiiL", &address, &length, &prot, &flags, &fd, &offset))
        return NULL;
    void *got;
    Py_BEGIN_ALLOW_THREADS
    got = mmap((void *)(uintptr_t)address, (size_t)length, prot, flags, fd, (off_t)offset);
    Py_END_ALLOW_THREADS
    if (got == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)got);
}

static PyObject *py_munmap(PyObject *module, PyObject *args) {
    (void)module;
    unsigned long long address;
    Py_ssize_t length;
    if (!PyArg_ParseTuple(args, "Kn", &address, &length))
        return NULL;
    if (munmap((void *)(uintptr_t)address, (size_t)length) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *py_madvise(PyObject *module, PyObject *args) {
    (void)module;
    unsigned long long address;
    Py_ssize_t length;
    int advice;
    if (!PyArg_ParseTuple(args, "Kni", &address, &length, &advice))
        return NULL;
    if (madvise((void *)(uintptr_t)address, (size_t)length, advice) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"mmap", py_mmap, METH_VARARGS,
     "mmap(address, length, prot, flags, fd, offset) -> address; OSError on failure"},
    {"munmap", py_munmap, METH_VARARGS, "munmap(address, length); OSError on failure"},
    {"madvise", py_madvise, METH_VARARGS, "madvise(address, length, advice)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef region_module = {
    PyModuleDef_HEAD_INIT, "famfs_py.dax._region",
    "Device-memory mappings that Python code can hold safely.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__region(void) {
    if (PyType_Ready(&RegionType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&region_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&RegionType);
    if (PyModule_AddObject(module, "Region", (PyObject *)&RegionType) < 0) {
        Py_DECREF(&RegionType);
        Py_DECREF(module);
        return NULL;
    }
    PyModule_AddIntConstant(module, "MAP_FIXED", MAP_FIXED);
    PyModule_AddIntConstant(module, "MAP_NORESERVE", MAP_NORESERVE);
    PyModule_AddIntConstant(module, "PROT_NONE", PROT_NONE);
    return module;
}
