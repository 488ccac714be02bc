"""The lm BentoML service over real HTTP, on smoke-trained models."""

from __future__ import annotations

import math
from pathlib import Path

import bentoml
import pytest

from collapse.contracts import ShardRef
from serving.helpers import assert_bad, assert_model_info, burst, ok, post
from serving.servers import Server
from serving.smoke import lineages

pytestmark = pytest.mark.slow


def shard_documents(lab: Path, lineage: str, iteration: int) -> list[list[int]]:
    """The documents of the generate stage's shard, each without its leading BOS."""
    from collapse_lm.tokenizer import load_tokenizer
    from collapse_lm.tokens import TokenShard

    samples = lab / "runs/lm" / lineage / f"iter_{iteration}/samples"
    ref = ShardRef.model_validate_json((samples / "shard.json").read_text())
    ref = ref.model_copy(update={"path": str(lab / ref.path)})
    shard = TokenShard(ref, load_tokenizer(lab / "runs/lm/real/tokenizer").bos_token_id)
    return [[int(t) for t in shard.document(i)[1:]] for i in range(len(shard))]


def test_client_generates_and_scores(lm_server: Server, smoke_lab: Path) -> None:
    names = lineages(smoke_lab, "lm")
    with bentoml.SyncHTTPClient(lm_server.url, timeout=300) as client:
        listing = client.models()
        story = client.generate(n=2, start=0)
        scored = client.score(texts=["Once upon a time there was a little rabbit.", "The end."])
    assert listing["default"]["lineage"] == names["replace"]
    assert len(story["texts"]) == len(story["tokens"]) == 2 and story["prompt"] is None
    assert_model_info(story["model"], smoke_lab, names["replace"], 2, "lm")
    assert len(scored["cross_entropy"]) == 2 and all(v > 0 for v in scored["cross_entropy"])
    assert scored["perplexity"][0] == pytest.approx(math.exp(scored["cross_entropy"][0]))


@pytest.mark.parametrize("policy", ["replace", "accumulate"])
@pytest.mark.parametrize("iteration", [1, 2])
def test_unconditional_generation_is_the_pipelines_shard(lm_server: Server, smoke_lab: Path, policy: str,
                                                         iteration: int) -> None:
    """Documents i..j over HTTP are documents i..j of the shard the generate stage wrote (same token ids)."""
    lineage = lineages(smoke_lab, "lm")[policy]
    documents = shard_documents(smoke_lab, lineage, iteration)
    whole = ok(lm_server.url, "/generate", {"lineage": lineage, "iteration": iteration, "start": 0, "n": 5})
    assert whole["tokens"] == documents[0:5]
    assert_model_info(whole["model"], smoke_lab, lineage, iteration, "lm")
    if iteration == 2:  # other batch compositions: the same documents
        part = ok(lm_server.url, "/generate", {"lineage": lineage, "iteration": iteration, "start": 3, "n": 2})
        assert part["tokens"] == documents[3:5]
        last = len(documents) - 1
        tail = ok(lm_server.url, "/generate", {"lineage": lineage, "iteration": iteration, "start": last, "n": 1})
        assert tail["tokens"] == documents[last:]


def test_sampling_overrides_and_seeds(lm_server: Server, smoke_lab: Path) -> None:
    lineage = lineages(smoke_lab, "lm")["replace"]
    documents = shard_documents(smoke_lab, lineage, 2)
    same = ok(lm_server.url, "/generate", {"n": 2, "temperature": 1.0, "max_new_tokens": 48})
    assert same["tokens"] == documents[:2]  # the config's own values: still the pipeline's stream
    short = ok(lm_server.url, "/generate", {"n": 2, "max_new_tokens": 4})
    assert all(len(tokens) <= 4 for tokens in short["tokens"]) and short["settings"]["max_new_tokens"] == 4
    other = ok(lm_server.url, "/generate", {"n": 2, "seed": 12345})
    assert other["seed"] == 12345 and other["tokens"] != documents[:2]
    cold = ok(lm_server.url, "/generate", {"n": 2, "temperature": 0.3, "top_p": 0.9, "top_k": 50})
    assert cold["settings"] == {"temperature": 0.3, "top_p": 0.9, "top_k": 50, "max_new_tokens": 48}
    wide = ok(lm_server.url, "/generate", {"n": 1, "top_k": 1_000_000, "temperature": 0.01, "max_new_tokens": 4})
    assert len(wide["tokens"][0]) <= 4  # top_k beyond the vocabulary keeps every token
    special = ok(lm_server.url, "/generate", {"n": 1, "prompt": "<|bos|><|eos|>", "max_new_tokens": 4})
    assert special["prompt"] == "<|bos|><|eos|>"  # special-token text in a prompt is text


def test_prompted_generation_is_reproducible_per_item(lm_server: Server) -> None:
    prompt = "Once upon a time"
    first = ok(lm_server.url, "/generate", {"n": 3, "prompt": prompt, "max_new_tokens": 12})
    again = ok(lm_server.url, "/generate", {"n": 2, "start": 1, "prompt": prompt, "max_new_tokens": 12})
    assert first["prompt"] == prompt and len(first["texts"]) == 3
    assert again["tokens"] == first["tokens"][1:]  # item i depends on (model, prompt, seed, i) only
    assert all(len(tokens) <= 12 for tokens in first["tokens"])


