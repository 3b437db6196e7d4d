// The fused time loops of the CPU backend: LSTM, GRU and RNN, forward and hand-written BPTT.
//
// This file is included three times by recurrent.cpp, inside three namespaces (LSTMK_ISA =
// avx512 | avx2 | base): under `#pragma GCC target(...)` for AVX-512 and for AVX2+FMA, and once
// for any x86-64 (or other) CPU; LSTMK_VBYTES is the per-step products' vector width (64 bytes
// for AVX-512, else 32). The loops are plain C++ that the compiler vectorizes; recurrent.cpp
// picks the copy the running CPU can execute, so one cached build works on every machine (no
// -march=native).
//
// No #include here: everything this file needs is included by recurrent.cpp before it, so that no
// library function is compiled for AVX2 or AVX-512 by accident.
//
// Layout, one layer and one direction, everything row-major and contiguous:
//   T steps, B batch rows, H hidden units, P = projection size (P = H without projection).
//   gate blocks are torch's: LSTM (i, f, g, o), GRU (r, z, n).
//
// The recipe (haste, cuDNN, oneDNN share it): the input projection for all T*B rows is one GEMM
// done before the loop (by the caller); per step one recurrent GEMM into the pre-activations of
// that step, then ONE pass over the gate arithmetic that also stores what the backward needs.
// The backward per step is one elementwise pass and one GEMM; the weight gradients are big GEMMs
// after the loop (done by the caller).

// The arguments of the loops, defined once (this file is included three times).
#ifndef LSTMK_KERNEL_ARGS
#define LSTMK_KERNEL_ARGS
namespace lstmk {

// ---------------------------------------------------------------------------------------------
// LSTM
//
// One loop for every LSTM variant: the optional members of LstmForward/LstmBackward say which
// parts are on. Today: the projection (LSTMP, w_hr). The variants in the literature slot into the same two places, as options here
// and a few lines in lstm_pointwise_forward/backward, not as copies of the loop:
//   peepholes       pointwise reads c_prev (i, f) and c (o) times three weight vectors;
//   coupled gates   i = 1 - f in the pointwise;
//   layer norm      normalize the step's pre-activations before the pointwise;
//   zoneout         mix the new state with the old one in the same place as the padding mask.
// ---------------------------------------------------------------------------------------------

template <typename T>
struct LstmForward {
  int64_t steps, batch, hidden, proj;  // T, B, H, P (P = H without projection)
  T* gates;                            // (T, B, 4H) in: x W_ih^T (+ b); out: i, f, g, o
  const T* w_hh_t;                     // (P, 4H)    W_hh^T in panels (kPanel): the step's layout
  const T* w_hr_t;                     // (H, P)     W_hr^T in panels, or nullptr: no projection
  const T* h0;                         // (B, P)
  const T* c0;                         // (B, H)
  const bool* mask;                    // (T, B)     false: padding, the state carries; or nullptr
  T* h_all;                            // (T, B, P)  state after each step
  T* c_all;                            // (T, B, H)
  T* tanh_c;                           // (T, B, H)  saved for the backward, or nullptr
  T* h_raw;                            // (B, H)     scratch: o * tanh(c) before the projection
  const T* bias;                       // (4H)       b, added in the gate pass; or nullptr: in gates
};

template <typename T>
struct LstmBackward {
  int64_t steps, batch, hidden, proj;
  const T* gates;       // (T, B, 4H) i, f, g, o
  const T* c_all;       // (T, B, H)
  const T* tanh_c;      // (T, B, H)
  const T* c0;          // (B, H)
  const T* w_hh;        // (4H, P) in panels (kPanel)
  const T* w_hr;        // (P, H) in panels, or nullptr
  const bool* mask;     // (T, B) or nullptr
  const T* grad_h;      // (T, B, P) or nullptr: dL/dh_all
  const T* grad_c;      // (T, B, H) or nullptr: dL/dc_all
  const T* grad_gates;  // (T, B, 4H) or nullptr: dL/dgates
  T* d_pre;             // (T, B, 4H) out: dL/dz, the gradient at the pre-activations
  T* dh_step;           // (T, B, P) out when projecting: dL/dh_t of each real step
  T* dh;                // (B, P) in: zeros; out: dL/dh0
  T* dc;                // (B, H) in: zeros; out: dL/dc0
  T* dh_raw;            // (B, H) scratch (projection only)
  T* dh_skip;           // (B, P) scratch (mask only)
};

// GRU (torch's convention: the reset gate multiplies W_hn h + b_hn).
template <typename T>
struct GruForward {
  int64_t steps, batch, hidden;
  T* gates;          // (T, B, 3H) in: x W_ih^T + b_ih; out: r, z, n
  const T* w_hh_t;   // (H, 3H) in panels (kPanel)
  const T* b_hh;     // (3H) or nullptr
  const T* h0;       // (B, H)
  const bool* mask;  // (T, B) or nullptr
  T* h_all;          // (T, B, H)
  T* gh_n;           // (T, B, H) W_hn h + b_hn, saved for the backward; or nullptr
  T* gh;             // (B, 3H) scratch
};

template <typename T>
struct GruBackward {
  int64_t steps, batch, hidden;
  const T* gates;       // (T, B, 3H) r, z, n
  const T* h_all;       // (T, B, H)
  const T* h0;          // (B, H)
  const T* gh_n;        // (T, B, H)
  const T* w_hh;        // (3H, H) in panels (kPanel)
  const bool* mask;     // (T, B) or nullptr
  const T* grad_h;      // (T, B, H) or nullptr
  const T* grad_gates;  // (T, B, 3H) or nullptr
  T* d_gx;              // (T, B, 3H) out: dL/d(W_ih x + b_ih)
  T* d_gh;              // (T, B, 3H) out: dL/d(W_hh h + b_hh)
  T* dh;                // (B, H) in: zeros; out: dL/dh0
  T* dh_next;           // (B, H) scratch
};

// How many threads a per-step product of `macs` multiply-adds over `blocks` column tiles runs
// on: torch's thread count once it has at least LSTM_CPU_PARALLEL_MIN multiply-adds (default
// below), one inside another parallel region or for small products.
inline int step_threads(int64_t macs, int64_t blocks) {
  static const int64_t minimum = [] {
    const char* v = std::getenv("LSTM_CPU_PARALLEL_MIN");
    return v ? std::atoll(v) : int64_t(1) << 15;
  }();
  if (macs < minimum || blocks < 2 || omp_in_parallel()) return 1;
  return (int)std::min<int64_t>(omp_get_max_threads(), blocks);
}

// Experiment 12's switch, read on every call so one process can time both (LSTM_CPU_BY_UNITS).
inline bool by_units_enabled() {
  const char* v = std::getenv("LSTM_CPU_BY_UNITS");
  return !v || std::atoi(v) != 0;
}

// Whether a step's pointwise pass splits its B rows over torch's threads: B * H units of at
// least LSTM_CPU_POINTWISE_MIN (default 4096; at B=64, H=64 the serial pass costs as much as
// the step's product).
inline bool rows_in_parallel(int64_t B, int64_t H) {
  static const int64_t minimum = [] {
    const char* v = std::getenv("LSTM_CPU_POINTWISE_MIN");
    return v ? std::atoll(v) : int64_t(4096);
  }();
  return B > 1 && B * H >= minimum && !omp_in_parallel() && omp_get_max_threads() > 1;
}

// The minimum work for the threads to split the hidden units of a time loop (see split_panels):
// LSTM_CPU_UNITS_MIN multiply-adds a step (default 8192: B=1, H=64 has 16384 in the LSTM).
inline int64_t units_minimum() {
  static const int64_t minimum = [] {
    const char* v = std::getenv("LSTM_CPU_UNITS_MIN");
    return v ? std::atoll(v) : int64_t(8192);
  }();
  return minimum;
}

// Experiment 20's switch (LSTM_CPU_BY_ROWS, read on every call; 0: off) and the largest working
// set a thread may have when the threads split a time loop by batch rows: the whole recurrent
// weight (each thread reads all of it every step) and its rows' pre-activations of a step
// (LSTM_CPU_ROWS_KB, read on every call; default 1088 = 1 MB + 64 KB: a core's L2 here is 1 MB;
// fit to the timings: at H=256 the split won at B=16 and 32, 1.06 MB, and lost at B=64, 1.13 MB).
inline bool by_rows_enabled() {
  const char* v = std::getenv("LSTM_CPU_BY_ROWS");
  return !v || std::atoi(v) != 0;
}
inline int64_t rows_bytes_max() {
  const char* v = std::getenv("LSTM_CPU_ROWS_KB");
  return (v ? std::atoll(v) : int64_t(1088)) << 10;
}

// Whether the threads split the batch rows of a time loop (experiment 20; the LSTM, the GRU and
// the plain RNN, forward and backward: rows_split below): each thread owns whole rows for the
// whole loop, their product against every panel and their gate arithmetic; a row's step reads
// only its own h_{t-1} (or dh_t), so the threads never wait on each other.
// From at least 8 rows a thread, a step of at least step_threads()'s minimum of multiply-adds
// (`macs`), a thread's working set (the weights, `weight_bytes`, and `row_bytes` of each of its
// rows) within rows_bytes_max(), and not inside another parallel region.
inline bool split_rows(int64_t B, int64_t weight_bytes, int64_t row_bytes, int64_t macs) {
  const int team = omp_get_max_threads();
  return by_rows_enabled() && team > 1 && !omp_in_parallel() && B >= 8 * team &&
         weight_bytes + (B + team - 1) / team * row_bytes <= rows_bytes_max() &&
         step_threads(macs, 2) > 1;
}

// Experiment 22: where both splits apply (at least 8 rows a thread, and B * H under the rows'
// pass minimum, so the units split would run), the rows split. The units split crosses a spin
// barrier every step, the rows split none (each thread reads all of W_hh instead of its half).
// A crossing costs 70-75 ns on the AVX-512 host, but 34-456 ns on the Zen 3 host, from one
// minute to the next (its two vCPUs move between cores near and far), and there the rows split
// measured level to 28% faster in training and level to 34% faster in inference at every shape
// tried (docs/performance.md): a loop with no barrier does not depend on where the vCPUs sit.
// LSTM_CPU_PREFER_ROWS=0 restores the units split there (read on every call, for A/B).
inline bool prefer_rows() {
  const char* v = std::getenv("LSTM_CPU_PREFER_ROWS");
  return !v || std::atoi(v) != 0;
}

// How the threads share a time loop of the LSTM or the GRU (the ISA copies' loop_split decides).
struct LoopSplit {
  int64_t unit_panels;  // > 0: the hidden units, in panels of kPanel
  bool by_rows;         // whole batch rows
};

// The per-step products read their weights in panels of kPanel<T> columns (64 bytes: two AVX
// vectors or one AVX-512 vector, 16 floats or 8 doubles): W[K, N] as ceil(N / kPanel) blocks of
// (K, kPanel), each contiguous, the last one zero-padded (recurrent.cpp's pack_panels; step_gemm
// below).
template <typename T>
constexpr int64_t kPanel = 64 / sizeof(T);

}  // namespace lstmk
#endif  // LSTMK_KERNEL_ARGS

