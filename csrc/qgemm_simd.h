// Quantized GEMM with 256-bit integer dot products, shared by the AVX2 and AVX-512 paths. The
// including file defines dot_u8s8(u, s) -> 8 x int32 partial sums of u8 x s8 products
// (maddubs+madd on AVX2, one vpdpbusd on AVX-512 VNNI). Each weight block is unpacked once and
// reused for MR activation rows; the raw GGUF blocks are read in place (no repacking, so resident
// memory stays at the file size).

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

static inline __m256i unpack_nibbles16(const uint8_t* qs) {  // 16 bytes -> 32 codes (lo | hi)
    const __m128i q = _mm_loadu_si128((const __m128i*)qs);
    const __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

// u8 codes x (256 * hi + lo) as 8 x int32, lanes in element order (4 elements per lane)
static inline __m256i dot_act(__m256i q, const block_q8a& a) {
    const __m256i hi = dot_u8s8(q, _mm256_loadu_si256((const __m256i*)a.hi));
    const __m256i lo = dot_u8s8(q, _mm256_loadu_si256((const __m256i*)a.lo));
    return _mm256_add_epi32(_mm256_slli_epi32(hi, 8), lo);
}

// signed codes: |w| against the activations with w's sign moved onto them
static inline __m256i dot_act_signed(__m256i qa, __m256i q, const block_q8a& a) {
    const __m256i hi = dot_u8s8(qa, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i*)a.hi), q));
    const __m256i lo = dot_u8s8(qa, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i*)a.lo), q));
    return _mm256_add_epi32(_mm256_slli_epi32(hi, 8), lo);
}

template <int FMT, int MR>
static void tile(const uint8_t* w, const block_q8a* A, size_t a_stride, int nblk, float* Y, size_t ldy) {
    __m256 acc[MR];
    float corr[MR];
    for (int r = 0; r < MR; ++r) acc[r] = _mm256_setzero_ps(), corr[r] = 0.0f;
    if constexpr (FMT == 0 || FMT == 1) {
        constexpr int BB = FMT == 0 ? sizeof(block_q4_0) : sizeof(block_q4_1);
        for (int b = 0; b < nblk; ++b) {
            const uint8_t* blk = w + (size_t)b * BB;
            const __m256i q = unpack_nibbles16(blk + (FMT == 0 ? 2 : 4));
            const float dw = h2f(*(const uint16_t*)blk);
            const float mw = FMT == 1 ? h2f(*(const uint16_t*)(blk + 2)) : 0.0f;
            for (int r = 0; r < MR; ++r) {
                const block_q8a& ab = A[r * a_stride + b];
                const __m256i dot = dot_act(q, ab);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(dw * ab.d), acc[r]);
                const int isum = ab.sum16[0] + ab.sum16[1];
                corr[r] += (FMT == 0 ? -8.0f * dw : mw) * ab.d * (float)isum;
            }
        }
    } else if constexpr (FMT == 2) {
        const block_q8_0* bw = (const block_q8_0*)w;
        for (int b = 0; b < nblk; ++b) {
            const __m256i q = _mm256_loadu_si256((const __m256i*)bw[b].qs);
            const __m256i qa = _mm256_abs_epi8(q);
            const float dw = h2f(bw[b].d);
            for (int r = 0; r < MR; ++r) {
                const block_q8a& ab = A[r * a_stride + b];
                const __m256i dot = dot_act_signed(qa, q, ab);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(dw * ab.d), acc[r]);
            }
        }
    } else if constexpr (FMT == 3) {
        const block_q4_K* bw = (const block_q4_K*)w;
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        for (int sb = 0; sb < nblk / 8; ++sb) {
            const float d = h2f(bw[sb].d), dmin = h2f(bw[sb].dmin);
            for (int j = 0; j < 4; ++j) {
                const __m256i v = _mm256_loadu_si256((const __m256i*)(bw[sb].qs + 32 * j));
                const __m256i q0 = _mm256_and_si256(v, m4), q1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                uint8_t sc0, mn0, sc1, mn1;
                q4k_scale_min(2 * j, bw[sb].scales, sc0, mn0);
                q4k_scale_min(2 * j + 1, bw[sb].scales, sc1, mn1);
                const float ds0 = d * sc0, ds1 = d * sc1, dm0 = dmin * mn0, dm1 = dmin * mn1;
                for (int r = 0; r < MR; ++r) {
                    const block_q8a& a0 = A[r * a_stride + sb * 8 + 2 * j];
                    const block_q8a& a1 = A[r * a_stride + sb * 8 + 2 * j + 1];
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_act(q0, a0)), _mm256_set1_ps(ds0 * a0.d), acc[r]);
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_act(q1, a1)), _mm256_set1_ps(ds1 * a1.d), acc[r]);
                    corr[r] -= dm0 * a0.d * (float)(a0.sum16[0] + a0.sum16[1]) + dm1 * a1.d * (float)(a1.sum16[0] + a1.sum16[1]);
                }
            }
        }
    } else {
        const block_q6_K* bw = (const block_q6_K*)w;
        const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
        for (int sb = 0; sb < nblk / 8; ++sb) {
            const float d = h2f(bw[sb].d);
            for (int h = 0; h < 2; ++h) {
                const __m256i L0 = _mm256_loadu_si256((const __m256i*)(bw[sb].ql + 64 * h));
                const __m256i L1 = _mm256_loadu_si256((const __m256i*)(bw[sb].ql + 64 * h + 32));
                const __m256i H = _mm256_loadu_si256((const __m256i*)(bw[sb].qh + 32 * h));
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(L0, m4), _mm256_slli_epi16(_mm256_and_si256(H, m2), 4));
                q[1] = _mm256_or_si256(_mm256_and_si256(L1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 2), m2), 4));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L0, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 4), m2), 4));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L1, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 6), m2), 4));
                const int8_t* sc = bw[sb].scales + 8 * h;
                for (int k = 0; k < 4; ++k) {
                    // lanes 0-3 hold elements 0..15 (scale sc[2k]), lanes 4-7 elements 16..31 (sc[2k+1])
                    const __m256 ws = _mm256_set_m128(_mm_set1_ps(d * sc[2 * k + 1]), _mm_set1_ps(d * sc[2 * k]));
                    for (int r = 0; r < MR; ++r) {
                        const block_q8a& ab = A[r * a_stride + sb * 8 + 4 * h + k];
                        const __m256 s = _mm256_mul_ps(ws, _mm256_set1_ps(ab.d));
                        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_act(q[k], ab)), s, acc[r]);
                        corr[r] -= 32.0f * d * ab.d * (float)(sc[2 * k] * ab.sum16[0] + sc[2 * k + 1] * ab.sum16[1]);
                    }
                }
            }
        }
    }
    for (int r = 0; r < MR; ++r) Y[r * ldy] = hsum(acc[r]) + corr[r];
}

