"""Model presets (GPT-2 / Llama-2 as standard Hugging Face architectures) and seeded construction.

The paper presets reproduce the parameter counts of Gerstgrasser et al. 2024 (Sec. 3.1) at a
vocabulary of 8000 exactly; the heads do not change the count, we use a head size of 64 as in
the TinyStories / llama2.c models. Checkpoints are plain ``GPT2LMHeadModel`` /
``LlamaForCausalLM`` directories, loadable by ``AutoModelForCausalLM`` and by vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

Architecture = Literal["gpt2", "llama"]


@dataclass(frozen=True)
class Preset:
    """An architecture plus the Hugging Face config fields that define it (vocabulary excluded)."""

    architecture: Architecture
    fields: MappingProxyType[str, Any]
    parameters_at_8000: int | None = field(default=None, compare=False)  # paper's count, if any


def _gpt2(d_model: int, layers: int, heads: int, positions: int, params: int | None = None) -> Preset:
    """GPT-2: learned positions, tanh-GELU MLP of width 4·d, tied input/output embeddings, no dropout.

    ``gelu_pytorch_tanh`` is the same function as GPT-2's ``gelu_new``, fused (faster on CPU).
    """
    fields = {
        "n_embd": d_model, "n_layer": layers, "n_head": heads, "n_positions": positions, "n_inner": None,
        "activation_function": "gelu_pytorch_tanh", "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "layer_norm_epsilon": 1e-5, "initializer_range": 0.02, "tie_word_embeddings": True,
    }
    return Preset("gpt2", MappingProxyType(fields), params)


def _llama(hidden: int, layers: int, heads: int, params: int | None = None) -> Preset:
    """Llama-2: RoPE, SwiGLU MLP of width 4·hidden, RMSNorm, full multi-head attention, untied."""
    fields = {
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": heads, "intermediate_size": 4 * hidden, "hidden_act": "silu",
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "initializer_range": 0.02,
        "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": False,
    }
    return Preset("llama", MappingProxyType(fields), params)


PRESETS: MappingProxyType[str, Preset] = MappingProxyType({
    # CPU presets: tests and the "default" run.
    "gpt2-micro": _gpt2(32, 2, 2, 128),
    "gpt2-mini": _gpt2(128, 4, 4, 256),
    "llama2-micro": _llama(32, 2, 2),
    # Paper presets (counts at vocabulary 8000, checked in the tests).
    "gpt2-9m": _gpt2(256, 8, 4, 2048, params=8_890_880),
    "llama2-12m": _llama(256, 8, 4, params=12_488_960),
    "llama2-42m": _llama(512, 8, 8, params=41_755_136),
    "llama2-126m": _llama(768, 12, 12, params=125_553_408),
})


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ValueError that lists the allowed names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]


def make_config(preset: str, vocab_size: int, *, bos_id: int | None = None, eos_id: int | None = None,
                pad_id: int | None = None) -> PretrainedConfig:
    """The Hugging Face config of ``preset`` (it records the preset name as ``collapse_preset``)."""
    from transformers import GPT2Config, LlamaConfig

    spec = get_preset(preset)
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    for name, token in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
        if token is not None and not 0 <= token < vocab_size:
            raise ValueError(f"{name} {token} is outside the vocabulary [0, {vocab_size})")
    config_class = GPT2Config if spec.architecture == "gpt2" else LlamaConfig
    config = config_class(
        vocab_size=vocab_size, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id, **spec.fields
    )
    config.collapse_preset = preset  # saved in config.json; ignored by transformers and vLLM
    return config


def _model_class(preset: str) -> type[PreTrainedModel]:
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    return GPT2LMHeadModel if get_preset(preset).architecture == "gpt2" else LlamaForCausalLM


def count_parameters(model: Any) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    unique = {id(parameter): parameter for parameter in model.parameters()}
    return sum(parameter.numel() for parameter in unique.values())


def build_model(preset: str, vocab_size: int, *, bos_id: int, eos_id: int, pad_id: int, seed: int) -> PreTrainedModel:
    """A freshly initialised fp32 model of ``preset`` on the CPU, its weights a function of ``seed`` only.

    The global torch RNG is left untouched (the draw happens inside ``torch.random.fork_rng``).
    """
    import torch

    config = make_config(preset, vocab_size, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _model_class(preset)(config)
    model.float()  # type: ignore[no-untyped-call]  # in place: fp32 master weights whatever the default dtype
    return model


def describe(preset: str, vocab_size: int = 8000) -> dict[str, Any]:
    """JSON-ready facts about ``preset``: parameter count (from the model itself), architecture, fields.

    The model is instantiated on the ``meta`` device, so this is fast even for llama2-126m.
    """
    import torch

    config = make_config(preset, vocab_size)
    with torch.device("meta"):
        model = _model_class(preset)(config)
    spec = get_preset(preset)
    return {
        "preset": preset,
        "parameters": count_parameters(model),
        "architecture": spec.architecture,
        "vocab_size": vocab_size,
        **dict(spec.fields),
    }
