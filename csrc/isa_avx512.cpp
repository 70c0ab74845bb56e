// AVX-512 path (F, BW, VL, DQ, VNNI): integer dot products are single vpdpbusd instructions and
// the portable kernels vectorize to 512-bit registers.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernel_table.h"

#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")

namespace oci {
namespace avx512 {
static inline __m256i dot_u8s8(__m256i u, __m256i s) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s); }
#define OCI_AVX512 1
#include "portable_kernels.h"
#include "paged_attention.h"
#include "qgemm_simd.h"
}  // namespace avx512

const KernelTable& table_avx512() {
    using namespace avx512;
    static const KernelTable t = {
        "avx512", quantize_q8a, gemm<0>, gemm<1>, gemm<2>, gemm<3>, gemm<4>,
        {dequant_rows_f32<0>, dequant_rows_f32<1>, dequant_rows_f32<2>, dequant_rows_f32<3>, dequant_rows_f32<4>},
        {dequant_rows_bf16<0>, dequant_rows_bf16<1>, dequant_rows_bf16<2>, dequant_rows_bf16<3>, dequant_rows_bf16<4>},
        rms_norm, add_rms_norm, rotary_neox, rotary_gptj, silu_mul, attention};
    return t;
}
}  // namespace oci
