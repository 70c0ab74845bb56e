// GGUF block formats as plain structs (sizes asserted against ggml's), the activation block the
// integer dot products pair with, and half-precision helpers that need no special ISA.
#pragma once
#include <cstdint>
#include <cstring>

namespace oci {

constexpr int QK = 32;    // elements per block of the simple formats and of the activation block
constexpr int QK_K = 256; // elements per super-block of the K-quants

struct block_q4_0 { uint16_t d; uint8_t qs[QK / 2]; };              // x = d * (q - 8)
struct block_q4_1 { uint16_t d, m; uint8_t qs[QK / 2]; };           // x = d * q + m
struct block_q8_0 { uint16_t d; int8_t qs[QK]; };                   // x = d * q
struct block_q4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; };
struct block_q6_K { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; };
static_assert(sizeof(block_q4_0) == 18, "q4_0 block must match ggml");
static_assert(sizeof(block_q4_1) == 20, "q4_1 block must match ggml");
static_assert(sizeof(block_q8_0) == 34, "q8_0 block must match ggml");
static_assert(sizeof(block_q4_K) == 144, "q4_K block must match ggml");
static_assert(sizeof(block_q6_K) == 210, "q6_K block must match ggml");

// Activations are quantized once per row, per block of 32 with an fp32 scale, to 16-bit precision
// split into two int8 planes: x = d * (256 * hi + lo). One int8 plane (ggml's Q8) costs SmolLM2
// 3-6 points of argmax agreement with fp32; the second plane is one more u8 x s8 dot per block,
// cheap next to the weight unpacking it shares, and brings the activations to ~1e-5 relative.
// The per-16 sums of 256 * hi + lo let unsigned weight codes (q4 in 0..15, q6 in 0..63) be fed to
// u8 x s8 dot instructions with their offsets corrected afterwards; ds = d * (sum of 256 * hi + lo)
// sits next to d so one 64-bit load fetches both (AVX-512 tile512).
struct block_q8a { float d, ds; int32_t sum16[2]; int8_t hi[QK]; int8_t lo[QK]; };
static_assert(sizeof(block_q8a) == 80, "activation block layout");

// GGML type ids (gguf.GGMLQuantizationType)
enum GgmlType : int { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, Q4_K = 12, Q6_K = 14, BF16 = 30 };

inline int block_elems(int t) { return (t == Q4_K || t == Q6_K) ? QK_K : QK; }
inline int block_bytes(int t) {
    switch (t) {
        case Q4_0: return sizeof(block_q4_0);
        case Q4_1: return sizeof(block_q4_1);
        case Q8_0: return sizeof(block_q8_0);
        case Q4_K: return sizeof(block_q4_K);
        case Q6_K: return sizeof(block_q6_K);
        default: return 0;
    }
}

inline float fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: renormalize
            int e = -1;
            do { man <<= 1; ++e; } while (!(man & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline float bf16_to_fp32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline uint16_t fp32_to_bf16(float f) {  // round to nearest even, NaN kept quiet
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffff) > 0x7f800000) return (uint16_t)((bits >> 16) | 0x40);
    bits += 0x7fff + ((bits >> 16) & 1);
    return (uint16_t)(bits >> 16);
}

// Q4_K packs 8 (scale, min) pairs of 6 bits into 12 bytes.
inline void q4k_scale_min(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

}  // namespace oci
