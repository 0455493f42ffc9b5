"""VGG feature losses: the real loading path, layer taps and Gram matrices built by hand."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cvscore.cli import main as cli
from cvscore.exporters import export_many
from cvscore.exporters import parallel as export_mod
from cvscore.exporters.formats import script
from cvscore.exporters.repository import sha256_file
from cvscore.metrics import _vgg, features, registry

from ..conftest import tol

# narrow VGG16: torchvision's layout and indices, a fraction of its widths
WIDTHS16 = [4, 4, 8, 8, 8, 8, 8, 16, 16, 16, 16, 16, 16]
WIDTHS19 = [3, 3, 4, 4, 6, 6, 6, 6, 8, 8, 8, 8, 8, 8, 8, 8]
MEAN = torch.tensor(_vgg.IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
STD = torch.tensor(_vgg.IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
NAMES = ("perceptual", "style", "texture", "topology")


@pytest.fixture(scope="module")
def vgg16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "vgg16.pth"
    torch.save(_vgg.random_state_dict("vgg16", WIDTHS16, seed=1), path)
    return path


@pytest.fixture(scope="module")
def vgg19(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "vgg19.pth"
    torch.save(_vgg.random_state_dict("vgg19", WIDTHS19, seed=2), path)
    return path


def _hand_taps(path: Path, arch: str, x: torch.Tensor, taps: list[int], normalize: bool):
    """torchvision's ``features`` written out with F.conv2d / F.relu / F.max_pool2d."""
    state = torch.load(path, weights_only=True)
    if normalize:
        x = (x - MEAN.to(x.dtype)) / STD.to(x.dtype)
    out, index = {}, 0
    for v in _vgg.CONFIGS[arch]:
        if index > max(taps):
            break
        if v == "M":
            x = F.max_pool2d(x, 2, 2)
            out[index] = x
            index += 1
            continue
        w, b = state[f"features.{index}.weight"], state[f"features.{index}.bias"]
        x = F.conv2d(x, w.to(x.dtype), b.to(x.dtype), padding=1)
        out[index] = x
        x = F.relu(x)
        out[index + 1] = x
        index += 2
    return [out[t] for t in taps]


def _gram_np(f: np.ndarray) -> np.ndarray:
    flat = f.reshape(f.shape[0], f.shape[1], -1)
    return np.einsum("nik,njk->nij", flat, flat)


def _images(n: int, h: int, w: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g, dtype=dtype), torch.rand(
        n, 3, h, w, generator=g, dtype=dtype
    )


def test_layer_names_are_torchvision_indices() -> None:
    # torchvision vgg16().features: [conv, relu] x2, pool, [conv, relu] x2, pool, [conv, relu] x3 ...
    names16 = _vgg.layer_names("vgg16")
    assert [names16[n] for n in ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")] == [
        3, 8, 15, 22, 29,
    ]  # fmt: skip
    assert names16["pool5"] == 30 and _vgg.conv_indices("vgg16")[-1] == 28
    names19 = _vgg.layer_names("vgg19")
    # Gatys' style layers in torchvision's VGG19 and Mosinska's conv3_4
    assert [names19[f"relu{b}_1"] for b in range(1, 6)] == [1, 6, 11, 20, 29]
    assert (names19["conv1_2"], names19["conv2_2"], names19["conv3_4"]) == (2, 7, 16)
    assert _vgg.parse_layers("relu2_2, 15", "vgg16") == [8, 15]


