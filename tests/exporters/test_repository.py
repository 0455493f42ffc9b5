"""The model repository: layout, config.pbtxt vs the ONNX graph, manifest, caching, CLI."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format

from cvscore.exporters import export_metric
from cvscore.exporters.formats import FORMATS
from cvscore.exporters.naming import variant_name
from cvscore.exporters.repository import TRITON_MAX_BATCH, sha256_file, staleness
from cvscore.metrics import registry

ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}


def _model_config():
    # tritonclient ships Triton's own compiled ModelConfig: an independent parser.
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _onnx_dims(value_info: onnx.ValueInfoProto) -> list[int]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]


@pytest.mark.parametrize("name", registry.names())
def test_layout_config_and_manifest(zoo_repo: Path, name: str) -> None:
    model_dir = zoo_repo / name
    for filename in FORMATS.values():
        assert (model_dir / "1" / filename).is_file()
    config = text_format.Parse(
        (model_dir / "config.pbtxt").read_text(), _model_config().ModelConfig()
    )
    assert config.name == name
    spec = registry.get(name)
    # Triton may batch exactly the models whose every input and output has the batch axis
    batchable = all(t.batched for t in (*spec.inputs, *spec.outputs))
    assert config.max_batch_size == (TRITON_MAX_BATCH if batchable else 0)
    assert config.HasField("dynamic_batching") == batchable
    graph = onnx.load(str(model_dir / "1" / "model.onnx")).graph
    triton_type = _model_config().DataType.Name
    for declared, actual in ((config.input, graph.input), (config.output, graph.output)):
        assert [t.name for t in declared] == [t.name for t in actual]
        for d, a in zip(declared, actual, strict=True):
            assert triton_type(d.data_type) == ONNX_TO_TRITON[a.type.tensor_type.elem_type]
            graph_dims = _onnx_dims(a)
            if batchable:
                # Triton's convention: dims leave out the batch axis, which must be dynamic
                assert graph_dims[0] == -1
                assert list(d.dims) == graph_dims[1:]
            else:
                assert list(d.dims) == graph_dims
                assert -1 in d.dims  # the batch axis (at least) is dynamic
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["metric"] == name
    assert manifest["params"] == registry.get(name).defaults()
    assert manifest["versions"]["opset"] >= 18
    for filename, entry in manifest["files"].items():
        assert sha256_file(model_dir / "1" / filename) == entry["sha256"]


def test_triton_onnxruntime_backend_reads_the_layout(zoo_repo: Path) -> None:
    """What Triton's ONNX Runtime backend needs (docs/triton.md): one folder per model named
    like the config, the backend named, numeric version folders, and `model.onnx` (its
    default file name) in each; the other files (manifest, model.pt, model.pt2) it ignores."""
    config_type = _model_config().ModelConfig
    for model_dir in sorted(p for p in zoo_repo.iterdir() if p.is_dir()):
        config = text_format.Parse((model_dir / "config.pbtxt").read_text(), config_type())
        assert config.name == model_dir.name
        assert config.backend == "onnxruntime" and not config.platform
        assert config.default_model_filename in ("", "model.onnx")
        assert config.version_policy.latest.num_versions == 1
        versions = [p.name for p in model_dir.iterdir() if p.is_dir()]
        assert versions == ["1"] and (model_dir / "1" / "model.onnx").is_file()
        kinds = [g.kind for g in config.instance_group]
        assert kinds == [_model_config().ModelInstanceGroup.KIND_AUTO]
        if config.max_batch_size == 0:
            # explicit batch axis: Triton passes the client's shapes straight to the graph
            assert any(t.dims[0] == -1 for t in config.input if len(t.dims))
        else:
            assert config.HasField("dynamic_batching")
    batched = [p.name for p in zoo_repo.iterdir() if (p / "config.pbtxt").is_file()]
    batched = [
        n
        for n in batched
        if "max_batch_size: 0\n" not in (zoo_repo / n / "config.pbtxt").read_text()
    ]
    assert {"l1", "ssim", "giou", "focal", "mean_iou"} <= set(batched)


def test_reexport_is_skipped_until_something_changes(tmp_path: Path) -> None:
    spec = registry.get("smooth_l1")
    first = export_metric(spec, tmp_path, formats=("onnx",))
    assert not first.skipped
    again = export_metric(spec, tmp_path, formats=("onnx",))
    assert again.skipped
    changed = export_metric(spec, tmp_path, params={"beta": 0.5}, formats=("onnx",))
    assert not changed.skipped
    name = variant_name(spec, {"beta": 0.5})  # another variant, another model
    assert changed.name == name != "smooth_l1" and (tmp_path / "smooth_l1").is_dir()
    manifest = json.loads((tmp_path / name / "manifest.json").read_text())
    assert manifest["params"] == {"beta": 0.5}
    assert export_metric(spec, tmp_path, params={"beta": 0.5}, formats=("onnx",)).skipped
    # a changed definition is not "up to date" either (the identity includes its source)
    manifest["identity"] = "0" * 64
    (tmp_path / name / "manifest.json").write_text(json.dumps(manifest))
    assert not export_metric(spec, tmp_path, params={"beta": 0.5}, formats=("onnx",)).skipped
    # a corrupted artifact is not "up to date"
    (tmp_path / name / "1" / "model.onnx").write_bytes(b"broken")
    assert not export_metric(spec, tmp_path, params={"beta": 0.5}, formats=("onnx",)).skipped
    # adding a format keeps the one already there
    export_metric(spec, tmp_path, params={"beta": 0.5}, formats=("torchscript",))
    manifest = json.loads((tmp_path / name / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "model.pt"}


def test_model_names_cannot_escape_the_repository(tmp_path: Path) -> None:
    spec = registry.get("l1")
    for bad in ("../evil", "a/b", "/abs", ".."):
        with pytest.raises(ValueError, match="model name"):
            export_metric(spec, tmp_path, name=bad)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cvscore.cli", *args], capture_output=True, text=True
    )


def test_cli_metrics_json_lists_every_metric() -> None:
    proc = _cli("metrics", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert [m["name"] for m in listed] == registry.names()
    for entry in listed:
        assert {"name", "family", "inputs", "outputs", "params"} <= set(entry)
    table = _cli("metrics")
    assert table.returncode == 0
    for name in registry.names():
        assert f"\n{name} " in table.stdout


def test_cli_export_with_params_and_errors(tmp_path: Path) -> None:
    proc = _cli(
        "export", "focal", "--out", str(tmp_path), "--formats", "onnx", "--param", "focal.gamma=1.5"
    )
    assert proc.returncode == 0, proc.stderr
    name = variant_name("focal", {"gamma": 1.5})
    assert name in proc.stderr  # the export names what it wrote
    manifest = json.loads((tmp_path / name / "manifest.json").read_text())
    assert manifest["params"]["gamma"] == 1.5
    for args, message in [
        (("export", "nope", "--out", str(tmp_path)), "Unknown metric `nope`"),
        (
            ("export", "focal", "--out", str(tmp_path), "--param", "focal.gama=1"),
            "Unknown parameter `gama`",
        ),
        (
            ("export", "focal", "--out", str(tmp_path), "--param", "focal.gamma=abc"),
            "`gamma` to be float",
        ),
        (("export", "focal", "--out", str(tmp_path), "--formats", "tflite"), "tflite"),
        (("export", "focal", "--out", str(tmp_path), "--param", "l1.x=1"), "Unknown parameter"),
    ]:
        proc = _cli(*args)
        assert proc.returncode == 2
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_editing_a_helper_in_another_module_makes_dependents_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """yolo calls boxes.ciou, combo calls pixel.cross_entropy, both use _utils: an edit to
    any of those must change their identity, re-export them and be reported by the server."""
    from cvscore.server.app import ServerConfig
    from cvscore.server.startup import check_staleness, prepare_repository

    repo = tmp_path / "repo"
    names = ("yolo", "combo", "cycle_consistency")
    for name in names:
        assert not export_metric(registry.get(name), repo, formats=("onnx",)).skipped
        assert export_metric(registry.get(name), repo, formats=("onnx",)).skipped
    assert check_staleness(repo) == []

    # the same package with one helper changed, as a developer's edit would leave it
    edited = tmp_path / "metrics"
    shutil.copytree(registry.SOURCE_ROOT, edited, ignore=shutil.ignore_patterns("__pycache__"))
    utils = edited / "_utils.py"
    source = utils.read_text()
    assert "u = 1.0 + z" in source
    utils.write_text(source.replace("u = 1.0 + z", "u = z + 1.0"))
    monkeypatch.setattr(registry, "SOURCE_ROOT", edited)

    for name in names:
        reason = staleness(repo / name)
        assert reason is not None and "other definitions" in reason
    with caplog.at_level(logging.WARNING, logger="cvscore.server.app"):
        config = ServerConfig(repository=repo, export_missing=False)
        prepare_repository(config, progress=False)
    for name in names:  # not owning the repository: said at start-up, by name
        assert f"model {name} is stale" in caplog.text
    assert sorted(check_staleness(repo)) == sorted(names)
    # owning it (the cache): re-exported in place, with the same formats
    assert check_staleness(repo, rebuild=True) == []
    for name in names:
        assert staleness(repo / name) is None
        assert set(json.loads((repo / name / "manifest.json").read_text())["files"]) == {
            "model.onnx"
        }
        assert export_metric(registry.get(name), repo, formats=("onnx",)).skipped
