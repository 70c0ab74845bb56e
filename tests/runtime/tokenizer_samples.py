"""Shared material for the tokenizer tests: a few KB of training text, a parity corpus, and
byte-level BPE vocabularies trained here with the original models' pre-tokenizers and written
into GGUF files."""
from __future__ import annotations

import json

TRAIN_TEXT = "\n".join([
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)",
    "for i in range(10):\n\tprint(i, i ** 2, 'square')",
    "The quick brown fox jumps over the lazy dog. It's 12:30 and we'll leave at 4 o'clock!",
    "import numpy as np\nx = np.arange(100).reshape(10, 10)\ny = x.T @ x  # matrix product",
    "Tokenizers split text into pieces; models read pieces, not characters.",
    "你好世界，这是一个测试。日本語のテキストも少しあります。한국어 문장도 있어요.",
    "Ünïcödé façade naïve café résumé — “quotes” and ‘apostrophes’ … ellipsis",
    "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n        self.items.append(x)",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name ORDER BY 2 DESC;",
    "if (x != null && y.length > 0) { return x[y.length - 1]; } else { throw new Error(\"empty\"); }",
] * 12)

# No leading whitespace here: transformers' Metaspace skips the dummy prefix on such text (see below).
CORPUS = [
    "Hello world",
    "def add(a, b):\n    return a + b\n",
    "x  =  1   # three   spaces",
    "trailing spaces   ",
    "tabs\tand\nnewlines\r\n\n\nend",
    "你好世界 and 日本語",
    "emoji 😀👍🏽🇺🇸 mixed",
    "Ünïcödé façade naïve",
    "numbers 1234567890 3.14159 1e-10",
    "rare: ∀x∈ℝ, ∃y: x² + y² = 1 ✓ ß Ω ♞",
    "",
]


# The pre-tokenizers of the original models' tokenizer.json files (SmolLM2, GPT-2, Llama-3, Qwen2,
# DeepSeek-Coder), written out here independently of oci_engine's table of GGUF `pre` names.
_LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_DEEPSEEK_CODER_RES = [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", r"\p{N}"]


def _reference_pre_tokenizer(pre: str):
    from tokenizers import Regex, pre_tokenizers as pt

    def splits(patterns):
        return pt.Sequence([pt.Split(Regex(p), behavior="isolated") for p in patterns]
                           + [pt.ByteLevel(add_prefix_space=False, use_regex=False)])

    return {
        "gpt2": pt.ByteLevel(add_prefix_space=False, use_regex=True),
        "smollm": pt.Sequence([pt.Digits(individual_digits=True), pt.ByteLevel(add_prefix_space=False, use_regex=True)]),
        "llama-bpe": splits([_LLAMA3_RE]),
        "qwen2": splits([_QWEN2_RE]),
        "deepseek-coder": splits(_DEEPSEEK_CODER_RES),
    }[pre]


def train_byte_level(pre: str):
    from tokenizers import Tokenizer as Backend, decoders, models, pre_tokenizers, trainers

    backend = Backend(models.BPE())
    backend.pre_tokenizer = _reference_pre_tokenizer(pre)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<｜begin▁of▁sentence｜>"]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(TRAIN_TEXT.splitlines(), trainer)
    return backend


def byte_level_gguf(path, backend, pre: str):
    import gguf

    model = json.loads(backend.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([3 if t.startswith(("<|", "<｜")) else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path

