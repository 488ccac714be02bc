"""Model presets: the paper's exact parameter counts, seeded construction, Hugging Face round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from collapse_lm.ddp import save_checkpoint
from collapse_lm.model import PRESETS, build_model, count_parameters, describe

# Parameter counts of the paper authors' runs at a vocabulary of 8000.
PAPER_COUNTS = {
    "gpt2-9m": 8_890_880,
    "llama2-12m": 12_488_960,
    "llama2-42m": 41_755_136,
    "llama2-126m": 125_553_408,
}
IDS = {"bos_id": 1, "eos_id": 2, "pad_id": 0}


@pytest.mark.parametrize("preset", sorted(PAPER_COUNTS))
def test_paper_presets_have_the_papers_parameter_counts(preset: str) -> None:
    model = build_model(preset, 8000, **IDS, seed=0)
    assert count_parameters(model) == PAPER_COUNTS[preset]
    assert describe(preset, 8000)["parameters"] == PAPER_COUNTS[preset]
    assert PRESETS[preset].parameters_at_8000 == PAPER_COUNTS[preset]
    expected = {"gpt2-9m": "GPT2LMHeadModel"}.get(preset, "LlamaForCausalLM")
    assert type(model).__name__ == expected


def test_tied_embeddings_are_counted_once() -> None:
    model = build_model("gpt2-micro", 100, **IDS, seed=0)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert count_parameters(model) < sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))


def test_describe_is_json_and_names_the_architecture() -> None:
    facts = json.loads(json.dumps(describe("gpt2-9m")))
    assert facts["preset"] == "gpt2-9m"
    assert facts["architecture"] == "gpt2"
    assert facts["vocab_size"] == 8000
    assert (facts["n_embd"], facts["n_layer"], facts["n_positions"]) == (256, 8, 2048)
    assert describe("llama2-42m", 8000)["intermediate_size"] == 4 * 512
    small = describe("gpt2-micro", 400)["parameters"]
    assert 30_000 < small < 80_000  # the test preset stays tiny


def test_unknown_preset_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="allowed: .*gpt2-9m"):
        build_model("gpt5", 100, **IDS, seed=0)
    with pytest.raises(ValueError, match="gpt2-micro"):
        describe("nope")


def test_special_ids_must_fit_the_vocabulary() -> None:
    with pytest.raises(ValueError, match="bos_id 100 is outside the vocabulary"):
        build_model("gpt2-micro", 100, bos_id=100, eos_id=2, pad_id=0, seed=0)


def test_seeded_initialisation_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    first = build_model("gpt2-micro", 100, **IDS, seed=7)
    second = build_model("gpt2-micro", 100, **IDS, seed=7)
    other = build_model("gpt2-micro", 100, **IDS, seed=8)
    assert torch.equal(before, torch.random.get_rng_state())
    pairs = list(zip(first.state_dict().values(), second.state_dict().values(), strict=True))
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not torch.equal(first.transformer.wte.weight, other.transformer.wte.weight)


def test_config_carries_special_ids_and_the_preset() -> None:
    config = build_model("llama2-micro", 64, bos_id=3, eos_id=4, pad_id=5, seed=0).config
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (3, 4, 5)
    assert config.collapse_preset == "llama2-micro"
    assert config.vocab_size == 64


@pytest.mark.parametrize("preset", ["gpt2-micro", "llama2-micro"])
def test_checkpoint_round_trips_through_auto_model(preset: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = build_model(preset, 64, **IDS, seed=3).eval()
    target = save_checkpoint(model, tmp_path / "hf")
    save_checkpoint(model, target)  # replacing an existing checkpoint works too
    assert (target / "model.safetensors").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name != "hf"]  # no temporary leftovers
    loaded = AutoModelForCausalLM.from_pretrained(target).eval()
    assert type(loaded) is type(model)
    assert loaded.config.collapse_preset == preset
    assert (loaded.config.bos_token_id, loaded.config.eos_token_id, loaded.config.pad_token_id) == (1, 2, 0)
    tokens = torch.tensor([[1, 5, 9, 13, 2, 7]])  # (1, 6)
    with torch.no_grad():
        assert torch.allclose(model(tokens).logits, loaded(tokens).logits, atol=1e-6)  # (1, 6, vocab)
