/*
 * famfs_py.dax._fcc: CPU cache write-back and invalidation over a byte range of memory.
 *
 * Memory shared between hosts over a fabric is, on most systems, not kept coherent with
 * the other hosts' CPU caches. A writer must write its dirty lines back ("flush") before
 * another host may read them, and a reader must drop its own (possibly stale) copies
 * ("invalidate") before it reads what another host wrote. This module runs the instruction
 * that does it over every cache line of a range, then a fence; famfs_py.dax.cache chooses
 * the instruction and is the API everyone else uses.
 *
 * x86-64 (chosen from CPUID by the caller, best first):
 *   flush:      CLWB (line stays cached, clean) > CLFLUSHOPT > CLFLUSH, then SFENCE, which
 *               orders the write-backs before any later store (upstream famfs's fcc does
 *               the same).
 *   invalidate: CLFLUSHOPT > CLFLUSH (write back if dirty, then evict), then MFENCE: later
 *               loads must not be satisfied before the lines are gone, and SFENCE orders
 *               only stores (upstream uses SFENCE here too; MFENCE is the stricter fence).
 * aarch64: DC CVAC (clean to the point of coherency) for flush, DC CIVAC (clean and
 *   invalidate) for invalidate, each range followed by DSB SY; the line size is CTR_EL0's.
 * Anything else: no instruction; features() is empty and every call raises OSError.
 *
 * Page-cache-backed memory (an emulated device's shared-memory file): a page that is not
 * resident holds no data and so no cache line, but touching it would allocate it; with
 * `resident_only` a range of more than MINCORE_MIN_PAGES pages is checked with mincore(2)
 * and such pages are skipped (smaller ranges are nearly always what was just written, and
 * the system call would cost more than the flush). Real devdax memory always exists and
 * mincore does not describe it, so callers pass 0 there.
 *
 * Counters (calls, bytes, cache lines per operation and instruction) are kept here with
 * relaxed atomics, so that any thread may flush and the counts stay exact.
 *
 * Faults: the instructions touch memory as a load does, so a page that is gone (a revoked
 * mapping) or poisoned (hardware memory error) raises SIGSEGV/SIGBUS. famfs-py turns bad
 * pages into errors, never into a dead process: while a range runs, this thread's fault
 * handler jumps back out of the loop and the call raises _fcc.Fault (an OSError, EFAULT)
 * with the faulting address. A fault anywhere else goes to the handler that was there before
 * (chained), or kills the process as it would have.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

enum { OP_FLUSH = 0, OP_INVALIDATE = 1, N_OPS = 2 };

#if defined(__x86_64__)
enum { INSN_CLFLUSH = 0, INSN_CLFLUSHOPT = 1, INSN_CLWB = 2, N_INSNS = 3 };
static const char *const insn_names[N_INSNS] = {"clflush", "clflushopt", "clwb"};
#elif defined(__aarch64__)
enum { INSN_DC_CVAC = 0, INSN_DC_CIVAC = 1, N_INSNS = 2 };
static const char *const insn_names[N_INSNS] = {"dc cvac", "dc civac"};
#else
enum { N_INSNS = 0 };
static const char *const insn_names[1] = {NULL};
#endif

/* Release the GIL for ranges at least this long (a flush of 64 KiB takes microseconds). */
#define NOGIL_BYTES (256u * 1024u)
/* Pages checked per mincore(2) call, and the fewest pages a range must span to be checked. */
#define MINCORE_PAGES 4096u
#define MINCORE_MIN_PAGES 16u

static int have_insn[N_INSNS > 0 ? N_INSNS : 1];
static size_t line_size = 64;
static size_t page_size = 4096;

struct counter {
    unsigned long long calls, bytes, lines;
};
static struct counter counters[N_OPS][N_INSNS > 0 ? N_INSNS : 1];

/* -- the instructions -------------------------------------------------------------------- */

#if defined(__x86_64__)
static void detect(void)
{
    unsigned int eax, ebx, ecx, edx;

    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
        have_insn[INSN_CLFLUSH] = (edx >> 19) & 1;
        /* EBX[15:8] of leaf 1: CLFLUSH line size in 8-byte units */
        if (have_insn[INSN_CLFLUSH] && ((ebx >> 8) & 0xff))
            line_size = ((ebx >> 8) & 0xff) * 8;
    }
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
        have_insn[INSN_CLFLUSHOPT] = (ebx >> 23) & 1;
        have_insn[INSN_CLWB] = (ebx >> 24) & 1;
    }
}

