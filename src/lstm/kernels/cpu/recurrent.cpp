// The "cpu" backend of lstm.kernels: fused time loops for LSTM, GRU and RNN (forward and the
// hand-written BPTT backward), and a streaming stepper for one-step-at-a-time inference.
//
// Built on first use by lstm/kernels/cpu/__init__.py (torch.utils.cpp_extension.load) and cached.
// The loops are in kernels.h; this file holds the tensor-level entry points
// (shapes checked, outputs allocated, the big GEMMs before and after the loop) and the bindings.

// ATen and torch's pybind11 casters only (torch/extension.h pulls in the whole C++ frontend and
// doubles the build time).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/utils/pybind.h>

#include <dlfcn.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace lstmk {

// A barrier for the threads of one parallel region that spins instead of sleeping (here, before
// the target pragmas below, so that it is compiled once, for any CPU): about 70 ns a crossing
// on two cores here, against 250-300 for `#pragma omp barrier` and 415-435 for a fork and join
// (benchmarks/omp_barrier.cpp; experiment 14). After kSpins tries it yields the core, so a team
// larger than the cores free still makes progress. Every thread of the team calls wait(team) the
// same number of times.
class SpinBarrier {
 public:
  void wait(int team) {
    const int generation = generation_.load(std::memory_order_relaxed);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == team - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (spins < kSpins) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        sched_yield();
      }
    }
  }

 private:
  static constexpr int kSpins = 1 << 14;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> generation_{0};
};

}  // namespace lstmk

// The loops, compiled three times: for AVX-512, for AVX2+FMA and for any CPU; picked at run time.
// LSTMK_VBYTES is the width of the per-step products' vectors (kernels.h, panel_tile).
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LSTMK_HAVE_X86_COPIES 1
#define LSTMK_ISA avx512
#define LSTMK_VBYTES 64
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")
#include "kernels.h"
#pragma GCC pop_options
#undef LSTMK_ISA
#undef LSTMK_VBYTES
#define LSTMK_ISA avx2
#define LSTMK_VBYTES 32
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "kernels.h"
#pragma GCC pop_options
#undef LSTMK_ISA
#undef LSTMK_VBYTES
#endif
#define LSTMK_ISA base
#define LSTMK_VBYTES 32
#include "kernels.h"
#undef LSTMK_ISA
#undef LSTMK_VBYTES

namespace lstmk {

// The copy of the loops this CPU runs: 2 = AVX-512 (F, VL, DQ, BW), 1 = AVX2+FMA, 0 = portable.
// LSTM_CPU_ISA=avx2 or base caps it (to measure what each copy buys).
enum Isa : int { kBase = 0, kAvx2 = 1, kAvx512 = 2 };
static Isa isa_level() {
#ifdef LSTMK_HAVE_X86_COPIES
  static const Isa value = [] {
    __builtin_cpu_init();
    Isa best = kBase;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = kAvx2;
    if (best == kAvx2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw"))
      best = kAvx512;
    const char* forced = std::getenv("LSTM_CPU_ISA");
    if (forced && std::string(forced) == "base") return kBase;
    if (forced && std::string(forced) == "avx2") return std::min(best, kAvx2);
    return best;
  }();
  return value;
#else
  return kBase;
#endif
}

std::string isa() {
  const Isa level = isa_level();
  return level == kAvx512 ? "avx512" : level == kAvx2 ? "avx2" : "base";
}

// LSTMK_IN(level, f(args)): the call f(args) in the copy of the loops for `level`, a run-time
// value (LSTMK_CALL: this CPU's) or a compile-time one (the Stepper's template argument, where
// the compiler keeps only the branch taken).
#ifdef LSTMK_HAVE_X86_COPIES
#define LSTMK_IN(level, ...)                               \
  ((level) == kAvx512 ? avx512::__VA_ARGS__                \
                      : (level) == kAvx2 ? avx2::__VA_ARGS__ : base::__VA_ARGS__)
#else
#define LSTMK_IN(level, ...) base::__VA_ARGS__
#endif
#define LSTMK_CALL(fn, ...) LSTMK_IN(isa_level(), fn(__VA_ARGS__))

// ---------------------------------------------------------------------------------------------
// Argument checks (the layers check the user's arguments; these guard direct calls).
// ---------------------------------------------------------------------------------------------

using OptTensor = c10::optional<at::Tensor>;

static void check_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype,
                         int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), "cpu backend: ", name, " must be a CPU tensor, got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == dtype, "cpu backend: ", name, " has dtype ", t.scalar_type(),
              ", expected ", dtype);
  TORCH_CHECK(t.dim() == dim, "cpu backend: ", name, " must be ", dim, "-D, got shape ",
              t.sizes());
}

static at::Tensor mask_2d(const OptTensor& mask, int64_t T, int64_t B) {
  if (!mask.has_value() || !mask->defined()) return at::Tensor();
  TORCH_CHECK(mask->numel() == T * B, "cpu backend: mask must have T*B elements, got shape ",
              mask->sizes());
  return mask->to(at::kBool).reshape({T, B}).contiguous();
}

template <typename T>
static T* ptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}
template <typename T>
static const T* cptr(const OptTensor& t) {
  return (t.has_value() && t->defined()) ? t->data_ptr<T>() : nullptr;
}
static bool has(const OptTensor& t) { return t.has_value() && t->defined(); }
static OptTensor contig(const OptTensor& t) {
  if (!has(t)) return c10::nullopt;
  return t->contiguous();
}

// One pass over W (K, N) with strides (sk, sn) into panels (kPanel), split among the OpenMP team:
// zero-fill, a strided copy and a permute as torch ops took three passes and about 2 ms at
// K=512, N=2048 (a T=1 call cost 3.4 ms against torch.nn.LSTM's 1.4; experiment 9).
template <typename T>
static void pack_panels_into(const T* src, int64_t K, int64_t N, int64_t sk, int64_t sn, T* dst) {
  constexpr int64_t np = kPanel<T>;
  const int64_t panels = (N + np - 1) / np;
#pragma omp parallel for schedule(static) if (K * N >= (1 << 16) && !omp_in_parallel())
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = p * np, cols = std::min(np, N - n0);
    T* panel = dst + p * K * np;
    for (int64_t k = 0; k < K; ++k) {
      T* out = panel + k * np;
      if (sn == 1)  // a row of the panel is contiguous in W
        std::memcpy(out, src + k * sk + n0, cols * sizeof(T));
      else  // W^T of a row-major matrix: the panel's cols rows read side by side
        for (int64_t j = 0; j < cols; ++j) out[j] = src[k * sk + (n0 + j) * sn];
      std::fill(out + cols, out + np, T(0));
    }
  }
}

