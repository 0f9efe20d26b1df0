"""The same tiny sweep through every launcher gives the same results.csv, byte for byte.

`local --jobs 2` (subprocess fits, two at a time), `ray` on a real local Ray cluster (loopback
only), and `submitit` with submitit's local executor (the code path of a SLURM job array).
"""

from __future__ import annotations

import pytest

from orbitbench import sweep
from sweep_helpers import TINY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]



@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def local_table(spec_file, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("local")
    return sweep.run(spec_file, out, launcher="local", jobs=2, progress=False).read_bytes()


def _records_are_finished(table: bytes) -> None:
    rows = table.decode().splitlines()
    assert len(rows) == 3 and rows[1].startswith("tiny,test-tiny,paper_mlp-n2-c3-s0,")


def test_ray_on_a_local_cluster_matches_local(spec_file, local_table, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        assert ray.cluster_resources()["CPU"] == 2
        table = sweep.run(spec_file, tmp_path / "out", launcher="ray", progress=False).read_bytes()
    finally:
        ray.shutdown()
    _records_are_finished(table)
    assert table == local_table


def test_submitit_local_executor_matches_local(spec_file, local_table, tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "out"
    table = sweep.run(spec_file, out, launcher="submitit", submitit_cluster="local", progress=False).read_bytes()
    _records_are_finished(table)
    assert table == local_table
    assert list((out / "submitit").glob("*/*_log.out")), "one job per cell, logs under <out>/submitit"