/* Assembler mnemonics, not intrinsics: no -m flag is needed to build this file, and the
 * caller runs only what CPUID reported. */
static inline void line_clflush(const char *p)
{
    __asm__ volatile("clflush %0" : "+m"(*(volatile char *)p));
}

static inline void line_clflushopt(const char *p)
{
    __asm__ volatile("clflushopt %0" : "+m"(*(volatile char *)p));
}

static inline void line_clwb(const char *p)
{
    __asm__ volatile("clwb %0" : "+m"(*(volatile char *)p));
}

static void run_lines(int insn, int op, const char *start, const char *end)
{
    const char *p = start;

    switch (insn) {
    case INSN_CLFLUSH:
        for (; p < end; p += line_size)
            line_clflush(p);
        break;
    case INSN_CLFLUSHOPT:
        for (; p < end; p += line_size)
            line_clflushopt(p);
        break;
    case INSN_CLWB:
        for (; p < end; p += line_size)
            line_clwb(p);
        break;
    }
    (void)op;
}

static void fence(int op)
{
    if (op == OP_FLUSH)
        __asm__ volatile("sfence" ::: "memory");
    else
        __asm__ volatile("mfence" ::: "memory");
}

#elif defined(__aarch64__)
static void detect(void)
{
    uint64_t ctr;

    __asm__ volatile("mrs %0, ctr_el0" : "=r"(ctr));
    line_size = (size_t)4 << ((ctr >> 16) & 0xf); /* DminLine: log2 of words */
    have_insn[INSN_DC_CVAC] = 1;
    have_insn[INSN_DC_CIVAC] = 1;
}

static void run_lines(int insn, int op, const char *start, const char *end)
{
    const char *p = start;

    (void)op;
    if (insn == INSN_DC_CVAC) {
        for (; p < end; p += line_size)
            __asm__ volatile("dc cvac, %0" ::"r"(p) : "memory");
    } else {
        for (; p < end; p += line_size)
            __asm__ volatile("dc civac, %0" ::"r"(p) : "memory");
    }
}

static void fence(int op)
{
    (void)op;
    __asm__ volatile("dsb sy" ::: "memory");
}

#else
static void detect(void) {}
static void run_lines(int insn, int op, const char *start, const char *end)
{
    (void)insn, (void)op, (void)start, (void)end;
}
static void fence(int op) { (void)op; }
#endif

/* -- faults inside a range ----------------------------------------------------------------- */

static __thread sigjmp_buf *volatile guard;   /* set while this thread runs a range */
static __thread volatile uintptr_t fault_address;
static __thread volatile int fault_signal;
static struct sigaction previous[2];          /* SIGBUS, SIGSEGV as they were */
static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;
static int handlers_ok;
static PyObject *Fault;

