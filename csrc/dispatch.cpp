// Python-facing entry points: pick the ISA table, split work across OpenMP threads, release the
// GIL. Arguments are raw addresses (tensor.data_ptr()) plus shapes; the Python backend checks
// dtypes, contiguity and shapes before calling, so nothing here re-validates per element.
#include <omp.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention_items.h"
#include "kernel_table.h"

namespace py = pybind11;

namespace oci {
namespace {

bool cpu_has(const char* what) {
    __builtin_cpu_init();
    std::string w(what);
    if (w == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (w == "avx512")
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma");
    return w == "scalar";
}

bool has_bf16_gemm() {  // asked every step: answered once
    static const bool has = [] {
        __builtin_cpu_init();
        return cpu_has("avx512") && __builtin_cpu_supports("avx512bf16");
    }();
    return has;
}

// Whether table t can use the Bf16Kernels (isa_avx512bf16.cpp): the avx512 path on an AVX512-BF16 CPU.
bool bf16_path(const KernelTable& t) { return &t == &table_avx512() && has_bf16_gemm(); }

std::vector<std::string> supported_isas() {
    std::vector<std::string> out{"scalar"};
    if (cpu_has("avx2")) out.push_back("avx2");
    if (cpu_has("avx512")) out.push_back("avx512");
    return out;
}

const KernelTable* table_for(const std::string& name) {
    if (name == "scalar") return &table_scalar();
    if (name == "avx2") return &table_avx2();
    if (name == "avx512") return &table_avx512();
    return nullptr;
}

const KernelTable* g_table = nullptr;

void set_isa(const std::string& name) {
    const KernelTable* t = table_for(name);
    if (!t) throw std::invalid_argument("unknown ISA '" + name + "'; choose scalar, avx2 or avx512");
    if (!cpu_has(name.c_str()))
        throw std::invalid_argument("this CPU does not support the '" + name + "' path; supported: " +
                                    [] { std::string s; for (auto& i : supported_isas()) s += i + " "; return s; }());
    g_table = t;
}

const KernelTable& T() {
    if (!g_table) {
        const char* env = std::getenv("OCI_ENGINE_ISA");
        if (env && *env) set_isa(env);
        else g_table = table_for(supported_isas().back());
    }
    return *g_table;
}

template <typename P>
P* ptr(uintptr_t a) { return reinterpret_cast<P*>(a); }

int threads_for(double work, double per_thread_min) {
    const int n = omp_get_max_threads();
    return std::max(1, std::min(n, (int)(work / per_thread_min)));
}

// Activation rows quantized once per call, reused by every weight row.
std::vector<block_q8a>& q8_scratch(size_t n) {
    static thread_local std::vector<block_q8a> buf;
    if (buf.size() < n) buf.resize(n);
    return buf;
}

// From this many activation rows on, the avx512 path expands weights to bf16 (see isa_avx512bf16.cpp);
// measured on SmolLM2's shapes: at 4 rows bf16 wins for Q4_1 (1.5x) and loses for Q8_0 (0.87x),
// at 16 rows it wins for both (3.5x, 2x).
int g_bf16_min_rows = 4;

// Chunks of 16 rows keep each thread's weight slice contiguous; the tail is split evenly.
template <typename F>
void split_rows(int N, double work, F&& fn) {
    const int nth = threads_for(work, 1 << 15);
    const int chunks = (N + 15) / 16;
#pragma omp parallel num_threads(nth)
    {
        const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
        const int c0 = chunks * tid / nt, c1 = chunks * (tid + 1) / nt;
        const int n0 = c0 * 16, n1 = std::min(N, c1 * 16);
        if (n0 < n1) fn(n0, n1);
    }
}

// path: "auto", "int8" (activations quantized, integer dots) or "bf16" (weights expanded to bf16)
void gemm(uintptr_t w, size_t w_stride, int ggml_type, int N, int K, uintptr_t x, int M, size_t ldx, uintptr_t y,
          size_t ldy, const std::string& path) {
    const KernelTable& t = T();
    const int fi = format_index(ggml_type);
    if (fi < 0) throw std::invalid_argument("no quantized GEMM for ggml type " + std::to_string(ggml_type));
    if (K % block_elems(ggml_type)) throw std::invalid_argument("K is not a whole number of blocks");
    const bool bf16_ok = bf16_path(t);
    bool bf16 = path == "bf16";
    if (bf16 && !bf16_ok) throw std::invalid_argument("the bf16 GEMM needs the avx512 path on a CPU with AVX512-BF16");
    if (path == "auto") bf16 = bf16_ok && M >= g_bf16_min_rows;
    else if (path != "int8" && path != "bf16") throw std::invalid_argument("path must be auto, int8 or bf16");
    const float* X = ptr<const float>(x);
    const uint8_t* W = ptr<const uint8_t>(w);
    float* Y = ptr<float>(y);
    const double work = (double)M * N * K;
    if (bf16) {
        static thread_local std::vector<uint16_t> xb;
        if (xb.size() < (size_t)M * K) xb.resize((size_t)M * K);
        const Bf16Kernels& bk = bf16_kernels();
        uint16_t* XB = xb.data();
#pragma omp parallel for num_threads(threads_for((double)M * K, 1 << 16)) schedule(static)
        for (int m = 0; m < M; ++m) bk.to_bf16(X + m * ldx, XB + (size_t)m * K, K);
        split_rows(N, work, [&](int n0, int n1) { bk.gemm(fi, W, w_stride, n0, n1, XB, K, M, K, Y, ldy); });
        return;
    }
    const int nblk = K / QK;
    std::vector<block_q8a>& a = q8_scratch((size_t)M * nblk);
    block_q8a* A = a.data();
#pragma omp parallel for num_threads(threads_for((double)M * K, 1 << 16)) schedule(static)
    for (int m = 0; m < M; ++m) t.quantize_q8a(X + m * ldx, K, A + (size_t)m * nblk);
    const GemmFn fns[5] = {t.gemm_q4_0, t.gemm_q4_1, t.gemm_q8_0, t.gemm_q4_K, t.gemm_q6_K};
    const GemmFn fn = fns[fi];
    split_rows(N, work, [&](int n0, int n1) { fn(W, w_stride, n0, n1, A, nblk, M, nblk, Y, ldy); });
}

void dequant(uintptr_t w, size_t w_stride, int ggml_type, int rows, int K, uintptr_t out, bool bf16, uintptr_t row_ids,
             size_t ld) {
    const KernelTable& t = T();
    const int fi = format_index(ggml_type);
    if (fi < 0) throw std::invalid_argument("no dequantizer for ggml type " + std::to_string(ggml_type));
    const uint8_t* W = ptr<const uint8_t>(w);
    const int64_t* ids = ptr<const int64_t>(row_ids);
    const bool fast_bf16 = bf16 && bf16_path(t);
#pragma omp parallel for num_threads(threads_for((double)rows * K, 1 << 16)) schedule(static)
    for (int r = 0; r < rows; ++r) {
        const uint8_t* src = ids ? W + ids[r] * w_stride : W + r * w_stride;
        if (fast_bf16) bf16_kernels().dequant_row(fi, src, K, ptr<uint16_t>(out) + r * ld);
        else if (bf16) t.dequant_bf16[fi](src, 0, 0, 1, K, ptr<uint16_t>(out) + r * ld, ld);
        else t.dequant_f32[fi](src, 0, 0, 1, K, ptr<float>(out) + r * ld, ld);
    }
}

void rms_norm(uintptr_t x, uintptr_t w, uintptr_t y, int rows, int H, float eps) {
    const KernelTable& t = T();
#pragma omp parallel for num_threads(threads_for((double)rows * H, 1 << 15)) schedule(static)
    for (int r = 0; r < rows; ++r) t.rms_norm(ptr<float>(x) + r * H, ptr<float>(w), ptr<float>(y) + r * H, H, eps);
}

void add_rms_norm(uintptr_t x, uintptr_t res, uintptr_t sum, uintptr_t w, uintptr_t y, int rows, int H, float eps) {
    const KernelTable& t = T();
#pragma omp parallel for num_threads(threads_for((double)rows * H, 1 << 15)) schedule(static)
    for (int r = 0; r < rows; ++r)
        t.add_rms_norm(ptr<float>(x) + r * H, ptr<float>(res) + r * H, ptr<float>(sum) + r * H, ptr<float>(w),
                       ptr<float>(y) + r * H, H, eps);
}

// q/k rows may be strided views (slices of the fused qkv output); outputs are contiguous.
void rotary(uintptr_t q, size_t q_stride, uintptr_t k, size_t k_stride, uintptr_t q_out, uintptr_t k_out, int T_, int nh,
            int nkv, int d, uintptr_t positions, uintptr_t cos_sin, size_t cs_stride, int64_t max_pos, bool neox) {
    const KernelTable& t = T();
    const auto fn = neox ? t.rotary_neox : t.rotary_gptj;
    const int64_t* pos = ptr<const int64_t>(positions);
    for (int i = 0; i < T_; ++i)
        if (pos[i] < 0 || pos[i] >= max_pos)
            throw py::index_error("rotary: position " + std::to_string(pos[i]) + " is outside the cos/sin table (0.." +
                                  std::to_string(max_pos - 1) + "); the context is longer than the model supports");
#pragma omp parallel for num_threads(threads_for((double)T_ * (nh + nkv) * d, 1 << 15)) schedule(static)
    for (int i = 0; i < T_; ++i) {
        const float* cs = ptr<const float>(cos_sin) + pos[i] * cs_stride;
        fn(ptr<const float>(q) + i * q_stride, ptr<float>(q_out) + (size_t)i * nh * d, nh, d, cs);
        fn(ptr<const float>(k) + i * k_stride, ptr<float>(k_out) + (size_t)i * nkv * d, nkv, d, cs);
    }
}

void silu_mul(uintptr_t gu, uintptr_t out, int rows, int I) {
    const KernelTable& t = T();
#pragma omp parallel for num_threads(threads_for((double)rows * I, 1 << 15)) schedule(static)
    for (int r = 0; r < rows; ++r) t.silu_mul(ptr<float>(gu) + (size_t)r * 2 * I, ptr<float>(out) + (size_t)r * I, I);
}

void write_kv(uintptr_t k, size_t k_stride, uintptr_t v, size_t v_stride, uintptr_t kc, uintptr_t vc, uintptr_t slots,
              int T_, int row, int64_t num_slots, bool bf16_cache) {
    const int64_t* s = ptr<const int64_t>(slots);
    for (int i = 0; i < T_; ++i)
        if (s[i] >= num_slots)
            throw py::index_error("write_kv: slot " + std::to_string(s[i]) + " is outside the KV cache (" +
                                  std::to_string(num_slots) + " slots); the block table and cache disagree");
    for (int i = 0; i < T_; ++i) {
        const float* ks = ptr<const float>(k) + i * k_stride;
        const float* vs = ptr<const float>(v) + i * v_stride;
        if (s[i] < 0) continue;  // padding slot
        if (bf16_cache) {
            uint16_t* kd = ptr<uint16_t>(kc) + s[i] * row;
            uint16_t* vd = ptr<uint16_t>(vc) + s[i] * row;
            for (int j = 0; j < row; ++j) kd[j] = fp32_to_bf16(ks[j]), vd[j] = fp32_to_bf16(vs[j]);
        } else {
            std::copy(ks, ks + row, ptr<float>(kc) + s[i] * row);
            std::copy(vs, vs + row, ptr<float>(vc) + s[i] * row);
        }
    }
}

void attention(uintptr_t q, uintptr_t kc, uintptr_t vc, bool bf16_cache, uintptr_t block_tables, size_t bt_stride,
               const std::vector<int>& q_starts, const std::vector<int>& q_ends, const std::vector<int>& seq_lens,
               int nh, int nkv, int d,
               int block_size, float scale, uintptr_t out) {
    const KernelTable& t = T();
    AttnArgs base{ptr<const float>(q), ptr<const void>(kc), ptr<const void>(vc), bf16_cache, nullptr, block_size,
                  nh, nkv, d, scale, ptr<float>(out)};
    std::vector<AttnItem> items;
    std::vector<AttnMerge> merges;
    const int slots = build_attention_items(q_starts, q_ends, seq_lens, nkv, block_size, items, merges);
    double work = 0;
    for (size_t i = 0; i < seq_lens.size(); ++i) work += (double)(q_ends[i] - q_starts[i]) * seq_lens[i] * nh * d;
    const int G = nh / nkv;
    std::vector<float> parts(slots * attn_part_floats(G, d));
    const int32_t* bt = ptr<const int32_t>(block_tables);
    const int n = (int)items.size(), nt = threads_for(work, 1 << 14);
    const AttnFn attend = attention_kernel(t, bf16_cache);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int i = 0; i < n; ++i) {
        const AttnItem& it = items[i];
        AttnArgs a = base;
        a.block_table = bt + it.seq * bt_stride;
        a.kb0 = it.kb0, a.kb1 = it.kb1;
        if (it.part >= 0) a.part = parts.data() + it.part * attn_part_floats(G, d);
        attend(a, it.t0, it.t1, it.pos0, it.g);
    }
    const int nm = (int)merges.size();
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nm > 1)
    for (int i = 0; i < nm; ++i) merge_attention_parts(merges[i], parts.data(), G, d, nh, ptr<float>(out));
}

}  // namespace

