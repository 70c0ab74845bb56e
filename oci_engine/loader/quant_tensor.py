"""A weight kept in its GGUF block format: the raw blocks stay memory-mapped for the CPU kernels,
and backends that want dense weights call dequantize()."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class QuantTensor:
    ggml_type: int  # gguf.GGMLQuantizationType value
    shape: tuple[int, int]  # logical [out_features, in_features] (HF layout)
    data: np.ndarray  # uint8 [out_features, bytes_per_row]: each row is whole blocks along in_features

    @property
    def type_name(self) -> str:
        import gguf

        return gguf.GGMLQuantizationType(self.ggml_type).name

    def dequantize(self, dtype=None):
        import gguf
        import torch

        dense = gguf.quants.dequantize(np.asarray(self.data), gguf.GGMLQuantizationType(self.ggml_type))
        t = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)).reshape(self.shape)
        return t if dtype is None else t.to(dtype)

    def select_rows(self, index: np.ndarray) -> "QuantTensor":
        """Rows reordered or picked (rows are whole blocks, so this is exact on the raw data)."""
        rows = self.data[np.asarray(index)]
        return QuantTensor(self.ggml_type, (rows.shape[0], self.shape[1]), rows)
