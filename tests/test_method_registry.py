"""The method registry: a method added in one file is offered by the UI, the API and the CLI."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from appserver import running_server, write_image
from gradio_client import Client, handle_file

from app.cli.command_support import parse_methods
from app.cli.main import main
from app.explain import contrastive_cam
from app.explain.inputs import InvalidInputError
from app.explain.methods import METHODS, available_methods, get_method, unregister
from app.explain.service import ConceptPrompts, ExplainSettings, ExplanationService
from app.ui.tab_glue import method_choices

pytestmark = pytest.mark.timeout(300)

TOY = "toy-gradient-sum"
BUILT_IN = ("gradcam", "hirescam", "gradcam++", "xgradcam", "layercam", "gradcam-elementwise",
            "scorecam", "legrad", "attention-gradient")  # fmt: skip


@pytest.fixture(scope="module")
def toy():
    """The toy method registered (its module imported), removed again after the module."""
    module = importlib.import_module("toy_method")
    yield module.TOY
    unregister(TOY)


def test_built_in_methods_are_registered_in_order():
    assert tuple(METHODS)[: len(BUILT_IN)] == BUILT_IN
    assert get_method("LeGrad").default_blocks == 3
    assert get_method("attention-gradient").default_blocks == 4
    assert all(method.help and method.label for method in METHODS.values())


def test_methods_for_a_model_follow_what_each_method_supports(tiny_adapter):
    names = [method.name for method in available_methods(tiny_adapter)]
    assert "gradcam" in names and "scorecam" in names
    assert "legrad" not in names and "attention-gradient" not in names  # no attention view


def test_a_toy_method_from_one_file_runs_in_the_service(toy, tiny_adapter, rgb_image):
    service = ExplanationService(lambda name: tiny_adapter)
    result = service.explain("tiny", rgb_image, ExplainSettings(method=TOY, gamma=0.8))
    assert result.method == "Toy gradient sum" and result.cam.shape == (48, 64)
    assert not np.allclose(result.cam, result.finer)
    assert TOY in [method.name for method in service.methods_for("tiny")]


def test_a_toy_method_is_offered_by_the_cli(toy, capsys):
    assert parse_methods(f"gradcam,{TOY}") == ["gradcam", TOY]
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    assert f"{TOY}: test only" in " ".join(capsys.readouterr().out.split())


def test_a_toy_method_is_offered_by_the_ui_and_accepted_by_the_api(toy, tmp_path):
    with running_server() as server:
        dropdown = next(
            block for block in server.demo.blocks.values()
            if getattr(block, "elem_id", None) == "clf-method"
        )  # fmt: skip
        assert (toy.label, TOY) in [tuple(choice) for choice in dropdown.choices]
        assert (toy.label, TOY) in method_choices(server.service, server.classifier, loaded=True)
        client = Client(server.url, verbose=False, analytics_enabled=False,
                        download_files=str(tmp_path / "downloads"))  # fmt: skip
        picture = write_image(tmp_path / "bird.png", size=(96, 72))
        result = client.predict(image=handle_file(str(picture)), model=server.classifier,
                                method=TOY, api_name="/explain_classifier")  # fmt: skip
        cam_title = result[2]
        assert "Toy gradient sum" in cam_title


def test_a_toy_method_runs_through_contrastive_cam(toy, tiny_cnn):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    maps = contrastive_cam(tiny_cnn, tiny_cnn[5], x, target=1, references=[2], method=TOY)
    assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() <= 1


def test_settings_are_checked_and_normalised_in_one_step():
    checked = ExplainSettings(method=" LayerCAM ", gamma="0.4", top_t=2.0, attention_blocks=3.0)
    checked = checked.validated()
    assert (checked.method, checked.gamma, checked.top_t, checked.attention_blocks) == (
        "layercam", 0.4, 2, 3)  # fmt: skip
    assert type(checked.top_t) is int and checked.validated() == checked
    with pytest.raises(InvalidInputError, match="attention_blocks must be at least 1"):
        ExplainSettings(attention_blocks=0).validated()
    with pytest.raises(InvalidInputError, match="weighting must be one of"):
        ExplainSettings(weighting="loud").validated()


def test_concept_prompts_are_checked_where_made():
    prompts = ConceptPrompts("  a red crown ", "a blue bird, A RED CROWN, a bird")
    assert prompts.class_prompts() == ("a red crown", "a blue bird", "a bird")
    settings = prompts.settings(ExplainSettings(top_t=9))
    assert (settings.target, settings.reference_mode, settings.manual_references) == (
        0, "manual", (1, 2))  # fmt: skip
    with pytest.raises(InvalidInputError, match="contrast prompt different"):
        ConceptPrompts("a bird", "A bird")
