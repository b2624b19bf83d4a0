"""GoogLeNet against Szegedy et al. 2015 (Table 1, the auxiliary classifiers) and the training
contract for auxiliary logits."""

import torch
import torch.nn.functional as F
from torch import nn

from vislab.models import create_model
from vislab.models.googlenet import INCEPTION_V1

# Table 1, "depth" of each module's output: 1x1 + 3x3 + 5x5 + pool proj
PAPER_OUTPUT_CHANNELS = {"inception3a": 256, "inception3b": 480, "inception4a": 512, "inception4b": 512,
                         "inception4c": 512, "inception4d": 528, "inception4e": 832, "inception5a": 832,
                         "inception5b": 1024}


def test_module_outputs_match_table_1():
    with torch.device("meta"):
        model = create_model("googlenet", num_classes=1000).eval()
    shapes = {}
    for name in PAPER_OUTPUT_CHANNELS:
        model.blocks.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
    model(torch.randn(1, 3, 224, 224, device="meta"))
    assert {n: s[0] for n, s in shapes.items()} == PAPER_OUTPUT_CHANNELS
    assert shapes["inception3a"][1:] == (28, 28) and shapes["inception4a"][1:] == (14, 14)
    assert shapes["inception5b"][1:] == (7, 7)


def test_train_mode_returns_aux_logits_for_a_weighted_loss():
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=5, in_chans=1, small_input=True)
    assert model.aux_logits_weight == 0.3
    x, y = torch.randn(2, 1, 28, 28), torch.tensor([0, 4])
    out = model.train()(x)
    assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == 2
    loss = F.cross_entropy(out["logits"], y) + model.aux_logits_weight * sum(
        F.cross_entropy(a, y) for a in out["aux_logits"])
    loss.backward()
    assert model.aux1.fc2.weight.grad is not None and model.aux2.fc2.weight.grad is not None
    assert isinstance(model.eval()(x), torch.Tensor)
    model.reset_classifier(3)
    assert [a.shape for a in model.train()(x)["aux_logits"]] == [(2, 3), (2, 3)]


def test_without_aux_logits_train_mode_returns_the_logits():
    model = create_model("googlenet", num_classes=5, in_chans=1, small_input=True, aux_logits=False)
    assert not any("aux" in n for n, _ in model.named_parameters())
    assert model.train()(torch.randn(2, 1, 28, 28)).shape == (2, 5)


def test_branch3_kernel_5_is_the_paper_and_3_is_torchvision():
    with torch.device("meta"):
        paper = create_model("googlenet", num_classes=1000)
        tv = create_model("googlenet", num_classes=1000, branch3_kernel=3)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(paper) - n(tv) == sum(c5r * c5 * (25 - 9) for _, _, _, _, c5r, c5, _ in INCEPTION_V1.values())
    assert paper.blocks.inception3a.branch3[1][0].kernel_size == (5, 5)
    plain = create_model("googlenet", batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