def test_full_width_vgg16_state_dict_loads(tmp_path: Path) -> None:
    # A state dict as torchvision writes it, classifier included; only features.0-8 are kept.
    state = _vgg.random_state_dict("vgg16", seed=3)
    state["classifier.0.weight"] = torch.zeros(4, 4)
    state["classifier.0.bias"] = torch.zeros(4)
    path = tmp_path / "vgg16-full.pth"
    torch.save(state, path)
    module = features.Perceptual(weights=str(path))
    convs = [m for m in module.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [
        (64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3), (128, 128, 3, 3),
    ]  # fmt: skip
    # conv1_1 .. conv2_2 of torchvision's VGG16: 1792 + 36928 + 73856 + 147584 parameters
    assert sum(p.numel() for p in module.parameters()) == 260160
    assert all(not p.requires_grad for p in module.parameters())
    x, y = _images(1, 16, 18, 0, torch.float32)
    out = module(x, y)
    (expected,) = _hand_taps(path, "vgg16", x, [8], True)
    (ref,) = _hand_taps(path, "vgg16", y, [8], True)
    torch.testing.assert_close(out, (expected - ref).square().mean((1, 2, 3)), **tol(torch.float32))


@pytest.mark.parametrize("normalize", [True, False])
def test_taps_match_hand_built_network(vgg16: Path, normalize: bool) -> None:
    layers = "relu1_2,conv2_1,pool2,relu3_3,relu4_3"
    taps = _vgg.parse_layers(layers, "vgg16")
    backbone = _vgg.VGGFeatures(str(vgg16), layers, normalize).double()
    x, _ = _images(2, 16, 20, 1)
    for got, want in zip(backbone(x), _hand_taps(vgg16, "vgg16", x, taps, normalize), strict=True):
        torch.testing.assert_close(got, want, **tol(torch.float64))
    # the caller's order is kept: reversed names give reversed taps
    rev = _vgg.VGGFeatures(str(vgg16), "relu4_3,relu1_2", normalize).double()
    a, b = rev(x)
    assert a.shape[1] == WIDTHS16[9] and b.shape[1] == WIDTHS16[1]


def test_perceptual_matches_hand_computation(vgg16: Path) -> None:
    x, y = _images(3, 12, 14, 2)
    out = features.Perceptual(str(vgg16), "relu2_2,relu3_3").double()(x, y)
    expected = 0.0
    for fx, fy in zip(
        _hand_taps(vgg16, "vgg16", x, [8, 15], True),
        _hand_taps(vgg16, "vgg16", y, [8, 15], True),
        strict=True,
    ):
        d = (fx - fy).numpy()
        expected = expected + (d**2).sum((1, 2, 3)) / d[0].size  # ||.||² / (C H W)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10)
    # identical images: no difference at any layer
    assert features.Perceptual(str(vgg16)).double()(x, x).abs().max() == 0


def test_style_and_texture_match_hand_gram_matrices(vgg16: Path) -> None:
    layers = "relu1_2,relu2_2,relu3_3,relu4_3"
    x, y = _images(2, 16, 18, 3)
    taps = _vgg.parse_layers(layers, "vgg16")
    fx = [f.numpy() for f in _hand_taps(vgg16, "vgg16", x, taps, True)]
    fy = [f.numpy() for f in _hand_taps(vgg16, "vgg16", y, taps, True)]
    # Johnson: G = F Fᵀ / (C H W), loss = Σ ||ΔG||²_F
    style = sum(
        (((_gram_np(a) - _gram_np(b)) / a[0].size) ** 2).sum((1, 2))
        for a, b in zip(fx, fy, strict=True)
    )
    out = features.Style(str(vgg16), layers).double()(x, y)
    np.testing.assert_allclose(out.numpy(), style, rtol=1e-9)
    # Gatys: E_l = Σ (G - A)² / (4 N² M²), weighted
    w = [0.1, 0.2, 0.3, 0.4]
    texture = sum(
        wl
        * ((_gram_np(a) - _gram_np(b)) ** 2).sum((1, 2))
        / (4 * a.shape[1] ** 2 * (a.shape[2] * a.shape[3]) ** 2)
        for wl, a, b in zip(w, fx, fy, strict=True)
    )
    out = features.Texture(str(vgg16), layers, layer_weights=w).double()(x, y)
    np.testing.assert_allclose(out.numpy(), texture, rtol=1e-9)
    # the Gram matrix itself, for one map written out: G_ij = Σ_k F_ik F_jk
    f = torch.arange(12.0).reshape(1, 2, 2, 3)
    torch.testing.assert_close(features.gram(f), torch.tensor([[[55.0, 145.0], [145.0, 451.0]]]))


def test_texture_default_weights_are_equal_and_sum_to_one(vgg19: Path) -> None:
    x, y = _images(2, 32, 32, 4)
    default = features.Texture(str(vgg19)).double()(x, y)
    explicit = features.Texture(str(vgg19), layer_weights=[0.2] * 5).double()(x, y)
    torch.testing.assert_close(default, explicit)
    # identical images have identical Gram matrices at every layer
    assert features.Texture(str(vgg19)).double()(x, x).abs().max() == 0


def test_topology_is_bce_plus_mu_times_vgg19_feature_loss(vgg19: Path) -> None:
    g = torch.Generator().manual_seed(5)
    preds = torch.rand(3, 8, 12, generator=g, dtype=torch.float64) * 0.98 + 0.01
    target = (torch.rand(3, 8, 12, generator=g, dtype=torch.float64) > 0.6).double()
    bce = F.binary_cross_entropy(preds, target, reduction="none").mean((1, 2))
    out0 = features.Topology(str(vgg19), mu=0.0).double()(preds, target)
    torch.testing.assert_close(out0, bce, **tol(torch.float64))
    rgb_p, rgb_t = (m.unsqueeze(1).expand(-1, 3, -1, -1) for m in (preds, target))
    fp = _hand_taps(vgg19, "vgg19", rgb_p, [2, 7, 16], False)  # conv1_2, conv2_2, conv3_4
    ft = _hand_taps(vgg19, "vgg19", rgb_t, [2, 7, 16], False)
    vgg = sum((a - b).square().mean((1, 2, 3)) for a, b in zip(fp, ft, strict=True))
    out = features.Topology(str(vgg19), mu=0.3).double()(preds, target)
    torch.testing.assert_close(out, bce + 0.3 * vgg, **tol(torch.float64))
    fn = features.topology(preds, target, str(vgg19), mu=0.3)
    torch.testing.assert_close(fn, out, **tol(torch.float64))


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_and_script(name: str) -> None:
    spec = registry.get(name)
    module = spec.build()
    inputs = spec.make_inputs(torch.Generator().manual_seed(0), {"N": 0})
    assert module(**inputs).shape == (0,)
    inputs = spec.make_inputs(torch.Generator().manual_seed(0), {"N": 2})
    torch.testing.assert_close(script(module)(**inputs), module(**inputs))


@pytest.mark.parametrize("name", NAMES)
def test_without_weights_the_metric_refuses(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_vgg.ENV_WEIGHTS, raising=False)
    spec = registry.get(name)
    with pytest.raises(ValueError, match=r"`weights`.*Nothing is downloaded"):
        spec.build()
    inputs = spec.make_inputs(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="`weights`"):
        spec.check_inputs(inputs)
    assert spec.required_files() == {"weights": None}


def test_bad_weight_files_are_rejected(tmp_path: Path, vgg16: Path) -> None:
    with pytest.raises(ValueError, match="`weights` to name a readable file"):
        features.Perceptual(str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="`weights` to be a torch state dict"):
        features.Perceptual(str(junk))
    other = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="`weights` to hold torchvision VGG keys"):
        features.Perceptual(str(other))
    vgg11 = tmp_path / "vgg11.pth"  # convolutions at VGG11's indices
    torch.save({f"features.{i}.weight": torch.zeros(1) for i in (0, 3, 6, 8)}, vgg11)
    with pytest.raises(ValueError, match="VGG16 convolutions at features"):
        features.Perceptual(str(vgg11))
    narrow = _vgg.random_state_dict("vgg16", WIDTHS16)
    narrow["features.2.weight"] = torch.zeros(4, 5, 3, 3)  # does not chain from 4 channels
    bad = tmp_path / "bad.pth"
    torch.save(narrow, bad)
    with pytest.raises(ValueError, match=r"features.2.weight of shape \[C_out, 4, 3, 3\]"):
        features.Perceptual(str(bad))
    bn = dict(_vgg.random_state_dict("vgg16", WIDTHS16))
    bn["features.1.running_mean"] = torch.zeros(4)
    torch.save(bn, bad)
    with pytest.raises(ValueError, match="batch norm"):
        features.Perceptual(str(bad))
    # topology's conv3_4 exists in VGG19 only
    with pytest.raises(ValueError, match="`layers` to name VGG16 layers"):
        features.Topology(str(vgg16))
    with pytest.raises(ValueError, match="`layers`"):
        features.Perceptual(str(vgg16), "relu9_9")
    with pytest.raises(ValueError, match="`layer_weights`"):
        features.Texture(str(vgg16), "relu1_1,relu2_1", layer_weights=[1.0])


