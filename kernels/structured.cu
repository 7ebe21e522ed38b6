// Kernels of the structured Jacobian primitives (batchjac/backends/cupy_ops.py).
//
// Every kernel writes a new C-contiguous result and reads its inputs through element
// strides, so views (transposes, slices) and broadcasts (stride 0: a shared (m, n) matrix
// read for every sample, a per-sample scale broadcast along a row) are read in place and
// never materialised. Shapes: B the batch, a batched matrix (B, m, n), a diagonal (B, n).
// Loops are grid-stride; indices are 64-bit.

typedef long long index_t;

#define BJ_GRID_STRIDE(idx, total)                                                        \
    for (index_t idx = (index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < (total);     \
         idx += (index_t)blockDim.x * gridDim.x)

// out[b, i, j] = d[b, i] * a[b, i, j]: diag(d) @ a; a shared (m, n) matrix has a_sb = 0.
template <typename T>
__global__ void scale_rows(const T* d, index_t d_sb, index_t d_si,
                           const T* a, index_t a_sb, index_t a_si, index_t a_sj,
                           T* out, index_t batch, index_t m, index_t n)
{
    BJ_GRID_STRIDE(idx, batch * m * n) {
        const index_t j = idx % n, row = idx / n, i = row % m, b = row / m;
        out[idx] = d[b * d_sb + i * d_si] * a[b * a_sb + i * a_si + j * a_sj];
    }
}

// out[b, i, j] = a[b, i, j] * d[b, j]: a @ diag(d); a shared (m, n) matrix has a_sb = 0.
template <typename T>
__global__ void scale_cols(const T* a, index_t a_sb, index_t a_si, index_t a_sj,
                           const T* d, index_t d_sb, index_t d_sj,
                           T* out, index_t batch, index_t m, index_t n)
{
    BJ_GRID_STRIDE(idx, batch * m * n) {
        const index_t j = idx % n, row = idx / n, i = row % m, b = row / m;
        out[idx] = a[b * a_sb + i * a_si + j * a_sj] * d[b * d_sb + j * d_sj];
    }
}

// out[b, i, j] = d[b, i] if i == j else 0: (B, n) -> (B, n, n), every entry written once
// (no zero fill followed by a scatter).
template <typename T>
__global__ void diag_to_dense(const T* d, index_t d_sb, index_t d_si,
                              T* out, index_t batch, index_t n)
{
    BJ_GRID_STRIDE(idx, batch * n * n) {
        const index_t j = idx % n, row = idx / n, i = row % n, b = row / n;
        out[idx] = i == j ? d[b * d_sb + i * d_si] : T(0);
    }
}

// out[b, i, j] = a[b, i, j] + (d[b, i] if i == j else 0): a + diag(d) in one pass (no copy
// followed by a strided update); a shared (n, n) matrix has a_sb = 0.
template <typename T>
__global__ void add_diagonal(const T* a, index_t a_sb, index_t a_si, index_t a_sj,
                             const T* d, index_t d_sb, index_t d_si,
                             T* out, index_t batch, index_t n)
{
    BJ_GRID_STRIDE(idx, batch * n * n) {
        const index_t j = idx % n, row = idx / n, i = row % n, b = row / n;
        const T value = a[b * a_sb + i * a_si + j * a_sj];
        out[idx] = i == j ? value + d[b * d_sb + i * d_si] : value;
    }
}

// out[b, i] = sum_j a[b, i, j] v[b, j]: the JVP of a batched (B, m, n) matrix. One warp
// per output row (blockDim.x is a multiple of 32, so a row's loop is warp-uniform): the
// lanes read the row together and reduce with shuffles.
template <typename T>
__global__ void batched_matvec(const T* a, index_t a_sb, index_t a_si, index_t a_sj,
                               const T* v, index_t v_sb, index_t v_sj,
                               T* out, index_t batch, index_t m, index_t n)
{
    const index_t warp = ((index_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const index_t warps = ((index_t)blockDim.x * gridDim.x) / 32;
    const int lane = threadIdx.x % 32;
    for (index_t row = warp; row < batch * m; row += warps) {
        const index_t b = row / m, i = row % m;
        T acc = T(0);
        for (index_t j = lane; j < n; j += 32)
            acc += a[b * a_sb + i * a_si + j * a_sj] * v[b * v_sb + j * v_sj];
        for (int offset = 16; offset > 0; offset /= 2)
            acc += __shfl_down_sync(0xffffffffu, acc, offset);
        if (lane == 0)
            out[row] = acc;
    }
}

// out[b, j] = sum_i u[b, i] a[b, i, j]: the VJP of a batched (B, m, n) matrix. One thread
// per output entry; neighbouring threads read neighbouring columns of a row.
template <typename T>
__global__ void batched_vecmat(const T* u, index_t u_sb, index_t u_si,
                               const T* a, index_t a_sb, index_t a_si, index_t a_sj,
                               T* out, index_t batch, index_t m, index_t n)
{
    BJ_GRID_STRIDE(idx, batch * n) {
        const index_t j = idx % n, b = idx / n;
        T acc = T(0);
        for (index_t i = 0; i < m; ++i)
            acc += u[b * u_sb + i * u_si] * a[b * a_sb + i * a_si + j * a_sj];
        out[idx] = acc;
    }
}
