// Scalar reference path: no SIMD intrinsics (the compiler may still use baseline SSE2).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernel_table.h"

namespace oci {
namespace scalar {
#include "portable_kernels.h"
#include "paged_attention.h"
#include "qgemm_scalar.h"
}  // namespace scalar

const KernelTable& table_scalar() {
    using namespace scalar;
    static const KernelTable t = {
        "scalar", quantize_q8a, gemm<0>, gemm<1>, gemm<2>, gemm<3>, gemm<4>,
        {dequant_rows_f32<0>, dequant_rows_f32<1>, dequant_rows_f32<2>, dequant_rows_f32<3>, dequant_rows_f32<4>},
        {dequant_rows_bf16<0>, dequant_rows_bf16<1>, dequant_rows_bf16<2>, dequant_rows_bf16<3>, dequant_rows_bf16<4>},
        rms_norm, add_rms_norm, rotary_neox, rotary_gptj, silu_mul, attention};
    return t;
}
}  // namespace oci