namespace lstmk {
namespace LSTMK_ISA {

// ---------------------------------------------------------------------------------------------
// Activations. float: branch-free polynomial forms the compiler vectorizes (Cephes expf/tanhf,
// about 1-2 ulp). double: the C library (exact to the last bit; double is the testing dtype).
// ---------------------------------------------------------------------------------------------

template <typename T>
struct Act;

template <>
struct Act<float> {
  static inline float exp(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    float shifted = x * 1.44269504088896341f + magic;
    float n = shifted - magic;  // round(x / ln 2)
    int32_t n_int = __builtin_bit_cast(int32_t, shifted) - 0x4B400000;
    float r = x - n * 0.693359375f;  // x - n ln2, in two parts for precision
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    return p * __builtin_bit_cast(float, (n_int + 127) << 23);  // * 2^n
  }
  static inline float sigmoid(float x) { return 1.0f / (1.0f + exp(-x)); }
  static inline float tanh(float x) {
    float ax = x < 0.0f ? -x : x;
    // |x| < 0.625: odd polynomial (1 - 2/(e^2x + 1) would cancel); beyond: via exp.
    float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = p * z * x + x;
    float big = 1.0f - 2.0f / (exp(2.0f * ax) + 1.0f);
    big = x < 0.0f ? -big : big;
    return ax < 0.625f ? small : big;
  }
};

template <>
struct Act<double> {
  static inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
  static inline double tanh(double x) { return std::tanh(x); }
};

// ---------------------------------------------------------------------------------------------
// The per-step product C[M, N] (+)= A[M, K] @ W[K, N]: A is the batch's state (M = B rows, a few
// to a few dozen), W a weight matrix fixed for the whole call, packed once by recurrent.cpp's
// pack_panels into panels of kPanel<T> columns (see kPanel). For each panel (two neighbouring
// panels in the AVX-512 copy) every tile of rows runs its whole k loop with the accumulators in
// registers, reading the panel sequentially: the panel (K x 64 bytes, 32 KB at K = 512) stays in
// L1 while all the batch's rows pass over it, so W is read from L2/L3 once per step, and never
// with a stride. A BLAS call repacks W on every call (on an AVX2 host MKL reached 90-140 GFLOP/s
// on these shapes, the tiles 150-190; docs/performance.md, experiment 7; the AVX-512 copy:
// experiment 13). (Auto-vectorization kept the tile in memory: hence the vector types, which
// also compile on any GCC/Clang target.)
// ---------------------------------------------------------------------------------------------

// Panels a tile spans: one (AVX2 and the portable copy: 32-byte vectors) or two (AVX-512).
constexpr int64_t kPanelsPerTile = LSTMK_VBYTES == 64 ? 2 : 1;
inline int64_t panel_tiles(int64_t n) { return (n + kPanelsPerTile - 1) / kPanelsPerTile; }

// A tile is MR rows of C against 2 vectors of columns, W's two "halves" read as two streams
// wa and wb, one row of W (each half) `ws` elements after the last. With VB = 32 (AVX2) the
// halves are the two vectors of one panel (wb = wa + 8 floats); with VB = 64 (AVX-512) a vector
// is a whole panel and the halves are two neighbouring panels: the same C columns either way.
// MR x 2 vector accumulators stay in registers while k runs; each W row (two vectors) loaded
// once feeds MR rows. For MR >= 4 there are enough independent sums to keep both FMA pipes busy.
template <typename T, int MR, int VB>
inline void panel_tile(int64_t K, const T* __restrict A, int64_t lda, const T* __restrict wa,
                       const T* __restrict wb, int64_t ws, bool accumulate, T* __restrict C,
                       int64_t ldc) {
  typedef T V __attribute__((vector_size(VB), aligned(sizeof(T))));
  constexpr int64_t L = VB / sizeof(T);
  V acc[MR][2];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
    for (int v = 0; v < 2; ++v)
      acc[m][v] = accumulate ? *(const V*)(C + m * ldc + v * L) : V{} * T(0);
  for (int64_t k = 0; k < K; ++k) {
    const V w0 = *(const V*)(wa + k * ws), w1 = *(const V*)(wb + k * ws);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const T am = A[m * lda + k];
      acc[m][0] += am * w0;
      acc[m][1] += am * w1;
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
    for (int v = 0; v < 2; ++v) *(V*)(C + m * ldc + v * L) = acc[m][v];
}

// The same for 1 to 3 rows: too few sums to hide the FMA latency, so the k loop runs U = 4 (one
// row) or 2 interleaved sets of accumulators, added at the end (the same U for every VB, so
// that a column's sum is the same whichever tile computed it).
template <typename T, int MR, int VB>
inline void panel_tile_split(int64_t K, const T* __restrict A, int64_t lda,
                             const T* __restrict wa, const T* __restrict wb, int64_t ws,
                             bool accumulate, T* __restrict C, int64_t ldc) {
  typedef T V __attribute__((vector_size(VB), aligned(sizeof(T))));
  constexpr int64_t L = VB / sizeof(T);
  constexpr int U = MR == 1 ? 4 : 2;
  V acc[U][MR][2];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u)
#pragma GCC unroll 3
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
      for (int v = 0; v < 2; ++v)
        acc[u][m][v] = (u == 0 && accumulate) ? *(const V*)(C + m * ldc + v * L) : V{} * T(0);
  int64_t k = 0;
  for (; k + U <= K; k += U) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const V w0 = *(const V*)(wa + (k + u) * ws), w1 = *(const V*)(wb + (k + u) * ws);
#pragma GCC unroll 3
      for (int m = 0; m < MR; ++m) {
        const T am = A[m * lda + k + u];
        acc[u][m][0] += am * w0;
        acc[u][m][1] += am * w1;
      }
    }
  }
  for (; k < K; ++k) {
    const V w0 = *(const V*)(wa + k * ws), w1 = *(const V*)(wb + k * ws);
#pragma GCC unroll 3
    for (int m = 0; m < MR; ++m) {
      acc[0][m][0] += A[m * lda + k] * w0;
      acc[0][m][1] += A[m * lda + k] * w1;
    }
  }
#pragma GCC unroll 3
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
    for (int v = 0; v < 2; ++v) {
      V sum = acc[0][m][v];
#pragma GCC unroll 4
      for (int u = 1; u < U; ++u) sum += acc[u][m][v];
      *(V*)(C + m * ldc + v * L) = sum;
    }
}

