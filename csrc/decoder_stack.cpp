// The decoder stack of a Llama-family model for one small step (decode, short prefill chunks) in
// one call: per layer RMSNorm -> qkv GEMM -> rotary -> KV write -> paged attention -> o GEMM ->
// residual add + RMSNorm -> gate/up GEMM -> SiLU*mul -> down GEMM, then the final norm.
//
// Why: at batch 1 the per-op path spent ~28% of a SmolLM2 decode step in Python and in OpenMP
// fork/joins between ~13 small kernel calls per layer. Here the whole stack runs inside one
// parallel region with barriers between phases. Every phase calls the same per-row kernels of the
// active ISA table with the same GEMM path choice as the per-op entry points (dispatch.cpp), and
// each output element is computed by the same instruction sequence whatever the thread split, so
// the result equals the per-op cpu path bit for bit (tests/kernels/test_cpu_decoder_stack.py).
#include <omp.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention_items.h"
#include "kernel_table.h"

namespace py = pybind11;

namespace oci {
namespace {

struct QWeight {
    const uint8_t* w;
    size_t stride;
    int type, N, K;
    const float* bias;  // nullptr: none
};

struct Layer {
    const float* in_norm;
    const float* post_norm;
    QWeight qkv, o, gate_up, down;
};

QWeight qweight(const std::vector<int64_t>& v, size_t at, const char* what, int N, int K) {
    QWeight q{reinterpret_cast<const uint8_t*>(v[at]), (size_t)v[at + 1], (int)v[at + 2], (int)v[at + 3],
              (int)v[at + 4], reinterpret_cast<const float*>(v[at + 5])};
    const std::string name(what);
    if (format_index(q.type) < 0) throw std::invalid_argument(name + ": no quantized GEMM for ggml type " + std::to_string(q.type));
    if (q.N != N || q.K != K)
        throw std::invalid_argument(name + ": weight is [" + std::to_string(q.N) + ", " + std::to_string(q.K) +
                                    "], the model's dimensions need [" + std::to_string(N) + ", " + std::to_string(K) + "]");
    if (K % block_elems(q.type)) throw std::invalid_argument(name + ": in_features is not a whole number of blocks");
    return q;
}

class DecoderStack {
  public:
    // layers: per layer 26 integers: in_norm, post_norm addresses, then (address, row stride, ggml type,
    // N, K, bias address or 0) for qkv, o, gate_up, down.
    DecoderStack(const std::vector<std::vector<int64_t>>& layers, int64_t final_norm, int H, int nh, int nkv, int d,
                 int I, float eps, float scale, int64_t cos_sin, int64_t cs_stride, int64_t max_pos)
        : final_norm_(reinterpret_cast<const float*>(final_norm)), H_(H), nh_(nh), nkv_(nkv), d_(d), I_(I),
          eps_(eps), scale_(scale), cos_sin_(reinterpret_cast<const float*>(cos_sin)), cs_stride_(cs_stride),
          max_pos_(max_pos) {
        if (nkv <= 0 || nh % nkv) throw std::invalid_argument("num_heads must be a multiple of num_kv_heads");
        if (d % 2) throw std::invalid_argument("head_dim must be even for rotary embeddings");
        for (const auto& v : layers) {
            if (v.size() != 26) throw std::invalid_argument("each layer needs 26 integers (see DecoderStack)");
            layers_.push_back({reinterpret_cast<const float*>(v[0]), reinterpret_cast<const float*>(v[1]),
                               qweight(v, 2, "qkv", (nh + 2 * nkv) * d, H), qweight(v, 8, "o", H, nh * d),
                               qweight(v, 14, "gate_up", 2 * I, H), qweight(v, 20, "down", H, I)});
        }
    }

