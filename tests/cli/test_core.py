"""The core commands' output against independent references."""

import pytest
import torchvision


def test_models_lists_registry(run_cli):
    from vislab.models import list_models
    code, out, _ = run_cli("models")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == list_models()


def test_models_table_counts_match_torchvision(run_cli, tmp_path):
    code, out, err = run_cli("models", "resnet18", "--table", "--png", tmp_path / "zoo.png")
    assert code == 0, err
    row = next(line.split() for line in out.splitlines() if line.startswith("resnet18 "))
    tv = torchvision.models.resnet18(weights=None)
    assert int(row[2].replace(",", "")) == sum(p.numel() for p in tv.parameters()) == 11_689_512
    assert row[3] == "1.814" and row[4] == "18"        # torchvision's published GMACs; depth 18
    assert (tmp_path / "zoo.png").stat().st_size > 1000


def test_data_check_reports_content_checksums(run_cli):
    code, out, _ = run_cli("data", "check", "fashion_mnist")
    assert code == 0
    assert "train: 60000 images" in out and "test: 10000 images" in out
    assert out.count(" ok (") == 4


@pytest.mark.parametrize("kind,member", [("detection", "retinanet"), ("captioning", "show_tell"),
                                         ("seq2seq", "seq2seq_lstm"), ("segmentation", "fcn8s")])
def test_models_of_every_kind_are_listed(run_cli, kind, member):
    # the kinds registered by task modules (detectors, captioners) once printed nothing
    code, out, _ = run_cli("models", "--kind", kind)
    assert code == 0 and member in out.split()
