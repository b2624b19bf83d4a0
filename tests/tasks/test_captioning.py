"""The captioning task end to end on tiny generated scenes: train, evaluate (BLEU checked against
NLTK on the run's own decodings), predict with greedy and beam decoding, report; the folder
written by ``make-scenes --captions`` as data."""

import json

import pytest
import torch
from PIL import Image

TINY = ["--set", "data.kwargs={image_size: 32, objects: [1, 2], train: 96, val: 24, test: 24, captions: 3}",
        "--set", "model.kwargs={backbone_kwargs: {widths: [8, 8, 16]}, embed_dim: 32, hidden_dim: 32}",
        "--set", "train.epochs=2", "--set", "train.batch_size=16", "--set", "caption.beams=[2]", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from vislab.cli import main
    root = tmp_path_factory.mktemp("cap")
    out = {}
    for recipe in ("caption_lstm", "caption_attention", "caption_transformer"):
        run = root / recipe
        assert main(["train", recipe, "--run-dir", str(run), *TINY]) == 0
        assert main(["evaluate", str(run)]) == 0
        out[recipe] = run
    return out


def test_eval_reports_bleu_for_every_decoding(runs):
    for run in runs.values():
        ev = json.loads((run / "eval.json").read_text())
        assert set(ev["decoding"]) == {"greedy", "beam2"}
        for d in ev["decoding"].values():
            assert all(0 <= d[f"bleu{n}"] <= 1 for n in range(1, 5)) and d["ms_per_image"] > 0
        assert ev["perplexity"] >= 1 and 0 <= ev["token_acc"] <= 1
        assert ev["bleu4"] == max(d["bleu4"] for d in ev["decoding"].values())
        for p in ev["plots"]:
            assert (run / "plots" / p).is_file()


def test_greedy_bleu_equals_sacrebleu_on_the_runs_decodings(runs):
    """eval.json's greedy BLEU-4 recomputed by sacrebleu from the run's own decodings (sacrebleu
    and vislab agree on hypotheses shorter than 4 tokens, which an undertrained model makes and
    NLTK counts differently, see vislab.metrics.text)."""
    from sacrebleu.metrics import BLEU

    from vislab.tasks import load_run
    from vislab.tasks.captioning import decode_captions, load_caption_split, vocab_of
    run = load_run(str(runs["caption_attention"]))
    vocab = vocab_of(run.info)
    images, caps, _ = load_caption_split(run.config, "test")
    hyps, _ = decode_captions(run.model, run.norm.from_uint8(images))
    refs = [[vocab.encode(c.split()) for c in per] for per in caps]
    text = [" ".join(map(str, h)) for h in hyps]
    streams = [[" ".join(map(str, r[j])) for r in refs] for j in range(len(refs[0]))]
    ev = json.loads((runs["caption_attention"] / "eval.json").read_text())
    for n in range(1, 5):
        bleu = BLEU(max_ngram_order=n, tokenize="none", smooth_method="none", force=True)
        assert ev["decoding"]["greedy"][f"bleu{n}"] == pytest.approx(bleu.corpus_score(text, streams).score / 100,
                                                                     abs=1e-9)
    assert ev["decoding"]["greedy"]["bleu1"] > 0


def test_beam_width_one_is_greedy(runs):
    from vislab.tasks import load_run
    from vislab.tasks.captioning import decode_captions, load_caption_split
    run = load_run(str(runs["caption_lstm"]))
    images, _, _ = load_caption_split(run.config, "test")
    x = run.norm.from_uint8(images[:6])
    greedy, _ = decode_captions(run.model, x, 1)
    beam1 = [decode_captions(run.model, x[i:i + 1], 1, keep_attention=True)[0][0] for i in range(6)]
    assert greedy == beam1


def test_attention_maps_sum_to_one(runs):
    from vislab.tasks import load_run
    from vislab.tasks.captioning import decode_captions, load_caption_split
    run = load_run(str(runs["caption_attention"]))
    images, _, _ = load_caption_split(run.config, "test")
    _, attn = decode_captions(run.model, run.norm.from_uint8(images[:2]), keep_attention=True)
    h, w = run.model.feature_size
    for a in attn:
        assert a.shape[1] == h * w and torch.allclose(a.sum(1), torch.ones(len(a)), atol=1e-5)


def test_predict_prints_a_caption_greedy_and_beam(runs, run_cli, tmp_path):
    from vislab.config import load_config
    from vislab.tasks.captioning import load_caption_split
    cfg = load_config("caption_lstm", [TINY[1]])
    images, _, _ = load_caption_split(cfg, "test", 1)
    path = tmp_path / "scene.png"
    Image.fromarray(images[0].permute(1, 2, 0).numpy()).save(path)
    for extra in ([], ["--beam", "3"]):
        code, out, err = run_cli("predict", runs["caption_lstm"], path, *extra)
        assert code == 0, err
        assert out.startswith(str(path)) and len(out.split("\t")[1].split()) >= 1
    code, _, err = run_cli("predict", runs["caption_lstm"], path, "--beam", "0")
    assert code == 2 and "--beam" in err


def test_beam_refused_for_other_tasks(run_cli, tmp_path):
    run = tmp_path / "clf"
    code, _, _ = run_cli("train", "quick", "--run-dir", run, "--set", "data.name=digits", "--set", "train.epochs=1",
                         "--set", "data.val_size=100", "--no-progress")
    assert code == 0
    img = tmp_path / "x.png"
    Image.new("L", (8, 8)).save(img)
    code, _, err = run_cli("predict", run, img, "--beam", "3")
    assert code == 2 and "captioning" in err


def test_report_has_the_family_sections(runs, run_cli):
    code, _, _ = run_cli("report", runs["caption_attention"])
    assert code == 0
    html = (runs["caption_attention"] / "report.html").read_text()
    assert 'id="bleu"' in html and 'id="captions"' in html


def test_caption_folder_from_make_scenes(run_cli, tmp_path):
    data = tmp_path / "scenes"
    code, _, err = run_cli("data", "make-scenes", data, "--size", "32", "--train", "40", "--val", "8", "--test", "8",
                           "--objects", "1", "2", "--captions", "--captions-per-image", "3")
    assert code == 0, err
    run = tmp_path / "run"
    code, _, err = run_cli("train", "caption_lstm", "--run-dir", run, "--set", "data.name=caption_folder",
                           "--set", f"data.root={data}", "--set", "data.kwargs={}", *TINY[2:])
    assert code == 0, err
    code, out, err = run_cli("evaluate", run)
    assert code == 0 and "BLEU" in out
    code, _, err = run_cli("train", "caption_lstm", "--run-dir", tmp_path / "bad", "--set", "data.name=caption_folder",
                           "--set", f"data.root={tmp_path / 'missing'}", "--set", "data.kwargs={}")
    assert code == 2 and "make-scenes" in err and not (tmp_path / "bad").exists()


def test_wrong_model_kind_is_refused(run_cli, tmp_path):
    code, _, err = run_cli("train", "caption_lstm", "--run-dir", tmp_path / "r", "--set", "model.name=small_cnn")
    assert code == 2 and "captioning task trains one of" in err


def test_word2vec_initialises_the_word_table():
    import torch.nn.functional as F

    from vislab.config import load_config
    from vislab.tasks import get_task
    from vislab.tasks.captioning import caption_sentences, caption_word2vec
    overrides = [TINY[i + 1] for i in range(0, len(TINY) - 1, 2) if TINY[i] == "--set"]
    cfg = load_config("caption_lstm", [*overrides, "caption.word2vec=cbow", "caption.word2vec_epochs=2"])
    task = get_task("captioning")
    data = task.build_data(cfg, torch.device("cpu"))
    model = task.build_model(cfg, data.info)
    before = model.embed.weight.detach().clone()
    logs = []
    task.init_model(cfg, model, data, logs.append)
    table = model.embed.weight.detach()
    w2v, _ = caption_word2vec(data.train_y, *table.shape, "cbow", 2, seed=cfg.seed)    # the same draws
    seen = sorted({t for s in caption_sentences(data.train_y) for t in s})
    torch.testing.assert_close(F.cosine_similarity(table[seen], w2v.embeddings[seen], dim=1), torch.ones(len(seen)))
    unseen = [i for i in range(len(table)) if i not in seen]
    assert unseen[:4] == [0, 1, 2, 3] and torch.equal(table[unseen], before[unseen])   # the specials
    assert "cbow word2vec" in logs[0]


def test_train_with_word2vec_and_the_word2vec_command(run_cli, tmp_path):
    code, out, err = run_cli("train", "caption_transformer", "--run-dir", tmp_path / "run", *TINY,
                             "--set", "train.epochs=1", "--set", "caption.word2vec=skipgram",
                             "--set", "model.kwargs={backbone_kwargs: {widths: [8, 8, 16]}}")
    assert code == 0 and "word table initialised from skipgram word2vec" in out + err, err
    vectors = tmp_path / "w2v.pt"
    code, out, err = run_cli("word2vec", "--set", TINY[1], "--epochs", "2", "--dim", "8", "--out", vectors,
                             "--analogy", "left", "right", "top")
    assert code == 0, err
    assert "nearest left" in out and "left : right :: top :" in out and "analogy top-1 accuracy" in out
    code, out, err = run_cli("word2vec", "--load", vectors, "--nearest", "bag", "-k", "2")
    assert code == 0 and out.count("nearest") == 2 and "<pad>" not in out      # the specials are not saved
    code, _, err = run_cli("word2vec", "--load", vectors, "--nearest", "red")
    assert code == 2 and "'red' is not in the vocabulary" in err
    code, _, err = run_cli("word2vec", "quick")
    assert code == 2 and "captioning recipe" in err