    // h: [T, H] embeddings in; out: [T, H] final-normed hidden states. kv: k, v cache addresses per
    // layer. q_starts: B + 1 cumulative new-token counts. int8_only: never the bf16 GEMM (batch-invariant).
    void run(int64_t h, int64_t out, int T, int64_t positions, int64_t slots, const std::vector<int64_t>& kv,
             bool cache_bf16, int64_t num_slots, int block_size, int64_t block_tables, int64_t bt_stride,
             const std::vector<int>& q_starts, const std::vector<int>& seq_lens, bool int8_only) const {
        const int L = (int)layers_.size();
        if ((int)kv.size() != 2 * L) throw std::invalid_argument("kv needs a k and a v cache address per layer");
        if ((int)q_starts.size() != (int)seq_lens.size() + 1 || q_starts.back() != T)
            throw std::invalid_argument("q_starts must hold B + 1 offsets ending at T");
        const int64_t* pos = reinterpret_cast<const int64_t*>(positions);
        const int64_t* slot = reinterpret_cast<const int64_t*>(slots);
        for (int i = 0; i < T; ++i) {
            if (pos[i] < 0 || pos[i] >= max_pos_)
                throw py::index_error("rotary: position " + std::to_string(pos[i]) + " is outside the cos/sin table (0.." +
                                      std::to_string(max_pos_ - 1) + "); the context is longer than the model supports");
            if (slot[i] >= num_slots)
                throw py::index_error("write_kv: slot " + std::to_string(slot[i]) + " is outside the KV cache (" +
                                      std::to_string(num_slots) + " slots); the block table and cache disagree");
        }
        const KernelTable& t = active_table();
        const bool bf16 = !int8_only && bf16_gemm_active() && T >= bf16_min_rows();
        const int H = H_, d = d_, nh = nh_, nkv = nkv_, I = I_, Nqkv = (nh + 2 * nkv) * d;
        const int maxK = std::max(H, std::max(I, nh * d));
        std::vector<float> resid((size_t)T * H), x((size_t)T * H), hb((size_t)T * H), qkv((size_t)T * Nqkv),
            qr((size_t)T * nh * d), kr((size_t)T * nkv * d), att((size_t)T * nh * d), gu((size_t)T * 2 * I),
            act((size_t)T * I);
        std::vector<block_q8a> A(bf16 ? 0 : (size_t)T * (maxK / QK + 1)), A2(bf16 ? 0 : (size_t)T * (I / QK + 1));
        std::vector<uint16_t> XB(bf16 ? (size_t)T * maxK : 0), XB2(bf16 ? (size_t)T * I : 0);

        std::vector<AttnItem> items;  // cut as in dispatch.cpp's attention
        std::vector<AttnMerge> merges;
        const std::vector<int> q_ends(q_starts.begin() + 1, q_starts.end());
        const int n_slots = build_attention_items(q_starts, q_ends, seq_lens, nkv, block_size, items, merges);
        const int n_items = (int)items.size(), n_merges = (int)merges.size(), G = nh / nkv;
        std::vector<float> parts(n_slots * attn_part_floats(G, d));
        const float* emb = reinterpret_cast<const float*>(h);
        float* y_out = reinterpret_cast<float*>(out);
        const int32_t* bt = reinterpret_cast<const int32_t*>(block_tables);
        const GemmFn fns[5] = {t.gemm_q4_0, t.gemm_q4_1, t.gemm_q8_0, t.gemm_q4_K, t.gemm_q6_K};
        const AttnFn attend = attention_kernel(t, cache_bf16);
        const size_t kv_row = (size_t)nkv * d;

#pragma omp parallel num_threads(omp_get_max_threads())
        {
            const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
            const int r0 = T * tid / nt, r1 = T * (tid + 1) / nt;  // this thread's token rows

            // A GEMM's input rows go to its format (bf16, or int8 blocks) in the phase that writes
            // them, by the thread that wrote them, so the barrier ending that phase also covers the
            // conversion: 9 barriers per layer instead of 13 (each one a wait on the slower thread).
            auto prep = [&](const float* X, int r, int K) {
                if (bf16) bf16_kernels().to_bf16(X + (size_t)r * K, XB.data() + (size_t)r * K, K);
                else t.quantize_q8a(X + (size_t)r * K, K, A.data() + (size_t)r * (K / QK));
            };
            // Y[T, n0:n1] = X[T, K] @ W[n0:n1]^T (+ bias) on prepared rows (xb / a: the converted input)
            auto gemm_range = [&](const QWeight& w, float* Y, int n0, int n1, const uint16_t* xb, const block_q8a* a) {
                if (n0 >= n1) return;
                const int K = w.K, N = w.N, nblk = K / QK, fi = format_index(w.type);
                if (bf16) bf16_kernels().gemm(fi, w.w, w.stride, n0, n1, xb, K, T, K, Y, N);
                else fns[fi](w.w, w.stride, n0, n1, a, nblk, T, nblk, Y, N);
                if (w.bias)
                    for (int m = 0; m < T; ++m)
                        for (int n = n0; n < n1; ++n) Y[(size_t)m * N + n] += w.bias[n];
            };
            // the whole of Y, 16-row chunks contiguous per thread (as split_rows); ends with a barrier
            auto gemm = [&](const QWeight& w, float* Y, const uint16_t* xb, const block_q8a* a) {
                const int chunks = (w.N + 15) / 16;
                gemm_range(w, Y, chunks * tid / nt * 16, std::min(w.N, chunks * (tid + 1) / nt * 16), xb, a);
#pragma omp barrier
            };
            std::vector<float> silu_in;  // this thread's gate | up columns of one row
            const int Ko = nh * d, gd = (nh / nkv) * d;
            // attention items convert their own slice of the o-projection's input where the slice is
            // whole int8 blocks (always for bf16)
            const bool slice_prep = bf16 || gd % QK == 0;
            auto prep_slice = [&](int tok0, int tok1, int g) {
                for (int tok = tok0; tok < tok1; ++tok) {
                    const size_t off = (size_t)tok * Ko + (size_t)g * gd;
                    if (bf16) bf16_kernels().to_bf16(att.data() + off, XB.data() + off, gd);
                    else t.quantize_q8a(att.data() + off, gd, A.data() + off / QK);
                }
            };

            for (int li = 0; li < L; ++li) {
                const Layer& ly = layers_[li];
                for (int r = r0; r < r1; ++r) {
                    if (li == 0) {
                        std::memcpy(&resid[(size_t)r * H], emb + (size_t)r * H, H * sizeof(float));
                        t.rms_norm(emb + (size_t)r * H, ly.in_norm, &x[(size_t)r * H], H, eps_);
                    } else {
                        t.add_rms_norm(&hb[(size_t)r * H], &resid[(size_t)r * H], &resid[(size_t)r * H], ly.in_norm,
                                       &x[(size_t)r * H], H, eps_);
                    }
                    prep(x.data(), r, H);
                }
#pragma omp barrier
                gemm(ly.qkv, qkv.data(), XB.data(), A.data());
                for (int r = r0; r < r1; ++r) {
                    const float* cs = cos_sin_ + pos[r] * cs_stride_;
                    const float* row = &qkv[(size_t)r * Nqkv];
                    t.rotary_neox(row, &qr[(size_t)r * nh * d], nh, d, cs);
                    t.rotary_neox(row + nh * d, &kr[(size_t)r * kv_row], nkv, d, cs);
                    if (slot[r] < 0) continue;  // padding slot
                    const float* ks = &kr[(size_t)r * kv_row];
                    const float* vs = row + (nh + nkv) * d;
                    if (cache_bf16) {
                        uint16_t* kd = reinterpret_cast<uint16_t*>(kv[2 * li]) + slot[r] * kv_row;
                        uint16_t* vd = reinterpret_cast<uint16_t*>(kv[2 * li + 1]) + slot[r] * kv_row;
                        for (size_t j = 0; j < kv_row; ++j) kd[j] = fp32_to_bf16(ks[j]), vd[j] = fp32_to_bf16(vs[j]);
                    } else {
                        std::memcpy(reinterpret_cast<float*>(kv[2 * li]) + slot[r] * kv_row, ks, kv_row * sizeof(float));
                        std::memcpy(reinterpret_cast<float*>(kv[2 * li + 1]) + slot[r] * kv_row, vs, kv_row * sizeof(float));
                    }
                }
#pragma omp barrier
                const AttnArgs base{qr.data(), reinterpret_cast<const void*>(kv[2 * li]),
                                    reinterpret_cast<const void*>(kv[2 * li + 1]), cache_bf16, nullptr, block_size,
                                    nh, nkv, d, scale_, att.data()};
#pragma omp for schedule(dynamic, 1)
                for (int i = 0; i < n_items; ++i) {
                    const AttnItem& it = items[i];
                    AttnArgs a = base;
                    a.block_table = bt + it.seq * bt_stride;
                    a.kb0 = it.kb0, a.kb1 = it.kb1;
                    if (it.part >= 0) a.part = parts.data() + it.part * attn_part_floats(G, d);
                    attend(a, it.t0, it.t1, it.pos0, it.g);
                    if (slice_prep && it.part < 0) prep_slice(it.t0, it.t1, it.g);
                }
                if (n_merges) {  // the parts of long contexts, all written once the loop's barrier is passed
#pragma omp for schedule(dynamic, 1)
                    for (int i = 0; i < n_merges; ++i) {
                        merge_attention_parts(merges[i], parts.data(), G, d, nh, att.data());
                        if (slice_prep) prep_slice(merges[i].t, merges[i].t + 1, merges[i].g);
                    }
                }
                if (!slice_prep) {
                    for (int r = r0; r < r1; ++r) prep(att.data(), r, Ko);
#pragma omp barrier
                }
                gemm(ly.o, hb.data(), XB.data(), A.data());
                for (int r = r0; r < r1; ++r) {
                    t.add_rms_norm(&hb[(size_t)r * H], &resid[(size_t)r * H], &resid[(size_t)r * H], ly.post_norm,
                                   &x[(size_t)r * H], H, eps_);
                    prep(x.data(), r, H);
                }
#pragma omp barrier
                // A thread takes the same columns of gate and up, applies SiLU-and-mul to them and converts
                // them for the down projection (into the second buffers: another thread may still read
                // the first), with no barrier between the GEMM and the activation.
                {
                    const int chunks = (I + 31) / 32;  // whole int8 blocks per thread
                    const int c0 = std::min(I, chunks * tid / nt * 32), c1 = std::min(I, chunks * (tid + 1) / nt * 32);
                    const int n = c1 - c0;
                    gemm_range(ly.gate_up, gu.data(), c0, c1, XB.data(), A.data());
                    gemm_range(ly.gate_up, gu.data(), I + c0, I + c1, XB.data(), A.data());
                    if (n > 0) {
                        silu_in.resize(2 * (size_t)n);
                        for (int m = 0; m < T; ++m) {
                            const float* g = &gu[(size_t)m * 2 * I];
                            std::memcpy(silu_in.data(), g + c0, n * sizeof(float));
                            std::memcpy(silu_in.data() + n, g + I + c0, n * sizeof(float));
                            float* o = &act[(size_t)m * I + c0];
                            t.silu_mul(silu_in.data(), o, n);
                            if (bf16) bf16_kernels().to_bf16(o, XB2.data() + (size_t)m * I + c0, n);
                            else t.quantize_q8a(o, n, A2.data() + (size_t)m * (I / QK) + c0 / QK);
                        }
                    }
                }
#pragma omp barrier
                gemm(ly.down, hb.data(), XB2.data(), A2.data());
            }
            for (int r = r0; r < r1; ++r) {
                if (L == 0) t.rms_norm(emb + (size_t)r * H, final_norm_, y_out + (size_t)r * H, H, eps_);
                else t.add_rms_norm(&hb[(size_t)r * H], &resid[(size_t)r * H], &resid[(size_t)r * H], final_norm_,
                                    y_out + (size_t)r * H, H, eps_);
            }
        }
    }