// W (K, N), any strides -> the per-step products' layout (kernels.h, kPanel): ceil(N / kPanel)
// panels of (K, kPanel), each contiguous, the last one zero-padded. Done once per call (once per
// Stepper): a copy of the weights, against the T products that read them.
static at::Tensor pack_panels(const at::Tensor& w) {
  const int64_t K = w.size(0), N = w.size(1);
  const int64_t np = w.scalar_type() == at::kDouble ? kPanel<double> : kPanel<float>;
  at::Tensor out = at::empty({(N + np - 1) / np, K, np}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "pack_panels", [&] {
    pack_panels_into(w.data_ptr<scalar_t>(), K, N, w.stride(0), w.stride(1),
                     out.data_ptr<scalar_t>());
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// The big GEMMs: the input projection of all T*B rows before the loop, the input and weight
// gradients after it. torch's at::mm is MKL, which runs its AVX2 code on AMD's AVX-512 CPUs:
// 220 GFLOP/s on a 2-core Zen 5, where oneDNN's AVX-512 code runs the same products at 400-500
// (docs/performance.md, experiment 13). So float32 goes to oneDNN where this process runs the
// AVX-512 copy of the loops, through torch's own at::native::mkldnn_matmul (strided operands,
// written in place, C = A B + beta C). That function is exported by libtorch_cpu but has no
// public header, so it is looked up at run time: a torch without it gets MKL, never a failed
// load. Double and every other CPU: MKL. LSTM_CPU_GEMM=mkl or onednn forces one (read once).
// torch's mkldnn_matmul refuses float32 on a CPU where its oneDNN lacks bf16 support (it wants
// avx512bw, avx512vl and avx512dq, or avx_ne_convert), so oneDNN is used only where torch's own
// check (mkldnn::_is_mkldnn_bf16_supported) says yes, forced or not: an AVX2-only CPU gets MKL.
// ---------------------------------------------------------------------------------------------

using MatmulFn = void (*)(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
                          float beta, float alpha);

static bool onednn_float32_supported() {
  try {
    return c10::Dispatcher::singleton()
        .findSchemaOrThrow("mkldnn::_is_mkldnn_bf16_supported", "")
        .typed<bool()>()
        .call();
  } catch (const std::exception&) {
    return false;  // a torch without the check: MKL, never a refused product
  }
}

static MatmulFn onednn_matmul() {
  static const MatmulFn fn = []() -> MatmulFn {
    const char* forced = std::getenv("LSTM_CPU_GEMM");
    const std::string choice = forced ? forced : "";
    if (choice == "mkl" || (choice != "onednn" && isa_level() != kAvx512)) return nullptr;
    if (!onednn_float32_supported()) return nullptr;
    void* torch_cpu = dlopen("libtorch_cpu.so", RTLD_NOW | RTLD_NOLOAD);
    if (!torch_cpu) return nullptr;
    return reinterpret_cast<MatmulFn>(
        dlsym(torch_cpu, "_ZN2at6native13mkldnn_matmulERKNS_6TensorES3_S3_ff"));
  }();
  return fn;
}

std::string gemm_library() { return onednn_matmul() ? "onednn" : "mkl"; }

// Which split a time loop of this cell ('lstm' or 'gru') and shape runs here (kernels.h,
// loop_split): 'units', 'rows', or 'steps' (no split for the whole loop: each step's product
// forked where large).
std::string loop_split_name(const std::string& cell, int64_t B, int64_t H, int64_t P,
                            bool projected, int64_t itemsize) {
  TORCH_CHECK(cell == "lstm" || cell == "gru", "loop_split: cell must be 'lstm' or 'gru', got '",
              cell, "'");
  const int64_t blocks = cell == "lstm" ? 4 : 3;
  const LoopSplit plan = itemsize == 8
                             ? LSTMK_CALL(loop_split<double>, B, H, blocks, P, projected)
                             : LSTMK_CALL(loop_split<float>, B, H, blocks, P, projected);
  return plan.unit_panels > 0 ? "units" : plan.by_rows ? "rows" : "steps";
}

// The least multiply-adds a product needs to go to oneDNN (LSTM_CPU_ONEDNN_MIN, read on every
// call so that one process can time both; default 2^22). Each call of mkldnn_matmul builds its
// memory descriptors and looks up its primitive, about 10 us that MKL does not spend: a T=1,
// B=1, H=64 training call (four tiny products) took 72 us through oneDNN and 25 through MKL,
// a T=100 one 176 against 149 (1.6M multiply-adds each), while at T=1000 (16M) oneDNN's
// faster code wins: 928 against 1190 us (experiment 16, docs/performance.md).
static int64_t onednn_min_macs() {
  const char* v = std::getenv("LSTM_CPU_ONEDNN_MIN");
  return v ? std::atoll(v) : int64_t(1) << 22;
}

// Whether a (M, K) @ (K, N) product of a's dtype goes to oneDNN.
static bool by_onednn(const at::Tensor& a, int64_t M, int64_t K, int64_t N) {
  return onednn_matmul() && a.scalar_type() == at::kFloat && M * K * N > 0 &&
         M * K * N >= onednn_min_macs();
}

// c (M, N) += a (M, K) @ b (K, N), any strides.
static void big_gemm_add(const at::Tensor& c, const at::Tensor& a, const at::Tensor& b) {
  if (by_onednn(a, a.size(0), a.size(1), b.size(1)))
    onednn_matmul()(a, b, c, 1.0f, 1.0f);
  else
    c.addmm_(a, b);
}

// a (M, K) @ b (K, N), any strides: a new (M, N) tensor.
static at::Tensor big_gemm(const at::Tensor& a, const at::Tensor& b) {
  if (!by_onednn(a, a.size(0), a.size(1), b.size(1))) return at::mm(a, b);
  at::Tensor c = at::empty({a.size(0), b.size(1)}, a.options());
  onednn_matmul()(a, b, c, 0.0f, 1.0f);
  return c;
}

// out (R, G) = x2 (R, I) @ w^T (+ bias): the input projection of R rows (steps x batch), one
// GEMM.
static void project_into(at::Tensor& out, const at::Tensor& x2, const at::Tensor& w,
                         const OptTensor& b) {
  if (by_onednn(x2, x2.size(0), x2.size(1), w.size(0))) {
    if (!has(b)) return onednn_matmul()(x2, w.t(), out, 0.0f, 1.0f);
    out.copy_(b->expand_as(out));
    onednn_matmul()(x2, w.t(), out, 1.0f, 1.0f);
  } else if (has(b)) {
    at::addmm_out(out, *b, x2, w.t());
  } else {
    at::mm_out(out, x2, w.t());
  }
}

// Where the LSTM's bias goes (experiment 21): into the gate pass (`pass`, the default: no
// (T, B, 4H) broadcast copy before the input projection's GEMM), or into the input projection
// (`projection`, LSTM_CPU_BIAS_IN_PASS=0, as before; read on every call). One is left empty.
struct BiasPlace {
  OptTensor projection;
  at::Tensor pass;
};
static BiasPlace place_bias(const OptTensor& bias) {
  const char* v = std::getenv("LSTM_CPU_BIAS_IN_PASS");
  const bool in_pass = !v || std::atoi(v) != 0;
  if (in_pass && has(bias)) return {OptTensor(), bias->contiguous()};
  return {contig(bias), at::Tensor()};
}

// x (T, B, I) @ w^T (+ bias): the input projection of every step as one GEMM, (T, B, G).
static at::Tensor input_projection(const at::Tensor& x, const at::Tensor& w, const OptTensor& b) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2);
  at::Tensor out = at::empty({T * B, w.size(0)}, x.options());
  project_into(out, x.reshape({T * B, I}), w, b);
  return out.view({T, B, w.size(0)});
}

// dW_hh = sum_t d_pre[t]^T h_prev[t] with h_prev = (h0, h_all[0], ..., h_all[T-2]). Up to
// LSTM_CPU_HPREV_MAX elements (read on every call; default 2^20, 4 MB of float32) h_prev is
// copied into one block for one product; above it, no copy and two products (step 0, then the
// rest). The copy won or tied at every shape timed (experiment 19, docs/performance.md: T=100,
// B=1, H=64 training 0.309 -> 0.269 ms): step 0's product was a rank-B update of its own.
static at::Tensor grad_recurrent_weight(const at::Tensor& d_pre, const at::Tensor& h0,
                                        const at::Tensor& h_all) {
  const int64_t T = d_pre.size(0), B = d_pre.size(1), G = d_pre.size(2), P = h0.size(1);
  const char* v = std::getenv("LSTM_CPU_HPREV_MAX");
  const int64_t hprev_max = v ? std::atoll(v) : int64_t(1) << 20;
  if (T > 1 && T * B * P <= hprev_max) {
    at::Tensor h_prev = at::cat({h0.unsqueeze(0), h_all.narrow(0, 0, T - 1)}, 0);
    return big_gemm(d_pre.view({T * B, G}).t(), h_prev.view({T * B, P}));
  }
  at::Tensor dw = big_gemm(d_pre[0].t(), h0);
  if (T > 1)
    big_gemm_add(dw, d_pre.narrow(0, 1, T - 1).reshape({(T - 1) * B, G}).t(),
             h_all.narrow(0, 0, T - 1).reshape({(T - 1) * B, P}));
  return dw;
}

// ---------------------------------------------------------------------------------------------
// LSTM
// ---------------------------------------------------------------------------------------------

// x (T, B, I), h0 (B, P), c0 (B, H), w_ih (4H, I), w_hh (4H, P), w_hr (P, H): one dtype, CPU.
static void check_lstm(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                       const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& w_hr) {
  const auto dtype = x.scalar_type();
  check_tensor(x, "x", dtype, 3);
  check_tensor(h0, "h0", dtype, 2);
  check_tensor(c0, "c0", dtype, 2);
  check_tensor(w_ih, "w_ih", dtype, 2);
  check_tensor(w_hh, "w_hh", dtype, 2);
  const int64_t B = x.size(1), H = w_hh.size(0) / 4, P = w_hh.size(1);
  TORCH_CHECK(w_hh.size(0) == 4 * H && c0.size(1) == H && h0.size(1) == P && h0.size(0) == B &&
                  c0.size(0) == B && w_ih.size(0) == 4 * H && w_ih.size(1) == x.size(2) &&
                  (!has(w_hr) || w_hr->size(1) == H),
              "cpu backend: inconsistent LSTM shapes");
}

// Returns (h_all (T, B, P), c_all (T, B, H), gates (T, B, 4H), tanh_c (T, B, H) if save).
std::vector<at::Tensor> lstm_forward(const at::Tensor& x_, const at::Tensor& h0_,
                                     const at::Tensor& c0_, const at::Tensor& w_ih,
                                     const at::Tensor& w_hh, const OptTensor& bias,
                                     const OptTensor& w_hr, const OptTensor& mask, bool save) {
  const auto dtype = x_.scalar_type();
  check_lstm(x_, h0_, c0_, w_ih, w_hh, w_hr);
  const int64_t T = x_.size(0), B = x_.size(1), H = w_hh.size(0) / 4, P = w_hh.size(1);
  at::Tensor x = x_.contiguous(), h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const BiasPlace b = place_bias(bias);
  at::Tensor gates = input_projection(x, w_ih, b.projection).contiguous();  // (T, B, 4H)
  at::Tensor w_hh_t = pack_panels(w_hh.t());                                 // (P, 4H)
  at::Tensor w_hr_t = has(w_hr) ? pack_panels(w_hr->t()) : at::Tensor();    // (H, P)
  at::Tensor m = mask_2d(mask, T, B);
  auto opts = x.options();
  at::Tensor h_all = at::empty({T, B, P}, opts), c_all = at::empty({T, B, H}, opts);
  at::Tensor tanh_c = save ? at::empty({T, B, H}, opts) : at::Tensor();
  at::Tensor h_raw = w_hr_t.defined() ? at::empty({B, H}, opts) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(dtype, "lstm_forward", [&] {
    LstmForward<scalar_t> a{T, B, H, P,
                            gates.data_ptr<scalar_t>(), w_hh_t.data_ptr<scalar_t>(),
                            ptr<scalar_t>(w_hr_t), h0.data_ptr<scalar_t>(),
                            c0.data_ptr<scalar_t>(), m.defined() ? m.data_ptr<bool>() : nullptr,
                            h_all.data_ptr<scalar_t>(), c_all.data_ptr<scalar_t>(),
                            ptr<scalar_t>(tanh_c), ptr<scalar_t>(h_raw), ptr<scalar_t>(b.pass)};
    pybind11::gil_scoped_release no_gil;
    LSTMK_CALL(lstm_forward<scalar_t>, a);
  });
  return {h_all, c_all, gates, tanh_c};
}

// The steps per chunk of the inference paths (lstm_infer, gru_infer): `steps_per_chunk` when
// given (the tests' chunk boundaries), else about LSTM_CPU_CHUNK_KB (default 1024) of
// pre-activations (`gate_bytes` a row), and at least 1024 rows per GEMM (T * B rows in all at
// most): MKL copies W_ih^T on every call, and with 256 rows that copy was 9% of the samples at
// T=1000, B=64, H=512 (2078 -> 1802 ms with 1024; experiment 10, docs/performance.md). B may be
// 0 (an empty batch).
static int64_t infer_chunk(int64_t T, int64_t B, int64_t gate_bytes, int64_t steps_per_chunk) {
  static const int64_t chunk_bytes = [] {
    const char* v = std::getenv("LSTM_CPU_CHUNK_KB");
    return (v ? std::atoll(v) : 1024) << 10;
  }();
  if (steps_per_chunk > 0) return std::min(T, steps_per_chunk);
  const int64_t row_bytes = std::max<int64_t>(B * gate_bytes, 1);
  return std::min(T, std::max<int64_t>({1, chunk_bytes / row_bytes,
                                        (1023 + B) / std::max<int64_t>(B, 1)}));
}

// Inference when only h_all (T, B, P) and the last c (B, H) are wanted (no gradient, no gate
// traces): returns (h_all, c_T). steps_per_chunk: 0 for the default below. The input projection
// runs a chunk of steps at a time, one GEMM per chunk into one reused buffer of about
// LSTM_CPU_CHUNK_KB (default 1024) of pre-activations, and the cell states go to a buffer of the
// same number of steps. lstm_forward allocates
// (T, B, 4H) and (T, B, H) (at T=1000, B=64, H=512: 655 MB of fresh pages, which the kernel
// zeroes on first touch) and the loop reads the pre-activations back from memory; here they are
// still in cache (experiment 8, docs/performance.md).
std::vector<at::Tensor> lstm_infer(const at::Tensor& x_, const at::Tensor& h0_,
                                   const at::Tensor& c0_, const at::Tensor& w_ih,
                                   const at::Tensor& w_hh, const OptTensor& bias,
                                   const OptTensor& w_hr, const OptTensor& mask,
                                   int64_t steps_per_chunk) {
  const auto dtype = x_.scalar_type();
  check_lstm(x_, h0_, c0_, w_ih, w_hh, w_hr);
  const int64_t T = x_.size(0), B = x_.size(1), I = x_.size(2), H = w_hh.size(0) / 4;
  const int64_t P = w_hh.size(1), G = 4 * H;
  const int64_t chunk = infer_chunk(T, B, G * (int64_t)x_.element_size(), steps_per_chunk);
  at::Tensor x = x_.contiguous(), h0 = h0_.contiguous();
  at::Tensor c_last = c0_.clone(at::MemoryFormat::Contiguous);  // carried from chunk to chunk
  const BiasPlace b = place_bias(bias);
  at::Tensor w_hh_t = pack_panels(w_hh.t());                               // (P, 4H)
  at::Tensor w_hr_t = has(w_hr) ? pack_panels(w_hr->t()) : at::Tensor();  // (H, P)
  at::Tensor m = mask_2d(mask, T, B);
  auto opts = x.options();
  at::Tensor gates = at::empty({chunk, B, G}, opts), c_buf = at::empty({chunk, B, H}, opts);
  at::Tensor h_all = at::empty({T, B, P}, opts);
  at::Tensor h_raw = w_hr_t.defined() ? at::empty({B, H}, opts) : at::Tensor();
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t n = std::min(chunk, T - t0);
    at::Tensor pre = gates.narrow(0, 0, n).view({n * B, G});
    project_into(pre, x.narrow(0, t0, n).view({n * B, I}), w_ih, b.projection);  // its steps
    AT_DISPATCH_FLOATING_TYPES(dtype, "lstm_infer", [&] {
      LstmForward<scalar_t> a{n, B, H, P,
                              gates.data_ptr<scalar_t>(), w_hh_t.data_ptr<scalar_t>(),
                              ptr<scalar_t>(w_hr_t),
                              t0 == 0 ? h0.data_ptr<scalar_t>()
                                      : h_all.data_ptr<scalar_t>() + (t0 - 1) * B * P,
                              c_last.data_ptr<scalar_t>(),
                              m.defined() ? m.data_ptr<bool>() + t0 * B : nullptr,
                              h_all.data_ptr<scalar_t>() + t0 * B * P, c_buf.data_ptr<scalar_t>(),
                              nullptr, ptr<scalar_t>(h_raw), ptr<scalar_t>(b.pass)};
      pybind11::gil_scoped_release no_gil;
      LSTMK_CALL(lstm_forward<scalar_t>, a);
    });
    c_last.copy_(c_buf[n - 1]);
  }
  return {h_all, c_last};
}

