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
#pragma omp simd
        for (int ii = 0; ii < 16; ++ii) ov[ii] = o[i0 + ii] * alpha;
        for (int j = 0; j < n; ++j) {
            const float p = s[j];
            const float* v = V + j * v_stride + i0;
#pragma omp simd
            for (int ii = 0; ii < 16; ++ii) ov[ii] += p * v[ii];
        }
#pragma omp simd
        for (int ii = 0; ii < 16; ++ii) o[i0 + ii] = ov[ii];
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
    for (int b = 0; b <= pos / bs; ++b) {
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
        float* o = a.out + ((size_t)t * a.nh + g * group + r) * d;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int i = 0; i < d; ++i) o[i] = acc[(size_t)r * d + i] * inv;
    }
}

// ---- paged attention: online softmax over the sequence's blocks, K/V of a block converted to
// fp32 once and shared by every query row of the GQA group and of the query tile ----
static void attention(const AttnArgs& a, int t0, int t1, int pos0, int g) {
    if (t1 - t0 == 1) return attention_decode(a, t0, pos0, g);
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
