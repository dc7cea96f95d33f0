"""The real web app on 127.0.0.1, driven through gradio_client (and raw HTTP where the client
refuses to send a value, e.g. NaN): both tabs, live re-rendering from the cache, bad input."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from appserver import running_server, write_image
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app.explain.render import display_size

pytestmark = pytest.mark.timeout(300)


def display_shape(width: int, height: int) -> tuple[int, int, int]:
    """Panels come back at display size (longest side >= 384 px), the input's aspect ratio."""
    shown_width, shown_height = display_size(width, height)
    return shown_height, shown_width, 3


SHOWN = display_shape(96, 72)  # the 96x72 test picture, as shown
PANELS = ("cam_title", "cam", "finer_title", "finer", "strip", "gamma", "gamma_note", "files")
CLASSIFIER_OUTPUTS = ("top5", "used", *PANELS, "status")
CONCEPT_OUTPUTS = ("scores", *PANELS, "status")


@pytest.fixture(scope="module")
def server():
    with running_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return Client(
        server.url,
        verbose=False,
        analytics_enabled=False,
        download_files=str(tmp_path_factory.mktemp("downloads")),
    )


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    return write_image(tmp_path_factory.mktemp("img") / "bird.png", size=(96, 72))


def classify(client, server, image, **kwargs) -> dict:
    result = client.predict(
        image=handle_file(str(image)),
        model=kwargs.pop("model", server.classifier),
        api_name="/explain_classifier",
        **kwargs,
    )
    return dict(zip(CLASSIFIER_OUTPUTS, result, strict=True))


def concepts(
    client, server, image, target="a bird with a red crown", contrast="a photo of a bird", **kwargs
) -> dict:
    result = client.predict(
        image=handle_file(str(image)),
        model=server.concepts,
        target_concept=target,
        contrast_prompts=contrast,
        api_name="/explain_concepts",
        **{"method": "gradcam", **kwargs},  # the page's default is attention-gradient
    )
    return dict(zip(CONCEPT_OUTPUTS, result, strict=True))


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def count_model_runs(monkeypatch) -> list[int]:
    """Count model runs (gradient-cache misses) of the in-process server from now on:
    ``[runs, runs that reused the cached image trunk]``."""
    from app.explain.methods import feature_grid as entry_module

    counter = [0, 0]
    original = entry_module.compute_entry

    def counted(*args, **kwargs):
        counter[0] += 1
        counter[1] += kwargs.get("activation") is not None
        return original(*args, **kwargs)

    monkeypatch.setattr(entry_module, "compute_entry", counted)
    return counter


# --------------------------------------------------------------------------- API shape


