// How a step's attention is cut into work items for the threads, shared by the per-op call
// (dispatch.cpp) and the fused decoder stack, so both compute every output the same way.
//
// An item is (sequence, query tile, KV head). A decode token whose context is longer than
// ATTN_PART_KEYS is also cut along its keys into parts of whole blocks, each giving its rows' max
// score, softmax denominator and unnormalised output, merged afterwards: otherwise one long
// sequence has only nkv items (SmolLM2: 3 for 2 threads, one thread idle a third of the time).
// SmolLM2, 2 threads: one sequence at 3,000 tokens 8.6 -> 8.0 ms per decode step; four at 1,500
// unchanged (parts of 512 keys made those 5% slower). The cut depends only on the sequence's own
// length, so a sequence decodes the same tokens alone or batched.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace oci {

struct AttnItem {
    int seq, t0, t1, pos0, g;
    int kb0, kb1;  // blocks [kb0, kb1) of the context; kb1 = 0: all
    int part;      // slot in the parts buffer, or -1: the item writes its output itself
};
struct AttnMerge { int t, g, first_part, n_parts; };

constexpr int ATTN_TILE = 64;         // query tokens sharing one pass over the K/V blocks
constexpr int ATTN_PART_KEYS = 1024;  // keys per part of a long decode context

// Floats in one part slot: per query row of the group its max score, softmax sum and d outputs.
inline size_t attn_part_floats(int G, int d) { return (size_t)G * (d + 2); }

// q0s[i], q1s[i]: sequence i's query rows; lens[i]: its length with them. Returns the number of
// part slots (attn_part_floats each).
inline int build_attention_items(const std::vector<int>& q0s, const std::vector<int>& q1s,
                                 const std::vector<int>& lens, int nkv, int block_size,
                                 std::vector<AttnItem>& items, std::vector<AttnMerge>& merges) {
    items.clear(), merges.clear();
    int slots = 0;
    const int per_part = std::max(1, ATTN_PART_KEYS / block_size);
    for (size_t i = 0; i < lens.size(); ++i) {
        const int q0 = q0s[i], q1 = q1s[i], first_pos = lens[i] - (q1 - q0);
        if (q1 - q0 == 1) {
            const int nblk = (lens[i] - 1) / block_size + 1, parts = (nblk + per_part - 1) / per_part;
            if (parts > 1) {
                for (int g = 0; g < nkv; ++g) {
                    merges.push_back({q0, g, slots, parts});
                    for (int p = 0; p < parts; ++p)
                        items.push_back({(int)i, q0, q1, first_pos, g, p * per_part,
                                         std::min(nblk, (p + 1) * per_part), slots++});
                }
                continue;
            }
        }
        for (int t0 = q0; t0 < q1; t0 += ATTN_TILE)
            for (int g = 0; g < nkv; ++g)
                items.push_back({(int)i, t0, std::min(q1, t0 + ATTN_TILE), first_pos + (t0 - q0), g, 0, 0, -1});
    }
    return slots;
}

// Combines a token's parts on KV head g into out [T, nh, d]: each part's output is weighed by
// exp(its max - the overall max), as is its denominator.
inline void merge_attention_parts(const AttnMerge& m, const float* parts, int G, int d, int nh, float* out) {
    const size_t stride = attn_part_floats(G, d);
    for (int r = 0; r < G; ++r) {
        float mx = -INFINITY;
        for (int p = 0; p < m.n_parts; ++p) mx = std::max(mx, parts[(m.first_part + p) * stride + (size_t)r * (d + 2)]);
        float* o = out + ((size_t)m.t * nh + (size_t)m.g * G + r) * d;
        std::fill(o, o + d, 0.0f);
        float l = 0.0f;
        for (int p = 0; p < m.n_parts; ++p) {
            const float* pr = parts + (m.first_part + p) * stride + (size_t)r * (d + 2);
            const float w = std::exp(pr[0] - mx);
            l += w * pr[1];
            for (int i = 0; i < d; ++i) o[i] += w * pr[2 + i];
        }
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        for (int i = 0; i < d; ++i) o[i] *= inv;
    }
}

}  // namespace oci