// needs: which of (x, h0, c0, w_ih, w_hh, bias, w_hr) want a gradient.
// Returns (dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr), undefined where not wanted.
std::vector<at::Tensor> lstm_backward(const OptTensor& grad_h_, const OptTensor& grad_c_,
                                      const OptTensor& grad_gates_, const at::Tensor& x,
                                      const at::Tensor& h0, const at::Tensor& c0,
                                      const at::Tensor& w_ih, const at::Tensor& w_hh,
                                      const OptTensor& w_hr_, const OptTensor& mask,
                                      const at::Tensor& h_all, const at::Tensor& c_all,
                                      const at::Tensor& gates, const at::Tensor& tanh_c,
                                      std::vector<bool> needs) {
  TORCH_CHECK(needs.size() == 7, "cpu backend: lstm_backward needs 7 flags");
  TORCH_CHECK(tanh_c.defined(), "cpu backend: the forward did not save tanh(c)");
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = c0.size(1), P = h0.size(1);
  const int64_t G = 4 * H;
  OptTensor grad_h = contig(grad_h_), grad_c = contig(grad_c_), grad_gates = contig(grad_gates_);
  OptTensor w_hr = contig(w_hr_);
  at::Tensor w_hh_c = pack_panels(w_hh);                              // (4H, P)
  at::Tensor w_hr_c = has(w_hr) ? pack_panels(*w_hr) : at::Tensor();  // (P, H)
  at::Tensor m = mask_2d(mask, T, B);
  auto opts = x.options();
  at::Tensor d_pre = at::empty({T, B, G}, opts);
  at::Tensor dh = at::zeros({B, P}, opts), dc = at::zeros({B, H}, opts);
  at::Tensor dh_step = has(w_hr) ? at::empty({T, B, P}, opts) : at::Tensor();
  at::Tensor dh_raw = has(w_hr) ? at::empty({B, H}, opts) : at::Tensor();
  at::Tensor dh_skip = m.defined() ? at::empty({B, P}, opts) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_backward", [&] {
    LstmBackward<scalar_t> a{T, B, H, P,
                             gates.data_ptr<scalar_t>(), c_all.data_ptr<scalar_t>(),
                             tanh_c.data_ptr<scalar_t>(), c0.contiguous().data_ptr<scalar_t>(),
                             w_hh_c.data_ptr<scalar_t>(), ptr<scalar_t>(w_hr_c),
                             m.defined() ? m.data_ptr<bool>() : nullptr,
                             cptr<scalar_t>(grad_h), cptr<scalar_t>(grad_c),
                             cptr<scalar_t>(grad_gates), d_pre.data_ptr<scalar_t>(),
                             ptr<scalar_t>(dh_step), dh.data_ptr<scalar_t>(),
                             dc.data_ptr<scalar_t>(), ptr<scalar_t>(dh_raw),
                             ptr<scalar_t>(dh_skip)};
    pybind11::gil_scoped_release no_gil;
    LSTMK_CALL(lstm_backward<scalar_t>, a);
  });
  at::Tensor d2 = d_pre.view({T * B, G});
  at::Tensor dx, dw_ih, dw_hh, db, dw_hr;
  if (needs[0]) dx = big_gemm(d2, w_ih).view({T, B, I});
  if (needs[3]) dw_ih = big_gemm(d2.t(), x.reshape({T * B, I}));
  if (needs[4]) dw_hh = grad_recurrent_weight(d_pre, h0.contiguous(), h_all);
  if (needs[5]) db = d2.sum(0);
  if (needs[6] && has(w_hr)) {
    // h before the projection, o * tanh(c); on padding rows it is wrong but dh_step is zero there.
    at::Tensor h_raw = gates.narrow(2, 3 * H, H) * tanh_c;  // (T, B, H)
    dw_hr = big_gemm(dh_step.view({T * B, P}).t(), h_raw.view({T * B, H}));
  }
  return {dx, needs[1] ? dh : at::Tensor(), needs[2] ? dc : at::Tensor(), dw_ih, dw_hh, db, dw_hr};
}

