"""The HTML run report: self-contained, every section filled, and opened in headless Chromium,
which must decode every image and show the run's accuracy (a screenshot is kept)."""

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import accuracy_score

from tests.explain.tiny_run import train_tiny
from vislab.cli import main
from vislab.data.datasets import load_split
from vislab.data.loader import to_tensor
from vislab.tasks import load_run

SECTIONS = ("curves", "metrics", "confusion", "roc", "mistakes", "filters", "retrieval", "tsne",
            "summary", "config")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Page(HTMLParser):
    """Images, sections (with the text and images inside each) and all text of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.sections: dict[str, dict] = {}
        self.text: list[str] = []
        self._section: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._section = a["id"]
            self.sections[self._section] = {"images": 0, "text": ""}
        elif tag == "img":
            self.images.append(a["src"])
            if self._section:
                self.sections[self._section]["images"] += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None

    def handle_data(self, data):
        self.text.append(data)
        if self._section:
            self.sections[self._section]["text"] += data


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A trained, not yet evaluated run and its report by `vislab report` (which evaluates the
    run first)."""
    run = train_tiny(str(tmp_path_factory.mktemp("report") / "run"), evaluated=False)
    assert main(["report", run, "--device", "cpu"]) == 0
    return run, os.path.join(run, "report.html")


def test_report_is_self_contained_and_every_section_is_filled(report):
    run, path = report
    page = Page(open(path).read())
    assert set(page.sections) == set(SECTIONS)
    for src in page.images:               # every image embedded and a valid PNG
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            im.verify()
    assert not re.search(r"(src|href)=[\"']?(https?:|//|file:)", open(path).read())   # nothing fetched
    images = {"curves": 2, "confusion": 1, "roc": 1, "mistakes": 1, "filters": 1, "retrieval": 1, "tsne": 1}
    for sid in SECTIONS:
        assert page.sections[sid]["images"] == images.get(sid, 0), sid
        assert page.sections[sid]["text"].strip() or images.get(sid), sid
    assert "precision@8" in page.sections["retrieval"]["text"]
    assert "params" in page.sections["summary"]["text"] and "stages.2" in page.sections["summary"]["text"]
    assert "name: digits" in page.sections["config"]["text"]


def test_report_shows_the_accuracy_of_the_models_predictions(report):
    run, path = report
    loaded = load_run(run, "cpu")
    model, stats = loaded.model, loaded.info.to_dict()
    test = load_split("digits", "test")
    with torch.no_grad():
        pred = model(to_tensor(test.images, stats["mean"], stats["std"])).argmax(1).numpy()
    accuracy = f"{accuracy_score(test.labels, pred) * 100:.2f}%"
    assert accuracy in "".join(Page(open(path).read()).text)


def test_chromium_loads_every_image_and_shows_the_accuracy(report, tmp_path):
    run, path = report
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: run `make test-deps` (apt-get install chromium chromium-driver)"
    shot = tmp_path / "report.png"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=10000", "--window-size=1280,6000",
                          f"--screenshot={shot}", "--dump-dom", f"file://{os.path.abspath(path)}"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    if os.environ.get("VISLAB_ARTIFACTS"):
        os.makedirs(os.environ["VISLAB_ARTIFACTS"], exist_ok=True)
        shutil.copy(shot, os.path.join(os.environ["VISLAB_ARTIFACTS"], "report.png"))
    check = re.search(r'id="image-check" data-loaded="(\d+)" data-total="(\d+)"', dom)
    assert check, "the page's image check did not run"
    n = len(Page(open(path).read()).images)
    assert check.groups() == (str(n), str(n)) and n == 8
    top1 = json.load(open(os.path.join(run, "eval.json")))["top1"]
    assert f"{top1 * 100:.2f}%" in dom
    with Image.open(shot) as im:
        assert im.size == (1280, 6000)
        assert len(np.unique(np.asarray(im.convert("L")))) > 20              # not a blank page


def test_report_of_a_folder_that_is_not_a_run(run_cli, tmp_path):
    code, _, err = run_cli("report", tmp_path)
    assert code == 2 and "not a run directory" in err


def test_report_of_a_linear_classifier_says_what_it_cannot_show(tmp_path):
    """No convolution: the filters section shows the class templates, Grad-CAM of the mistakes
    is replaced by a note, every other section is there."""
    from tests.explain.tiny_run import TINY
    from vislab.config import load_config
    from vislab.tasks.runner import report, train
    run = str(tmp_path / "linear")
    cfg = load_config(None, [o for o in TINY if not o.startswith("model.")] + ["model.name=linear", "train.epochs=1"])
    train(cfg, run, progress=False, log=lambda *a: None)
    page = Page(open(report(run, device="cpu", log=lambda *a: None)).read())
    assert set(page.sections) == set(SECTIONS)
    assert "not available for this model" in page.sections["mistakes"]["text"]
    assert "template image per class" in page.sections["filters"]["text"]
    assert page.sections["filters"]["images"] == 1 and page.sections["tsne"]["images"] == 1
