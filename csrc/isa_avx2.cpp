// AVX2 + FMA + F16C path. Standard headers come before the target pragma so that their inline
// functions keep the baseline ISA (they are shared with the other translation units).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernel_table.h"

#pragma GCC target("avx2,fma,f16c")

namespace oci {
namespace avx2 {
static inline __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
#define OCI_AVX2 1
#include "portable_kernels.h"
#include "paged_attention.h"
#include "qgemm_simd.h"
}  // namespace avx2

const KernelTable& table_avx2() {
    using namespace avx2;
    static const KernelTable t = {
        "avx2", quantize_q8a, gemm<0>, gemm<1>, gemm<2>, gemm<3>, gemm<4>,
        {dequant_rows_f32<0>, dequant_rows_f32<1>, dequant_rows_f32<2>, dequant_rows_f32<3>, dequant_rows_f32<4>},
        {dequant_rows_bf16<0>, dequant_rows_bf16<1>, dequant_rows_bf16<2>, dequant_rows_bf16<3>, dequant_rows_bf16<4>},
        rms_norm, add_rms_norm, rotary_neox, rotary_gptj, silu_mul, attention};
    return t;
}
}  // namespace oci