// ---------------------------------------------------------------------------------------------
// GRU
// ---------------------------------------------------------------------------------------------

// x (T, B, I), h0 (B, H), w_ih (gates * H, I), w_hh (gates * H, H): one dtype, CPU. The GRU
// (3 gates) and the plain RNN (1).
static void check_cell(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                       const at::Tensor& w_hh, int64_t gates, const char* cell) {
  const auto dtype = x.scalar_type();
  check_tensor(x, "x", dtype, 3);
  check_tensor(h0, "h0", dtype, 2);
  check_tensor(w_ih, "w_ih", dtype, 2);
  check_tensor(w_hh, "w_hh", dtype, 2);
  const int64_t B = x.size(1), H = w_hh.size(1);
  TORCH_CHECK(w_hh.size(0) == gates * H && w_ih.size(0) == gates * H && h0.size(1) == H &&
                  h0.size(0) == B && w_ih.size(1) == x.size(2),
              "cpu backend: inconsistent ", cell, " shapes");
}

// Returns (h_all (T, B, H), gates (T, B, 3H), gh_n (T, B, H) if save).
std::vector<at::Tensor> gru_forward(const at::Tensor& x_, const at::Tensor& h0_,
                                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                                    const OptTensor& b_ih, const OptTensor& b_hh_,
                                    const OptTensor& mask, bool save) {
  const auto dtype = x_.scalar_type();
  check_cell(x_, h0_, w_ih, w_hh, 3, "GRU");
  const int64_t T = x_.size(0), B = x_.size(1), H = w_hh.size(1);
  at::Tensor x = x_.contiguous(), h0 = h0_.contiguous();
  at::Tensor gates = input_projection(x, w_ih, b_ih).contiguous();  // (T, B, 3H)
  at::Tensor w_hh_t = pack_panels(w_hh.t());                         // (H, 3H)
  OptTensor b_hh = contig(b_hh_);
  at::Tensor m = mask_2d(mask, T, B);
  auto opts = x.options();
  at::Tensor h_all = at::empty({T, B, H}, opts);
  at::Tensor gh_n = save ? at::empty({T, B, H}, opts) : at::Tensor();
  at::Tensor gh = at::empty({B, 3 * H}, opts);
  AT_DISPATCH_FLOATING_TYPES(dtype, "gru_forward", [&] {
    GruForward<scalar_t> a{T, B, H,
                           gates.data_ptr<scalar_t>(), w_hh_t.data_ptr<scalar_t>(),
                           cptr<scalar_t>(b_hh), h0.data_ptr<scalar_t>(),
                           m.defined() ? m.data_ptr<bool>() : nullptr, h_all.data_ptr<scalar_t>(),
                           ptr<scalar_t>(gh_n), gh.data_ptr<scalar_t>()};
    pybind11::gil_scoped_release no_gil;
    LSTMK_CALL(gru_forward<scalar_t>, a);
  });
  return {h_all, gates, gh_n};
}