// MR rows of C[:, n0 : n0 + cols] against one panel (VB = 32) or two neighbouring panels
// (VB = 64), starting at `panel`; a tile cut short by N (cols below its width) goes through a
// full-width scratch tile (the packed panels are zero beyond N).
template <typename T, int MR, int VB>
inline void panel_rows(int64_t K, const T* A, const T* panel, bool accumulate, T* C, int64_t ldc,
                       int64_t cols) {
  constexpr int64_t NP = kPanel<T>, L = VB / sizeof(T), width = 2 * L;
  const T* wb = VB == 64 ? panel + K * NP : panel + L;
  auto tile = [&](bool acc, T* c, int64_t ldc_) {
    if constexpr (MR >= 4)
      panel_tile<T, MR, VB>(K, A, K, panel, wb, NP, acc, c, ldc_);
    else
      panel_tile_split<T, MR, VB>(K, A, K, panel, wb, NP, acc, c, ldc_);
  };
  if (cols == width) return tile(accumulate, C, ldc);
  T scratch[MR * width] = {};
  for (int r = 0; r < MR; ++r)
    for (int64_t q = 0; q < cols; ++q) scratch[r * width + q] = accumulate ? C[r * ldc + q] : T(0);
  tile(true, scratch, width);
  for (int r = 0; r < MR; ++r)
    for (int64_t q = 0; q < cols; ++q) C[r * ldc + q] = scratch[r * width + q];
}

// Every row of A against the columns [n0, n0 + cols) that start at `panel`: tiles of 8 rows
// (AVX-512: 16 accumulators of 32) or of 6 (AVX2: 12 of 16; 4 where 6 would leave 2: 8 = 4 + 4),
// then 4, then the last 1 to 3 rows.
template <typename T, int VB>
inline void panel_column(int64_t M, int64_t N, int64_t K, const T* A, const T* panel,
                         bool accumulate, T* C, int64_t n0, int64_t cols) {
  int64_t m = 0;
  if constexpr (VB == 64) {
    for (; M - m >= 8; m += 8)
      panel_rows<T, 8, VB>(K, A + m * K, panel, accumulate, C + m * N + n0, N, cols);
  } else {
    for (; M - m >= 6 && M - m != 8; m += 6)
      panel_rows<T, 6, VB>(K, A + m * K, panel, accumulate, C + m * N + n0, N, cols);
  }
  for (; M - m >= 4; m += 4)
    panel_rows<T, 4, VB>(K, A + m * K, panel, accumulate, C + m * N + n0, N, cols);
  if (M - m == 3) panel_rows<T, 3, VB>(K, A + m * K, panel, accumulate, C + m * N + n0, N, cols);
  if (M - m == 2) panel_rows<T, 2, VB>(K, A + m * K, panel, accumulate, C + m * N + n0, N, cols);
  if (M - m == 1) panel_rows<T, 1, VB>(K, A + m * K, panel, accumulate, C + m * N + n0, N, cols);
}

// Panels [p0, p1) of the product, each against every row of A. The AVX-512 copy takes them two
// at a time (one 64-byte vector each), a last odd one alone with the AVX2 tile.
template <typename T>
inline void panel_range(int64_t M, int64_t N, int64_t K, const T* A, const T* panels,
                        bool accumulate, T* C, int64_t p0, int64_t p1) {
  constexpr int64_t NP = kPanel<T>;
  for (int64_t p = p0; p < p1;) {
    const T* panel = panels + p * K * NP;
    const int64_t n0 = p * NP;
    if (kPanelsPerTile == 2 && p + 1 < p1) {
      panel_column<T, 64>(M, N, K, A, panel, accumulate, C, n0, std::min(2 * NP, N - n0));
      p += 2;
    } else {
      panel_column<T, 32>(M, N, K, A, panel, accumulate, C, n0, std::min(NP, N - n0));
      p += 1;
    }
  }
}

// Thread `id`'s share [first, last) of n panels, in whole tiles' worth: two panels at a time in
// the AVX-512 copy (so that no thread is left an odd panel to run alone mid-range).
struct PanelShare {
  int64_t first, last;
};
inline PanelShare panel_share(int64_t n, int64_t id, int64_t team) {
  constexpr int64_t s = kPanelsPerTile;
  const int64_t units = panel_tiles(n);
  return {std::min(n, s * (units * id / team)), std::min(n, s * (units * (id + 1) / team))};
}