def test_domain_errors_name_the_input(vgg16: Path) -> None:
    spec = registry.get("texture")
    small = {"preds": torch.rand(2, 3, 16, 40), "target": torch.rand(2, 3, 16, 40)}
    with pytest.raises(ValueError, match="axis H of `preds` to be at least 32"):
        spec.check_inputs(small)
    # deeper layers than the default need larger images than min_sizes says
    spec = registry.get("perceptual")
    inputs = {"preds": torch.rand(1, 3, 8, 8), "target": torch.rand(1, 3, 8, 8)}
    spec.check_inputs(inputs)
    with pytest.raises(ValueError, match="at least 32 for layers 'relu5_1'"):
        spec.check_inputs(inputs, {"weights": str(vgg16), "layers": "relu5_1"})
    topo = registry.get("topology")
    masks = {"preds": torch.full((1, 8, 8), 1.5), "target": torch.zeros(1, 8, 8)}
    with pytest.raises(ValueError, match="`preds` to hold values in"):
        topo.check_inputs(masks)
    with pytest.raises(ValueError, match="`mu`"):
        topo.check_inputs(
            {"preds": torch.rand(1, 8, 8), "target": torch.zeros(1, 8, 8)}, {"mu": -1.0}
        )


def test_identity_follows_the_weights_file_content(tmp_path: Path) -> None:
    spec = registry.get("perceptual")
    path = tmp_path / "w.pth"
    torch.save(_vgg.random_state_dict("vgg16", WIDTHS16, seed=0), path)
    params = spec.resolve_params({"weights": str(path)})
    first = spec.identity(params)
    torch.save(_vgg.random_state_dict("vgg16", WIDTHS16, seed=1), path)
    assert spec.identity(params) != first  # same path, new content: a new artifact


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_export_many_skips_or_uses_weights(
    tmp_path: Path, vgg16: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(_vgg.ENV_WEIGHTS, raising=False)
    subset = [registry.get("perceptual"), registry.get("l1")]
    monkeypatch.setattr(export_mod.registry, "select", lambda names: subset)
    records = _Records()
    export_mod.log.addHandler(records)
    try:
        results = export_many(None, tmp_path / "a", formats=("torchscript",), progress=False)
    finally:
        export_mod.log.removeHandler(records)
    assert [r.name for r in results] == ["l1"]
    (message,) = records.messages
    assert "skipping perceptual" in message and "--weights" in message
    # asked for by name without weights: the error names the parameter
    with pytest.raises(ValueError, match="`weights`"):
        export_many(["perceptual"], tmp_path / "b", formats=("torchscript",), progress=False)
    results = export_many(
        None, tmp_path / "c", formats=("torchscript",), progress=False, weights=vgg16
    )
    assert [r.name for r in results] == ["perceptual", "l1"]
    manifest = json.loads((tmp_path / "c" / "perceptual" / "manifest.json").read_text())
    assert manifest["params"]["weights"] == str(vgg16)
    assert manifest["resources"]["weights"]["sha256"] == sha256_file(vgg16)


def test_cli_export_takes_weights(
    tmp_path: Path, vgg16: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(_vgg.ENV_WEIGHTS, raising=False)
    out = tmp_path / "repo"
    argv = ["export", "perceptual", "--out", str(out), "--formats", "torchscript"]
    assert cli.main(argv) == cli.EXIT_USAGE  # no weights: a one-line error, no traceback
    assert cli.main([*argv, "--weights", str(vgg16)]) == 0
    loaded = torch.jit.load(str(out / "perceptual" / "1" / "model.pt"))
    x, y = _images(2, 8, 8, 6, torch.float32)
    torch.testing.assert_close(loaded(x, y), features.Perceptual(str(vgg16))(x, y))