// GRU inference when only h_all (T, B, H) is wanted (no gradient, no gate traces), as
// lstm_infer: the input projection a chunk of steps at a time into one reused buffer, no saved
// gates (gru_forward allocates (T, B, 3H) and (T, B, H) on every call).
at::Tensor gru_infer(const at::Tensor& x_, const at::Tensor& h0_, const at::Tensor& w_ih,
                     const at::Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh_,
                     const OptTensor& mask, int64_t steps_per_chunk) {
  const auto dtype = x_.scalar_type();
  check_cell(x_, h0_, w_ih, w_hh, 3, "GRU");
  const int64_t T = x_.size(0), B = x_.size(1), I = x_.size(2), H = w_hh.size(1), G = 3 * H;
  const int64_t chunk = infer_chunk(T, B, G * (int64_t)x_.element_size(), steps_per_chunk);
  at::Tensor x = x_.contiguous(), h0 = h0_.contiguous();
  OptTensor b = contig(b_ih), b_hh = contig(b_hh_);
  at::Tensor w_hh_t = pack_panels(w_hh.t());  // (H, 3H)
  at::Tensor m = mask_2d(mask, T, B);
  auto opts = x.options();
  at::Tensor gates = at::empty({chunk, B, G}, opts), gh = at::empty({B, G}, opts);
  at::Tensor h_all = at::empty({T, B, H}, opts);
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t n = std::min(chunk, T - t0);
    at::Tensor pre = gates.narrow(0, 0, n).view({n * B, G});
    project_into(pre, x.narrow(0, t0, n).view({n * B, I}), w_ih, b);  // the chunk's steps
    AT_DISPATCH_FLOATING_TYPES(dtype, "gru_infer", [&] {
      GruForward<scalar_t> a{n, B, H,
                             gates.data_ptr<scalar_t>(), w_hh_t.data_ptr<scalar_t>(),
                             cptr<scalar_t>(b_hh),
                             t0 == 0 ? h0.data_ptr<scalar_t>()
                                     : h_all.data_ptr<scalar_t>() + (t0 - 1) * B * H,
                             m.defined() ? m.data_ptr<bool>() + t0 * B : nullptr,
                             h_all.data_ptr<scalar_t>() + t0 * B * H, nullptr,
                             gh.data_ptr<scalar_t>()};
      pybind11::gil_scoped_release no_gil;
      LSTMK_CALL(gru_forward<scalar_t>, a);
    });
  }
  return h_all;
}

