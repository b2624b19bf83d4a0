"""Inception v3 against Szegedy et al. 2016 (Table 1 grid sizes) and the aux-logits contract."""

import torch

from vislab.models import create_model


def test_grid_sizes_match_table_1():
    """35x35x288 after the A modules, 17x17x768 after the C modules, 8x8x2048 at the end."""
    with torch.device("meta"):
        model = create_model("inception_v3", num_classes=1000).eval()
    shapes = {}
    for name in ("Mixed_5d", "Mixed_6e", "Mixed_7c"):
        model.blocks.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
    model(torch.randn(1, 3, 299, 299, device="meta"))
    assert shapes == {"Mixed_5d": (288, 35, 35), "Mixed_6e": (768, 17, 17), "Mixed_7c": (2048, 8, 8)}


def test_factorised_convolutions():
    model = create_model("inception_v3", num_classes=10)
    kernels = [m.kernel_size for m in model.blocks.modules() if isinstance(m, torch.nn.Conv2d)]
    assert (7, 7) not in kernels and kernels.count((1, 7)) + kernels.count((7, 1)) == 4 * 6 + 2
    assert kernels.count((1, 3)) == kernels.count((3, 1)) == 4


def test_train_mode_returns_one_aux_logit_and_the_weight():
    torch.manual_seed(0)
    model = create_model("inception_v3", num_classes=5, in_chans=1, small_input=True)
    assert model.aux_logits_weight == 0.4
    out = model.train()(torch.randn(2, 1, 28, 28))
    assert out["logits"].shape == (2, 5) and [a.shape for a in out["aux_logits"]] == [(2, 5)]
    assert model.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 5)
