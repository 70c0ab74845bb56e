// Paged attention written once in plain C++ (plus exp_inplace from portable_kernels.h) and compiled
// per ISA like the other portable kernels; included after portable_kernels.h, inside the per-ISA
// namespace.

// ---- decode (one query token): the GQA group's rows read K/V rows in place (fp32 cache) or from
// one fp32 copy of the block (bf16 cache) and take each score as one dot product. The tiled path
// below transposes every K block, which for a single query token cost 3-4x the arithmetic
// (SmolLM2 at batch 16: a fifth of the step). ----
// One block of keys into a query's running softmax: s holds the block's n scaled scores (turned into
// probabilities in place), (mx, l) the running max and denominator, o the unnormalised output of d
// dims; V's rows are v_stride floats apart.
static inline void online_softmax_block(float* s, int n, float& mx, float& l, float* o, const float* V,
                                        size_t v_stride, int d) {
    float m = mx;
    for (int j = 0; j < n; ++j) m = std::max(m, s[j]);
    const float alpha = fast_exp(mx - m);  // ~0 on the first block (mx = -inf)
    for (int j = 0; j < n; ++j) s[j] -= m;
    exp_inplace(s, n);
    float psum = 0.0f;
#pragma omp simd reduction(+ : psum)
    for (int j = 0; j < n; ++j) psum += s[j];
    mx = m;
    l = l * alpha + psum;
    int i0 = 0;
    for (; i0 + 16 <= d; i0 += 16) {  // 16 output dims stay in a register across the keys
        float ov[16];
        float* oi = o + i0;  // not o[i0 + ii]: see silu_mul in portable_kernels.h
#pragma omp simd
        for (int ii = 0; ii < 16; ++ii) ov[ii] = oi[ii] * alpha;
        for (int j = 0; j < n; ++j) {
            const float p = s[j];
            const float* v = V + j * v_stride + i0;
#pragma omp simd
            for (int ii = 0; ii < 16; ++ii) ov[ii] += p * v[ii];
        }
#pragma omp simd
        for (int ii = 0; ii < 16; ++ii) oi[ii] = ov[ii];
    }
    for (int i = i0; i < d; ++i) {
        float ov = o[i] * alpha;
        for (int j = 0; j < n; ++j) ov += s[j] * V[j * v_stride + i];
        o[i] = ov;
    }
}

static void attention_decode(const AttnArgs& a, int t, int pos, int g) {
    const int d = a.d, group = a.nh / a.nkv, bs = a.block_size;
    const size_t tok_stride = (size_t)a.nkv * d;
    static thread_local std::vector<float> buf;
    const size_t need = (size_t)group * d + 2 * (size_t)bs * d + (size_t)bs + 2 * (size_t)group;
    if (buf.size() < need) buf.resize(need);
    float* acc = buf.data();
    float* kb = acc + (size_t)group * d;
    float* vb = kb + (size_t)bs * d;
    float* s = vb + (size_t)bs * d;
    float* mx = s + bs;
    float* l = mx + group;
    for (int r = 0; r < group; ++r) mx[r] = -std::numeric_limits<float>::infinity(), l[r] = 0.0f;
    std::fill(acc, acc + (size_t)group * d, 0.0f);
    const int b_hi = a.kb1 > 0 ? std::min(a.kb1, pos / bs + 1) : pos / bs + 1;
    for (int b = a.kb0; b < b_hi; ++b) {
        const int jn = std::min(bs, pos + 1 - b * bs);
        const size_t base = ((size_t)a.block_table[b] * bs) * tok_stride + (size_t)g * d;
        const float* K;
        const float* V;
        size_t ks;
        if (a.cache_bf16) {
            const uint16_t* kc = (const uint16_t*)a.k_cache + base;
            const uint16_t* vc = (const uint16_t*)a.v_cache + base;
            for (int j = 0; j < jn; ++j) {
#pragma omp simd
                for (int i = 0; i < d; ++i) {
                    kb[(size_t)j * d + i] = bf16_to_fp32(kc[j * tok_stride + i]);
                    vb[(size_t)j * d + i] = bf16_to_fp32(vc[j * tok_stride + i]);
                }
            }
            K = kb, V = vb, ks = d;
        } else {
            K = (const float*)a.k_cache + base, V = (const float*)a.v_cache + base, ks = tok_stride;
        }
        for (int r = 0; r < group; ++r) {
            const float* q = a.q + ((size_t)t * a.nh + g * group + r) * d;
            for (int j = 0; j < jn; ++j) {
                const float* k = K + j * ks;
                float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                for (int i = 0; i < d; ++i) dot += q[i] * k[i];
                s[j] = dot * a.scale;
            }
            online_softmax_block(s, jn, mx[r], l[r], acc + (size_t)r * d, V, ks, d);
        }
    }
    for (int r = 0; r < group; ++r) {
        if (a.part) {
            float* pr = a.part + (size_t)r * (d + 2);
            pr[0] = mx[r], pr[1] = l[r];
            std::copy(acc + (size_t)r * d, acc + (size_t)(r + 1) * d, pr + 2);
            continue;
        }
        float* o = a.out + ((size_t)t * a.nh + g * group + r) * d;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int i = 0; i < d; ++i) o[i] = acc[(size_t)r * d + i] * inv;
    }
}