  private:
    std::vector<Layer> layers_;
    const float* final_norm_;
    int H_, nh_, nkv_, d_, I_;
    float eps_, scale_;
    const float* cos_sin_;
    int64_t cs_stride_, max_pos_;
};

}  // namespace

void register_decoder_stack(py::module_& m) {
    py::class_<DecoderStack>(m, "DecoderStack")
        .def(py::init<const std::vector<std::vector<int64_t>>&, int64_t, int, int, int, int, int, float, float, int64_t,
                      int64_t, int64_t>(),
             py::arg("layers"), py::arg("final_norm"), py::arg("H"), py::arg("nh"), py::arg("nkv"), py::arg("d"),
             py::arg("I"), py::arg("eps"), py::arg("scale"), py::arg("cos_sin"), py::arg("cs_stride"),
             py::arg("max_pos"));
    // A module-level function (not a method) so the decode profiler can time it like the other ops.
    m.def("decoder_stack_run", [](const DecoderStack& s, int64_t h, int64_t out, int T, int64_t positions,
                                  int64_t slots, const std::vector<int64_t>& kv, bool cache_bf16, int64_t num_slots,
                                  int block_size, int64_t block_tables, int64_t bt_stride,
                                  const std::vector<int>& q_starts, const std::vector<int>& seq_lens, bool int8_only) {
        s.run(h, out, T, positions, slots, kv, cache_bf16, num_slots, block_size, block_tables, bt_stride, q_starts,
              seq_lens, int8_only);
    }, py::call_guard<py::gil_scoped_release>(), "the whole decoder stack of one small step (see decoder_stack.cpp)");
}

}  // namespace oci