static void on_fault(int sig, siginfo_t *info, void *context)
{
    sigjmp_buf *jump = guard;
    struct sigaction *old = &previous[sig == SIGBUS ? 0 : 1];

    if (jump != NULL) {
        guard = NULL;
        fault_address = (uintptr_t)info->si_addr;
        fault_signal = sig;
        siglongjmp(*jump, 1);
    }
    if (old->sa_flags & SA_SIGINFO) {
        if (old->sa_sigaction != NULL) {
            old->sa_sigaction(sig, info, context);
            return;
        }
    } else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    /* as if we were never here: die by this signal (a fault re-faults on return) */
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_handlers(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    handlers_ok = sigaction(SIGBUS, &sa, &previous[0]) == 0 &&
                  sigaction(SIGSEGV, &sa, &previous[1]) == 0;
}

/* -- one range --------------------------------------------------------------------------- */

/* Run `insn` over every line of [addr, addr+len), skipping non-resident pages when asked.
 * Returns the number of lines touched, or -1 with errno set (mincore failed). */
static long long run_range(int insn, int op, uintptr_t addr, size_t len, int resident_only)
{
    uintptr_t start = addr & ~(uintptr_t)(line_size - 1);
    uintptr_t end = addr + len;
    long long lines = 0;

    if (len == 0)
        return 0;
    if (resident_only && (end - start) <= MINCORE_MIN_PAGES * page_size)
        resident_only = 0;
    if (!resident_only) {
        run_lines(insn, op, (const char *)start, (const char *)end);
        lines = (long long)((end - start + line_size - 1) / line_size);
    } else {
        unsigned char vec[MINCORE_PAGES];
        uintptr_t page = start & ~(uintptr_t)(page_size - 1);

        while (page < end) {
            size_t npages = (end - page + page_size - 1) / page_size;
            size_t i;

            if (npages > MINCORE_PAGES)
                npages = MINCORE_PAGES;
            if (mincore((void *)page, npages * page_size, vec) != 0)
                return -1;
            for (i = 0; i < npages; i++) {
                uintptr_t lo = page + i * page_size, hi = lo + page_size;

                if (!(vec[i] & 1))
                    continue;
                if (lo < start)
                    lo = start;
                if (hi > end)
                    hi = end;
                run_lines(insn, op, (const char *)lo, (const char *)hi);
                lines += (long long)((hi - lo + line_size - 1) / line_size);
            }
            page += npages * page_size;
        }
    }
    fence(op);
    return lines;
}

/* run_range with faults turned into -2 (fault_address and fault_signal say where and how) */
static long long guarded_range(int insn, int op, uintptr_t addr, size_t len, int resident_only)
{
    sigjmp_buf jump;
    long long lines;

    if (sigsetjmp(jump, 0)) {  /* the mask is not saved: unblock the signal we came by */
        sigset_t set;

        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        sigemptyset(&set);
        sigaddset(&set, fault_signal);
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        return -2;
    }
    guard = &jump;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    lines = run_range(insn, op, addr, len, resident_only);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    guard = NULL;
    return lines;
}

static PyObject *raise_fault(int op)
{
    PyObject *exc, *where;

    exc = PyObject_CallFunction(Fault, "is", EFAULT,
                                fault_signal == SIGBUS ? "memory error (SIGBUS) during a cache "
                                                         "flush or invalidate"
                                                       : "inaccessible memory (SIGSEGV) during "
                                                         "a cache flush or invalidate");
    if (exc == NULL)
        return NULL;
    where = PyLong_FromUnsignedLongLong((unsigned long long)fault_address);
    (void)op;
    if (where == NULL || PyObject_SetAttrString(exc, "address", where) != 0) {
        Py_XDECREF(where);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(where);
    PyErr_SetObject(Fault, exc);
    Py_DECREF(exc);
    return NULL;
}

static PyObject *do_range(int op, int insn, uintptr_t addr, size_t len, int resident_only)
{
    long long lines;

    if (N_INSNS == 0) {
        PyErr_SetString(PyExc_OSError,
                        "cache flush/invalidate is not supported on this architecture");
        return NULL;
    }
    if (insn < 0 || insn >= N_INSNS || !have_insn[insn]) {
        PyErr_Format(PyExc_ValueError, "instruction %d is not available on this CPU", insn);
        return NULL;
    }
    pthread_once(&handlers_once, install_handlers);
    if (!handlers_ok)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (len >= NOGIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        lines = guarded_range(insn, op, addr, len, resident_only);
        Py_END_ALLOW_THREADS
    } else {
        lines = guarded_range(insn, op, addr, len, resident_only);
    }
    if (lines == -2)
        return raise_fault(op);
    if (lines < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (N_INSNS > 0) {
        struct counter *c = &counters[op][insn];

        __atomic_fetch_add(&c->calls, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&c->bytes, (unsigned long long)len, __ATOMIC_RELAXED);
        __atomic_fetch_add(&c->lines, (unsigned long long)lines, __ATOMIC_RELAXED);
    }
    return PyLong_FromLongLong(lines);
}

/* range(op, insn, buffer, offset, length, resident_only) -> lines */
static PyObject *fcc_range(PyObject *self, PyObject *args)
{
    int op, insn, resident_only;
    Py_ssize_t offset, length;
    Py_buffer view;
    PyObject *obj, *result;

    (void)self;
    if (!PyArg_ParseTuple(args, "iiOnnp", &op, &insn, &obj, &offset, &length, &resident_only))
        return NULL;
    if (op != OP_FLUSH && op != OP_INVALIDATE) {
        PyErr_SetString(PyExc_ValueError, "op must be 0 (flush) or 1 (invalidate)");
        return NULL;
    }
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) != 0)
        return NULL;
    if (offset < 0 || length < 0 || offset > view.len || length > view.len - offset) {
        PyErr_Format(PyExc_ValueError, "range %zd+%zd is outside a buffer of %zd bytes", offset,
                     length, view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    result = do_range(op, insn, (uintptr_t)view.buf + (uintptr_t)offset, (size_t)length,
                      resident_only);
    PyBuffer_Release(&view);
    return result;
}

/* address_range(op, insn, address, length, resident_only) -> lines. The caller vouches
 * that [address, address+length) is mapped readable in this process. */
static PyObject *fcc_address_range(PyObject *self, PyObject *args)
{
    int op, insn, resident_only;
    unsigned long long address;
    Py_ssize_t length;

    (void)self;
    if (!PyArg_ParseTuple(args, "iiKnp", &op, &insn, &address, &length, &resident_only))
        return NULL;
    if (op != OP_FLUSH && op != OP_INVALIDATE) {
        PyErr_SetString(PyExc_ValueError, "op must be 0 (flush) or 1 (invalidate)");
        return NULL;
    }
    if (length < 0 || address + (unsigned long long)length < address) {
        PyErr_SetString(PyExc_ValueError, "bad address range");
        return NULL;
    }
    return do_range(op, insn, (uintptr_t)address, (size_t)length, resident_only);
}

/* -- watching a range for a change ---------------------------------------------------------- */

/* One look: invalidate the range (insn >= 0), then compare it with `snapshot`. 1 if it
 * differs, 0 if not, -2 on a fault (fault_address and fault_signal say where and how). */
static int guarded_look(int insn, const char *addr, size_t len, const char *snapshot)
{
    sigjmp_buf jump;
    int differs;

    if (sigsetjmp(jump, 0)) {
        sigset_t set;

        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        sigemptyset(&set);
        sigaddset(&set, fault_signal);
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        return -2;
    }
    guard = &jump;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    if (insn >= 0) {
        run_lines(insn, OP_INVALIDATE, (const char *)((uintptr_t)addr & ~(uintptr_t)(line_size - 1)),
                  addr + len);
        fence(OP_INVALIDATE);
    }
    differs = memcmp(addr, snapshot, len) != 0;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    guard = NULL;
    return differs;
}

/* watch(buffer, offset, length, snapshot, insn, interval_us, timeout_us) -> changed
 * Look at the range every interval_us (invalidating it first with `insn`, or not if -1)
 * until it differs from `snapshot` (True) or timeout_us passed (False), without the GIL and
 * without waking Python in between. */
static PyObject *fcc_watch(PyObject *self, PyObject *args)
{
    Py_ssize_t offset, length;
    Py_buffer view, snap;
    PyObject *obj, *snapobj;
    int insn, found = 0;
    long long interval_us, timeout_us, waited = 0;

    (void)self;
    if (!PyArg_ParseTuple(args, "OnnOiLL", &obj, &offset, &length, &snapobj, &insn,
                          &interval_us, &timeout_us))
        return NULL;
    if (insn >= N_INSNS || (insn >= 0 && !have_insn[insn])) {
        PyErr_Format(PyExc_ValueError, "instruction %d is not available on this CPU", insn);
        return NULL;
    }
    if (interval_us <= 0) {
        PyErr_SetString(PyExc_ValueError, "the interval must be positive");
        return NULL;
    }
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) != 0)
        return NULL;
    if (PyObject_GetBuffer(snapobj, &snap, PyBUF_SIMPLE) != 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (offset < 0 || length < 0 || offset > view.len || length > view.len - offset ||
        snap.len != length) {
        PyErr_SetString(PyExc_ValueError, "the range is outside the buffer, or the snapshot "
                                          "is not as long as the range");
        PyBuffer_Release(&snap);
        PyBuffer_Release(&view);
        return NULL;
    }
    pthread_once(&handlers_once, install_handlers);
    if (!handlers_ok) {
        PyBuffer_Release(&snap);
        PyBuffer_Release(&view);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        found = guarded_look(insn, (const char *)view.buf + offset, (size_t)length,
                             (const char *)snap.buf);
        if (found != 0 || waited >= timeout_us)
            break;
        struct timespec ts = {interval_us / 1000000, (interval_us % 1000000) * 1000};
        nanosleep(&ts, NULL);
        waited += interval_us;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&snap);
    PyBuffer_Release(&view);
    if (found == -2)
        return raise_fault(OP_INVALIDATE);
    return PyBool_FromLong(found);
}

/* features() -> tuple of the names of the instructions this CPU has (index = insn id) */
static PyObject *fcc_features(PyObject *self, PyObject *noargs)
{
    PyObject *names = PyTuple_New(N_INSNS);
    int i;

    (void)self, (void)noargs;
    if (!names)
        return NULL;
    for (i = 0; i < N_INSNS; i++) {
        PyObject *item = have_insn[i] ? PyUnicode_FromString(insn_names[i]) : Py_NewRef(Py_None);

        if (!item) {
            Py_DECREF(names);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, item);
    }
    return names;
}

/* counters() -> ((op, insn, calls, bytes, lines), ...) for every nonzero counter */
static PyObject *fcc_counters(PyObject *self, PyObject *noargs)
{
    PyObject *rows = PyList_New(0);
    int op, i;

    (void)self, (void)noargs;
    if (!rows)
        return NULL;
    for (op = 0; op < N_OPS; op++) {
        for (i = 0; i < N_INSNS; i++) {
            struct counter *c = &counters[op][i];
            unsigned long long calls = __atomic_load_n(&c->calls, __ATOMIC_RELAXED);
            PyObject *row;

            if (!calls)
                continue;
            row = Py_BuildValue("(iiKKK)", op, i, calls,
                                __atomic_load_n(&c->bytes, __ATOMIC_RELAXED),
                                __atomic_load_n(&c->lines, __ATOMIC_RELAXED));
            if (!row || PyList_Append(rows, row) != 0) {
                Py_XDECREF(row);
                Py_DECREF(rows);
                return NULL;
            }
            Py_DECREF(row);
        }
    }
    return rows;
}

static PyMethodDef fcc_methods[] = {
    {"range", fcc_range, METH_VARARGS,
     "range(op, insn, buffer, offset, length, resident_only) -> cache lines touched"},
    {"address_range", fcc_address_range, METH_VARARGS,
     "address_range(op, insn, address, length, resident_only) -> cache lines touched"},
    {"watch", fcc_watch, METH_VARARGS,
     "watch(buffer, offset, length, snapshot, insn, interval_us, timeout_us) -> changed"},
    {"features", fcc_features, METH_NOARGS,
     "features() -> instruction names this CPU has (None where missing), by instruction id"},
    {"counters", fcc_counters, METH_NOARGS,
     "counters() -> [(op, insn, calls, bytes, lines)] for each nonzero counter"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fcc_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fcc",
    .m_doc = "CPU cache write-back and invalidation over byte ranges (see famfs_py.dax.cache).",
    .m_size = -1,
    .m_methods = fcc_methods,
};

PyMODINIT_FUNC PyInit__fcc(void)
{
    PyObject *m;
    long ps = sysconf(_SC_PAGESIZE);

    if (ps > 0)
        page_size = (size_t)ps;
    detect();
    m = PyModule_Create(&fcc_module);
    if (!m)
        return NULL;
    Fault = PyErr_NewExceptionWithDoc(
        "famfs_py.dax._fcc.Fault",
        "A page of the range faulted (gone or poisoned); `address` is where.", PyExc_OSError,
        NULL);
    if (Fault == NULL || PyModule_AddObjectRef(m, "Fault", Fault) != 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "OP_FLUSH", OP_FLUSH) ||
        PyModule_AddIntConstant(m, "OP_INVALIDATE", OP_INVALIDATE) ||
        PyModule_AddIntConstant(m, "LINE_SIZE", (long)line_size) ||
        PyModule_AddIntConstant(m, "MINCORE_MIN_BYTES", (long)(MINCORE_MIN_PAGES * page_size)) ||
        PyModule_AddStringConstant(m, "ARCH",
#if defined(__x86_64__)
                                   "x86_64"
#elif defined(__aarch64__)
                                   "aarch64"
#else
                                   "unsupported"
#endif
                                   )) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