// needs: (x, h0, w_ih, w_hh, b_ih, b_hh). Returns (dx, dh0, dw_ih, dw_hh, db_ih, db_hh).
std::vector<at::Tensor> gru_backward(const OptTensor& grad_h_, const OptTensor& grad_gates_,
                                     const at::Tensor& x, const at::Tensor& h0,
                                     const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const OptTensor& mask, const at::Tensor& h_all,
                                     const at::Tensor& gates, const at::Tensor& gh_n,
                                     std::vector<bool> needs) {
  TORCH_CHECK(needs.size() == 6, "cpu backend: gru_backward needs 6 flags");
  TORCH_CHECK(gh_n.defined(), "cpu backend: the forward did not save W_hn h + b_hn");
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1), G = 3 * H;
  OptTensor grad_h = contig(grad_h_), grad_gates = contig(grad_gates_);
  at::Tensor w_hh_c = pack_panels(w_hh), h0_c = h0.contiguous();
  at::Tensor m = mask_2d(mask, T, B);
  auto opts = x.options();
  at::Tensor d_gx = at::empty({T, B, G}, opts), d_gh = at::empty({T, B, G}, opts);
  at::Tensor dh = at::zeros({B, H}, opts), dh_next = at::empty({B, H}, opts);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_backward", [&] {
    GruBackward<scalar_t> a{T, B, H,
                            gates.data_ptr<scalar_t>(), h_all.data_ptr<scalar_t>(),
                            h0_c.data_ptr<scalar_t>(), gh_n.data_ptr<scalar_t>(),
                            w_hh_c.data_ptr<scalar_t>(),
                            m.defined() ? m.data_ptr<bool>() : nullptr, cptr<scalar_t>(grad_h),
                            cptr<scalar_t>(grad_gates), d_gx.data_ptr<scalar_t>(),
                            d_gh.data_ptr<scalar_t>(), dh.data_ptr<scalar_t>(),
                            dh_next.data_ptr<scalar_t>()};
    pybind11::gil_scoped_release no_gil;
    LSTMK_CALL(gru_backward<scalar_t>, a);
  });
  at::Tensor dgx2 = d_gx.view({T * B, G}), dgh2 = d_gh.view({T * B, G});
  at::Tensor dx, dw_ih, dw_hh, db_ih, db_hh;
  if (needs[0]) dx = big_gemm(dgx2, w_ih).view({T, B, I});
  if (needs[2]) dw_ih = big_gemm(dgx2.t(), x.reshape({T * B, I}));
  if (needs[3]) dw_hh = grad_recurrent_weight(d_gh, h0_c, h_all);
  if (needs[4]) db_ih = dgx2.sum(0);
  if (needs[5]) db_hh = dgh2.sum(0);
  return {dx, needs[1] ? dh : at::Tensor(), dw_ih, dw_hh, db_ih, db_hh};
}

// ---------------------------------------------------------------------------------------------
// RNN
// ---------------------------------------------------------------------------------------------

static bool is_relu(const std::string& nonlinearity) {
  TORCH_CHECK(nonlinearity == "tanh" || nonlinearity == "relu",
              "cpu backend: nonlinearity must be 'tanh' or 'relu', got '", nonlinearity, "'");
  return nonlinearity == "relu";
}