#if defined(OCI_AVX512)
// ---- decode on AVX-512, head_dim a multiple of 16 (NV vectors): three passes over the context
// instead of an online softmax per block. Scores of 16 keys at a time: each key's products summed
// into one vector (independent FMA chains), then one transposing reduction (hsum16) gives the 16
// scores as one vector; all scores stay in a buffer, so max, exp and sum run once per row over
// whole vectors and PV needs no rescaling. The scalar-per-key dot products and per-block rescales
// of attention_decode ran at ~300 cycles per key (SmolLM2, batch 16: 4.7 ms of a 31 ms step). ----
template <bool BF>
static inline __m512 load16(const void* base, size_t i) {
    if constexpr (BF)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)((const uint16_t*)base + i))), 16));
    else
        return _mm512_loadu_ps((const float*)base + i);
}

#if defined(OCI_BF16_DOT)
// A bf16 K row dotted with an fp32 query by vdpbf16ps: the query split once into bf16 hi + lo parts
// (q = hi + lo to 16 significant bits; each bf16 x bf16 product is exact in fp32), so a score is
// 2 dot instructions per 32 dims instead of 2 FMAs plus 4 widening ops per 16, at 2^-17 of
// the query's precision, far below the 2^-9 of the bf16 K it multiplies. qs: per row [hi D | lo D].
template <int NV>
static void split_queries(const float* q0, int G, uint16_t* qs) {
    constexpr int D = 16 * NV;
    for (int r = 0; r < G; ++r)
        for (int c = 0; c < D; c += 32) {
            const __m512 f0 = _mm512_loadu_ps(q0 + (size_t)r * D + c), f1 = _mm512_loadu_ps(q0 + (size_t)r * D + c + 16);
            const __m512bh hi = _mm512_cvtne2ps_pbh(f1, f0);
            const __m512i h = (__m512i)hi;
            const __m512 h0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
            const __m512 h1 = _mm512_castsi512_ps(
                _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
            _mm512_storeu_si512(qs + (size_t)r * 2 * D + c, h);
            _mm512_storeu_si512(qs + (size_t)r * 2 * D + D + c,
                                (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(f1, h1), _mm512_sub_ps(f0, h0)));
        }
}
#endif

// Requests rows [j0, j1) of a block into the caches: base is the block's first row on this KV head
// (elements), rows tok elements apart; one prefetch per cache line of a row.
template <int NV, bool BF>
static inline void prefetch_rows(const char* cache, size_t base, int j0, int j1, size_t tok) {
    for (int j = j0; j < j1; ++j)
        for (int c = 0; c < NV; c += BF ? 2 : 1)
            _mm_prefetch(cache + (base + (size_t)j * tok + 16 * c) * (BF ? 2 : 4), _MM_HINT_T0);
}

template <int NV, bool BF>
static void attention_decode16(const AttnArgs& a, int t, int pos, int g) {
    constexpr int D = 16 * NV, RC = NV >= 4 ? 16 / NV : 4;  // PV: RC rows x NV accumulators at a time
    // keys [k0, end) of the context: blocks [kb0, kb1) of it (all by default); S[r][k - k0]
    const int G = a.nh / a.nkv, bs = a.block_size, bb = a.kb0;
    const int be = a.kb1 > 0 ? std::min(a.kb1, pos / bs + 1) : pos / bs + 1;
    const int k0 = bb * bs, end = std::min(pos + 1, be * bs), n = end - k0;
    const size_t npad = (size_t)(n + 15) / 16 * 16 + 16, tok = (size_t)a.nkv * D;
    static thread_local std::vector<float> buf;
    if (buf.size() < (size_t)G * npad + 2 * G) buf.resize((size_t)G * npad + 2 * G);
    float* S = buf.data();
    float* l = S + (size_t)G * npad;
    float* mrow = l + G;
    const float* q0 = a.q + ((size_t)t * a.nh + (size_t)g * G) * D;
#if defined(OCI_BF16_DOT)
    constexpr bool DOT = BF && NV % 2 == 0;
    static thread_local std::vector<uint16_t> qsplit_buf;
    uint16_t* qsplit = nullptr;  // one TLS lookup per call, not one per 16 keys
    if (DOT) {
        if (qsplit_buf.size() < (size_t)G * 2 * D) qsplit_buf.resize((size_t)G * 2 * D);
        qsplit = qsplit_buf.data();
        split_queries<NV>(q0, G, qsplit);
    }
#else
    constexpr bool DOT = false;
#endif
    const char* kc = (const char*)a.k_cache;
    const char* vc = (const char*)a.v_cache;
    auto block_base = [&](int b) { return (size_t)a.block_table[b] * bs * tok + (size_t)g * D; };
    // Row by row over chunks of CHUNK keys, not block by block: the first row's pass over a chunk
    // is the only one whose K loads miss, and a pass over many blocks keeps many misses in flight,
    // where one block's 16 keys followed by the group's other rows left the next block's misses
    // behind the out-of-order window. The other rows re-read the chunk's K (32 KB at d=64, fp32)
    // from L1/L2; over a whole long context they would go to L3. Contexts of 1,500 tokens, 4
    // sequences, 2 threads: 15.9 -> 14.5 ms per decode step; 3,000 tokens alone: 9.7 -> 8.9 ms.
    // Short contexts also request their V rows in that first pass, for the PV loop after the
    // softmax (16 sequences of 8-136 tokens: +1.8% tokens/s); a longer context's early V rows
    // would leave the caches before PV reads them (3,000 tokens: 10% slower). A longer context
    // instead requests, in that first pass, the K rows of the next chunk (its blocks are scattered
    // over the pool, where the hardware prefetchers do not follow), and in PV the V rows of the
    // block V_AHEAD on (1 and 4-8 were slower): one sequence at 3,000 tokens 7.1 -> 6.05 ms per
    // token, 4 at 1,500 12.0 -> 10.2, 8 at 600 12.8 -> 10.6 (bf16 K/V, 2 threads).
    constexpr int CHUNK = 128, V_EARLY = 256, V_AHEAD = 2;
    const int chunk_blocks = std::max(1, CHUNK / bs);
    for (int b0 = bb; b0 < be; b0 += chunk_blocks) {
        const int b1 = std::min(be, b0 + chunk_blocks);
        for (int r = 0; r < G; ++r) {
            const float* q = q0 + (size_t)r * D;
            for (int b = b0; b < b1; ++b) {
                const int jn = std::min(bs, end - b * bs);
                const size_t base = block_base(b);
                for (int j0 = 0; j0 < jn; j0 += 16) {
                    const int cnt = std::min(16, jn - j0);
                    size_t kr[16];  // element offsets of the 16 keys; past the block's end, its last key again
                    for (int jj = 0; jj < 16; ++jj) kr[jj] = base + (size_t)(j0 + std::min(jj, cnt - 1)) * tok;
                    if (r == 0 && n <= V_EARLY) {  // V rows on their way while K's misses are
                        prefetch_rows<NV, BF>(vc, base, j0, j0 + cnt, tok);
                    } else if (r == 0 && b + chunk_blocks < be) {  // the next chunk's K rows
                        const int bn = b + chunk_blocks;
                        prefetch_rows<NV, BF>(kc, block_base(bn), j0, std::min(j0 + 16, std::min(bs, end - bn * bs)), tok);
                    }
                    __m512 acc[16];
                    if constexpr (DOT) {
#if defined(OCI_BF16_DOT)
                        const uint16_t* qs = qsplit + (size_t)r * 2 * D;
#pragma GCC unroll 16
                        for (int jj = 0; jj < 16; ++jj) acc[jj] = _mm512_setzero_ps();
                        for (int c = 0; c < D; c += 32) {
                            const __m512bh qh = (__m512bh)_mm512_loadu_si512(qs + c);
                            const __m512bh ql = (__m512bh)_mm512_loadu_si512(qs + D + c);
#pragma GCC unroll 16
                            for (int jj = 0; jj < 16; ++jj) {
                                const __m512bh kv = (__m512bh)_mm512_loadu_si512((const uint16_t*)kc + kr[jj] + c);
                                acc[jj] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[jj], ql, kv), qh, kv);
                            }
                        }
#endif
                    } else {
                        const __m512 q_0 = _mm512_loadu_ps(q);
#pragma GCC unroll 16
                        for (int jj = 0; jj < 16; ++jj) acc[jj] = _mm512_mul_ps(q_0, load16<BF>(kc, kr[jj]));
                        for (int c = 1; c < NV; ++c) {
                            const __m512 qc = _mm512_loadu_ps(q + 16 * c);
#pragma GCC unroll 16
                            for (int jj = 0; jj < 16; ++jj)
                                acc[jj] = _mm512_fmadd_ps(qc, load16<BF>(kc, kr[jj] + 16 * c), acc[jj]);
                        }
                    }
                    _mm512_mask_storeu_ps(S + r * npad + (size_t)(b - bb) * bs + j0, (__mmask16)((1u << cnt) - 1),
                                          _mm512_mul_ps(hsum16(acc), _mm512_set1_ps(a.scale)));
                }
            }
        }
    }
    for (int r = 0; r < G; ++r) {  // probabilities in place, unnormalised; l = their sum
        float* s = S + r * npad;
        __m512 mv = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
        int i = 0;
        for (; i + 16 <= n; i += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(s + i));
        const __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
        if (tail) mv = _mm512_mask_max_ps(mv, tail, mv, _mm512_maskz_loadu_ps(tail, s + i));
        mrow[r] = _mm512_reduce_max_ps(mv);
        const __m512 m = _mm512_set1_ps(mrow[r]);
        __m512 sum = _mm512_setzero_ps();
        for (i = 0; i + 16 <= n; i += 16) {
            const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(s + i), m));
            _mm512_storeu_ps(s + i, e);
            sum = _mm512_add_ps(sum, e);
        }
        if (tail) {
            const __m512 e = _mm512_maskz_mov_ps(tail, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, s + i), m)));
            _mm512_mask_storeu_ps(s + i, tail, e);
            sum = _mm512_add_ps(sum, e);
        }
        l[r] = _mm512_reduce_add_ps(sum);
    }
    for (int r0 = 0; r0 < G; r0 += RC) {
        const int rn = std::min(RC, G - r0);
        __m512 o[RC][NV];
        for (int rr = 0; rr < RC; ++rr)
            for (int c = 0; c < NV; ++c) o[rr][c] = _mm512_setzero_ps();
        for (int b = bb; b < be; ++b) {
            const int jn = std::min(bs, end - b * bs);
            const size_t base = block_base(b);
            if (n > V_EARLY && b + V_AHEAD < be)  // V rows V_AHEAD blocks ahead
                prefetch_rows<NV, BF>(vc, block_base(b + V_AHEAD), 0, std::min(bs, end - (b + V_AHEAD) * bs), tok);
            for (int j = 0; j < jn; ++j) {
                __m512 v[NV];
                for (int c = 0; c < NV; ++c) v[c] = load16<BF>(vc, base + j * tok + 16 * c);
                const float* p = S + (size_t)r0 * npad + (size_t)(b - bb) * bs + j;
                for (int rr = 0; rr < RC; ++rr) {
                    if (rr >= rn) break;
                    const __m512 pv = _mm512_set1_ps(p[rr * npad]);
                    for (int c = 0; c < NV; ++c) o[rr][c] = _mm512_fmadd_ps(pv, v[c], o[rr][c]);
                }
            }
        }
        for (int rr = 0; rr < rn; ++rr) {
            if (a.part) {
                float* pr = a.part + (size_t)(r0 + rr) * (D + 2);
                pr[0] = mrow[r0 + rr], pr[1] = l[r0 + rr];
                for (int c = 0; c < NV; ++c) _mm512_storeu_ps(pr + 2 + 16 * c, o[rr][c]);
                continue;
            }
            float* out = a.out + ((size_t)t * a.nh + (size_t)g * G + r0 + rr) * D;
            const float lr = l[r0 + rr];
            const __m512 inv = _mm512_set1_ps(lr > 0.0f ? 1.0f / lr : 0.0f);
            for (int c = 0; c < NV; ++c) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(o[rr][c], inv));
        }
    }
}

