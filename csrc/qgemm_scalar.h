// Scalar reference of the quantized GEMM: the same integer dot products and scale algebra as the
// SIMD paths (qgemm_simd.h), one element at a time. Every SIMD path is tested against this.
// Included inside a per-ISA namespace by isa_scalar.cpp.

// dot of unsigned codes with both activation planes: sum q * (256 * hi + lo)
static inline int idot(const uint8_t* q, const block_q8a& a, int off, int n) {
    int s = 0;
    for (int i = off; i < off + n; ++i) s += (int)q[i - off] * (256 * a.hi[i] + a.lo[i]);
    return s;
}

template <int FMT>
static float row_dot(const uint8_t* w, const block_q8a* a, int nblk) {
    float y = 0.0f;
    uint8_t q[QK];
    if (FMT == 0 || FMT == 1) {
        for (int b = 0; b < nblk; ++b) {
            const uint8_t* qs = w + b * (FMT == 0 ? sizeof(block_q4_0) : sizeof(block_q4_1)) + (FMT == 0 ? 2 : 4);
            for (int i = 0; i < QK / 2; ++i) q[i] = qs[i] & 0xF, q[i + QK / 2] = qs[i] >> 4;
            const int dot = idot(q, a[b], 0, QK), isum = a[b].sum16[0] + a[b].sum16[1];
            const float dw = fp16_to_fp32(*(const uint16_t*)(w + b * (FMT == 0 ? 18 : 20)));
            if (FMT == 0) {
                y += dw * a[b].d * (float)(dot - 8 * isum);
            } else {
                const float mw = fp16_to_fp32(((const block_q4_1*)w)[b].m);
                y += dw * a[b].d * (float)dot + mw * a[b].d * (float)isum;
            }
        }
    } else if (FMT == 2) {
        const block_q8_0* bw = (const block_q8_0*)w;
        for (int b = 0; b < nblk; ++b) {
            int dot = 0;
            for (int i = 0; i < QK; ++i) dot += (int)bw[b].qs[i] * (256 * a[b].hi[i] + a[b].lo[i]);
            y += fp16_to_fp32(bw[b].d) * a[b].d * (float)dot;
        }
    } else if (FMT == 3) {
        const block_q4_K* bw = (const block_q4_K*)w;
        for (int sb = 0; sb < nblk / 8; ++sb) {
            const float d = fp16_to_fp32(bw[sb].d), dmin = fp16_to_fp32(bw[sb].dmin);
            for (int j = 0; j < 8; ++j) {
                const block_q8a& ab = a[sb * 8 + j];
                uint8_t sc, m;
                q4k_scale_min(j, bw[sb].scales, sc, m);
                const uint8_t* qs = bw[sb].qs + 32 * (j / 2);
                for (int i = 0; i < QK; ++i) q[i] = (j & 1) ? qs[i] >> 4 : qs[i] & 0xF;
                const int dot = idot(q, ab, 0, QK), isum = ab.sum16[0] + ab.sum16[1];
                y += ab.d * (d * sc * (float)dot - dmin * m * (float)isum);
            }
        }
    } else {
        const block_q6_K* bw = (const block_q6_K*)w;
        for (int sb = 0; sb < nblk / 8; ++sb) {
            const float d = fp16_to_fp32(bw[sb].d);
            for (int h = 0; h < 2; ++h)
                for (int k = 0; k < 4; ++k) {
                    const block_q8a& ab = a[sb * 8 + 4 * h + k];
                    const uint8_t* ql = bw[sb].ql + 64 * h + 32 * (k & 1);
                    const uint8_t* qh = bw[sb].qh + 32 * h;
                    for (int l = 0; l < QK; ++l) q[l] = ((ql[l] >> (4 * (k >> 1))) & 0xF) | (((qh[l] >> (2 * k)) & 3) << 4);
                    const int8_t* sc = bw[sb].scales + 8 * h + 2 * k;
                    const int64_t d0 = idot(q, ab, 0, 16) - 32LL * ab.sum16[0];
                    const int64_t d1 = idot(q + 16, ab, 16, 16) - 32LL * ab.sum16[1];
                    y += ab.d * d * (float)(sc[0] * d0 + sc[1] * d1);
                }
        }
    }
    return y;
}

template <int FMT>
static void gemm(const uint8_t* W, size_t w_stride, int n0, int n1, const block_q8a* A, size_t a_stride, int M,
                 int nblk, float* Y, size_t ldy) {
    for (int n = n0; n < n1; ++n)
        for (int m = 0; m < M; ++m) Y[m * ldy + n] = row_dot<FMT>(W + n * w_stride, A + m * a_stride, nblk);
}
