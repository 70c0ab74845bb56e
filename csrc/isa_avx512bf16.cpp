// Weight-dequantizing GEMM for several activation rows on CPUs with AVX512-BF16: each weight row
// is expanded once to bf16 (scales folded in) and then dotted with every row of the bf16
// activations by vdpbf16ps (32 multiply-adds per instruction, fp32 accumulation). Per row this
// costs two instructions per 32 weights instead of the int8 path's per-block scale work, so it
// wins from a few rows up (batched decode, chunked prefill); one row stays on the int8 path, whose
// weight unpacking is cheaper than a full dequantization.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernel_table.h"

#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")

namespace oci {
namespace avx512bf16 {
#define OCI_AVX512 1
#include "portable_kernels.h"

static void to_bf16(const float* x, uint16_t* out, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i*)(out + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
    for (; i < n; ++i) out[i] = fp32_to_bf16(x[i]);
}

static inline void store32(uint16_t* out, __m512 e0_15, __m512 e16_31) {
    _mm512_storeu_si512(out, (__m512i)_mm512_cvtne2ps_pbh(e16_31, e0_15));
}

// The simple formats expand with a handful of instructions per block; K-quants go through the
// portable block decoder (their sub-block scales make a vector version long, and they are rarer).
static void dequant_row_bf16(int fmt, const uint8_t* w, int K, uint16_t* out) {
    if (fmt == 0 || fmt == 1) {
        const int bb = fmt == 0 ? sizeof(block_q4_0) : sizeof(block_q4_1);
        const __m128i m4 = _mm_set1_epi8(0x0F);
        for (int b = 0; b < K / QK; ++b) {
            const uint8_t* blk = w + (size_t)b * bb;
            const __m128i q = _mm_loadu_si128((const __m128i*)(blk + (fmt == 0 ? 2 : 4)));
            const __m512 f0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q, m4)));
            const __m512 f1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), m4)));
            const float d = _cvtsh_ss(*(const uint16_t*)blk);
            const __m512 vd = _mm512_set1_ps(d);
            const __m512 off = _mm512_set1_ps(fmt == 0 ? -8.0f * d : _cvtsh_ss(*(const uint16_t*)(blk + 2)));
            store32(out + (size_t)b * QK, _mm512_fmadd_ps(f0, vd, off), _mm512_fmadd_ps(f1, vd, off));
        }
        return;
    }
    if (fmt == 2) {
        const block_q8_0* bw = (const block_q8_0*)w;
        for (int b = 0; b < K / QK; ++b) {
            const __m512 vd = _mm512_set1_ps(_cvtsh_ss(bw[b].d));
            const __m512 f0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)bw[b].qs)));
            const __m512 f1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(bw[b].qs + 16))));
            store32(out + (size_t)b * QK, _mm512_mul_ps(f0, vd), _mm512_mul_ps(f1, vd));
        }
        return;
    }
    const int be = block_elems(kFormatTypes[fmt]), bb = block_bytes(kFormatTypes[fmt]);
    alignas(64) float buf[QK_K];
    for (int b = 0; b < K / be; ++b) {
        dequant_block(fmt, w + (size_t)b * bb, buf);
        to_bf16(buf, out + (size_t)b * be, be);
    }
}

template <int MR>
static void dot_tile(const uint16_t* w, const uint16_t* X, size_t ldx, int K, float* Y, size_t ldy) {
    __m512 acc[MR];
    for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 32) {
        const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + k);
        for (int r = 0; r < MR; ++r)
            acc[r] = _mm512_dpbf16_ps(acc[r], wv, (__m512bh)_mm512_loadu_si512(X + r * ldx + k));
    }
    for (int r = 0; r < MR; ++r) Y[r * ldy] = _mm512_reduce_add_ps(acc[r]);
}

// Rows [n0, n1) of Y[M, N] = X[M, K] (bf16) @ W^T. Weight rows are expanded in chunks of NC so
// that a chunk (NC * K bf16) and a tile of activation rows stay in L1/L2 while they meet.
static void gemm_bf16(int fmt, const uint8_t* W, size_t w_stride, int n0, int n1, const uint16_t* X, size_t ldx,
                      int M, int K, float* Y, size_t ldy) {
    constexpr int NC = 16, MT = 64;
    static thread_local std::vector<uint16_t> wbuf;
    if (wbuf.size() < (size_t)NC * K) wbuf.resize((size_t)NC * K);
    for (int nc = n0; nc < n1; nc += NC) {
        const int ne = std::min(n1, nc + NC);
        for (int n = nc; n < ne; ++n) dequant_row_bf16(fmt, W + n * w_stride, K, &wbuf[(size_t)(n - nc) * K]);
        for (int m0 = 0; m0 < M; m0 += MT) {
            const int me = std::min(M, m0 + MT);
            for (int n = nc; n < ne; ++n) {
                const uint16_t* w = &wbuf[(size_t)(n - nc) * K];
                int m = m0;
                for (; m + 16 <= me; m += 16) dot_tile<16>(w, X + m * ldx, ldx, K, Y + m * ldy + n, ldy);
                if (me - m >= 8) dot_tile<8>(w, X + m * ldx, ldx, K, Y + m * ldy + n, ldy), m += 8;
                if (me - m >= 4) dot_tile<4>(w, X + m * ldx, ldx, K, Y + m * ldy + n, ldy), m += 4;
                if (me - m >= 2) dot_tile<2>(w, X + m * ldx, ldx, K, Y + m * ldy + n, ldy), m += 2;
                if (me - m >= 1) dot_tile<1>(w, X + m * ldx, ldx, K, Y + m * ldy + n, ldy);
            }
        }
    }
}
}  // namespace avx512bf16

const Bf16Kernels& bf16_kernels() {
    static const Bf16Kernels k = {avx512bf16::to_bf16, avx512bf16::gemm_bf16, avx512bf16::dequant_row_bf16};
    return k;
}
}  // namespace oci
