"""The real TensorBoard server on a fresh run: scalars, images and the HPARAMS tab, over HTTP.

`tensorboard --logdir runs` is what the fit summary tells users to type, so the test types it:
the console script of this environment, on loopback and a free port, read back through the
server's own data API, then stopped.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from orbitbench.run.cli import run_lightning_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
TINY = [
    "--data.n_angles", "4", "--data.images_per_class", "30", "--data.batch_size", "256", "--trainer.max_epochs", "2",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]


# The kernel-prediction callback on a small probe: its predictions become HPARAMS metrics too.
KERNEL_PREDICTIONS = [
    "--trainer.callbacks+=orbitbench.run.callbacks.EmpiricalNTKCallback", "--trainer.callbacks.n_seeds=8",
    "--trainer.callbacks.probe_digits_per_class=2", "--trainer.callbacks.train_per_class=10",
    "--trainer.callbacks.in_test_per_class=2", "--trainer.callbacks.figures=false",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(base: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return raw if response.headers.get_content_type() != "application/json" else json.loads(raw)


@pytest.fixture(scope="module")
def server(tmp_path_factory, one_thread):
    """(base URL, run name, fit's own final accuracies) with a TensorBoard serving one fresh fit."""
    runs = tmp_path_factory.mktemp("runs")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert run_lightning_cli(["fit", *TINY, *KERNEL_PREDICTIONS, "--seed_everything", "7",
                                  "--trainer.logger.init_args.save_dir", str(runs)]) == 0
    summary = out.getvalue()
    port = free_port()
    tensorboard = Path(sys.executable).with_name("tensorboard")
    process = subprocess.Popen(
        [str(tensorboard), "--logdir", str(runs), "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                runs_listed = get(base, "/data/runs")
                if runs_listed:
                    break
            except OSError:
                pass
            if process.poll() is not None:
                pytest.fail(f"tensorboard exited with {process.returncode}: {process.stdout.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("tensorboard did not list the run within 90 s")
            time.sleep(0.5)
        yield base, runs_listed[0], summary
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_scalars_match_the_printed_summary(server) -> None:
    base, run, summary = server
    query = urllib.parse.urlencode({"run": run, "tag": "val/out_test_acc"})
    points = get(base, f"/data/plugin/scalars/scalars?{query}")
    assert [step for _, step, _ in points] == sorted(step for _, step, _ in points) and len(points) == 2
    assert f"out-test {points[-1][2]:.3f}" in summary
    query = urllib.parse.urlencode({"run": run, "tag": "val/in_test_acc"})
    assert f"in-test {get(base, f'/data/plugin/scalars/scalars?{query}')[-1][2]:.3f}" in summary


def test_training_orbit_grid_is_a_png_image(server) -> None:
    base, run, _ = server
    query = urllib.parse.urlencode({"run": run, "tag": "data/train_orbits"})
    (entry,) = get(base, f"/data/plugin/images/images?{query}")
    assert get(base, f"/data/plugin/images/individualImage?{entry['query']}")[:8] == b"\x89PNG\r\n\x1a\n"


def _session_groups(base: str) -> list[dict]:
    return get(base, "/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [], "startIndex": 0, "sliceSize": 10,
    })["sessionGroups"]  # fmt: skip


def test_hparams_tab_has_settings_both_seeds_and_final_accuracies(server) -> None:
    base, run, summary = server
    experiment = get(base, "/data/plugin/hparams/experiment", {"experimentName": ""})
    names = {info["name"] for info in experiment["hparamInfos"]}
    assert {"optim/name", "optim/lr", "trainer/max_epochs", "data/batch_size", "seed/global", "seed/split"} <= names
    assert "hp_metric" not in json.dumps(experiment)
    (group,) = _session_groups(base)
    hparams = group["hparams"]
    assert hparams["seed/global"] == 7 and hparams["seed/split"] == 125  # distinct, as given
    assert hparams["optim/name"] == "Adam" and hparams["optim/lr"] == pytest.approx(1e-3)
    assert hparams["trainer/max_epochs"] == 2 and hparams["data/batch_size"] == 256
    metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    assert f"out-test {metrics['val/out_test_acc']:.3f}" in summary
    assert f"in-test {metrics['val/in_test_acc']:.3f}" in summary
    assert f"train {metrics['train/eval_acc']:.3f}" in summary
    # The kernels' predicted out-test accuracies, as the fit summary's table printed them.
    for name in ("infinite", "init", "trained"):
        row = next(line for line in summary.splitlines() if line.strip().startswith(name))
        assert f"{metrics[f'ntk/{name}/spectral_out_test_acc']:.3f}" in row.split("|")[0]


def test_hparams_default_columns_are_the_varying_settings_and_trials_are_named(server) -> None:
    """The HPARAMS table shows the first five hparams after sorting those marked `differs` first
    (TensorBoard's own rule): group, leave-out class, n, method, seed; the trial says what ran."""
    base, _, _ = server
    infos = get(base, "/data/plugin/hparams/experiment", {"experimentName": ""})["hparamInfos"]
    shown = [info["name"] for info in sorted(infos, key=lambda i: not i.get("differs", False))][:5]
    assert shown == ["data/group", "data/leave_out_class", "data/n_poses", "model/method", "seed/global"]
    (group,) = _session_groups(base)
    assert group["name"] == "paper_mlp rotation C4 leave-out 5 seed 7/125"
    assert group["hparams"]["data/group"] == "rotation" and group["hparams"]["data/n_poses"] == 4


def test_hparam_metrics_are_no_extra_scalar_charts_and_layouts_overlay_the_splits(server) -> None:
    base, run, _ = server
    tags = get(base, "/data/plugin/scalars/tags")[run]
    assert not [tag for tag in tags if tag.startswith("hparams/")]
    assert {"val/in_test_acc", "val/out_test_acc", "train/acc", "train/eval_acc"} <= set(tags)
    layout = get(base, "/data/plugin/custom_scalars/layout")
    categories = {c["title"]: c["chart"] for c in layout["category"]}
    assert {"accuracy", "ntk infinite", "ntk init", "ntk trained"} <= set(categories)
    (accuracy,) = [c for c in categories["accuracy"] if "accuracy" in c["title"]]
    import re

    patterns = accuracy["multiline"]["tag"]
    assert sorted(t for t in tags if any(re.search(p, t) for p in patterns)) == ["train/acc", "val/in_test_acc", "val/out_test_acc"]
    for name in ("infinite", "init", "trained"):  # each predictor's own category: only its tags and the network's
        charted = {t for chart in categories[f"ntk {name}"] for p in chart["multiline"]["tag"] for t in tags if re.search(p, t)}
        assert f"ntk/{name}/spectral_out_test_acc" in charted and "ntk/network/out_test_acc" in charted
        assert all(t.startswith((f"ntk/{name}/", "ntk/network/")) for t in charted), charted


def test_scalars_tab_opens_on_the_accuracy_curves(server) -> None:
    """TensorBoard's Scalars tab groups tags by their prefix and sorts the groups by name: the
    first group is `accuracy`, the validated accuracies (the same points as `val/*`), ahead of
    Lightning's `epoch` and `model/n_params`."""
    base, run, _ = server
    tags = get(base, "/data/plugin/scalars/tags")[run]
    groups = sorted({tag.split("/", 1)[0] for tag in tags})
    assert groups[0] == "accuracy" and {"epoch", "model", "val"} <= set(groups)
    for copy, source in (("accuracy/in_test", "val/in_test_acc"), ("accuracy/out_test", "val/out_test_acc")):
        points = [get(base, "/data/plugin/scalars/scalars?" + urllib.parse.urlencode({"run": run, "tag": t})) for t in (copy, source)]
        assert [(step, value) for _, step, value in points[0]] == [(step, value) for _, step, value in points[1]]