const KernelTable& active_table() { return T(); }
bool bf16_gemm_active() { return bf16_path(T()); }
AttnFn attention_kernel(const KernelTable& t, bool cache_bf16) {
    return cache_bf16 && bf16_path(t) ? bf16_kernels().attention : t.attention;
}
int bf16_min_rows() { return g_bf16_min_rows; }

void register_kernels(py::module_& m) {
    using R = py::call_guard<py::gil_scoped_release>;
    m.def("supported_isas", &supported_isas, "ISA paths this CPU can run, slowest first");
    m.def("set_isa", &set_isa, py::arg("name"), "force a path: scalar, avx2 or avx512");
    m.def("isa", [] { return std::string(T().name); }, "the path in use");
    m.def("max_threads", [] { return omp_get_max_threads(); });
    m.def("gemm", &gemm, R(), py::arg("w"), py::arg("w_stride"), py::arg("ggml_type"), py::arg("N"), py::arg("K"),
          py::arg("x"), py::arg("M"), py::arg("ldx"), py::arg("y"), py::arg("ldy"), py::arg("path") = "auto",
          "y[M, N] = x[M, K] @ W[N, K]^T with W in a GGUF block format");
    m.def("has_bf16_gemm", &has_bf16_gemm, "whether the avx512 path can use the bf16 weight-expanding GEMM");
    m.def("set_bf16_min_rows", [](int n) { g_bf16_min_rows = n; }, "rows from which auto picks the bf16 GEMM");
    m.def("dequant", &dequant, R(), py::arg("w"), py::arg("w_stride"), py::arg("ggml_type"), py::arg("rows"),
          py::arg("K"), py::arg("out"), py::arg("bf16"), py::arg("row_ids"), py::arg("ld"));
    m.def("rms_norm", &rms_norm, R());
    m.def("add_rms_norm", &add_rms_norm, R());
    m.def("rotary", &rotary, R());
    m.def("silu_mul", &silu_mul, R());
    m.def("write_kv", &write_kv, R());
    m.def("attention", &attention, R());
}

}  // namespace oci
