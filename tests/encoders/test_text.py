"""Trainable text encoders (``cirbench.encoders.text``): TIRG's tokeniser, vocabulary and LSTM
text model (docs/papers.md §2), each checked against hand-made expectations or a plain tensor
expression written here."""

from __future__ import annotations

import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cirbench.encoders.text import LSTMTextEncoder, Vocabulary, tokenize


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- tokenize ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,tokens",
    [
        # lowercased, punctuation removed (the hyphen too, so "top-left" is one token), split
        ("Add a RED cube, to the top-left!", ["add", "a", "red", "cube", "to", "the", "topleft"]),
        # non-ASCII characters are dropped before anything else: "café" -> "caf"
        ("café  noir\tdress", ["caf", "noir", "dress"]),
        ("   ", []),
        ("...!?", []),
    ],
)
def test_tokenize_by_hand(text, tokens):
    assert tokenize(text) == tokens


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_tokens_are_lowercase_ascii_without_punctuation_or_space(text):
    tokens = tokenize(text)
    for tok in tokens:
        assert tok and tok.isascii() and tok == tok.lower()
        assert not set(tok) & set(string.punctuation) and not any(c.isspace() for c in tok)
    assert tokenize(" ".join(tokens)) == tokens  # tokenising the tokens changes nothing


# --- Vocabulary ------------------------------------------------------------------------------------


def test_vocabulary_ids_follow_sorted_token_order_with_unk_zero():
    vocab = Vocabulary(["b a", "C, a!"])
    assert vocab.itos == ["<UNK>", "a", "b", "c"] and len(vocab) == 4
    assert vocab.stoi == {"<UNK>": 0, "a": 1, "b": 2, "c": 3}


def test_vocabulary_encode_pads_with_zero_and_keeps_empty_texts_one_token_long():
    vocab = Vocabulary(["b a", "c a"])
    ids, lengths = vocab.encode(["a c b", "zzz", "", "c"])
    # "a c b" -> 1 3 2; unknown "zzz" -> 0; "" -> one <UNK>; "c" -> 3; padded to 3 with 0
    assert ids.tolist() == [[1, 3, 2], [0, 0, 0], [0, 0, 0], [3, 0, 0]]
    assert lengths.tolist() == [3, 1, 1, 1]
    assert ids.dtype == lengths.dtype == torch.int64


# --- LSTMTextEncoder -----------------------------------------------------------------------------


def _lstm_by_hand(enc: LSTMTextEncoder, ids: list[int]) -> torch.Tensor:
    """The LSTM's equations written out (PyTorch's gate order i, f, g, o; zero initial state),
    then the last step's hidden state through the final Linear (dropout off in eval mode)."""
    lstm = enc.lstm
    w_ih, w_hh = lstm.weight_ih_l0.double(), lstm.weight_hh_l0.double()
    b = (lstm.bias_ih_l0 + lstm.bias_hh_l0).double()
    h = torch.zeros(lstm.hidden_size, dtype=torch.float64)
    c = torch.zeros_like(h)
    for i in ids:
        x = enc.embedding.weight[i].double()
        gi, gf, gg, go = (w_ih @ x + w_hh @ h + b).chunk(4)
        c = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
        h = torch.sigmoid(go) * torch.tanh(c)
    fc = enc.fc[1]
    return (fc.weight.double() @ h + fc.bias.double()).float()


def test_lstm_text_encoder_is_embedding_lstm_last_real_token_linear():
    torch.manual_seed(0)
    texts = ["add red cube", "remove blue sphere to the left", "cube"]
    enc = LSTMTextEncoder(texts, out_dim=5, word_dim=6, hidden_dim=7).eval()
    assert enc.out_dim == 5 and isinstance(enc.fc[0], torch.nn.Dropout) and enc.fc[0].p == 0.1
    with torch.no_grad():
        out = enc(texts + ["unseen words here"])
    assert out.shape == (4, 5)
    for row, text in zip(out, texts + ["unseen words here"]):
        ids = [enc.vocab.stoi.get(t, 0) for t in tokenize(text)]
        torch.testing.assert_close(row, _lstm_by_hand(enc, ids), rtol=1e-5, atol=1e-6)


def test_a_texts_vector_does_not_depend_on_the_padding_of_its_batch():
    torch.manual_seed(1)
    enc = LSTMTextEncoder(["a b c d e f", "a"], out_dim=4, word_dim=3, hidden_dim=3).eval()
    with torch.no_grad():
        alone = enc(["a"])
        padded = enc(["a b c d e f", "a"])[1:]
    torch.testing.assert_close(padded, alone)


def test_lstm_text_encoder_trains_and_dropout_acts_in_train_mode():
    torch.manual_seed(2)
    enc = LSTMTextEncoder(["x y"], out_dim=3, word_dim=4, hidden_dim=64)
    enc(["x y", "y"]).sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    enc.train()
    a, b = enc(["x y"]), enc(["x y"])
    assert not torch.equal(a, b)  # dropout on 64 hidden units: two draws differ
