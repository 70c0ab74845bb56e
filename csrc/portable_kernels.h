// Kernels written once in plain C++ and compiled three times (isa_scalar.cpp, isa_avx2.cpp,
// isa_avx512.cpp): under each `#pragma GCC target` the compiler vectorizes them for that ISA. They
// are included inside a per-ISA namespace, after the standard headers, so they include nothing.
// Needs: quant_formats.h, kernel_table.h, <cmath>, <vector>, <algorithm>, <limits>.

// exp() that vectorizes (libm's expf does not without -ffast-math): Cody-Waite reduction and a
// degree-6 polynomial, max relative error ~2e-7 on [-87, 88]; underflows to 0 below.
static inline float fast_exp(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = std::floor(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, 4);
    return p * scale;
}

// exp over an array: explicit SIMD where the including file defines OCI_AVX512 / OCI_AVX2 (the
// compiler does not vectorize fast_exp's float->int steps), fast_exp for the tail and on scalar.
#if defined(OCI_AVX512)
static inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}
// Lane i of the result = sum of the 16 lanes of v[i]: a transposing reduction, 45 instructions for
// 16 sums where one _mm512_reduce_add_ps each would take ~130.
static inline __m512 hsum16(const __m512* v) {
    __m512 t[8], u[4];
    for (int i = 0; i < 8; ++i)
        t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; ++i) {
        const __m512d a = _mm512_castps_pd(t[2 * i]), b = _mm512_castps_pd(t[2 * i + 1]);
        u[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    const __m512 p = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(p, q, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(p, q, _MM_SHUFFLE(3, 1, 3, 1)));
}
#elif defined(OCI_AVX2)
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

static void exp_inplace(float* v, int n) {
    int i = 0;
#if defined(OCI_AVX512)
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(v + i, exp16(_mm512_loadu_ps(v + i)));
#elif defined(OCI_AVX2)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(v + i, exp8(_mm256_loadu_ps(v + i)));
#endif
    for (; i < n; ++i) v[i] = fast_exp(v[i]);
}

static void quantize_q8a(const float* x, int K, block_q8a* out) {
    const int nb = (K + QK - 1) / QK;
    for (int b = 0; b < nb; ++b) {
        float buf[QK];
        const int n = std::min(QK, K - b * QK);
        for (int i = 0; i < QK; ++i) buf[i] = i < n ? x[b * QK + i] : 0.0f;
        float amax = 0.0f;
#pragma omp simd reduction(max : amax)
        for (int i = 0; i < QK; ++i) amax = std::max(amax, std::fabs(buf[i]));
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        block_q8a& o = out[b];
        o.d = amax / (127.0f * 256.0f);
        int s[2] = {0, 0};
        for (int h = 0; h < 2; ++h) {
            int acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int i = 16 * h; i < 16 * h + 16; ++i) {
                const float v = buf[i] * id;
                const float qh = std::nearbyint(v);
                float ql = std::nearbyint((v - qh) * 256.0f);
                ql = ql > 127.0f ? 127.0f : (ql < -127.0f ? -127.0f : ql);
                o.hi[i] = (int8_t)qh;
                o.lo[i] = (int8_t)ql;
                acc += 256 * (int)qh + (int)ql;
            }
            s[h] = acc;
        }
        o.sum16[0] = s[0];
        o.sum16[1] = s[1];
        o.ds = o.d * (float)(s[0] + s[1]);
    }
}

