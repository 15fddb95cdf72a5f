/* QUIC's coordinate descent on the Newton model of the l1 graphical lasso.
 *
 * Minimizes  <G, D> + 1/2 <D, W D W> + sum_ij Lam_ij |X_ij + D_ij|  over symmetric D
 * supported on the given upper-triangle pairs (i <= j), one pair at a time in closed form
 * (Hsieh, Sustik, Dhillon & Ravikumar, JMLR 2014, sec. 3.1 and 3.2): for a pair, with
 * a = W_ij^2 + W_ii W_jj (W_ii^2 on the diagonal), b = G_ij + (W D W)_ij, c = X_ij + D_ij,
 * the change is mu = -c + soft(c - b / a, Lam_ij / a). U = D W (row-major) is kept up to
 * date: (W D W)_ij = W_i . U_:j is one dot product with column j of U, which is gathered
 * once for each run of pairs in column j (the caller orders the pairs by column) and kept
 * in step with the two row updates of U that each change makes, so every access but the
 * gather is contiguous.
 *
 * Python: sweeps(W, G, X, Lam, rows, cols, D, U, max_sweeps, tol) -> sweeps run.
 * W, G, X, Lam: (p, p) float64 C-contiguous, read; D, U: (p, p) float64, updated in place
 * (start from D = U = 0, or a D with U = D W, row-major); rows, cols: int64 of one
 * length m. Stops after max_sweeps, or after a sweep whose largest |mu| is <= tol times
 * the first sweep's (an inexact Newton direction: the caller's forcing term).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

static double dot(const double *a, const double *b, Py_ssize_t n) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    Py_ssize_t k = 0;
    for (; k + 4 <= n; k += 4) {
        s0 += a[k] * b[k];
        s1 += a[k + 1] * b[k + 1];
        s2 += a[k + 2] * b[k + 2];
        s3 += a[k + 3] * b[k + 3];
    }
    for (; k < n; k++) s0 += a[k] * b[k];
    return (s0 + s1) + (s2 + s3);
}

static void axpy(double alpha, const double *x, double *y, Py_ssize_t n) {
    for (Py_ssize_t k = 0; k < n; k++) y[k] += alpha * x[k];
}

static int run(Py_ssize_t p, const double *w, const double *g, const double *x,
               const double *lam, Py_ssize_t m, const int64_t *rows, const int64_t *cols,
               double *d, double *u, double *column, int max_sweeps, double tol) {
    int sweep = 0;
    double first = 0.0;
    while (sweep < max_sweeps) {
        double largest = 0.0;
        Py_ssize_t current = -1;
        sweep++;
        for (Py_ssize_t t = 0; t < m; t++) {
            Py_ssize_t i = (Py_ssize_t)rows[t], j = (Py_ssize_t)cols[t];
            Py_ssize_t ij = i * p + j;
            const double *wi = w + i * p, *wj = w + j * p;
            if (j != current) { /* column j of U, gathered once per run of pairs in it */
                for (Py_ssize_t k = 0; k < p; k++) column[k] = u[k * p + j];
                current = j;
            }
            double a = i == j ? w[ij] * w[ij] : w[ij] * w[ij] + wi[i] * wj[j];
            double b = g[ij] + dot(wi, column, p); /* (W D W)_ij = W_i . U_:j */
            double c = x[ij] + d[ij];
            double z = c - b / a, threshold = lam[ij] / a;
            double soft = z > threshold ? z - threshold : (z < -threshold ? z + threshold : 0.0);
            double mu = soft - c;
            if (mu == 0.0) continue;
            if (fabs(mu) > largest) largest = fabs(mu);
            /* D_ij (and D_ji) += mu: rows i and j of U = D W gain mu W_j and mu W_i */
            d[ij] += mu;
            axpy(mu, wj, u + i * p, p);
            column[i] += mu * wj[j];
            if (i != j) {
                d[j * p + i] += mu;
                axpy(mu, wi, u + j * p, p);
                column[j] += mu * wi[j];
            }
        }
        if (sweep == 1) first = largest;
        if (largest <= tol * first) break;
    }
    return sweep;
}

static int get(PyObject *object, Py_buffer *view, int writable, const char *name,
               Py_ssize_t length, Py_ssize_t itemsize) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) != 0) return -1;
    if (view->itemsize != itemsize || view->len != length * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s must hold %zd items of %zd bytes", name, length,
                     itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *sweeps(PyObject *self, PyObject *args) {
    PyObject *objects[8];
    int max_sweeps;
    double tol;
    if (!PyArg_ParseTuple(args, "OOOOOOOOid", &objects[0], &objects[1], &objects[2],
                          &objects[3], &objects[4], &objects[5], &objects[6], &objects[7],
                          &max_sweeps, &tol))
        return NULL;
    static const char *names[8] = {"W", "G", "X", "Lam", "rows", "cols", "D", "U"};
    Py_buffer views[8];
    int held = 0, done = -1;
    Py_buffer probe;
    if (PyObject_GetBuffer(objects[0], &probe, PyBUF_C_CONTIGUOUS) != 0) return NULL;
    Py_ssize_t n = probe.len / (Py_ssize_t)sizeof(double);
    PyBuffer_Release(&probe);
    Py_ssize_t p = (Py_ssize_t)llround(sqrt((double)n));
    Py_buffer index_probe;
    if (PyObject_GetBuffer(objects[4], &index_probe, PyBUF_C_CONTIGUOUS) != 0) return NULL;
    Py_ssize_t m = index_probe.len / (Py_ssize_t)sizeof(int64_t);
    PyBuffer_Release(&index_probe);
    if (p * p != n) {
        PyErr_SetString(PyExc_ValueError, "W must be a square (p, p) float64 matrix");
        return NULL;
    }
    for (; held < 8; held++) {
        int is_index = held == 4 || held == 5;
        if (get(objects[held], &views[held], held >= 6, names[held], is_index ? m : n,
                is_index ? (Py_ssize_t)sizeof(int64_t) : (Py_ssize_t)sizeof(double)) != 0)
            goto release;
    }
    {
        const int64_t *rows = views[4].buf, *cols = views[5].buf;
        for (Py_ssize_t t = 0; t < m; t++) {
            if (rows[t] < 0 || cols[t] < rows[t] || cols[t] >= p) {
                PyErr_SetString(PyExc_ValueError, "rows, cols must be pairs 0 <= i <= j < p");
                goto release;
            }
        }
        double *column = PyMem_RawMalloc((size_t)(p > 0 ? p : 1) * sizeof(double));
        if (column == NULL) {
            PyErr_NoMemory();
            goto release;
        }
        Py_BEGIN_ALLOW_THREADS
        done = run(p, views[0].buf, views[1].buf, views[2].buf, views[3].buf, m, rows, cols,
                   views[6].buf, views[7].buf, column, max_sweeps, tol);
        Py_END_ALLOW_THREADS
        PyMem_RawFree(column);
    }
release:
    for (int k = 0; k < held; k++) PyBuffer_Release(&views[k]);
    return done < 0 ? NULL : PyLong_FromLong(done);
}

static PyMethodDef methods[] = {
    {"sweeps", sweeps, METH_VARARGS,
     "sweeps(W, G, X, Lam, rows, cols, D, U, max_sweeps, tol) -> sweeps run: QUIC's "
     "coordinate descent on the l1 GGM Newton model (see the C source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_coordinate_descent",
    "QUIC's coordinate descent on the l1 graphical lasso's Newton model (compiled).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__coordinate_descent(void) { return PyModule_Create(&module); }
