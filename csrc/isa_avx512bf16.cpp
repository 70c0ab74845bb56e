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
#define OCI_BF16_DOT 1
#include "portable_kernels.h"
#include "paged_attention.h"

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
        // A block's 16 possible values d * q + m (m = -8d for Q4_0) rounded once into a bf16 table,
        // then the 32 nibbles looked up in it (vpermw): the same fma and rounding per weight as
        // expanding each nibble in fp32, with a third of the conversions, which share the FMA pipes
        // with the dot products that follow. Two blocks at a time: one fp16 conversion for both
        // scale pairs, one conversion for both tables (words 0-15 the first block's, 16-31 the
        // second's), one 32-word lookup per block (its low nibbles then its high ones): 16% fewer
        // cycles per block than one block at a time.
        const int bb = fmt == 0 ? sizeof(block_q4_0) : sizeof(block_q4_1), qoff = fmt == 0 ? 2 : 4;
        const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        const __m512i shift = _mm512_set_epi64(0x0004000400040004, 0x0004000400040004, 0x0004000400040004,
                                               0x0004000400040004, 0, 0, 0, 0);  // words 16-31: high nibbles
        const __m512i lo4 = _mm512_set1_epi16(0x0F), second = _mm512_set1_epi16(0x10);
        const int nb = K / QK;
        int b = 0;
        for (; b + 2 <= nb; b += 2) {
            const uint8_t* x = w + (size_t)b * bb;
            const uint8_t* y = x + bb;
            int32_t hx, hy;  // fp16 words 0..1: d, then m (Q4_1) or the first code bytes (Q4_0)
            std::memcpy(&hx, x, 4), std::memcpy(&hy, y, 4);
            const __m512 dm = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_insert_epi32(_mm_cvtsi32_si128(hx), hy, 1)));
            const __m512 dx = _mm512_permutexvar_ps(_mm512_set1_epi32(0), dm);
            const __m512 dy = _mm512_permutexvar_ps(_mm512_set1_epi32(2), dm);
            const __m512 mx = fmt == 0 ? _mm512_mul_ps(dx, _mm512_set1_ps(-8.0f)) : _mm512_permutexvar_ps(_mm512_set1_epi32(1), dm);
            const __m512 my = fmt == 0 ? _mm512_mul_ps(dy, _mm512_set1_ps(-8.0f)) : _mm512_permutexvar_ps(_mm512_set1_epi32(3), dm);
            const __m512i tab = (__m512i)_mm512_cvtne2ps_pbh(_mm512_fmadd_ps(iota, dy, my), _mm512_fmadd_ps(iota, dx, mx));
            const __m512i qx = _mm512_cvtepu8_epi16(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(x + qoff))));
            const __m512i qy = _mm512_cvtepu8_epi16(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(y + qoff))));
            _mm512_storeu_si512(out + (size_t)b * QK,
                                _mm512_permutexvar_epi16(_mm512_and_si512(_mm512_srlv_epi16(qx, shift), lo4), tab));
            _mm512_storeu_si512(out + (size_t)(b + 1) * QK,  // (q & 15) | 16: the table's second half
                                _mm512_permutexvar_epi16(_mm512_ternarylogic_epi32(_mm512_srlv_epi16(qy, shift), lo4,
                                                                                   second, 0xEA), tab));
        }
        if (b < nb) {  // an odd last block: the same table arithmetic, one block
            const uint8_t* x = w + (size_t)b * bb;
            int32_t hx;
            std::memcpy(&hx, x, 4);
            const __m512 dm = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(hx)));
            const __m512 dx = _mm512_permutexvar_ps(_mm512_set1_epi32(0), dm);
            const __m512 mx = fmt == 0 ? _mm512_mul_ps(dx, _mm512_set1_ps(-8.0f)) : _mm512_permutexvar_ps(_mm512_set1_epi32(1), dm);
            const __m512 t = _mm512_fmadd_ps(iota, dx, mx);
            const __m512i tab = (__m512i)_mm512_cvtne2ps_pbh(t, t);
            const __m512i qx = _mm512_cvtepu8_epi16(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(x + qoff))));
            _mm512_storeu_si512(out + (size_t)b * QK,
                                _mm512_permutexvar_epi16(_mm512_and_si512(_mm512_srlv_epi16(qx, shift), lo4), tab));
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