// ---- dequantization (the prefill path feeds these to a bf16 GEMM; embeddings use them too) ----
static void dequant_block(int fmt, const uint8_t* blk, float* y) {
    switch (fmt) {
        case 0: {
            const block_q4_0* b = (const block_q4_0*)blk;
            const float d = fp16_to_fp32(b->d);
            for (int i = 0; i < QK / 2; ++i) {
                y[i] = d * ((b->qs[i] & 0xF) - 8);
                y[i + QK / 2] = d * ((b->qs[i] >> 4) - 8);
            }
            break;
        }
        case 1: {
            const block_q4_1* b = (const block_q4_1*)blk;
            const float d = fp16_to_fp32(b->d), m = fp16_to_fp32(b->m);
            for (int i = 0; i < QK / 2; ++i) {
                y[i] = d * (b->qs[i] & 0xF) + m;
                y[i + QK / 2] = d * (b->qs[i] >> 4) + m;
            }
            break;
        }
        case 2: {
            const block_q8_0* b = (const block_q8_0*)blk;
            const float d = fp16_to_fp32(b->d);
            for (int i = 0; i < QK; ++i) y[i] = d * b->qs[i];
            break;
        }
        case 3: {
            const block_q4_K* b = (const block_q4_K*)blk;
            const float d = fp16_to_fp32(b->d), dmin = fp16_to_fp32(b->dmin);
            for (int j = 0; j < 4; ++j) {
                uint8_t sc0, m0, sc1, m1;
                q4k_scale_min(2 * j, b->scales, sc0, m0);
                q4k_scale_min(2 * j + 1, b->scales, sc1, m1);
                const float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
                const uint8_t* q = b->qs + 32 * j;
                for (int i = 0; i < 32; ++i) {
                    y[64 * j + i] = d0 * (q[i] & 0xF) - mm0;
                    y[64 * j + 32 + i] = d1 * (q[i] >> 4) - mm1;
                }
            }
            break;
        }
        case 4: {
            const block_q6_K* b = (const block_q6_K*)blk;
            const float d = fp16_to_fp32(b->d);
            for (int h = 0; h < 2; ++h) {
                const uint8_t* ql = b->ql + 64 * h;
                const uint8_t* qh = b->qh + 32 * h;
                const int8_t* sc = b->scales + 8 * h;
                float* yy = y + 128 * h;
                for (int l = 0; l < 32; ++l) {
                    const int is = l / 16;
                    yy[l] = d * sc[is] * (((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
                    yy[l + 32] = d * sc[is + 2] * (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                    yy[l + 64] = d * sc[is + 4] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                    yy[l + 96] = d * sc[is + 6] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                }
            }
            break;
        }
    }
}

static const int kFormatTypes[5] = {Q4_0, Q4_1, Q8_0, Q4_K, Q6_K};

template <int FMT>
static void dequant_rows_f32(const uint8_t* W, size_t w_stride, int r0, int r1, int K, float* out, size_t ld) {
    const int be = block_elems(kFormatTypes[FMT]), bb = block_bytes(kFormatTypes[FMT]);
    for (int r = r0; r < r1; ++r)
        for (int b = 0; b < K / be; ++b) dequant_block(FMT, W + r * w_stride + (size_t)b * bb, out + (size_t)r * ld + b * be);
}

template <int FMT>
static void dequant_rows_bf16(const uint8_t* W, size_t w_stride, int r0, int r1, int K, uint16_t* out, size_t ld) {
    const int be = block_elems(kFormatTypes[FMT]), bb = block_bytes(kFormatTypes[FMT]);
    float buf[QK_K];
    for (int r = r0; r < r1; ++r)
        for (int b = 0; b < K / be; ++b) {
            dequant_block(FMT, W + r * w_stride + (size_t)b * bb, buf);
            uint16_t* o = out + (size_t)r * ld + b * be;
            for (int i = 0; i < be; ++i) o[i] = fp32_to_bf16(buf[i]);
        }
}

// ---- normalization, rotary, activation ----
static void rms_norm(const float* x, const float* w, float* y, int H, float eps) {
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int i = 0; i < H; ++i) ss += x[i] * x[i];
    const float inv = 1.0f / std::sqrt(ss / H + eps);
#pragma omp simd
    for (int i = 0; i < H; ++i) y[i] = x[i] * inv * w[i];
}

static void add_rms_norm(const float* x, const float* residual, float* sum, const float* w, float* y, int H, float eps) {
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int i = 0; i < H; ++i) {
        const float r = x[i] + residual[i];
        sum[i] = r;
        ss += r * r;
    }
    const float inv = 1.0f / std::sqrt(ss / H + eps);
#pragma omp simd
    for (int i = 0; i < H; ++i) y[i] = sum[i] * inv * w[i];
}

static void rotary_neox(const float* src, float* dst, int nheads, int d, const float* cs) {
    const int h2 = d / 2;
    const float* c = cs;
    const float* s = cs + h2;
    for (int h = 0; h < nheads; ++h) {
        const float* x = src + (size_t)h * d;
        const float* xh = x + h2;  // pointers, not x[i + h2]: see silu_mul
        float* o = dst + (size_t)h * d;
        float* oh = o + h2;
#pragma omp simd
        for (int i = 0; i < h2; ++i) {
            const float x1 = x[i], x2 = xh[i];
            o[i] = x1 * c[i] - x2 * s[i];
            oh[i] = x2 * c[i] + x1 * s[i];
        }
    }
}

static void rotary_gptj(const float* src, float* dst, int nheads, int d, const float* cs) {
    const int h2 = d / 2;
    const float* c = cs;
    const float* s = cs + h2;
    for (int h = 0; h < nheads; ++h) {
        const float* x = src + (size_t)h * d;
        float* o = dst + (size_t)h * d;
        for (int i = 0; i < h2; ++i) {
            const float x1 = x[2 * i], x2 = x[2 * i + 1];
            o[2 * i] = x1 * c[i] - x2 * s[i];
            o[2 * i + 1] = x2 * c[i] + x1 * s[i];
        }
    }
}

// Chunk pointers rather than gu[c + i]: the extension builds with -fwrapv, under which an int index
// sum may wrap, so the compiler turned those loads into 16 scalar inserts per vector (1.1 ns per
// element instead of ~0.1).
static void silu_mul(const float* gu, float* out, int I) {
    constexpr int C = 256;
    float e[C];
    for (int c = 0; c < I; c += C) {
        const int n = std::min(C, I - c);
        const float* g = gu + c;
        const float* u = gu + I + c;
        float* o = out + c;
        for (int i = 0; i < n; ++i) e[i] = -g[i];
        exp_inplace(e, n);
#pragma omp simd
        for (int i = 0; i < n; ++i) o[i] = g[i] / (1.0f + e[i]) * u[i];
    }
}
