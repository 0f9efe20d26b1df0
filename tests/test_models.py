"""Model zoo: every model builds, maps [B,1,28,28] -> [B,10] and trains; symmetries hold by construction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from orbitbench.errors import OrbitbenchError
from orbitbench.models import create_model, list_models, register_model

ZOO = [*list_models(), "timm:resnet10t", "c4_pooled(paper_mlp)", "c4_pooled(cnn_gap)"]


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=generator), torch.arange(n) % 10


def test_builtin_families_are_registered() -> None:
    assert {"paper_mlp", "paper_convnet", "paper_vit", "mlp", "cnn_fc", "cnn_gap"} <= set(list_models())


@pytest.mark.parametrize("name", ZOO)
def test_model_forward_and_one_optimisation_step(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    images, labels = _batch()
    logits = model(images)
    assert logits.shape == (8, 10) and logits.dtype == torch.float32
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.7, 0.9))
    # Two steps: timm ResNets zero-init the last norm of each block, which zeroes the first
    # gradient of the conv before it.
    for _ in range(2):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert all(changed), f"{name}: {changed.count(False)} parameter tensors did not move"


def test_paper_models_match_theory_layer_counts() -> None:
    # Hand counts from docs/THEORY.md §1 (weights + biases per layer).
    mlp = 784 * 512 + 512 + 512 * 128 + 128 + 128 * 10  # last layer bias=False
    convnet = (25 * 24 + 24) + (24 * 9 * 32 + 32) + (800 * 256 + 256) + (256 * 10 + 10)
    assert sum(p.numel() for p in create_model("paper_mlp").parameters()) == mlp == 468_864
    assert sum(p.numel() for p in create_model("paper_convnet").parameters()) == convnet == 215_194
    dropouts = [m.p for m in create_model("paper_mlp").modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0.5, 0.5]


def test_paper_models_output_log_probabilities() -> None:
    images, _ = _batch()
    for name in ("paper_mlp", "paper_convnet"):
        out = create_model(name).eval()(images)
        torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(8))


@pytest.mark.parametrize("inner", ["paper_convnet", "mlp", "timm:resnet10t"])
def test_c4_pooled_is_invariant_to_rot90(inner: str) -> None:
    torch.manual_seed(0)
    model = create_model(f"c4_pooled({inner})").eval()
    images, _ = _batch(4)
    with torch.no_grad():
        reference = model(images)
        for k in (1, 2, 3):
            torch.testing.assert_close(model(torch.rot90(images, k, dims=(-2, -1))), reference, atol=1e-5, rtol=1e-5)
        plain = create_model(inner).eval()
        plain.load_state_dict(model.backbone.state_dict())
        # Without pooling the same weights are not invariant: the test above can fail.
        assert not torch.allclose(plain(torch.rot90(images, 1, dims=(-2, -1))), plain(images), atol=1e-3)


def test_cnn_gap_is_invariant_to_circular_shifts_and_cnn_fc_is_not() -> None:
    torch.manual_seed(0)
    images, _ = _batch(4)
    gap, fc = create_model("cnn_gap"), create_model("cnn_fc")
    shifted = torch.roll(images, shifts=(3, 7), dims=(-2, -1))
    with torch.no_grad():
        torch.testing.assert_close(gap(shifted), gap(images), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(fc(shifted), fc(images), atol=1e-3)


def test_mlp_depth_and_width() -> None:
    model = create_model("mlp", depth=5, width=32, dropout=0.1)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 32)] + [(32, 32)] * 4 + [(32, 10)]
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 5


def test_timm_vit_is_adapted_to_28x28() -> None:
    model = create_model("timm:vit_tiny_patch16_224", patch_size=4, depth=1)
    assert model(_batch(2)[0]).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "kwargs", "fragment"),
    [
        ("paper_mpl", {}, "did you mean 'paper_mlp'"),
        ("timm:not_a_model", {}, "unknown timm model"),
        ("paper_mlp", {"width": 3}, "paper_mlp"),
        ("mlp", {"activation": "swish"}, "activation"),
        ("c4_pooled(nope)", {}, "unknown model 'nope'"),
    ],
)
def test_bad_names_and_kwargs_raise_one_line_errors(name: str, kwargs: dict, fragment: str) -> None:
    with pytest.raises(OrbitbenchError, match=fragment.replace("(", r"\(")) as info:
        create_model(name, **kwargs)
    assert "\n" not in str(info.value)


def test_register_model_adds_a_family_and_refuses_a_clash() -> None:
    @register_model("_test_linear")
    def _linear(num_classes: int = 10) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))

    assert "_test_linear" in list_models()
    assert create_model("c4_pooled(_test_linear)")(_batch(2)[0]).shape == (2, 10)
    with pytest.raises(ValueError, match="already registered"):
        register_model("_test_linear")(lambda: nn.Identity())


MODEL_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "models").glob("*.yaml"))


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: p.name)
def test_every_model_config_builds_its_backbone(config: Path) -> None:
    init_args = yaml.safe_load(config.read_text())["model"]["init_args"]
    model = create_model(init_args["backbone"], **(init_args.get("backbone_kwargs") or {}))
    assert model(_batch(2)[0]).shape == (2, 10)


def test_list_models_takes_wildcards_and_the_models_command_prints_them(capsys) -> None:
    from orbitbench.cli import main

    assert list_models("paper*") == ["paper_convnet", "paper_mlp", "paper_vit"]
    assert {"mlp", "paper_mlp", "tiny_orbit_mlp"} <= set(list_models("*mlp"))
    assert list_models("zz*") == []
    with pytest.raises(OrbitbenchError, match="pattern=3"):
        list_models(3)
    assert main(["models", "paper*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[2:]] == ["paper_convnet", "paper_mlp", "paper_vit"]
    assert "ReLU MLP 784-512-128" in out[3] and "linear_head" in out[4]


def test_entry_point_models_are_listed_before_any_lookup_misses() -> None:
    import subprocess
    import sys

    code = "from orbitbench.models import list_models; print(list_models('tiny*'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "['tiny_orbit_mlp']"


def test_timm_names_take_pretrained_and_never_download(monkeypatch, tmp_path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    model = create_model("timm:resnet10t", pretrained=False)  # was: "multiple values for 'pretrained'"
    assert model(_batch(2)[0]).shape == (2, 10)
    with pytest.raises(OrbitbenchError, match="not in the local cache and orbitbench never downloads") as info:
        create_model("timm:resnet10t", pretrained=True)
    assert "\n" not in str(info.value)
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # offline only while loading
    with pytest.raises(OrbitbenchError, match="pretrained='yes'"):
        create_model("timm:resnet10t", pretrained="yes")


CLONE_MODEL = '''
from torch import nn
from orbitbench.models import register_model


@register_model("clone_only_net", classifier="-1")
def clone_only_net(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, num_classes))
'''


def test_a_models_folder_of_another_clone_is_found_through_the_models_path(tmp_path, monkeypatch) -> None:
    """An environment installed from one clone, a new model file in another clone's models/ (with
    copies of the zoo's own files beside it): ORBITBENCH_MODELS_PATH finds it, no new environment."""
    import shutil
    import subprocess
    import sys

    from orbitbench.models import model_info

    folder = tmp_path / "clone" / "models"
    shutil.copytree(Path(__file__).resolve().parents[1] / "models", folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "clone_only.py").write_text(CLONE_MODEL)
    monkeypatch.chdir(folder.parent)
    with pytest.raises(OrbitbenchError, match=f"export ORBITBENCH_MODELS_PATH={folder}"):
        model_info("clone_only_net")  # the error says the one line that fixes it
    code = ("from orbitbench.models import create_model, list_models, model_info; print(list_models('clone*'), "
            "model_info('clone_only_net').source.startswith('ORBITBENCH_MODELS_PATH'), create_model('clone_only_net')[1].out_features)")
    env = {**__import__("os").environ, "ORBITBENCH_MODELS_PATH": str(folder)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=True)
    assert out.stdout.strip() == "['clone_only_net'] True 16", out.stderr
    (folder / "broken.py").write_text("raise RuntimeError('half-written file')\n")
    out = subprocess.run([sys.executable, "-m", "orbitbench", "models"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "broken.py failed: RuntimeError: half-written file" in out.stderr


@pytest.mark.parametrize("code", ["raise SystemExit(3)\n", "import sys\nsys.exit('bye')\n"], ids=["SystemExit", "sys.exit"])
def test_a_models_path_file_that_exits_is_one_line_naming_it(tmp_path, code) -> None:
    """`exit()` in a models-path file used to end orbitbench silently (exit status of the file)."""
    from orbitbench.models._registry import _import_folder

    (tmp_path / "quits.py").write_text(code)
    with pytest.raises(OrbitbenchError, match=f"importing {tmp_path / 'quits.py'} failed: SystemExit"):
        _import_folder(tmp_path)