// Y[m, n] for MR activation rows x 4 expanded weight rows (w, 4 rows K apart): 16 accumulators,
// 8 loads per 16 vdpbf16ps (a 1 x 16 tile needs 17), one shared reduction; nv valid weight rows.
// Columns [k0, k1) only; add: onto Y instead of into it. The accumulators are named, not an
// array: an array reaches hsum16 through memory (a memset and 32 stack moves per tile).
template <int MR>
static inline void tile4(const uint16_t* w, int K, int k0, int k1, const uint16_t* X, size_t ldx, float* Y, size_t ldy,
                         int nv, bool add) {
    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00,
           a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    for (int k = k0; k < k1; k += 32) {
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w + k), w1 = (__m512bh)_mm512_loadu_si512(w + (size_t)K + k),
                       w2 = (__m512bh)_mm512_loadu_si512(w + 2 * (size_t)K + k),
                       w3 = (__m512bh)_mm512_loadu_si512(w + 3 * (size_t)K + k);
        auto row = [&](int r, __m512& c0, __m512& c1, __m512& c2, __m512& c3) {
            const __m512bh xv = (__m512bh)_mm512_loadu_si512(X + r * ldx + k);
            c0 = _mm512_dpbf16_ps(c0, w0, xv), c1 = _mm512_dpbf16_ps(c1, w1, xv);
            c2 = _mm512_dpbf16_ps(c2, w2, xv), c3 = _mm512_dpbf16_ps(c3, w3, xv);
        };
        row(0, a00, a01, a02, a03);
        if (MR > 1) row(1, a10, a11, a12, a13);
        if (MR > 2) row(2, a20, a21, a22, a23);
        if (MR > 3) row(3, a30, a31, a32, a33);
    }
    const __m512 v[16] = {a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33};
    alignas(64) float s[16];
    _mm512_store_ps(s, hsum16(v));
    for (int r = 0; r < MR; ++r)
        for (int j = 0; j < nv; ++j) Y[r * ldy + j] = add ? Y[r * ldy + j] + s[4 * r + j] : s[4 * r + j];
}

// Rows [n0, n1) of Y[M, N] = X[M, K] (bf16) @ W^T. Weight rows are expanded in chunks of NC so
// that a chunk (NC * K bf16) and the activation rows stay in L1/L2 while they meet; a short last
// chunk is padded with zero rows to whole 4-row tiles. Weight tiles outside, activation tiles
// inside: a tile's 4 expanded rows stay in L1 while every activation row passes them. Long rows
// (an MLP's down projection) are cut into slices of at most KS columns, so that the activation
// rows' slice stays in L1 too (16 rows x 1536 columns did not: the tiles ran at L2 speed).
static void gemm_bf16(int fmt, const uint8_t* W, size_t w_stride, int n0, int n1, const uint16_t* X, size_t ldx,
                      int M, int K, float* Y, size_t ldy) {
    constexpr int NC = 16, KS = 768;
    static thread_local std::vector<uint16_t> scratch;
    if (scratch.size() < (size_t)NC * K) scratch.resize((size_t)NC * K);
    uint16_t* const wbuf = scratch.data();  // one TLS lookup, not one per row (this is PIC code)
    const int slices = (K + KS - 1) / KS, ks = (K / QK + slices - 1) / slices * QK;  // whole 32-column steps
    // the first chunk's raw rows are on their way while the lines before them are expanded
    for (const char *p = (const char*)(W + (size_t)n0 * w_stride),
                    *e = (const char*)(W + (size_t)std::min(n1, n0 + NC) * w_stride); p < e; p += 64)
        _mm_prefetch(p, _MM_HINT_T0);
    for (int nc = n0; nc < n1; nc += NC) {
        const int ne = std::min(n1, nc + NC), padded = (ne - nc + 3) / 4 * 4;
        for (int n = nc; n < ne; ++n) dequant_row_bf16(fmt, W + n * w_stride, K, wbuf + (size_t)(n - nc) * K);
        std::fill(wbuf + (size_t)(ne - nc) * K, wbuf + (size_t)padded * K, (uint16_t)0);
        // The next chunk's raw rows are fetched while this one is multiplied: spread over the tiles,
        // the misses overlap the arithmetic instead of stalling the next expansion.
        const char* pf = (const char*)(W + (size_t)ne * w_stride);
        const char* pf_end = (const char*)(W + (size_t)std::min(n1, ne + NC) * w_stride);
        const size_t tiles = (size_t)slices * ((M + 3) / 4) * (padded / 4);
        const size_t per_tile = ((size_t)(pf_end - pf) / 64 + tiles) / tiles;
        for (int k0 = 0; k0 < K; k0 += ks) {
            const int k1 = std::min(K, k0 + ks);
            for (int j = 0; j < padded; j += 4) {
                const uint16_t* w = wbuf + (size_t)j * K;
                const int nv = std::min(4, ne - nc - j);
                for (int m = 0; m < M; m += 4) {
                    for (size_t i = 0; i < per_tile && pf < pf_end; ++i, pf += 64) _mm_prefetch(pf, _MM_HINT_T0);
                    const uint16_t* x = X + m * ldx;
                    float* y = Y + m * ldy + nc + j;
                    const bool add = k0 > 0;
                    switch (std::min(4, M - m)) {
                        case 4: tile4<4>(w, K, k0, k1, x, ldx, y, ldy, nv, add); break;
                        case 3: tile4<3>(w, K, k0, k1, x, ldx, y, ldy, nv, add); break;
                        case 2: tile4<2>(w, K, k0, k1, x, ldx, y, ldy, nv, add); break;
                        default: tile4<1>(w, K, k0, k1, x, ldx, y, ldy, nv, add); break;
                    }
                }
            }
        }
    }
}
}  // namespace avx512bf16

const Bf16Kernels& bf16_kernels() {
    static const Bf16Kernels k = {avx512bf16::to_bf16, avx512bf16::gemm_bf16, avx512bf16::dequant_row_bf16,
                                  avx512bf16::attention};
    return k;
}
}  // namespace oci