#if defined(OCI_AVX512)
// Two blocks of the simple formats per 512-bit register: half the dot, convert and FMA
// instructions of the 256-bit tile; an odd last block goes through that tile. The scale work of a
// block pair is one 4-lane vector: the blocks' fp16 (d, m) words converted together, times the
// activations' (d, ds) pairs, giving both GEMM scales and both offset terms (m * ds, or -8 d * ds
// for Q4_0) in one multiply; the offset lanes are summed once at the end. The scalar version of
// this (fp16 conversions, products and integer sums per block) was half the instructions.
template <int FMT, int MR>
static void tile512(const uint8_t* w, const block_q8a* A, size_t a_stride, int nblk, float* Y, size_t ldy) {
    constexpr int BB = FMT == 0 ? sizeof(block_q4_0) : (FMT == 1 ? sizeof(block_q4_1) : sizeof(block_q8_0));
    __m512 acc[MR];
    __m128 cacc[MR];
    for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_ps(), cacc[r] = _mm_setzero_ps();
    const __m512i perm = _mm512_setr_epi64(0, 1, 4, 5, 2, 3, 6, 7);
    const __m512i bcast = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    const __m512i zero = _mm512_setzero_si512();
    const __m128 sign = _mm_setr_ps(1.0f, -8.0f, 1.0f, -8.0f);
    int b = 0;
    for (; b + 2 <= nblk; b += 2) {
        const uint8_t* b0 = w + (size_t)b * BB;
        const uint8_t* b1 = b0 + BB;
        __m512i q;
        __mmask64 neg = 0;
        if constexpr (FMT == 2) {
            const __m512i raw = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(b0 + 2))),
                                                   _mm256_loadu_si256((const __m256i*)(b1 + 2)), 1);
            neg = _mm512_movepi8_mask(raw);
            q = _mm512_abs_epi8(raw);
        } else {
            constexpr int off = FMT == 0 ? 2 : 4;
            const __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)(b0 + off))),
                                                      _mm_loadu_si128((const __m128i*)(b1 + off)), 1);
            const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(t), _mm256_srli_epi16(t, 4), 1);
            q = _mm512_permutexvar_epi64(perm, _mm512_and_si512(z, _mm512_set1_epi8(0x0F)));
        }
        // fp16 words 0..1 of both blocks: (d, m) for Q4_1, (d, code bytes) otherwise
        int32_t h0, h1;
        std::memcpy(&h0, b0, 4);
        std::memcpy(&h1, b1, 4);
        __m128 wsc = _mm_cvtph_ps(_mm_setr_epi32(h0, h1, 0, 0));  // d0 x0 d1 x1 (x = m for Q4_1)
        if constexpr (FMT != 1) wsc = _mm_mul_ps(_mm_shuffle_ps(wsc, wsc, _MM_SHUFFLE(2, 2, 0, 0)), sign);
        // now (d0, c0, d1, c1): c = m (Q4_1), -8 d (Q4_0), unused (Q8_0)
        for (int r = 0; r < MR; ++r) {
            const block_q8a& a0 = A[r * a_stride + b];
            const block_q8a& a1 = A[r * a_stride + b + 1];
            const __m128 ad = _mm_castpd_ps(_mm_loadh_pd(_mm_load_sd((const double*)&a0.d), (const double*)&a1.d));
            const __m128 p = _mm_mul_ps(wsc, ad);  // d0 da0, c0 ds0, d1 da1, c1 ds1
            if constexpr (FMT != 2) cacc[r] = _mm_add_ps(cacc[r], p);
            __m512i hi = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)a0.hi)),
                                            _mm256_loadu_si256((const __m256i*)a1.hi), 1);
            __m512i lo = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)a0.lo)),
                                            _mm256_loadu_si256((const __m256i*)a1.lo), 1);
            if constexpr (FMT == 2) {  // the weight's sign moves onto the activations
                hi = _mm512_mask_sub_epi8(hi, neg, zero, hi);
                lo = _mm512_mask_sub_epi8(lo, neg, zero, lo);
            }
            const __m512i dot = _mm512_add_epi32(_mm512_slli_epi32(_mm512_dpbusd_epi32(zero, q, hi), 8),
                                                 _mm512_dpbusd_epi32(zero, q, lo));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(bcast, _mm512_castps128_ps512(p)), acc[r]);
        }
    }
    float tail[MR] = {};
    if (b < nblk) tile<FMT, MR>(w + (size_t)b * BB, A + b, a_stride, 1, tail, 1);
    for (int r = 0; r < MR; ++r) {
        alignas(16) float c[4];
        _mm_store_ps(c, cacc[r]);
        Y[r * ldy] = _mm512_reduce_add_ps(acc[r]) + (c[1] + c[3]) + tail[r];
    }
}
#endif

