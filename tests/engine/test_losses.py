import pytest
import torch
import torch.nn.functional as F

from vislab.engine.losses import build_loss, cross_entropy, log_softmax


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_cross_entropy_matches_torch(eps):
    z = torch.randn(32, 7, dtype=torch.float64)
    y = torch.randint(0, 7, (32,))
    assert torch.allclose(cross_entropy(z, y, eps).double(), F.cross_entropy(z, y, label_smoothing=eps).double(), atol=1e-6)
    soft = torch.softmax(torch.randn(32, 7), 1)
    assert torch.allclose(cross_entropy(z.float(), soft, eps), F.cross_entropy(z.float(), soft, label_smoothing=eps), atol=1e-5)


def test_log_softmax_is_stable():
    z = torch.tensor([[1000.0, 0.0, -1000.0]])
    assert torch.isfinite(log_softmax(z)).all()
    assert torch.allclose(log_softmax(z), F.log_softmax(z, 1))


def test_bce_and_mse():
    z, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    onehot = F.one_hot(y, 4).float()
    assert torch.allclose(build_loss("bce")(z, y), F.binary_cross_entropy_with_logits(z, onehot))
    assert torch.allclose(build_loss("mse")(z, y), ((z.softmax(1) - onehot) ** 2).mean())


def test_auxiliary_heads_weighted_by_model_or_config():
    from types import SimpleNamespace

    from vislab.config import Config
    from vislab.tasks.classification import TASK
    loss_fn = TASK.loss
    z, a1, a2 = torch.randn(3, 8, 5).unbind(0)
    y = torch.randint(0, 5, (8,))
    out = {"logits": z, "aux_logits": (a1, a2)}
    cfg = Config()
    cfg.train.label_smoothing = 0.0
    ce = F.cross_entropy
    by_hand = lambda w: ce(z, y) + w * (ce(a1, y) + ce(a2, y))   # noqa: E731
    assert torch.allclose(loss_fn(cfg, SimpleNamespace(aux_logits_weight=0.4))(out, y), by_hand(0.4))
    cfg.train.aux_weight = 1.0
    assert torch.allclose(loss_fn(cfg, SimpleNamespace(aux_logits_weight=0.4))(out, y), by_hand(1.0))
    assert torch.allclose(loss_fn(cfg, SimpleNamespace(aux_logits_weight=0.0))(z, y), ce(z, y))
    with pytest.raises(TypeError, match="AuxOutput"):     # the output contract: no guessing
        loss_fn(cfg, SimpleNamespace(aux_logits_weight=0.4))((z, a1), y)