// Returns h_all (T, B, H).
at::Tensor rnn_forward(const at::Tensor& x_, const at::Tensor& h0_, const at::Tensor& w_ih,
                       const at::Tensor& w_hh, const OptTensor& bias, const OptTensor& mask,
                       const std::string& nonlinearity) {
  const auto dtype = x_.scalar_type();
  check_cell(x_, h0_, w_ih, w_hh, 1, "RNN");
  const bool relu = is_relu(nonlinearity);
  const int64_t T = x_.size(0), B = x_.size(1), H = w_hh.size(1);
  at::Tensor x = x_.contiguous(), h0 = h0_.contiguous();
  at::Tensor pre = input_projection(x, w_ih, bias).contiguous();  // (T, B, H)
  at::Tensor w_hh_t = pack_panels(w_hh.t());
  at::Tensor m = mask_2d(mask, T, B);
  at::Tensor h_all = at::empty({T, B, H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "rnn_forward", [&] {
    pybind11::gil_scoped_release no_gil;
    LSTMK_CALL(rnn_forward<scalar_t>, T, B, H, pre.data_ptr<scalar_t>(),
               w_hh_t.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
               m.defined() ? m.data_ptr<bool>() : nullptr, relu, h_all.data_ptr<scalar_t>());
  });
  return h_all;
}

// needs: (x, h0, w_ih, w_hh, bias). Returns (dx, dh0, dw_ih, dw_hh, db).
std::vector<at::Tensor> rnn_backward(const OptTensor& grad_h_, const at::Tensor& x,
                                     const at::Tensor& h0, const at::Tensor& w_ih,
                                     const at::Tensor& w_hh, const OptTensor& mask,
                                     const at::Tensor& h_all, const std::string& nonlinearity,
                                     std::vector<bool> needs) {
  TORCH_CHECK(needs.size() == 5, "cpu backend: rnn_backward needs 5 flags");
  const bool relu = is_relu(nonlinearity);
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  OptTensor grad_h = contig(grad_h_);
  at::Tensor w_hh_c = pack_panels(w_hh), h0_c = h0.contiguous();
  at::Tensor m = mask_2d(mask, T, B);
  auto opts = x.options();
  at::Tensor d_pre = at::empty({T, B, H}, opts);
  at::Tensor dh = at::zeros({B, H}, opts), dh_skip = at::empty({B, H}, opts);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnn_backward", [&] {
    pybind11::gil_scoped_release no_gil;
    LSTMK_CALL(rnn_backward<scalar_t>, T, B, H, h_all.data_ptr<scalar_t>(),
               w_hh_c.data_ptr<scalar_t>(), m.defined() ? m.data_ptr<bool>() : nullptr, relu,
               cptr<scalar_t>(grad_h), d_pre.data_ptr<scalar_t>(), dh.data_ptr<scalar_t>(),
               dh_skip.data_ptr<scalar_t>());
  });
  at::Tensor d2 = d_pre.view({T * B, H});
  at::Tensor dx, dw_ih, dw_hh, db;
  if (needs[0]) dx = big_gemm(d2, w_ih).view({T, B, I});
  if (needs[2]) dw_ih = big_gemm(d2.t(), x.reshape({T * B, I}));
  if (needs[3]) dw_hh = grad_recurrent_weight(d_pre, h0_c, h_all);
  if (needs[4]) db = d2.sum(0);
  return {dx, needs[1] ? dh : at::Tensor(), dw_ih, dw_hh, db};
}

// ---------------------------------------------------------------------------------------------
// Streaming: one time step at a time through a stack of unidirectional layers, state carried
// in tensors the caller can read and reset. Weights are copied into the per-step layout once;
// each step() is a few small GEMMs and one pointwise pass per layer, with no allocation except
// the returned output.
// ---------------------------------------------------------------------------------------------

class Stepper {
 public:
  // mode: "LSTM", "GRU", "RNN_TANH" or "RNN_RELU". Per layer: w_ih (G, I_l), w_hh (G, P),
  // b_ih, b_hh (G) (empty lists: no bias), w_hr (P, H) (LSTM with projection). state: h (L, B, P)
  // and, for LSTM, c (L, B, H); updated in place by step().
  Stepper(const std::string& mode, const std::vector<at::Tensor>& w_ih,
          const std::vector<at::Tensor>& w_hh, const std::vector<at::Tensor>& b_ih,
          const std::vector<at::Tensor>& b_hh, const std::vector<at::Tensor>& w_hr, at::Tensor h,
          OptTensor c)
      : mode_(mode), h_(h), c_(c.has_value() ? *c : at::Tensor()) {
    TORCH_CHECK(mode == "LSTM" || mode == "GRU" || mode == "RNN_TANH" || mode == "RNN_RELU",
                "Stepper: unknown mode ", mode);
    TORCH_CHECK(h.dim() == 3 && h.is_contiguous(), "Stepper: h must be contiguous (L, B, P)");
    dtype_ = h.scalar_type();
    TORCH_CHECK(dtype_ == at::kFloat || dtype_ == at::kDouble, "Stepper: float32 or float64");
    layers_ = (int64_t)w_ih.size();
    batch_ = h.size(1);
    proj_ = h.size(2);
    hidden_ = w_hh[0].size(1);
    if (mode == "LSTM") {
      TORCH_CHECK(c_.defined() && c_.is_contiguous() && c_.dim() == 3, "Stepper: LSTM needs c");
      hidden_ = c_.size(2);
    }
    const int64_t gates = w_hh[0].size(0);
    input_size_ = w_ih[0].size(1);
    for (int64_t l = 0; l < layers_; ++l) {
      w_ih_t_.push_back(pack_panels(w_ih[l].detach().t()));  // (I_l, G)
      w_hh_t_.push_back(pack_panels(w_hh[l].detach().t()));  // (P, G)
      at::Tensor bias = at::zeros({gates}, h.options());
      at::Tensor bias_hh = at::zeros({gates}, h.options());
      if (!b_ih.empty()) {
        if (mode == "GRU") {
          bias.copy_(b_ih[l].detach());
          bias_hh.copy_(b_hh[l].detach());
        } else {
          bias.copy_(b_ih[l].detach() + b_hh[l].detach());  // pre-summed
        }
      }
      bias_.push_back(bias);
      bias_hh_.push_back(bias_hh);
      if (!w_hr.empty()) w_hr_t_.push_back(pack_panels(w_hr[l].detach().t()));  // (H, P)
    }
    z_ = at::empty({batch_, gates}, h.options());
    gh_ = at::empty({batch_, gates}, h.options());
    h_new_ = at::empty({batch_, std::max(proj_, hidden_)}, h.options());
    c_new_ = at::empty({batch_, hidden_}, h.options());
  }

  // x: (B, I) -> the last layer's new h, (B, P), a new tensor. With batch 1, x may be (I,) and
  // the output is then (P,).
  at::Tensor step(const at::Tensor& x_) {
    const bool unbatched = x_.dim() == 1 && batch_ == 1;
    if (!((x_.dim() == 2 && x_.size(0) == batch_ && x_.size(1) == input_size_) ||
          (unbatched && x_.size(0) == input_size_)) ||
        x_.scalar_type() != dtype_ || !x_.device().is_cpu())
      throw pybind11::value_error("step: x should be a CPU tensor of shape (" +
                                  std::to_string(batch_) + ", " + std::to_string(input_size_) +
                                  ") and dtype " + std::string(c10::toString(dtype_)) +
                                  ", got shape " + c10::str(x_.sizes()) + " and dtype " +
                                  std::string(c10::toString(x_.scalar_type())) + " on " +
                                  c10::str(x_.device()));
    at::Tensor x = x_.contiguous();
    AT_DISPATCH_FLOATING_TYPES(dtype_, "step", [&] {
      switch (isa_level()) {
#ifdef LSTMK_HAVE_X86_COPIES
        case kAvx512:
          run<scalar_t, kAvx512>(x.data_ptr<scalar_t>());
          break;
        case kAvx2:
          run<scalar_t, kAvx2>(x.data_ptr<scalar_t>());
          break;
#endif
        default:
          run<scalar_t, kBase>(x.data_ptr<scalar_t>());
      }
    });
    at::Tensor out = h_[layers_ - 1].clone();
    return unbatched ? out.view({proj_}) : out;
  }