def test_named_endpoints_are_documented(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    classifier = [p["parameter_name"] for p in api["/explain_classifier"]["parameters"]]
    assert classifier == [
        "image",
        "model",
        "method",
        "gamma",
        "T",
        "reference_mode",
        "manual_references",
        "target",
        "weighting",
        "opacity",
        "high_resolution",
        "fgcam_layer",
        "fgcam_denoise",
        "auto_gamma",
        "colormap",
    ]
    concept = [p["parameter_name"] for p in api["/explain_concepts"]["parameters"]]
    assert concept == [
        "image",
        "model",
        "target_concept",
        "contrast_prompts",
        "template",
        "gamma",
        "method",
        "opacity",
        "auto_gamma",
        "pooling",
        "colormap",
    ]
    faithfulness = [p["parameter_name"] for p in api["/faithfulness"]["parameters"]]
    assert faithfulness == [*classifier, "k"]
    concepts_faithfulness = api["/concepts_faithfulness"]["parameters"]
    assert [p["parameter_name"] for p in concepts_faithfulness] == [*concept, "k"]
    assert set(api) == {
        "/explain_classifier",
        "/explain_concepts",
        "/load_hub_classifier",
        "/load_hub_concepts",
        "/faithfulness",
        "/concepts_faithfulness",
    }
    # the live-control events are private


# ---------------------------------------------------------------------- classifier tab


def test_classifier_returns_input_size_top5_references_and_downloads(client, server, picture):
    out = classify(client, server, picture, gamma=0.6, T=3)
    assert pixels(out["cam"]).shape == pixels(out["finer"]).shape == SHOWN
    labels = server.registry.get(server.classifier).labels
    assert len(out["top5"]["confidences"]) == min(5, len(labels))
    assert out["top5"]["label"] in labels
    rows = out["used"]["data"]
    assert [r[0] for r in rows] == ["target", "reference 1", "reference 2", "reference 3"]
    target, refs = rows[0][1], [r[1] for r in rows[1:]]
    assert target == out["top5"]["label"] and target not in refs and len(set(refs)) == 3
    assert all(r[1] in labels and 0 <= r[2] <= 1 for r in rows)
    for name in refs:
        assert name in out["finer_title"]
    maps_file, composite = sorted(out["files"], key=lambda p: not p.endswith(".npy"))
    maps = np.load(maps_file)
    assert maps.shape == (2, 72, 96) and maps.dtype == np.float32
    assert Image.open(composite).format == "PNG"
    assert "Device: cpu" in out["status"] and server.classifier in out["status"]


def test_gamma_zero_makes_both_panels_equal(client, server, picture):
    out = classify(client, server, picture, gamma=0.0)
    np.testing.assert_array_equal(pixels(out["cam"]), pixels(out["finer"]))


def test_changing_gamma_changes_only_finer_cam_without_running_the_model(
    client, server, picture, monkeypatch
):
    first = classify(client, server, picture, gamma=0.2, T=2)
    runs = count_model_runs(monkeypatch)
    second = classify(client, server, picture, gamma=1.0, T=2)
    third = classify(client, server, picture, gamma=1.0, T=1, weighting="probability", opacity=0.8)
    assert runs[0] == 0  # γ, T, weighting and opacity re-render from the cached gradients
    np.testing.assert_array_equal(pixels(first["cam"]), pixels(second["cam"]))
    assert not np.array_equal(pixels(first["finer"]), pixels(second["finer"]))
    assert first["used"]["data"] == second["used"]["data"]
    assert len(third["used"]["data"]) == 2


def test_manual_references_target_and_weight_similarity(client, server, picture):
    labels = list(server.registry.get(server.classifier).labels)
    out = classify(
        client,
        server,
        picture,
        reference_mode="manual",
        target=labels[3],
        manual_references=[labels[1], labels[2]],
    )
    assert [r[1] for r in out["used"]["data"]] == [labels[3], labels[1], labels[2]]
    assert labels[3] in out["cam_title"]
    weights = classify(client, server, picture, reference_mode="weights", T=2)
    assert len(weights["used"]["data"]) == 3


def test_scorecam_runs(client, server, picture):
    out = classify(client, server, picture, method="scorecam", T=1)
    assert pixels(out["finer"]).shape == SHOWN
    assert "Score-CAM" in out["cam_title"]


def test_high_resolution_fgcam_maps_come_back_at_input_size_and_differ_from_cam(
    client, server, picture
):
    low = classify(client, server, picture, gamma=0.6)
    high = classify(client, server, picture, gamma=0.6, high_resolution=True, fgcam_layer=0)
    assert pixels(high["finer"]).shape == SHOWN
    assert not np.array_equal(pixels(low["finer"]), pixels(high["finer"]))
    denoised = classify(
        client, server, picture, gamma=0.6, high_resolution=True, fgcam_denoise=True
    )
    assert not np.array_equal(pixels(high["finer"]), pixels(denoised["finer"]))


def test_any_fgcam_layer_of_the_model_is_accepted_without_a_model_load_in_the_session(
    client, server, picture
):
    """The layer dropdown's choices are set per session when a model loads; a session Gradio
    dropped (or an API client that never loaded one) still names any layer the model has, and a
    layer it lacks gets the service's message, not Gradio's "not in the list of choices"."""
    inner = classify(client, server, picture, gamma=0.6, high_resolution=True, fgcam_layer=1)
    full = classify(client, server, picture, gamma=0.6, high_resolution=True, fgcam_layer=0)
    assert not np.array_equal(pixels(inner["finer"]), pixels(full["finer"]))
    with pytest.raises(AppError, match="FG-CAM: stop_at must be in 0"):
        classify(client, server, picture, high_resolution=True, fgcam_layer=999)
    with pytest.raises(AppError, match="FG-CAM output layer must be a number"):
        classify(client, server, picture, high_resolution=True, fgcam_layer="top")


# ------------------------------------------------------------------------ concepts tab


def test_concepts_scores_sizes_and_gamma(client, server, picture, monkeypatch):
    zero = concepts(
        client, server, picture, contrast="a bird with a yellow crown\na photo of a bird", gamma=0.0
    )
    rows = zero["scores"]["data"]
    assert [r[:2] for r in rows] == [
        ["target", "a bird with a red crown"],
        ["contrast 1", "a bird with a yellow crown"],
        ["contrast 2", "a photo of a bird"],
    ]
    assert abs(sum(r[3] for r in rows) - 1) < 1e-2  # softmax over the prompts
    assert pixels(zero["cam"]).shape == SHOWN
    np.testing.assert_array_equal(pixels(zero["cam"]), pixels(zero["finer"]))
    runs = count_model_runs(monkeypatch)
    strong = concepts(
        client, server, picture, contrast="a bird with a yellow crown, a photo of a bird", gamma=1.0
    )
    np.testing.assert_array_equal(pixels(zero["cam"]), pixels(strong["cam"]))
    assert not np.array_equal(pixels(zero["finer"]), pixels(strong["finer"]))
    assert runs[0] == 0  # same image and prompts: no model run
    concepts(client, server, picture, target="a bird with a blue crown", gamma=1.0)
    assert runs == [1, 1]  # new prompts: the tail runs again, the image trunk comes from the cache


def test_concepts_vit_native_methods_and_pooling_are_named_in_titles(client, server, picture):
    token = concepts(client, server, picture, method="legrad", gamma=1.0)
    avg = concepts(client, server, picture, method="attention-gradient", pooling="avg", gamma=1.0)
    assert "LeGrad, class token" in token["cam_title"]
    assert "Attention-gradient, average-pooled surrogate" in avg["cam_title"]
    assert token["scores"]["data"][0][2] != avg["scores"]["data"][0][2]  # another read-out


# --------------------------------------------------------------------------- bad input


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (tiny file, never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _jpeg() -> bytes:
    return _encoded(Image.new("RGB", (64, 64), "red"), "JPEG")


BAD_FILES = {
    "not-an-image.png": (b"hello, I am text\n" * 10, "not a supported image"),
    "corrupt.jpg": (_jpeg()[:20] + b"\x00garbage" * 20, "JPEG"),
    "empty.png": (b"", "empty"),
    "one-pixel.png": (_encoded(Image.new("RGB", (1, 1)), "PNG"), "too small"),
    "huge.png": (_png_header_only(20000, 20000), "too large"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files_give_clear_errors_and_the_server_keeps_serving(
    client, server, picture, tmp_path, name
):
    data, message = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(AppError, match=f"(?i){message}") as error:
        classify(client, server, path)
    assert "Traceback" not in str(error.value)
    with pytest.raises(AppError, match=f"(?i){message}"):
        concepts(client, server, path)
    assert pixels(classify(client, server, picture)["cam"]).shape == SHOWN


def _odd_images() -> dict[str, bytes]:
    rgb = Image.linear_gradient("L").resize((80, 60)).convert("RGB")
    deep = np.arange(60 * 80, dtype=np.uint16).reshape(60, 80) * 13
    frames = [Image.new("RGB", (80, 60), c) for c in ("red", "blue")]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return {
        "cmyk.jpg": _encoded(rgb.convert("CMYK"), "JPEG"),
        "deep.png": _encoded(Image.fromarray(deep), "PNG"),
        "animated.gif": gif.getvalue(),
    }


@pytest.mark.parametrize("name", list(_odd_images()))
def test_unusual_but_valid_images_are_explained(client, server, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(_odd_images()[name])
    out = classify(client, server, path)
    assert pixels(out["cam"]).shape == display_shape(80, 60)


@pytest.mark.parametrize(
    ("target", "contrast", "message"),
    [
        ("", "a photo of a bird", "empty"),
        ("   ", "a photo of a bird", "empty"),
        ("x" * 2000, "a photo of a bird", "too long"),
        ("red crown", "", "at least one"),
        ("red crown", "y" * 2000, "too long"),
        ("red crown", "red  crown", "different from the target"),
    ],
)
def test_bad_prompts_give_clear_errors(client, server, picture, target, contrast, message):
    with pytest.raises(AppError, match=f"(?i){message}"):
        concepts(client, server, picture, target=target, contrast=contrast)


def test_gamma_out_of_range_gives_clear_error(client, server, picture):
    with pytest.raises(AppError, match="(?i)minimum"):
        classify(client, server, picture, gamma=-1)
    with pytest.raises(AppError, match="(?i)minimum"):
        concepts(client, server, picture, gamma=-0.5)


def _raw_classifier_call(server, path: str, gamma: float = 0.5) -> str:
    """The event stream of ``/call/explain_classifier`` with the image named by ``path``, the
    JSON sent by hand (as any client may; gradio_client refuses to encode NaN, for one)."""
    image = {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": "bird.png"}
    data = [image, server.classifier, "gradcam", gamma, 3, "logits", [], "(predicted class)",
            "uniform", 0.5, False, 0, False, False, "jet"]  # fmt: skip
    body = json.dumps({"data": data})  # allow_nan: a literal NaN goes over the wire
    base = server.url + "gradio_api"
    with httpx.Client(timeout=60) as http:
        event = http.post(
            f"{base}/call/explain_classifier",
            content=body,
            headers={"content-type": "application/json"},
        ).json()["event_id"]
        return http.get(f"{base}/call/explain_classifier/{event}").text


def _upload(server, picture: Path) -> str:
    with httpx.Client(timeout=60) as http, open(picture, "rb") as handle:
        return http.post(f"{server.url}gradio_api/upload", files={"files": handle}).json()[0]


def test_nan_gamma_over_raw_http_gives_clear_error(server, picture):
    stream = _raw_classifier_call(server, _upload(server, picture), gamma=float("nan"))
    assert "event: error" in stream
    assert "finite" in stream and "Traceback" not in stream


def test_files_not_uploaded_by_the_user_are_refused(server, picture):
    """A crafted API call naming a server file must not read it (Gradio checks the upload
    folder)."""
    stream = _raw_classifier_call(server, "/etc/passwd")
    assert "event: error" in stream and "root:" not in stream


def test_an_expired_upload_asks_for_the_image_again(server, picture):
    """A page still shows an image whose upload the disk cap (or the age limit) has removed:
    its next event names a file that is gone, and the user is asked to upload it again."""
    uploaded = _upload(server, picture)
    assert "event: complete" in _raw_classifier_call(server, uploaded)
    Path(uploaded).unlink()
    stream = _raw_classifier_call(server, uploaded)
    assert "event: error" in stream and "no longer on the server" in stream


def test_vit_native_methods_on_a_classifier_other_than_the_default(client, server, picture):
    """The method dropdown lists the page's model's methods; an API call naming another model
    must still reach the service, which says what a model runs (not Gradio's "not in the list
    of choices" for LeGrad and attention-gradient on a ViT classifier)."""
    out = classify(client, server, picture, model="demo-vit", method="attention-gradient")
    assert "Attention-gradient" in out["cam_title"] and pixels(out["finer"]).shape == SHOWN
    with pytest.raises(AppError, match="(?i)LeGrad reads a Vision Transformer"):
        classify(client, server, picture, method="legrad")
    with pytest.raises(AppError, match="(?i)unknown method"):
        classify(client, server, picture, method="no-such-method")


def test_unknown_model_and_class_give_clear_errors(client, server, picture):
    with pytest.raises(AppError, match="(?i)not in the list of choices|unknown model"):
        classify(client, server, picture, model="no-such-model")
    with pytest.raises(AppError, match="(?i)unknown class"):
        classify(client, server, picture, target="no such bird")
    with pytest.raises(AppError, match="(?i)at least one reference"):
        classify(client, server, picture, reference_mode="manual", manual_references=[])


def test_load_and_soak_benchmarks_read_the_endpoints_as_they_are(server, picture, tmp_path):
    """bench.load / bench.soak parse the API's answers; their notion of its outputs must follow
    the app's, or a whole soak reports every valid request as failed."""
    from bench.load import Worker, Workload

    work = Workload(server.url, tmp_path, [server.classifier], server.concepts, {}, 0, 120.0)
    worker = Worker(0, work, ())
    assert len(worker.classify(picture, gamma=0.3)) == len(CLASSIFIER_OUTPUTS)
    assert len(worker.concepts(picture, target="a bird with a red crown")) == len(CONCEPT_OUTPUTS)


def test_faithfulness_endpoint_answers_the_numbers_of_the_maps_explained(client, server, picture):
    explained = classify(client, server, picture, gamma=0.8)
    answer = client.predict(
        image=handle_file(str(picture)),
        model=server.classifier,
        gamma=0.8,
        k=0.1,
        api_name="/faithfulness",
    )
    from app.explain.service import ExplainSettings

    image = Image.open(picture).convert("RGB")
    live = server.service.faithfulness(server.classifier, image, ExplainSettings(gamma=0.8), 0.1)
    assert answer["finer"]["relative_drop"] == pytest.approx(live.finer.relative_drop, abs=1e-6)
    assert answer["cam"]["probability_drop"] == pytest.approx(live.cam.probability_drop, abs=1e-6)
    assert answer["top_fraction"] == 0.1
    assert answer["sentence"].startswith("Removing Finer-CAM's top 10 %")
    assert answer["target"] == explained["used"]["data"][0][1]
    with pytest.raises(AppError, match="(?i)k \\(share of top pixels"):
        client.predict(
            image=handle_file(str(picture)), model=server.classifier, k=0, api_name="/faithfulness"
        )
    concepts_answer = client.predict(
        image=handle_file(str(picture)),
        model=server.concepts,
        target_concept="a red bird",
        contrast_prompts="a blue bird",
        method="gradcam",
        api_name="/concepts_faithfulness",
    )
    assert concepts_answer["references"] == ["a blue bird"]
    assert "contrast" in concepts_answer["sentence"]