template <bool BF>
static bool attention_decode_simd(const AttnArgs& a, int t, int pos, int g) {
    switch (a.d) {
        case 16: attention_decode16<1, BF>(a, t, pos, g); return true;
        case 32: attention_decode16<2, BF>(a, t, pos, g); return true;
        case 64: attention_decode16<4, BF>(a, t, pos, g); return true;
        case 128: attention_decode16<8, BF>(a, t, pos, g); return true;
        default: return false;
    }
}
#endif

// ---- paged attention: online softmax over the sequence's blocks, K/V of a block converted to
// fp32 once and shared by every query row of the GQA group and of the query tile ----
static void attention(const AttnArgs& a, int t0, int t1, int pos0, int g) {
    if (t1 - t0 == 1) {
#if defined(OCI_AVX512)
        if (a.cache_bf16 ? attention_decode_simd<true>(a, t0, pos0, g) : attention_decode_simd<false>(a, t0, pos0, g))
            return;
#endif
        return attention_decode(a, t0, pos0, g);
    }
    const int d = a.d, group = a.nh / a.nkv, nq = t1 - t0, R = nq * group, bs = a.block_size;
    const int bsp = (bs + 15) / 16 * 16;  // K^T rows padded to whole 16-key vectors
    std::vector<float> acc((size_t)R * d, 0.0f), mx(R, -std::numeric_limits<float>::infinity()), l(R, 0.0f);
    std::vector<float> kb((size_t)bsp * d, 0.0f), vb((size_t)bs * d), s(bsp);
    const int last = pos0 + nq - 1;
    const size_t tok_stride = (size_t)a.nkv * d;
    for (int b = 0; b <= last / bs; ++b) {
        const int jn = std::min(bs, last + 1 - b * bs);
        const size_t base = ((size_t)a.block_table[b] * bs) * tok_stride + (size_t)g * d;
        // K stored transposed (kb[i * bsp + j]): the scores of 16 keys are one vector FMA per dim
        if (a.cache_bf16) {
            const uint16_t* kc = (const uint16_t*)a.k_cache + base;
            const uint16_t* vc = (const uint16_t*)a.v_cache + base;
            for (int j = 0; j < jn; ++j)
                for (int i = 0; i < d; ++i) {
                    kb[(size_t)i * bsp + j] = bf16_to_fp32(kc[j * tok_stride + i]);
                    vb[(size_t)j * d + i] = bf16_to_fp32(vc[j * tok_stride + i]);
                }
        } else {
            const float* kc = (const float*)a.k_cache + base;
            const float* vc = (const float*)a.v_cache + base;
            for (int j = 0; j < jn; ++j) {
                for (int i = 0; i < d; ++i) kb[(size_t)i * bsp + j] = kc[j * tok_stride + i];
                std::memcpy(&vb[(size_t)j * d], vc + j * tok_stride, d * sizeof(float));
            }
        }
        for (int r = 0; r < R; ++r) {
            const int t = r / group, h = g * group + r % group;
            const int valid = std::min(jn, pos0 + t + 1 - b * bs);  // causal: keys up to own position
            if (valid <= 0) continue;
            const float* q = a.q + ((size_t)(t0 + t) * a.nh + h) * d;
            for (int j0 = 0; j0 < valid; j0 += 16) {
                float sc[16] = {};
                for (int i = 0; i < d; ++i) {
                    const float qi = q[i] * a.scale;
                    const float* kt = &kb[(size_t)i * bsp + j0];
#pragma omp simd
                    for (int jj = 0; jj < 16; ++jj) sc[jj] += qi * kt[jj];
                }
                for (int jj = 0; jj < 16; ++jj) s[j0 + jj] = sc[jj];
            }
            online_softmax_block(s.data(), valid, mx[r], l[r], &acc[(size_t)r * d], vb.data(), d, d);
        }
    }
    for (int r = 0; r < R; ++r) {
        const int t = r / group, h = g * group + r % group;
        float* o = a.out + ((size_t)(t0 + t) * a.nh + h) * d;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int i = 0; i < d; ++i) o[i] = acc[(size_t)r * d + i] * inv;
    }
}