// C[M, N] (+)= A[M, K] @ W[K, N], A and C row-major and contiguous, W in panels (pack_panels).
// From step_threads()'s minimum of work on, the panels are split over torch's OpenMP team (the
// runtime torch loaded: torch.set_num_threads sets it), forked per product: each thread reads
// only its share of W, so the weights a step streams are shared among the cores' caches. Every
// output is computed by one thread in the same order whatever the team's size: one thread and
// two give the same bits.
template <typename T>
inline void step_gemm(int64_t M, int64_t N, int64_t K, const T* A, const T* panels,
                      bool accumulate, T* C) {
  if (M == 0 || N == 0) return;
  const int64_t n_panels = (N + kPanel<T> - 1) / kPanel<T>;
  if (step_threads(M * N * K, panel_tiles(n_panels)) <= 1)
    return panel_range<T>(M, N, K, A, panels, accumulate, C, 0, n_panels);
  // The whole team, as at::parallel_for does: a num_threads clause that changes the team's size
  // makes libgomp end and start threads (pytorch/pytorch#32008). Threads beyond the panels idle.
#pragma omp parallel
  {
    const PanelShare s = panel_share(n_panels, omp_get_thread_num(), omp_get_num_threads());
    panel_range<T>(M, N, K, A, panels, accumulate, C, s.first, s.last);
  }
}

// Whether the threads split the hidden units of a time loop (experiments 12 and 14,
// docs/performance.md), for the LSTM and the GRU alike: the number of panels of units they split
// (H / kPanel), or 0 for no split. Where the rows' pass would run on one thread (B * H below
// rows_in_parallel's minimum), from units_minimum() multiply-adds a step (`macs`), with at least
// two tiles of units to share, whole panels per gate block (H a multiple of kPanel), no
// projection, and not inside another parallel region. LSTM_CPU_BY_UNITS=0 turns it off.
template <typename T>
inline int64_t split_panels(int64_t B, int64_t H, int64_t macs, bool projected) {
  const int64_t panels = H / kPanel<T>;
  const bool split = by_units_enabled() && !projected && H % kPanel<T> == 0 &&
                     !rows_in_parallel(B, H) && macs >= units_minimum() &&
                     panel_tiles(panels) >= 2 && !omp_in_parallel() && omp_get_max_threads() > 1;
  return split ? panels : 0;
}

// split_rows for a time loop of B rows, H units, G = blocks * H pre-activations a row and P
// outputs (the LSTM: 4 blocks; the GRU: 3 and the plain RNN: 1, P = H): the recurrent weights
// (and the projection's) are the working set every thread reads, G values a row its own.
template <typename T>
inline bool rows_split(int64_t B, int64_t H, int64_t blocks, int64_t P, bool projected) {
  const int64_t G = blocks * H;
  const int64_t weight_bytes = (G * P + (projected ? H * P : 0)) * (int64_t)sizeof(T);
  return split_rows(B, weight_bytes, G * sizeof(T), B * G * P);
}

// How the threads share a time loop of the LSTM or the GRU (shapes as rows_split), forward and
// backward alike: the hidden units (split_panels; unit_panels > 0), whole rows (rows_split), or
// neither (the step's product forked over the team where large enough). Where both splits
// apply, prefer_rows() picks (experiment 22).
template <typename T>
inline LoopSplit loop_split(int64_t B, int64_t H, int64_t blocks, int64_t P, bool projected) {
  const bool rows = rows_split<T>(B, H, blocks, P, projected);
  const int64_t unit_panels = split_panels<T>(B, H, B * blocks * H * P, projected);
  if (unit_panels > 0 && !(rows && prefer_rows())) return {unit_panels, false};
  return {0, rows};
}

// The rows of a step's pointwise pass: on this thread when the units are split (each thread runs
// its own units of every row), else over the team where rows_in_parallel says so.
template <typename Row>
inline void each_row(int64_t B, int64_t H, bool by_units, Row&& row) {
  if (by_units) {
    for (int64_t b = 0; b < B; ++b) row(b);
    return;
  }
#pragma omp parallel for schedule(static) if (rows_in_parallel(B, H))
  for (int64_t b = 0; b < B; ++b) row(b);
}

// Thread `id`'s rows [first, last) of B, in whole tiles of 8 rows where B allows.
inline PanelShare row_share(int64_t B, int64_t id, int64_t team) {
  const int64_t tiles = (B + 7) / 8;
  return {std::min(B, 8 * (tiles * id / team)), std::min(B, 8 * (tiles * (id + 1) / team))};
}

// The rows' time loop: step(t, b0, b1) for each thread's rows, one parallel region, no barrier.
template <typename Step>
inline void rows_loop(int64_t steps, int64_t B, Step&& step) {
#pragma omp parallel
  {
    const PanelShare r = row_share(B, omp_get_thread_num(), omp_get_num_threads());
    if (r.first < r.last)
      for (int64_t t = 0; t < steps; ++t) step(t, r.first, r.last);
  }
}

// The two time loops every cell's forward and backward run, serial or with the hidden units
// split (experiment 14, docs/performance.md). unit_panels = 0: one thread, every panel.
// Otherwise one parallel region on torch's team (as at::parallel_for: a num_threads clause would
// restart libgomp's threads), each thread owning whole panels of units [first, last) of the
// `unit_panels` panels for the whole loop, one SpinBarrier a step.
//
// Forward: step(t, q0, q1) runs step t for the units of panels [q0, q1); the next step reads
// every unit of h_t, hence the barrier after each step.
template <typename T, typename Step>
inline void forward_loop(int64_t steps, int64_t H, int64_t unit_panels, Step&& step) {
  if (unit_panels == 0) {
    const int64_t all = (H + kPanel<T> - 1) / kPanel<T>;
    for (int64_t t = 0; t < steps; ++t) step(t, 0, all);
    return;
  }
  SpinBarrier barrier;
#pragma omp parallel
  {
    const int team = omp_get_num_threads();
    const PanelShare s = panel_share(unit_panels, omp_get_thread_num(), team);
    for (int64_t t = 0; t < steps; ++t) {
      step(t, s.first, s.last);
      barrier.wait(team);  // every unit of h_t is written
    }
  }
}

// Backward, from the last step to the first: gate_gradients(t, u0, u1) for units [u0, u1)
// (unit-local: a unit's gate gradients need only its own dh and dC), then
// state_gradient(t, q0, q1), the columns (panels [q0, q1) of the P columns) of dh_{t-1}, which
// read every unit's gate gradients: hence the barrier between the two.
template <typename T, typename Gates, typename State>
inline void backward_loop(int64_t steps, int64_t H, int64_t P, int64_t unit_panels,
                          Gates&& gate_gradients, State&& state_gradient) {
  if (unit_panels == 0) {
    const int64_t all = (P + kPanel<T> - 1) / kPanel<T>;
    for (int64_t t = steps - 1; t >= 0; --t) {
      gate_gradients(t, 0, H);
      state_gradient(t, 0, all);
    }
    return;
  }
  SpinBarrier barrier;
#pragma omp parallel
  {
    const int team = omp_get_num_threads();
    const PanelShare s = panel_share(unit_panels, omp_get_thread_num(), team);
    const int64_t u0 = std::min(H, s.first * kPanel<T>), u1 = std::min(H, s.last * kPanel<T>);
    for (int64_t t = steps - 1; t >= 0; --t) {
      gate_gradients(t, u0, u1);
      barrier.wait(team);  // every unit's gate gradients at step t are written
      state_gradient(t, s.first, s.last);
    }
  }
}

