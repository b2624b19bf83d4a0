"""`vislab summary` end to end, in-process."""

import json


def test_summary_json_and_table(run_cli):
    code, out, err = run_cli("summary", "torchvision:resnet18", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["totals"]["params"] == 11_689_512
    assert doc["totals"]["macs"] == 1_814_073_344 and doc["totals"]["flops"] == 2 * 1_814_073_344
    assert doc["rows"][0]["rf"] == {"size": [7, 7], "jump": [2, 2], "start": [0.0, 0.0]}
    code, out, err = run_cli("summary", "small_cnn", "--input", "1x28x28", "--num-classes", "10")
    assert code == 0, err
    assert "FLOPs = 2 x MACs" in out and "stem.0" in out


def test_summary_user_errors(run_cli):
    for args in (["not_a_model"], ["small_cnn", "--input", "28x28"],
                 ["torchvision:inception_v3", "--input", "3x32x32"]):
        code, out, err = run_cli("summary", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
