"""Every ``bench/`` script at its smallest sizes: it runs to the end and prints its table.

The numbers at these sizes mean nothing; what is checked is that each benchmark still reads the
app as it is (its rows, its ratios, its exit status), so a change that breaks one is caught here
rather than by the next long run.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

RATIO = r"ratio [\w/-]+ = \d+\.\d+"
SERVED_MODELS = ("demo-cnn", "demo-tinyclip")


@pytest.fixture(scope="module")
def bench_server(tmp_path_factory):
    """One ``bench.server`` subprocess for the scripts that drive a server (each would otherwise
    start its own: seconds of imports and model loads apiece)."""
    from bench.server import running_server

    workdir = tmp_path_factory.mktemp("bench-server")
    with running_server(list(SERVED_MODELS), workdir, None, 1) as server:
        yield server


@pytest.fixture
def shared_server(bench_server, monkeypatch):
    """``bench.load``, ``bench.soak`` and ``bench.sessions`` drive ``bench_server``."""

    @contextmanager
    def reuse(models: list[str], workdir: Path, *args, **kwargs) -> Iterator[object]:
        assert set(models) <= set(SERVED_MODELS), models
        (workdir / "server-tmp").mkdir(exist_ok=True)  # where bench.soak counts the files
        yield bench_server

    for module in ("bench.load", "bench.soak", "bench.sessions"):
        monkeypatch.setattr(f"{module}.running_server", reuse)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the Markdown tables in ``text`` (header and rule lines left out)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = []
    for i, line in enumerate(lines):
        is_rule = line.startswith("|---")
        is_header = i + 1 < len(lines) and lines[i + 1].startswith("|---")
        if not (is_rule or is_header):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_autogamma_compares_fixed_and_auto_gamma_per_model(capsys):
    from bench.autogamma import main

    main(["--count", "1", "--methods", "gradcam", "--threads", "2"])
    rows = table_rows(capsys.readouterr().out)
    assert [(r[0], r[2]) for r in rows] == [
        ("demo-cnn", "fixed 0.6"),
        ("demo-cnn", "auto (top 0.05)"),
        ("demo-tinyclip", "fixed 0.6"),
        ("demo-tinyclip", "auto (top 0.05)"),
    ]
    assert all(0.0 <= float(r[3]) <= 1.0 for r in rows)  # the mean γ


def test_concepts_scores_every_method_and_pooling(capsys, tmp_path):
    from bench.concepts import main

    main(["--count", "1", "--blocks", "1", "--out", str(tmp_path), "--threads", "2"])
    rows = table_rows(capsys.readouterr().out)
    methods = {(r[0].split(" (")[0], r[1]) for r in rows}
    assert methods == {
        (method, pooling)
        for method in ("gradcam", "legrad", "attention-gradient")
        for pooling in ("token", "avg")
    }
    with (tmp_path / "concepts.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)


def test_groundtruth_writes_its_table_and_files(capsys, tmp_path):
    from bench.groundtruth import main

    rows = main(["--models", "demo-cnn", "--count", "2", "--gammas", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert [(r["model"], r["method"]) for r in rows] == [("demo-cnn", "gradcam")]
    assert len(table_rows(out)) == 1 and "×" in table_rows(out)[0][5]  # Finer / CAM
    for name in ("groundtruth.csv", "summary.csv", "energy_vs_gamma.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_latency_prints_every_ratio(capsys):
    from bench.latency import main

    main(["--model", "ViT-S-32", "--classes", "4", "--repeats", "1", "--size", "32",
          "--upload", "64x48", "--skip-compile"])  # fmt: skip
    out = capsys.readouterr().out
    for part in ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)", "(g) CPU-side work of a 64x48 upload"):
        assert part in out
    assert len(re.findall(RATIO, out)) == 16, out
    assert "γ strip: 6 maps + 6 overlays" in out
    assert re.search(r"legrad +\(\d+ blocks\)", out) and "attention-gradient" in out
    assert "(h)" not in out


def test_latency_compares_torch_compile_with_eager_and_checks_the_outputs(capsys):
    from bench.latency import main

    main(["--model", "ViT-S-32", "--classes", "4", "--repeats", "1", "--skip-clip",
          "--skip-fgcam", "--skip-generic", "--skip-attention", "--skip-device-paths"])  # fmt: skip
    out = capsys.readouterr().out
    compiled = re.findall(
        r"default +: +[\d.]+ ms +ratio compiled/eager = [\d.]+ .*max \|diff\| (\S+)", out
    )
    assert len(compiled) == 2, out  # the trunk and the tail, CPU: the default mode only
    assert all(float(difference) < 1e-4 for difference in compiled), out


def test_faithfulness_prints_the_line_and_the_compare_view_against_a_forward(capsys):
    from bench.faithfulness import main

    main(["--smoke", "--threads", "2"])
    out = capsys.readouterr().out
    assert len(re.findall(r"= \d+\.\d+ forwards", out)) == 3, out
    assert re.search(r"compare view, \d+ gradient methods", out), out


def test_throughput_compares_the_cli_with_the_anchor_loop(capsys, monkeypatch):
    from app.models import registry

    # bench.throughput registers its "bench-vgg16bn" on import: keep it out of other tests
    # (the shipped adapters register first, so the copy holds them all).
    registry.model_specs()
    monkeypatch.setattr(registry, "_SPECS", dict(registry._SPECS))
    from bench.throughput import main

    argv = ["--images", "2", "--size", "64", "--model", "demo-cnn", "--workers", "0"]
    main([*argv, "--batch-sizes", "1,2"])
    out = capsys.readouterr().out
    # per batch size: the run, without its load, .npy only, with the faithfulness columns
    assert len(re.findall(r"ratio ours/anchor = \d+\.\d+x", out)) == 8, out
    assert out.count("+ faithfulness columns") == 2, out
    gaps = re.search(r"vs anchor: CAM (\S+), Finer (\S+)", out)
    assert gaps and float(gaps[1]) < 1.0 and float(gaps[2]) < 1.0  # maps in [0, 1] agree
    batched = re.search(r"batch 2 vs batch 1: CAM (\S+), Finer (\S+)", out)
    assert batched and float(batched[1]) < 1e-5 and float(batched[2]) < 1e-5, out


def test_load_serves_and_refuses_a_short_mix(shared_server, capsys):
    from bench.load import main

    status = main(["--clients", "1", "--duration", "3", "--max-requests", "6", "--threads", "1"])
    out = capsys.readouterr().out
    assert status == 0, out
    served = re.search(r"requests served: (\d+) .*; valid (\d+), invalid (\d+)", out)
    assert served and int(served[1]) > 0, out
    assert "valid requests failed: 0" in out and "server alive after the run: yes" in out


def test_soak_runs_both_phases_and_plots(shared_server, capsys, tmp_path):
    from bench.soak import main

    plot = tmp_path / "soak.png"
    argv = ["--duration", "3", "--clients", "1", "--sample-period", "1",
            "--overload-clients", "2", "--overload-duration", "2", "--plot", str(plot)]  # fmt: skip
    status = main(argv)
    out = capsys.readouterr().out
    assert status == 0, out
    requests = re.search(r"requests: (\d+) ", out)
    assert requests and int(requests[1]) > 0, out
    assert "valid requests failed: 0" in out and plot.stat().st_size > 0


def test_sessions_reports_the_server_rss(shared_server, caplog):
    from bench.sessions import main

    with caplog.at_level(logging.INFO, logger="bench.sessions"):
        main(["--calls", "3", "--every", "1"])
    reports = [r.getMessage() for r in caplog.records if "server RSS" in r.getMessage()]
    assert len(reports) == 3 and all(" MB " in line for line in reports)


@pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(), reason="Debian chromium is not at /usr/bin/chromium"
)
def test_slider_latency_times_slider_moves_in_a_browser(caplog):
    from bench.slider_latency import main

    with caplog.at_level(logging.INFO, logger="bench.slider_latency"):
        main(["--moves", "2", "--warmup", "1", "--models", "demo-cnn"])
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "this checkout" in text and "load average" in text, text


def test_the_soak_band_reads_samples_and_the_servers_heap_lines():
    from bench.soak import HeapLine, Sample, SoakReport, band_lines, heap_lines

    log = "\n".join(
        [
            "2026-12-05 08:24:00,957 INFO app.ui.serving: heap: rss=1228.0 MB in_use=349.6 MB "
            "free=50.0 MB mmapped=21.5 MB python_blocks=3351006 threads=10",
            "2026-12-05 08:24:01,000 INFO app.ui: classifier demo-cnn γ=0.6",
            "2026-12-05 08:25:00,100 INFO app.ui.serving: heap: rss=1230.5 MB "
            "python_blocks=3351100 threads=9",
        ]
    )
    lines = heap_lines(log, wall_to_monotonic=0.0)
    assert [(h.rss, h.python_blocks) for h in lines] == [(1228.0, 3351006), (1230.5, 3351100)]
    assert lines[0].in_use == 349.6 and lines[1].t - lines[0].t == 60
    mb = 2**20
    samples = [Sample(60.0 * m, (1000 + m + (40 if m % 2 else 0)) * mb, 0, 0) for m in range(46)]
    heap = [HeapLine(60.0 * m + 1, 1000.0 + m, 300.0, 10 + m) for m in range(46)]
    report = SoakReport([], [], samples, {"soak": (0.0, 45 * 60.0)}, True, ("0", "0"), heap)
    band = band_lines(report)
    assert band[0].startswith("server RSS from minute 30: samples 1030.0 MB-1085.0 MB (55 MB")
    trims = "right after the heap trims (15 reports): RSS 1030.0 MB-1044.0 MB (14 MB apart)"
    assert trims in band[1]
    assert "Python blocks 40-54" in band[1]
    short = SoakReport([], [], samples, {"soak": (0.0, 30 * 60.0)}, True, ("0", "0"), heap)
    assert band_lines(short) == []
