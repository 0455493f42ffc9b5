"""One name per (metric, params) variant: stable, legal everywhere, recorded in the manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cvscore.exporters import export_metric
from cvscore.exporters.naming import variant_name
from cvscore.exporters.repository import check_model_name
from cvscore.metrics import registry

# Triton model names are folder names; keep to characters every file system and URL takes.
LEGAL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def test_default_parameters_keep_the_metric_name() -> None:
    for spec in registry.specs():
        assert variant_name(spec.name) == spec.name
        assert variant_name(spec.name, spec.defaults()) == spec.name


def test_other_parameters_get_a_stable_legal_hashed_name() -> None:
    name = variant_name("mean_iou", {"num_classes": 4, "ignore_index": 255})
    assert re.fullmatch(r"mean_iou-[0-9a-f]{12}", name)
    assert LEGAL.fullmatch(name) and check_model_name(name) == name
    # the same variant however the parameters are spelled; another variant, another name
    assert variant_name("mean_iou", {"ignore_index": 255, "num_classes": 4}) == name
    assert variant_name("mean_iou", {"num_classes": 4}) == name  # 255 is the default
    assert variant_name("mean_iou", {"num_classes": 5}) != name
    assert variant_name("recall_at_k", {"ks": [1, 5]}) == variant_name(
        "recall_at_k", {"ks": [1.0, 5.0]}
    )
    assert variant_name("ssim", {"data_range": 255}) == variant_name("ssim", {"data_range": 255.0})
    # pinned: the name depends on the metric and its values only, never on versions or
    # sources, so repositories and gate files stay valid across upgrades
    assert name == "mean_iou-ba8c6176a0a2"


def test_file_parameters_do_not_name_a_variant(tmp_path: Path) -> None:
    weights = tmp_path / "vgg.pt"
    weights.write_bytes(b"x")
    for spec in registry.specs():
        for key in spec.requires:
            assert variant_name(spec.name, {key: str(weights)}) == spec.name


def test_export_names_the_variant_and_records_its_params(tmp_path: Path) -> None:
    spec = registry.get("mean_iou")
    params = {"num_classes": 4, "ignore_index": 255}
    result = export_metric(spec, tmp_path, params, formats=("onnx",))
    assert result.name == variant_name("mean_iou", params)
    manifest = json.loads((tmp_path / result.name / "manifest.json").read_text())
    assert manifest["name"] == result.name and manifest["params"] == params
    assert f'name: "{result.name}"' in (tmp_path / result.name / "config.pbtxt").read_text()
    # the default variant stays where a plain `cvscore export` puts it
    assert export_metric(spec, tmp_path, formats=("onnx",)).name == "mean_iou"
