"""Rotary position embedding tables: inverse frequencies per rope_scaling type, and the cos/sin
cache the `rotary` op indexes by position (cos in the first half of each row, sin in the second).

Supported: default, "linear" (DeepSeek-Coder's ×4 position interpolation), "llama3" (Llama 3.1's
wavelength-dependent interpolation) and "dynamic" NTK. Dynamic NTK keeps the plain frequencies
up to max_position_embeddings and, past it, rotates the token at position p with the base NTK
gives a context of p + 1: exactly what Hugging Face computes when it decodes token by token (its
keys keep the rotation they were cached with), precomputed once instead of per step.
"""
from __future__ import annotations

import math

import torch

from oci_engine.config import ModelConfig
from oci_engine.errors import UnsupportedModelError


def rope_type(config: ModelConfig) -> str:
    rs = config.rope_scaling or {}
    return rs.get("rope_type", rs.get("type", "default")) or "default"


def _default_inv_freq(base: float, dim: int) -> torch.Tensor:
    # int64 arange then float, the same rounding as Hugging Face's tables
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def _scaling_value(config: ModelConfig, key: str) -> float:
    try:
        return float(config.rope_scaling[key])
    except (KeyError, TypeError, ValueError) as e:
        raise UnsupportedModelError(f"rope_scaling {config.rope_scaling!r} lacks a numeric {key!r}; "
                                    "fix the rope_scaling block of config.json") from e


def _llama3_inv_freq(config: ModelConfig, dim: int) -> torch.Tensor:
    inv_freq = _default_inv_freq(config.rope_theta, dim)
    factor = _scaling_value(config, "factor")
    low = _scaling_value(config, "low_freq_factor")
    high = _scaling_value(config, "high_freq_factor")
    old_len = _scaling_value(config, "original_max_position_embeddings")
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    # long wavelengths are interpolated by `factor`, short ones kept, the band between blended
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled)


def inv_frequencies(config: ModelConfig) -> tuple[torch.Tensor, int]:
    """(inverse frequencies [d/2], number of positions the cache must cover)."""
    dim = config.head_dim
    kind = rope_type(config)
    max_pos = config.max_position_embeddings
    if kind == "default":
        return _default_inv_freq(config.rope_theta, dim), max_pos
    if kind == "linear":
        return _default_inv_freq(config.rope_theta, dim) / _scaling_value(config, "factor"), max_pos
    if kind == "llama3":
        return _llama3_inv_freq(config, dim), max_pos
    if kind == "dynamic":
        return _default_inv_freq(config.rope_theta, dim), int(max_pos * _scaling_value(config, "factor"))
    raise UnsupportedModelError(f"rope_scaling type {kind!r} is not supported; supported: default, linear, "
                                "llama3, dynamic")


def cos_sin_cache(config: ModelConfig, device="cpu") -> torch.Tensor:
    """[max_positions, head_dim] float32: cos of every frequency, then sin."""
    inv_freq, positions = inv_frequencies(config)
    t = torch.arange(positions, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    max_pos = config.max_position_embeddings
    if rope_type(config) == "dynamic" and positions > max_pos:
        dim, factor = config.head_dim, _scaling_value(config, "factor")
        beyond = torch.arange(max_pos, positions)
        base = config.rope_theta * (factor * (beyond + 1) / max_pos - (factor - 1)) ** (dim / (dim - 2))
        exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
        inv = 1.0 / (base.double()[:, None] ** exponents.double()[None, :]).float()
        freqs[max_pos:] = beyond.float()[:, None] * inv
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1).to(device)