  at::Tensor h() const { return h_; }
  OptTensor c() const { return c_.defined() ? OptTensor(c_) : c10::nullopt; }

 private:
  template <typename T, int ISA>
  void run(const T* x) {
    const int64_t B = batch_, H = hidden_, P = proj_;
    const bool lstm = mode_ == "LSTM", gru = mode_ == "GRU";
    const int64_t G = z_.size(1);
    T* z = z_.data_ptr<T>();
    T* gh = gh_.data_ptr<T>();
    T* h_new = h_new_.data_ptr<T>();
    T* c_new = c_new_.data_ptr<T>();
    const T* input = x;
    int64_t in_size = input_size_;
    for (int64_t l = 0; l < layers_; ++l) {
      T* h = h_.data_ptr<T>() + l * B * P;
      const T* bias = bias_[l].data_ptr<T>();
      for (int64_t b = 0; b < B; ++b) std::memcpy(z + b * G, bias, G * sizeof(T));
      // z = b + x W_ih^T
      product<T, ISA>(B, G, in_size, input, w_ih_t_[l].data_ptr<T>(), true, z);
      if (lstm) {
        T* c = c_.data_ptr<T>() + l * B * H;
        product<T, ISA>(B, G, P, h, w_hh_t_[l].data_ptr<T>(), true, z);  // z += h W_hh^T
        for (int64_t b = 0; b < B; ++b) pointwise_lstm<T, ISA>(H, z + b * G, c + b * H,
                                                                c_new + b * H, h_new + b * H);
        std::memcpy(c, c_new, B * H * sizeof(T));
        if (!w_hr_t_.empty())
          product<T, ISA>(B, P, H, h_new, w_hr_t_[l].data_ptr<T>(), false, h);
        else
          std::memcpy(h, h_new, B * H * sizeof(T));
      } else if (gru) {
        const T* bias_hh = bias_hh_[l].data_ptr<T>();
        for (int64_t b = 0; b < B; ++b) std::memcpy(gh + b * G, bias_hh, G * sizeof(T));
        product<T, ISA>(B, G, H, h, w_hh_t_[l].data_ptr<T>(), true, gh);  // gh = b_hh + h W_hh^T
        for (int64_t b = 0; b < B; ++b)
          pointwise_gru<T, ISA>(H, z + b * G, gh + b * G, h + b * H, h_new + b * H);
        std::memcpy(h, h_new, B * H * sizeof(T));
      } else {
        product<T, ISA>(B, G, H, h, w_hh_t_[l].data_ptr<T>(), true, z);
        const bool relu = mode_ == "RNN_RELU";
        for (int64_t k = 0; k < B * H; ++k)
          h[k] = relu ? (z[k] > T(0) ? z[k] : T(0)) : act_tanh<T, ISA>(z[k]);
      }
      input = h;
      in_size = P;
    }
  }

  // The kernels of the copy for ISA (see LSTMK_IN).
  template <typename T, int ISA>
  static void product(int64_t M, int64_t N, int64_t K, const T* A, const T* W, bool acc, T* C) {
    LSTMK_IN(ISA, step_gemm<T>(M, N, K, A, W, acc, C));
  }
  template <typename T, int ISA>
  static void pointwise_lstm(int64_t H, T* z, const T* c, T* c_out, T* h_out) {
    LSTMK_IN(ISA, lstm_pointwise_forward<T, false>(H, H, z, c, c_out, h_out, nullptr));
  }
  template <typename T, int ISA>
  static void pointwise_gru(int64_t H, T* gx, const T* gh, const T* h, T* h_out) {
    LSTMK_IN(ISA, gru_pointwise_forward<T, false>(H, H, gx, gh, h, h_out, nullptr));
  }
  template <typename T, int ISA>
  static T act_tanh(T v) {
    return LSTMK_IN(ISA, Act<T>::tanh(v));
  }

  std::string mode_;
  at::Tensor h_, c_;
  at::ScalarType dtype_;
  int64_t layers_, batch_, proj_, hidden_, input_size_;
  std::vector<at::Tensor> w_ih_t_, w_hh_t_, bias_, bias_hh_, w_hr_t_;
  at::Tensor z_, gh_, h_new_, c_new_;
};

}  // namespace lstmk

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lstm's fused CPU kernels: LSTM, GRU and RNN time loops, forward and BPTT";
  m.def("isa", &lstmk::isa, "which copy of the loops runs here: 'avx512', 'avx2' or 'base'");
  m.def("gemm_library", &lstmk::gemm_library,
        "which library runs the big float32 GEMMs here: 'onednn' or 'mkl'");
  m.def("step_threads", &lstmk::step_threads,
        "threads a per-step product of `macs` multiply-adds over `blocks` column tiles runs on");
  m.def("split_rows", &lstmk::split_rows,
        "whether the threads split a time loop of B rows by rows (weight bytes, bytes a row, "
        "multiply-adds a step)");
  m.def("loop_split", &lstmk::loop_split_name,
        "how the threads share a time loop (cell 'lstm' or 'gru', batch, hidden, proj, "
        "projected, itemsize): 'units', 'rows' or 'steps'");
  m.def("lstm_forward", &lstmk::lstm_forward);
  m.def("lstm_infer", &lstmk::lstm_infer);
  m.def("lstm_backward", &lstmk::lstm_backward);
  m.def("gru_forward", &lstmk::gru_forward);
  m.def("gru_infer", &lstmk::gru_infer);
  m.def("gru_backward", &lstmk::gru_backward);
  m.def("rnn_forward", &lstmk::rnn_forward);
  m.def("rnn_backward", &lstmk::rnn_backward);
  pybind11::class_<lstmk::Stepper>(m, "Stepper")
      .def(pybind11::init<const std::string&, const std::vector<at::Tensor>&,
                          const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                          const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                          at::Tensor, c10::optional<at::Tensor>>())
      .def("step", &lstmk::Stepper::step)
      .def_property_readonly("h", &lstmk::Stepper::h)
      .def_property_readonly("c", &lstmk::Stepper::c);
}
