// One table of kernel entry points per ISA path (scalar, avx2, avx512). Each path lives in its own
// translation unit compiled with its own `#pragma GCC target`, so the extension itself needs no
// -march flag and runs on any x86-64; dispatch.cpp picks a table at run time from cpuid.
#pragma once
#include <cstddef>
#include <cstdint>

#include "quant_formats.h"

namespace oci {

// Y[m, n] = sum_k W[n, k] * A[m, k] for n in [n0, n1), m in [0, M). W rows are raw GGUF blocks
// `w_stride` bytes apart; A rows are `nblk` activation blocks each, `a_stride` blocks apart.
using GemmFn = void (*)(const uint8_t* W, size_t w_stride, int n0, int n1, const block_q8a* A,
                        size_t a_stride, int M, int nblk, float* Y, size_t ldy);
// Rows [r0, r1) of a quantized matrix to fp32 or bf16 (K elements per row, `ld` apart in out).
using DequantF32Fn = void (*)(const uint8_t* W, size_t w_stride, int r0, int r1, int K, float* out, size_t ld);
using DequantBF16Fn = void (*)(const uint8_t* W, size_t w_stride, int r0, int r1, int K, uint16_t* out, size_t ld);

struct AttnArgs {
    const float* q;            // [T, nh, d]
    const void* k_cache;       // [num_blocks, block_size, nkv, d], fp32 or bf16
    const void* v_cache;
    bool cache_bf16;
    const int32_t* block_table;  // this sequence's row
    int block_size, nh, nkv, d;
    float scale;
    float* out;                // [T, nh, d]
    // A decode token's part of its context (attention_items.h): blocks [kb0, kb1) (kb1 = 0: all),
    // and where part != nullptr, per query row of the group its max score, softmax denominator and
    // unnormalised output (d + 2 floats) there instead of the normalised output in out.
    int kb0 = 0, kb1 = 0;
    float* part = nullptr;
};
// Attention of query tokens [t0, t1) (flat indices into q/out, positions pos0.. consecutive) on kv
// head g over keys 0..pos of each token (causal), reading K/V through the block table.
using AttnFn = void (*)(const AttnArgs& a, int t0, int t1, int pos0, int g);

struct KernelTable {
    const char* name;
    void (*quantize_q8a)(const float* x, int K, block_q8a* out);
    GemmFn gemm_q4_0, gemm_q4_1, gemm_q8_0, gemm_q4_K, gemm_q6_K;
    DequantF32Fn dequant_f32[5];   // order: q4_0, q4_1, q8_0, q4_K, q6_K
    DequantBF16Fn dequant_bf16[5];
    void (*rms_norm)(const float* x, const float* w, float* y, int H, float eps);
    // sum = x + residual, y = rms_norm(sum) * w
    void (*add_rms_norm)(const float* x, const float* residual, float* sum, const float* w, float* y, int H, float eps);
    // neox layout: pairs (i, i + d/2); gptj: pairs (2i, 2i + 1); cs = [cos(d/2) | sin(d/2)] of this position
    void (*rotary_neox)(const float* src, float* dst, int nheads, int d, const float* cs);
    void (*rotary_gptj)(const float* src, float* dst, int nheads, int d, const float* cs);
    void (*silu_mul)(const float* gu, float* out, int I);
    AttnFn attention;
};

// Only on CPUs with AVX512-BF16 (isa_avx512bf16.cpp); used by the avx512 path from a few rows up.
struct Bf16Kernels {
    void (*to_bf16)(const float* x, uint16_t* out, int n);
    void (*gemm)(int fmt, const uint8_t* W, size_t w_stride, int n0, int n1, const uint16_t* X, size_t ldx, int M,
                 int K, float* Y, size_t ldy);
    void (*dequant_row)(int fmt, const uint8_t* w, int K, uint16_t* out);  // one row to bf16
    AttnFn attention;  // paged_attention.h with a bf16 cache's decode scores as vdpbf16ps dot products
};
const Bf16Kernels& bf16_kernels();

// The path dispatch.cpp resolved (OCI_ENGINE_ISA or the fastest), and whether / from how many rows
// its GEMM expands weights to bf16: shared by the per-op entry points and the decoder stack, so both
// make the same choice and produce the same numbers.
const KernelTable& active_table();
bool bf16_gemm_active();
int bf16_min_rows();
// The attention kernel for a KV cache of this dtype on table t: with AVX512-BF16 on the avx512 path,
// a bf16 cache goes to Bf16Kernels::attention. One choice for the per-op call and the decoder stack.
AttnFn attention_kernel(const KernelTable& t, bool cache_bf16);

const KernelTable& table_scalar();
const KernelTable& table_avx2();
const KernelTable& table_avx512();

inline int format_index(int ggml_type) {
    switch (ggml_type) {
        case Q4_0: return 0;
        case Q4_1: return 1;
        case Q8_0: return 2;
        case Q4_K: return 3;
        case Q6_K: return 4;
        default: return -1;
    }
}

}  // namespace oci