def test_a_long_prompt_caps_the_default_length(lm_server: Server, smoke_lab: Path) -> None:
    """Without max_new_tokens, a prompt gets the config's length capped to what the context leaves."""
    from collapse_lm.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(smoke_lab / "runs/lm/real/tokenizer")
    context, configured = 128, 48  # gpt2-micro positions, smoke max_new_tokens
    prompt, count = "", 0
    while 1 + count + configured <= context:
        prompt += "the cat sat on the mat. "
        count = len(tokenizer(prompt, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    assert count < context - 1
    answer = ok(lm_server.url, "/generate", {"n": 2, "prompt": prompt})
    assert answer["settings"]["max_new_tokens"] == context - 1 - count
    assert all(len(tokens) <= context - 1 - count for tokens in answer["tokens"])
    explicit = post(lm_server.url, "/generate", {"n": 1, "prompt": prompt, "max_new_tokens": configured})
    assert explicit.status_code == 400 and "max_new_tokens" in explicit.text


def test_score_is_the_models_cross_entropy(lm_server: Server, smoke_lab: Path) -> None:
    """Independent check: one forward pass over [BOS] + tokens + [EOS], mean token NLL."""
    import torch
    from transformers import AutoModelForCausalLM

    from collapse_lm.tokenizer import load_tokenizer

    texts = ["Once upon a time there was a little rabbit who lived in the wood.", "", "A" * 3000]
    answer = ok(lm_server.url, "/score", {"texts": texts})
    model_dir = smoke_lab / answer["model"]["model_dir"]
    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    context = model.config.n_positions
    for text, served, count in zip(texts, answer["cross_entropy"], answer["tokens"], strict=True):
        ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        assert count == len(ids) - 1
        nats = 0.0
        with torch.no_grad():
            for start in range(0, len(ids) - 1, context):  # windows whose targets do not overlap
                window = torch.tensor([ids[start : start + context + 1]])
                logits = model(window[:, :-1]).logits
                nats += float(torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum"))
        assert served == pytest.approx(nats / count, rel=1e-5)
    assert len(answer["tokens"]) == 3 and answer["tokens"][2] > context  # the long text spans several windows


BAD = [  # (route, body or raw bytes, field the message must name, status)
    ("/generate", {"n": 0}, "n", 400),
    ("/generate", {"n": 65}, "n", 400),
    ("/generate", {"n": 100_000}, "n", 400),
    ("/generate", {"n": "two"}, "n", 400),
    ("/generate", {"start": -1}, "start", 400),
    ("/generate", {"seed": 1.5}, "seed", 400),
    ("/generate", {"temperature": 0}, "temperature", 400),
    ("/generate", {"temperature": -1.0}, "temperature", 400),
    ("/generate", {"temperature": 1e-300}, "temperature", 400),
    ("/generate", {"temperature": "hot"}, "temperature", 400),
    ("/generate", b'{"temperature": NaN}', "temperature", 400),
    ("/generate", b'{"temperature": Infinity}', "temperature", 400),
    ("/generate", {"top_p": 1.5}, "top_p", 400),
    ("/generate", {"top_k": -3}, "top_k", 400),
    ("/generate", {"max_new_tokens": 0}, "max_new_tokens", 400),
    ("/generate", {"max_new_tokens": 10**9}, "max_new_tokens", 400),
    ("/generate", {"max_new_tokens": 500}, "max_new_tokens", 400),  # past the smoke model's context
    ("/generate", {"prompt": "word " * 400}, "prompt", 400),  # fits the characters, not the context
    ("/generate", {"prompt": "x" * 2_001}, "prompt", 400),
    ("/generate", {"prompt": 42}, "prompt", 400),
    ("/generate", {"temprature": 0.5}, "temprature", 400),
    ("/generate", {"lineage": "lm-nope"}, "lineage", 404),
    ("/generate", {"iteration": 7}, "iteration", 404),
    ("/generate", b"not json", None, 400),
    ("/generate", b"[]", None, 400),
    ("/score", {}, "texts", 400),
    ("/score", {"texts": []}, "texts", 400),
    ("/score", {"texts": "a story"}, "texts", 400),
    ("/score", {"texts": [1, 2]}, "texts", 400),
    ("/score", {"texts": ["a"] * 65}, "texts", 400),
    ("/score", {"texts": ["a" * 20_001]}, "texts", 400),
    ("/score", b'{"texts": ["a"', None, 400),
]


@pytest.mark.parametrize(("route", "body", "field", "status"), BAD,
                         ids=[f"{r}-{i}" for i, (r, *_rest) in enumerate(BAD)])
def test_bad_input_is_a_4xx_naming_the_field(lm_server: Server, route: str, body: object, field: str | None,
                                             status: int) -> None:
    raw = body if isinstance(body, bytes) else None
    assert_bad(lm_server.url, route, None if raw else body, field, raw=raw, status=status)
    assert len(ok(lm_server.url, "/generate", {"n": 1, "max_new_tokens": 2})["texts"]) == 1  # still serving


def test_concurrent_burst(lm_server: Server, smoke_lab: Path) -> None:
    names = lineages(smoke_lab, "lm")
    requests: list[tuple[str, dict[str, object]]] = []
    for i in range(50):
        if i % 10 == 9:
            requests.append(("/generate", {"n": 0}))
        elif i % 3 == 0:
            requests.append(("/score", {"texts": [f"The cat number {i} sat.", "Once upon a time."]}))
        else:
            requests.append(("/generate", {"n": 2, "start": i, "max_new_tokens": 6,
                                           "lineage": names["replace" if i % 2 else "accumulate"]}))
    answers = burst(lm_server.url, requests, parallel=8)
    for (route, body), answer in zip(requests, answers, strict=True):
        if body.get("n") == 0:
            assert answer.status_code == 400, answer.text
        else:
            assert answer.status_code == 200, f"{route} {body}: {answer.text}"
    generated = [answer.json() for (route, body), answer in zip(requests, answers, strict=True)
                 if route == "/generate" and body.get("n")]
    assert {g["model"]["policy"] for g in generated} == {"replace", "accumulate"}