// A cell's forward and backward time loops as the plan says (loop_split): whole rows per thread
// (rows_loop, every unit: u0 = 0, u1 = H; panels [0, all of the P outputs)), or the units split
// or serial loops (forward_loop, backward_loop: every row, b0 = 0, b1 = B).
// step(t, b0, b1, q0, q1); gates(t, b0, b1, u0, u1); state(t, b0, b1, q0, q1).
template <typename T, typename Step>
inline void planned_forward(int64_t steps, int64_t B, int64_t H, const LoopSplit& plan,
                            Step&& step) {
  if (plan.by_rows) {
    const int64_t all = (H + kPanel<T> - 1) / kPanel<T>;
    rows_loop(steps, B, [&](int64_t t, int64_t b0, int64_t b1) { step(t, b0, b1, 0, all); });
  } else {
    forward_loop<T>(steps, H, plan.unit_panels,
                    [&](int64_t t, int64_t q0, int64_t q1) { step(t, 0, B, q0, q1); });
  }
}
template <typename T, typename Gates, typename State>
inline void planned_backward(int64_t steps, int64_t B, int64_t H, int64_t P,
                             const LoopSplit& plan, Gates&& gates, State&& state) {
  if (plan.by_rows) {  // from the last step to the first, each thread its rows
    const int64_t all = (P + kPanel<T> - 1) / kPanel<T>;
    rows_loop(steps, B, [&](int64_t k, int64_t b0, int64_t b1) {
      const int64_t t = steps - 1 - k;
      gates(t, b0, b1, 0, H);
      state(t, b0, b1, 0, all);
    });
  } else {
    backward_loop<T>(
        steps, H, P, plan.unit_panels,
        [&](int64_t t, int64_t u0, int64_t u1) { gates(t, 0, B, u0, u1); },
        [&](int64_t t, int64_t q0, int64_t q1) { state(t, 0, B, q0, q1); });
  }
}

// ---------------------------------------------------------------------------------------------
// LSTM (the arguments and the variants: see LstmForward above)
// ---------------------------------------------------------------------------------------------

// z += b over `blocks` gate blocks of `n` units, `stride` apart: the bias of one row's
// pre-activations, added just before its gate arithmetic (experiment 21).
template <typename T>
inline void add_bias(int64_t blocks, int64_t n, int64_t stride, T* __restrict z,
                     const T* __restrict b) {
  for (int64_t k = 0; k < blocks; ++k)
    for (int64_t j = 0; j < n; ++j) z[k * stride + j] += b[k * stride + j];
}

// The gate arithmetic of one row, in place: z (4 gate blocks, `stride` apart) -> gates, for `n`
// units; writes c, h (unprojected) and, when asked, tanh(c). Every variant's pointwise change
// goes here. (A whole row: n = stride = H; a thread's share of the units: n < stride = H.)
template <typename T, bool kSaveTanh>
inline void lstm_pointwise_forward(int64_t n, int64_t stride, T* __restrict z,
                                   const T* __restrict c_prev, T* __restrict c_out,
                                   T* __restrict h_out, T* __restrict tanh_out) {
  T* __restrict zi = z;
  T* __restrict zf = z + stride;
  T* __restrict zg = z + 2 * stride;
  T* __restrict zo = z + 3 * stride;
  for (int64_t j = 0; j < n; ++j) {
    const T i = Act<T>::sigmoid(zi[j]);
    const T f = Act<T>::sigmoid(zf[j]);
    const T g = Act<T>::tanh(zg[j]);
    const T o = Act<T>::sigmoid(zo[j]);
    const T c = f * c_prev[j] + i * g;
    const T tc = Act<T>::tanh(c);
    zi[j] = i;
    zf[j] = f;
    zg[j] = g;
    zo[j] = o;
    c_out[j] = c;
    h_out[j] = o * tc;
    if constexpr (kSaveTanh) tanh_out[j] = tc;
  }
}

template <typename T>
void lstm_forward(const LstmForward<T>& a) {
  const int64_t B = a.batch, H = a.hidden, P = a.proj, G = 4 * H;
  // Where the plan says so, each thread multiplies the panels of its units in all four gate
  // blocks and runs those units' arithmetic, for the whole loop (forward_loop), or runs whole
  // rows of the batch (rows_loop).
  const LoopSplit plan = loop_split<T>(B, H, 4, P, a.w_hr_t != nullptr);
  const int64_t unit_panels = plan.unit_panels;
  const bool by_units = unit_panels > 0, by_rows = plan.by_rows;
  // Step t for rows [b0, b1), units [u0, u1): the product's columns of those units in the four
  // gate blocks (panels [q0, q1) of each), the gate arithmetic, the padding mask. Whole rows
  // (b0 = 0, b1 = B) or whole units (q0 = 0, q1 = every panel).
  auto step = [&](int64_t t, int64_t b0, int64_t b1, int64_t q0, int64_t q1) {
    const T* h_prev = t == 0 ? a.h0 : a.h_all + (t - 1) * B * P;  // (B, P)
    const T* c_prev = t == 0 ? a.c0 : a.c_all + (t - 1) * B * H;  // (B, H)
    T* z = a.gates + t * B * G;                                    // (B, 4H)
    T* h = a.h_all + t * B * P;
    T* c = a.c_all + t * B * H;
    T* tc = a.tanh_c ? a.tanh_c + t * B * H : nullptr;
    const bool* m = a.mask ? a.mask + t * B : nullptr;
    T* h_unprojected = a.w_hr_t ? a.h_raw : h;
    const int64_t u0 = std::min(H, q0 * kPanel<T>), u1 = std::min(H, q1 * kPanel<T>);
    // The gate arithmetic of row b, units [u0, u1).
    auto pointwise = [&](int64_t b) {
      const int64_t o = b * H + u0;
      T* zb = z + b * G + u0;
      if (a.bias) add_bias<T>(4, u1 - u0, H, zb, a.bias + u0);
      if (tc)
        lstm_pointwise_forward<T, true>(u1 - u0, H, zb, c_prev + o, c + o, h_unprojected + o,
                                        tc + o);
      else
        lstm_pointwise_forward<T, false>(u1 - u0, H, zb, c_prev + o, c + o, h_unprojected + o,
                                         nullptr);
    };
    if (by_units) {
      for (int64_t g = 0; g < 4; ++g)  // z += h_{t-1} W_hh^T, these units' columns
        panel_range<T>(B, G, P, h_prev, a.w_hh_t, true, z, g * unit_panels + q0,
                       g * unit_panels + q1);
      each_row(B, H, true, pointwise);
    } else if (by_rows) {  // these rows: z += h_{t-1} W_hh^T, then their gate arithmetic
      panel_range<T>(b1 - b0, G, P, h_prev + b0 * P, a.w_hh_t, true, z + b0 * G, 0,
                     (G + kPanel<T> - 1) / kPanel<T>);
      for (int64_t b = b0; b < b1; ++b) pointwise(b);
    } else {
      step_gemm<T>(B, G, P, h_prev, a.w_hh_t, true, z);  // z += h_{t-1} W_hh^T
      each_row(B, H, false, pointwise);
    }
    if (a.w_hr_t) {  // h = h_raw W_hr^T
      if (by_rows)
        panel_range<T>(b1 - b0, P, H, a.h_raw + b0 * H, a.w_hr_t, false, h + b0 * P, 0,
                       (P + kPanel<T> - 1) / kPanel<T>);
      else
        step_gemm<T>(B, P, H, a.h_raw, a.w_hr_t, false, h);
    }
    if (m) {
      const int64_t p0 = a.w_hr_t ? 0 : u0, p1 = a.w_hr_t ? P : u1;
      for (int64_t b = b0; b < b1; ++b) {
        if (m[b]) continue;  // padding: the state carries unchanged
        for (int64_t j = p0; j < p1; ++j) h[b * P + j] = h_prev[b * P + j];
        for (int64_t j = u0; j < u1; ++j) c[b * H + j] = c_prev[b * H + j];
      }
    }
  };
  planned_forward<T>(a.steps, B, H, plan, step);
}