// Weight rows are walked in chunks small enough to stay in L1/L2 while every activation row tile
// passes over them, so prefill-sized M does not re-stream the weights from memory per tile.
#if defined(OCI_AVX512)
#define OCI_TILE(F, R) (F <= 2 ? tile512<F, R> : tile<F, R>)
#else
#define OCI_TILE(F, R) tile<F, R>
#endif

template <int FMT>
static void gemm(const uint8_t* W, size_t w_stride, int n0, int n1, const block_q8a* A, size_t a_stride, int M,
                 int nblk, float* Y, size_t ldy) {
    constexpr int MR = 4, NC = 16;
    for (int nc = n0; nc < n1; nc += NC) {
        const int ne = std::min(n1, nc + NC);
        int m = 0;
        for (; m + MR <= M; m += MR)
            for (int n = nc; n < ne; ++n) OCI_TILE(FMT, MR)(W + n * w_stride, A + m * a_stride, a_stride, nblk, Y + m * ldy + n, ldy);
        for (int n = nc; n < ne; ++n) {
            const uint8_t* w = W + n * w_stride;
            switch (M - m) {
                case 3: OCI_TILE(FMT, 3)(w, A + m * a_stride, a_stride, nblk, Y + m * ldy + n, ldy); break;
                case 2: OCI_TILE(FMT, 2)(w, A + m * a_stride, a_stride, nblk, Y + m * ldy + n, ldy); break;
                case 1: OCI_TILE(FMT, 1)(w, A + m * a_stride, a_stride, nblk, Y + m * ldy + n, ldy); break;
                default: break;
            }
        }
    }
}
