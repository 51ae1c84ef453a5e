"""A serving-ready model directory for a catalog model, built without downloading anything.

Serving benchmarks need the real architecture (it sets the FLOPs, the KV-cache bytes, the kernels), not the real
weights: `config.json` carries the catalog shape, a byte-level BPE tokenizer trained here has exactly the real
vocabulary size (so every id the model can emit decodes to text), and random weights are optional because engines
such as vLLM can initialise them themselves (`--load-format dummy`).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from backends.errors import BackendError
from scenarios.catalog import ModelSpec

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # Llama's ids 0, 1, 2
SHARD_BYTES = 4 * 2**30
# Concatenate the turns; enough for the chat endpoint, which refuses tokenizers without a template.
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


@dataclass(frozen=True)
class ModelDirResult:
    path: Path
    vocab_size: int
    trained_tokens: int  # learned by BPE; the rest of the vocabulary are added filler tokens
    weights: str  # "random" (safetensors written) or "none" (engine initialises them)
    weight_files: tuple[str, ...]


def has_weights(directory: Path) -> bool:
    return any(p.suffix in WEIGHT_SUFFIXES for p in directory.iterdir() if p.is_file())


def hf_config(spec: ModelSpec) -> dict:
    """transformers' LlamaConfig fields for the catalog shape, written as plain JSON so any transformers version
    (the engine's, not ours) reads it."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "vocab_size": spec.vocab_size,
        "max_position_embeddings": spec.max_context,
        "rope_theta": spec.rope_theta,
        "rms_norm_eps": spec.rms_norm_eps,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }


def _pseudo_words(count: int, rng: np.random.Generator) -> list[str]:
    """Pronounceable made-up words: a corpus rich enough for BPE to learn tens of thousands of merges."""
    onsets = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
              "br", "ch", "cl", "dr", "fl", "gr", "pl", "qu", "sh", "st", "th", "tr", "str"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "ie", "oo", "ou", "y"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "rk", "st", "x"]
    words = []
    for _ in range(count):
        n = int(rng.integers(1, 5))
        words.append("".join(onsets[rng.integers(len(onsets))] + vowels[rng.integers(len(vowels))]
                             + codas[rng.integers(len(codas))] for _ in range(n)))
    return words


def train_tokenizer(vocab_size: int, seed: int = 0):
    """Byte-level BPE with exactly `vocab_size` ids; returns (tokenizers.Tokenizer, number of learned tokens)."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise BackendError("make-model needs the tokenizers package; install it with pip install 'dissect[tokenizers]'") from None
    rng = np.random.default_rng(seed)
    lexicon = _pseudo_words(max(4 * vocab_size, 20_000), rng)
    # Zipf-like frequencies, as in natural text: frequent words become single tokens, rare ones split.
    weights = 1.0 / np.arange(1, len(lexicon) + 1)
    weights /= weights.sum()
    lines = (" ".join(lexicon[i] for i in rng.choice(len(lexicon), 64, p=weights)) for _ in range(max(vocab_size // 2, 2000)))
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    learned = tok.get_vocab_size()
    if learned > vocab_size:
        raise BackendError(f"a vocabulary of {vocab_size} is smaller than the 259 byte-level base tokens")
    # Fill to the exact size with visible tokens, so no id the model emits is unknown to the tokenizer.
    fill = [f"⟨{i}⟩" for i in range(vocab_size - learned)]
    if fill:
        tok.add_tokens(fill)
    assert tok.get_vocab_size() == vocab_size, (tok.get_vocab_size(), vocab_size)
    return tok, learned


def write_tokenizer(directory: Path, vocab_size: int, max_context: int) -> int:
    tok, learned = train_tokenizer(vocab_size)
    tok.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "model_max_length": max_context,
        "add_bos_token": False, "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (directory / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2))
    return learned


def weight_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Hugging Face Llama checkpoint, by its name."""
    h, inter, kv = spec.hidden_size, spec.intermediate_size, spec.num_kv_heads * spec.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (spec.vocab_size, h)}
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (spec.num_heads * spec.head_dim, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, spec.num_heads * spec.head_dim),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        })
    shapes["model.norm.weight"] = (h,)
    if not spec.tie_word_embeddings:
        shapes["lm_head.weight"] = (spec.vocab_size, h)
    return shapes


def write_random_weights(directory: Path, spec: ModelSpec, seed: int = 0) -> tuple[str, ...]:
    """bf16 N(0, 0.02) matrices and unit norms, generated on the GPU when there is one, in shards of <= 4 GiB."""
    try:
        import torch
        from safetensors.torch import save_file
    except ImportError:
        raise BackendError("--weights random needs torch and safetensors; install them with pip install "
                           "'dissect[train]', or use --weights none and let the engine initialise them") from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(seed)
    shapes = weight_shapes(spec)
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * 2
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    files = []
    weight_map = {}
    for k, names in enumerate(shards):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name in names:
            shape = shapes[name]
            if len(shape) == 1:
                tensors[name] = torch.ones(shape, dtype=torch.bfloat16, device=device)
            else:
                t = torch.empty(shape, dtype=torch.bfloat16, device=device)
                tensors[name] = t.normal_(0.0, 0.02, generator=gen)
            weight_map[name] = fname
        save_file({n: t.cpu() for n, t in tensors.items()}, str(directory / fname), metadata={"format": "pt"})
        files.append(fname)
        del tensors
    if len(files) > 1:
        total = sum(math.prod(s) * 2 for s in shapes.values())
        (directory / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    return tuple(files)


def write_model_dir(spec: ModelSpec, out: Path, weights: str = "none", force: bool = False,
                    progress: Callable[[str], None] = lambda message: None) -> ModelDirResult:
    """A failure (or Ctrl-C) part-way leaves no partial directory: a half-written one would block the retry and
    could be served with a tokenizer or shards missing. `progress` hears each step that takes seconds."""
    if weights not in ("none", "random"):
        raise BackendError(f"--weights must be none or random, not {weights!r}")
    out = out.expanduser()
    if out.exists() and any(out.iterdir()) and not force:
        raise BackendError(f"{out} is not empty; choose an empty --output directory or pass --force to overwrite")
    created = not out.exists()
    before = set() if created else {p.name for p in out.iterdir()}
    out.mkdir(parents=True, exist_ok=True)
    try:
        for old in out.iterdir():
            if old.is_file() and (old.suffix in WEIGHT_SUFFIXES or old.name == "model.safetensors.index.json"):
                old.unlink()  # --force: stale shards from a larger model must not be loaded
        (out / "config.json").write_text(json.dumps(hf_config(spec), indent=2))
        (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}, indent=2))
        progress(f"training the tokenizer ({spec.vocab_size:,} ids; about half a minute for 32,000)")
        learned = write_tokenizer(out, spec.vocab_size, spec.max_context)
        if weights == "random":
            progress(f"writing random bf16 weights ({spec.param_count * 2 / 2**30:.1f} GiB)")
        files = write_random_weights(out, spec) if weights == "random" else ()
        (out / "dissect-model.json").write_text(json.dumps({
            "catalog_model": spec.name, "weights": weights, "weight_files": list(files),
            "tokenizer": f"byte-level BPE trained locally on synthetic text: {learned} learned tokens, "
                         f"{spec.vocab_size - learned} filler tokens, {spec.vocab_size} in all",
            "note": "random weights: outputs are meaningless; shapes, FLOPs and memory are the real model's",
        }, indent=2))
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:  # --force into an existing directory: take back only what this call wrote
            for path in out.iterdir():
                if path.name not in before:
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise
    return ModelDirResult(out, spec.vocab_size, learned, weights, files)