// One row of the step's backward: dh (H, unprojected) and dc (H, in/out: dC_t -> dC_{t-1}),
// writes dz (4H). See lstm/bptt.py for the equations.
// (A whole row: n = H = stride; a thread's share of the units: n < stride = H, every pointer at
// the share's first unit.)
template <typename T, bool kGradGates>
inline void lstm_pointwise_backward(int64_t n, int64_t H, const T* __restrict gates,
                                    const T* __restrict c_prev, const T* __restrict tanh_c,
                                    const T* __restrict dh, T* __restrict dc,
                                    const T* __restrict grad_gates, T* __restrict dz) {
  const T* gi = gates;
  const T* gf = gates + H;
  const T* gg = gates + 2 * H;
  const T* go = gates + 3 * H;
  for (int64_t j = 0; j < n; ++j) {
    const T i = gi[j], f = gf[j], g = gg[j], o = go[j], tc = tanh_c[j];
    T d_o = dh[j] * tc;
    const T dcj = dc[j] + dh[j] * o * (T(1) - tc * tc);
    T d_i = dcj * g;
    T d_g = dcj * i;
    T d_f = dcj * c_prev[j];
    if constexpr (kGradGates) {
      d_i += grad_gates[j];
      d_f += grad_gates[H + j];
      d_g += grad_gates[2 * H + j];
      d_o += grad_gates[3 * H + j];
    }
    dz[j] = d_i * i * (T(1) - i);
    dz[H + j] = d_f * f * (T(1) - f);
    dz[2 * H + j] = d_g * (T(1) - g * g);
    dz[3 * H + j] = d_o * o * (T(1) - o);
    dc[j] = dcj * f;  // the forget gate is the whole Jacobian C_t -> C_{t-1}
  }
}

template <typename T>
void lstm_backward(const LstmBackward<T>& a) {
  const int64_t B = a.batch, H = a.hidden, P = a.proj, G = 4 * H;
  T* dh = a.dh;  // (B, P) gradient arriving at h_t
  T* dc = a.dc;  // (B, H) gradient arriving at C_t
  // Units or rows split as in the forward (loop_split; the units' barrier: backward_loop; the
  // rows: each thread its own rows, no barrier).
  const LoopSplit plan = loop_split<T>(B, H, 4, P, a.w_hr != nullptr);
  const int64_t unit_panels = plan.unit_panels;
  const bool by_units = unit_panels > 0, by_rows = plan.by_rows;
  // Step t's gate gradients for rows [b0, b1), units [u0, u1) (and, with a projection, dh's
  // columns [0, P)): the arriving gradients, the mask, the pointwise pass.
  auto gate_gradients = [&](int64_t t, int64_t b0, int64_t b1, int64_t u0, int64_t u1) {
    const int64_t p0 = a.w_hr ? 0 : u0, p1 = a.w_hr ? P : u1;
    if (a.grad_h) {
      const T* g = a.grad_h + t * B * P;
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t j = p0; j < p1; ++j) dh[b * P + j] += g[b * P + j];
    }
    if (a.grad_c) {
      const T* g = a.grad_c + t * B * H;
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t j = u0; j < u1; ++j) dc[b * H + j] += g[b * H + j];
    }
    // Padding rows copied the state forward unchanged: their gradient skips the step.
    const bool* m = a.mask ? a.mask + t * B : nullptr;
    if (m) {
      for (int64_t b = b0; b < b1; ++b) {
        if (m[b]) continue;
        for (int64_t j = p0; j < p1; ++j) {
          a.dh_skip[b * P + j] = dh[b * P + j];
          dh[b * P + j] = T(0);
        }
      }
    }
    if (a.dh_step)
      for (int64_t k = b0 * P; k < b1 * P; ++k) a.dh_step[t * B * P + k] = dh[k];
    const T* dh_unprojected = dh;
    if (a.w_hr) {  // dh_raw = dh W_hr
      if (by_rows)
        panel_range<T>(b1 - b0, H, P, dh + b0 * P, a.w_hr, false, a.dh_raw + b0 * H, 0,
                       (H + kPanel<T> - 1) / kPanel<T>);
      else
        step_gemm<T>(B, H, P, dh, a.w_hr, false, a.dh_raw);
      dh_unprojected = a.dh_raw;
    }
    const T* gates = a.gates + t * B * G;
    const T* c_prev = t == 0 ? a.c0 : a.c_all + (t - 1) * B * H;
    const T* tc = a.tanh_c + t * B * H;
    const T* gg = a.grad_gates ? a.grad_gates + t * B * G : nullptr;
    T* dz = a.d_pre + t * B * G;
    const int64_t n = u1 - u0;
    auto row = [&](int64_t b) {
      const bool real = !m || m[b];
      const int64_t o = b * H + u0, q = b * G + u0;
      // A padding row skips the step: dC_{t-1} = dC_t (left as it is) and the step itself sees
      // no dh, dC; the gates' own gradients (if any) still flow to z and on to h_{t-1}.
      if (real && gg) {
        lstm_pointwise_backward<T, true>(n, H, gates + q, c_prev + o, tc + o,
                                         dh_unprojected + o, dc + o, gg + q, dz + q);
      } else if (real) {
        lstm_pointwise_backward<T, false>(n, H, gates + q, c_prev + o, tc + o,
                                          dh_unprojected + o, dc + o, nullptr, dz + q);
      } else {
        for (int64_t k = 0; k < 4; ++k)
          for (int64_t j = 0; j < n; ++j) dz[q + k * H + j] = T(0);
        if (gg) {
          const T* gr = gates + q;
          const T* g = gg + q;
          for (int64_t j = 0; j < n; ++j) {
            const T i = gr[j], f = gr[H + j], cg = gr[2 * H + j], o = gr[3 * H + j];
            dz[q + j] = g[j] * i * (T(1) - i);
            dz[q + H + j] = g[H + j] * f * (T(1) - f);
            dz[q + 2 * H + j] = g[2 * H + j] * (T(1) - cg * cg);
            dz[q + 3 * H + j] = g[3 * H + j] * o * (T(1) - o);
          }
        }
      }
    };
    if (by_rows)
      for (int64_t b = b0; b < b1; ++b) row(b);
    else
      each_row(B, H, by_units, row);
  };
  // dh_{t-1} = dz_t W_hh for rows [b0, b1), columns (panels) [q0, q1), then the skipped rows'
  // gradient back in.
  auto state_gradient = [&](int64_t t, int64_t b0, int64_t b1, int64_t q0, int64_t q1) {
    const T* dz = a.d_pre + t * B * G;
    if (by_units)
      panel_range<T>(B, P, G, dz, a.w_hh, false, dh, q0, q1);
    else if (by_rows)
      panel_range<T>(b1 - b0, P, G, dz + b0 * G, a.w_hh, false, dh + b0 * P, q0, q1);
    else
      step_gemm<T>(B, P, G, dz, a.w_hh, false, dh);
    const bool* m = a.mask ? a.mask + t * B : nullptr;
    if (m) {
      const int64_t p0 = std::min(P, q0 * kPanel<T>), p1 = std::min(P, q1 * kPanel<T>);
      for (int64_t b = b0; b < b1; ++b) {
        if (m[b]) continue;
        for (int64_t j = p0; j < p1; ++j) dh[b * P + j] += a.dh_skip[b * P + j];
      }
    }
  };
  planned_backward<T>(a.steps, B, H, P, plan, gate_gradients, state_gradient);
}

// ---------------------------------------------------------------------------------------------
// GRU
// ---------------------------------------------------------------------------------------------

// The gate arithmetic of one row's units [0, n), gate blocks `H` apart (a whole row: n = H; a
// thread's share of the units: n < H, every pointer at the share's first unit).
template <typename T, bool kSaveGhn>
inline void gru_pointwise_forward(int64_t n_units, int64_t H, T* __restrict gx,
                                  const T* __restrict gh, const T* __restrict h_prev,
                                  T* __restrict h_out, T* __restrict gh_n_out) {
  for (int64_t j = 0; j < n_units; ++j) {
    const T r = Act<T>::sigmoid(gx[j] + gh[j]);
    const T z = Act<T>::sigmoid(gx[H + j] + gh[H + j]);
    const T n = Act<T>::tanh(gx[2 * H + j] + r * gh[2 * H + j]);
    gx[j] = r;
    gx[H + j] = z;
    gx[2 * H + j] = n;
    h_out[j] = (T(1) - z) * n + z * h_prev[j];
    if constexpr (kSaveGhn) gh_n_out[j] = gh[2 * H + j];
  }
}

template <typename T>
void gru_forward(const GruForward<T>& a) {
  const int64_t B = a.batch, H = a.hidden, G = 3 * H;
  // Where the plan says so, each thread runs its units' columns in the three gate blocks and
  // their gate arithmetic, for the whole loop (forward_loop), or whole rows of the batch
  // (rows_loop; experiment 23).
  const LoopSplit plan = loop_split<T>(B, H, 3, H, false);
  const int64_t unit_panels = plan.unit_panels;
  const bool by_units = unit_panels > 0, by_rows = plan.by_rows;
  // Step t for rows [b0, b1), units of panels [q0, q1): whole rows or whole units.
  auto step = [&](int64_t t, int64_t b0, int64_t b1, int64_t q0, int64_t q1) {
    const T* h_prev = t == 0 ? a.h0 : a.h_all + (t - 1) * B * H;
    T* gx = a.gates + t * B * G;
    T* h = a.h_all + t * B * H;
    const int64_t u0 = std::min(H, q0 * kPanel<T>), u1 = std::min(H, q1 * kPanel<T>);
    if (a.b_hh)
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t g = 0; g < 3; ++g)
          for (int64_t j = u0; j < u1; ++j) a.gh[b * G + g * H + j] = a.b_hh[g * H + j];
    if (by_units) {
      for (int64_t g = 0; g < 3; ++g)  // gh = h W_hh^T + b_hh, these units' columns
        panel_range<T>(B, G, H, h_prev, a.w_hh_t, a.b_hh != nullptr, a.gh,
                       g * unit_panels + q0, g * unit_panels + q1);
    } else if (by_rows) {  // these rows, every column
      panel_range<T>(b1 - b0, G, H, h_prev + b0 * H, a.w_hh_t, a.b_hh != nullptr,
                     a.gh + b0 * G, 0, (G + kPanel<T> - 1) / kPanel<T>);
    } else {
      step_gemm<T>(B, G, H, h_prev, a.w_hh_t, a.b_hh != nullptr, a.gh);
    }
    const bool* m = a.mask ? a.mask + t * B : nullptr;
    auto row = [&](int64_t b) {
      const int64_t o = b * H + u0, q = b * G + u0;
      if (a.gh_n)
        gru_pointwise_forward<T, true>(u1 - u0, H, gx + q, a.gh + q, h_prev + o, h + o,
                                       a.gh_n + t * B * H + o);
      else
        gru_pointwise_forward<T, false>(u1 - u0, H, gx + q, a.gh + q, h_prev + o, h + o,
                                        nullptr);
      if (m && !m[b])
        for (int64_t j = u0; j < u1; ++j) h[b * H + j] = h_prev[b * H + j];
    };
    if (by_rows)
      for (int64_t b = b0; b < b1; ++b) row(b);
    else
      each_row(B, H, by_units, row);
  };
  planned_forward<T>(a.steps, B, H, plan, step);
}

// One row of the GRU step's backward (see lstm/bptt.py), units [0, n) with gate blocks `H` apart
// (as gru_pointwise_forward). real = false: a padding row, where the step sees no dh (only the
// gates' own gradients) and dh skips straight to h_{t-1}.
template <typename T, bool kGradGates>
inline void gru_pointwise_backward(int64_t n_units, int64_t H, bool real,
                                   const T* __restrict gates, const T* __restrict h_prev,
                                   const T* __restrict gh_n, const T* __restrict dh,
                                   const T* __restrict grad_gates, T* __restrict d_gx,
                                   T* __restrict d_gh, T* __restrict dh_direct) {
  const T scale = real ? T(1) : T(0), skip = T(1) - scale;
  for (int64_t j = 0; j < n_units; ++j) {
    const T d = dh[j] * scale;
    const T r = gates[j], z = gates[H + j], n = gates[2 * H + j];
    T d_n = d * (T(1) - z);
    T d_z = d * (h_prev[j] - n);
    if constexpr (kGradGates) {
      d_n += grad_gates[2 * H + j];
      d_z += grad_gates[H + j];
    }
    const T d_n_pre = d_n * (T(1) - n * n);
    T d_r = d_n_pre * gh_n[j];
    if constexpr (kGradGates) d_r += grad_gates[j];
    const T d_r_pre = d_r * r * (T(1) - r);
    const T d_z_pre = d_z * z * (T(1) - z);
    d_gx[j] = d_r_pre;
    d_gx[H + j] = d_z_pre;
    d_gx[2 * H + j] = d_n_pre;
    d_gh[j] = d_r_pre;
    d_gh[H + j] = d_z_pre;
    d_gh[2 * H + j] = d_n_pre * r;
    dh_direct[j] = d * z + dh[j] * skip;  // the direct path h_{t-1} -> h_t, or the skip
  }
}

template <typename T>
void gru_backward(const GruBackward<T>& a) {
  const int64_t B = a.batch, H = a.hidden, G = 3 * H;
  T* dh = a.dh;
  // Units or rows split as in the forward (loop_split; the units' barrier: backward_loop; the
  // rows: each thread its own rows, no barrier).
  const LoopSplit plan = loop_split<T>(B, H, 3, H, false);
  const int64_t unit_panels = plan.unit_panels;
  const bool by_units = unit_panels > 0, by_rows = plan.by_rows;
  // Step t's gate gradients for rows [b0, b1), units [u0, u1).
  auto gate_gradients = [&](int64_t t, int64_t b0, int64_t b1, int64_t u0, int64_t u1) {
    if (a.grad_h) {
      const T* g = a.grad_h + t * B * H;
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t j = u0; j < u1; ++j) dh[b * H + j] += g[b * H + j];
    }
    const bool* m = a.mask ? a.mask + t * B : nullptr;
    const T* h_prev = t == 0 ? a.h0 : a.h_all + (t - 1) * B * H;
    const T* gates = a.gates + t * B * G;
    const T* ghn = a.gh_n + t * B * H;
    const T* gg = a.grad_gates ? a.grad_gates + t * B * G : nullptr;
    T* dgx = a.d_gx + t * B * G;
    T* dgh = a.d_gh + t * B * G;
    auto row = [&](int64_t b) {
      const bool real = !m || m[b];
      const int64_t o = b * H + u0, q = b * G + u0;
      if (gg)
        gru_pointwise_backward<T, true>(u1 - u0, H, real, gates + q, h_prev + o, ghn + o,
                                        dh + o, gg + q, dgx + q, dgh + q, a.dh_next + o);
      else
        gru_pointwise_backward<T, false>(u1 - u0, H, real, gates + q, h_prev + o, ghn + o,
                                         dh + o, nullptr, dgx + q, dgh + q, a.dh_next + o);
    };
    if (by_rows)
      for (int64_t b = b0; b < b1; ++b) row(b);
    else
      each_row(B, H, by_units, row);
  };
  // dh_{t-1} = d_gh W_hh + (direct path), rows [b0, b1), columns (panels) [q0, q1).
  auto state_gradient = [&](int64_t t, int64_t b0, int64_t b1, int64_t q0, int64_t q1) {
    const T* dgh = a.d_gh + t * B * G;
    const int64_t u0 = std::min(H, q0 * kPanel<T>), u1 = std::min(H, q1 * kPanel<T>);
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t j = u0; j < u1; ++j) dh[b * H + j] = a.dh_next[b * H + j];
    if (by_units)
      panel_range<T>(B, H, G, dgh, a.w_hh, true, dh, q0, q1);
    else if (by_rows)
      panel_range<T>(b1 - b0, H, G, dgh + b0 * G, a.w_hh, true, dh + b0 * H, q0, q1);
    else
      step_gemm<T>(B, H, G, dgh, a.w_hh, true, dh);
  };
  planned_backward<T>(a.steps, B, H, H, plan, gate_gradients, state_gradient);
}

// ---------------------------------------------------------------------------------------------
// Plain RNN (tanh or relu)
// ---------------------------------------------------------------------------------------------

template <typename T>
void rnn_forward(int64_t steps, int64_t B, int64_t H, T* pre /* (T, B, H) x W_ih^T + b */,
                 const T* w_hh_t /* (H, H), in panels */, const T* h0, const bool* mask, bool relu,
                 T* h_all /* (T, B, H) */) {
  // Whole rows per thread where rows_split allows (experiment 24; W_hh is H x H), forward and
  // backward alike; else each step's product is forked over the team where large enough.
  const bool by_rows = rows_split<T>(B, H, 1, H, false);
  const int64_t all = (H + kPanel<T> - 1) / kPanel<T>;
  // Step t for rows [b0, b1): z += h_{t-1} W_hh^T, then h = tanh(z) or relu(z), the mask.
  auto step = [&](int64_t t, int64_t b0, int64_t b1) {
    const T* h_prev = t == 0 ? h0 : h_all + (t - 1) * B * H;
    T* z = pre + t * B * H;
    T* h = h_all + t * B * H;
    if (by_rows)
      panel_range<T>(b1 - b0, H, H, h_prev + b0 * H, w_hh_t, true, z + b0 * H, 0, all);
    else
      step_gemm<T>(B, H, H, h_prev, w_hh_t, true, z);
    if (relu) {
      for (int64_t k = b0 * H; k < b1 * H; ++k) h[k] = z[k] > T(0) ? z[k] : T(0);
    } else {
      for (int64_t k = b0 * H; k < b1 * H; ++k) h[k] = Act<T>::tanh(z[k]);
    }
    const bool* m = mask ? mask + t * B : nullptr;
    if (m)
      for (int64_t b = b0; b < b1; ++b)
        if (!m[b])
          for (int64_t j = 0; j < H; ++j) h[b * H + j] = h_prev[b * H + j];
  };
  if (by_rows)
    rows_loop(steps, B, step);
  else
    for (int64_t t = 0; t < steps; ++t) step(t, 0, B);
}

template <typename T>
void rnn_backward(int64_t steps, int64_t B, int64_t H, const T* h_all, const T* w_hh /* (H, H), in panels */,
                  const bool* mask, bool relu, const T* grad_h /* (T, B, H) or nullptr */,
                  T* d_pre /* (T, B, H) out */, T* dh /* (B, H) in zeros, out dh0 */,
                  T* dh_skip /* (B, H) scratch */) {
  const bool by_rows = rows_split<T>(B, H, 1, H, false);  // as rnn_forward
  const int64_t all = (H + kPanel<T> - 1) / kPanel<T>;
  // Step t for rows [b0, b1): dz = dh * act'(z) (padding rows: 0, their dh skips the step),
  // then dh_{t-1} = dz W_hh (+ the skip).
  auto step = [&](int64_t t, int64_t b0, int64_t b1) {
    if (grad_h)
      for (int64_t k = b0 * H; k < b1 * H; ++k) dh[k] += grad_h[t * B * H + k];
    const bool* m = mask ? mask + t * B : nullptr;
    const T* h = h_all + t * B * H;
    T* dz = d_pre + t * B * H;
    auto row = [&](int64_t b) {
      const T scale = (!m || m[b]) ? T(1) : T(0);
      for (int64_t j = 0; j < H; ++j) {
        const int64_t k = b * H + j;
        const T d_act = relu ? (h[k] > T(0) ? T(1) : T(0)) : T(1) - h[k] * h[k];
        dz[k] = dh[k] * scale * d_act;
        dh_skip[k] = dh[k] * (T(1) - scale);
      }
    };
    if (by_rows) {
      for (int64_t b = b0; b < b1; ++b) row(b);
    } else {
#pragma omp parallel for schedule(static) if (rows_in_parallel(B, H))
      for (int64_t b = 0; b < B; ++b) row(b);
    }
    for (int64_t k = b0 * H; k < b1 * H; ++k) dh[k] = dh_skip[k];
    if (by_rows)
      panel_range<T>(b1 - b0, H, H, dz + b0 * H, w_hh, true, dh + b0 * H, 0, all);
    else
      step_gemm<T>(B, H, H, dz, w_hh, true, dh);
  };
  if (by_rows)
    rows_loop(steps, B, [&](int64_t k, int64_t b0, int64_t b1) { step(steps - 1 - k, b0, b1); });
  else
    for (int64_t t = steps - 1; t >= 0; --t) step(t, 0, B);
}

}  // namespace LSTMK_ISA
}  // namespace lstmk
