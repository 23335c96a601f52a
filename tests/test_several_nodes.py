"""Several nodes, simulated on this machine: one stage-script invocation per node, 1 process each,
meeting at 127.0.0.1, as a cluster runs one launcher per node (torchrun-style NNODES/NODE_RANK/
MASTER_ADDR, or a DeepSpeed HOSTFILE without ssh). Same losses as one node with as many
processes; a lost node or a folder one node cannot see stops the job with a clear error."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT, logged_losses, short_run_settings, stage_script_env, watch_training


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_node(script: str, node_rank: int, **settings: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", str(REPO_ROOT / "scripts" / script)], env=stage_script_env(NODE_RANK=str(node_rank), **settings),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def kill_node(node: subprocess.Popen) -> None:
    """SIGKILL to every process of a simulated node, as when the machine goes away (torchrun puts
    its workers in sessions of their own, so the tree is walked, not the process group)."""
    def below(pid: int) -> list[int]:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        return [int(child) for child in children] + [grandchild for child in children for grandchild in below(int(child))]

    for pid in [node.pid, *below(node.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def two_nodes(script: str, launch: dict[str, str], settings: dict[str, str], per_node: list[dict[str, str]] | None = None,
              timeout: float = 900) -> list[tuple[int, str]]:
    """Run ``script`` as node 0 and node 1 at once; (exit status, output) of each."""
    nodes = [start_node(script, rank, **{**launch, **settings, **(per_node[rank] if per_node else {})}) for rank in (0, 1)]
    try:
        outputs = [node.communicate(timeout=timeout)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_node(node)
    return [(node.returncode, output) for node, output in zip(nodes, outputs)]


def rendezvous(tmp_path: Path, way: str) -> dict[str, str]:
    """The variables of each simulated node: torchrun-style, or DeepSpeed's hostfile without ssh."""
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "NUM_GPUS": "1"}
    if way == "torchrun":
        return {**common, "NNODES": "2"}
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=1\nnode-b slots=1\n")
    return {**common, "HOSTFILE": str(hostfile)}


@pytest.mark.slow
@pytest.mark.parametrize("script, way", [("sft.sh", "torchrun"), ("mcmdpo.sh", "hostfile")])
def test_two_nodes_log_the_losses_of_one_node_with_two_processes(one_node_run, tiny_checkpoint, synthetic_dir, tmp_path, script, way):
    """ZeRO-3, 4 steps: the two-node job shards the model over both nodes, counts both in the
    gradient accumulation (8 examples or records a step = 2 per process x 2 processes x 2), computes
    the reference log-probs once into the cache both read, and logs the one-node run's losses."""
    one_node, _ = one_node_run(script, "zero3")
    cache, out = tmp_path / "cache", tmp_path / "out"
    settings = short_run_settings(script, "zero3", tiny_checkpoint, synthetic_dir, cache)
    results = two_nodes(script, rendezvous(tmp_path, way), {**settings, "OUTPUT_DIR": str(out)})
    for rank, (status, output) in enumerate(results):
        assert status == 0, f"node {rank}:\n{output[-6000:]}"
    launcher = "torchrun --nnodes 2 --node_rank 1" if way == "torchrun" else "--no_ssh --node_rank 1"
    assert launcher in results[1][1]
    expected, got = logged_losses(one_node), logged_losses(out)
    assert sorted(got) == [1, 2, 3, 4]
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, abs=1e-6), step
    state = json.loads((out / "trainer_state.json").read_text())
    records = 256 if script == "sft.sh" else 200
    assert state["log_history"][-2]["epoch"] == pytest.approx(4 * 8 / records)
    assert (out / "checkpoint-4" / "checkpoint_complete").is_file()
    if script == "mcmdpo.sh":
        (cached,) = cache.glob("*.pt")  # computed once, by the two nodes together
        assert torch.load(cached).shape == (1, 200, 8)
        assert "rows computed and added to" in results[0][1]
        assert not list(cache.glob(".mcmdpo-shared-folder-check-*"))


@pytest.mark.slow
def test_a_node_killed_mid_run_stops_the_other_with_a_clear_error(tiny_checkpoint, synthetic_dir, tmp_path):
    """Node 1 goes away (every process SIGKILLed) after a few steps: node 0 exits with an error
    naming the lost process within seconds, instead of waiting in the next collective."""
    settings = short_run_settings("sft.sh", "zero3", tiny_checkpoint, synthetic_dir, tmp_path / "cache")
    settings["EXTRA_ARGS"] = settings["EXTRA_ARGS"].replace("--max_steps 4", "--max_steps 400").replace(
        "--save_strategy steps", "--save_strategy no")
    launch = {**rendezvous(tmp_path, "torchrun"), "OUTPUT_DIR": str(tmp_path / "out"), **settings}
    survivor = start_node("sft.sh", 0, **launch)
    doomed = start_node("sft.sh", 1, **launch)
    try:
        lines, logged = watch_training(survivor, logged_steps=3)
        assert logged.wait(600), "".join(lines[-40:])
        kill_node(doomed)
        killed_at = time.monotonic()
        status = survivor.wait(timeout=120)
        took = time.monotonic() - killed_at
    finally:
        for node in (survivor, doomed):
            if node.poll() is None:
                kill_node(node)
    output = "".join(lines)
    assert status not in (0, None) and took < 60, (status, took, output[-4000:])
    assert "error: process 0 on" in output and "lost another process of the job" in output, output[-4000:]
    assert "step 400/400" not in output


@pytest.mark.slow
def test_sigterm_to_every_node_saves_one_checkpoint_and_every_node_exits_75(tiny_checkpoint, synthetic_dir, tmp_path):
    """What Slurm does before a time limit or a preemption (``--signal=TERM@300``): SIGTERM to each
    node's task. Both nodes save the same checkpoint at the next step boundary and exit 75 (through
    torchrun, which reports its worker's 75 as 1 by itself)."""
    settings = short_run_settings("sft.sh", "zero3", tiny_checkpoint, synthetic_dir, tmp_path / "cache")
    settings["EXTRA_ARGS"] = settings["EXTRA_ARGS"].replace("--max_steps 4", "--max_steps 400").replace(
        "--save_strategy steps", "--save_strategy no")
    out = tmp_path / "out"
    launch = {**rendezvous(tmp_path, "torchrun"), "OUTPUT_DIR": str(out), **settings}
    nodes = [start_node("sft.sh", rank, **launch) for rank in (0, 1)]
    try:
        lines, logged = watch_training(nodes[0], logged_steps=3)
        assert logged.wait(600), "".join(lines[-40:])
        for node in nodes:
            node.send_signal(signal.SIGTERM)
        statuses = [node.wait(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_node(node)
    assert statuses == [75, 75], "".join(lines[-60:])
    (checkpoint,) = out.glob("checkpoint-*")
    assert (checkpoint / "checkpoint_complete").is_file() and int(checkpoint.name.split("-")[1]) < 400


@pytest.mark.slow
def test_a_node_that_cannot_see_the_reference_cache_stops_every_node_before_any_model_loads(tiny_checkpoint, synthetic_dir, tmp_path):
    """The cache folder is on a filesystem node 1 does not share (simulated: node 1's path is
    another folder): both nodes stop with an error naming the folder and the node, before loading
    a model, instead of node 1 computing what node 0 reads from disk and the two waiting forever."""
    settings = short_run_settings("mcmdpo.sh", "zero3", tiny_checkpoint, synthetic_dir, tmp_path / "node0_cache")
    results = two_nodes(
        "mcmdpo.sh", rendezvous(tmp_path, "torchrun"), {**settings, "OUTPUT_DIR": str(tmp_path / "out")},
        per_node=[{}, {"EXTRA_ARGS": settings["EXTRA_ARGS"].replace("node0_cache", "node1_cache")}], timeout=300,
    )
    for rank, (status, output) in enumerate(results):
        assert status != 0, f"node {rank}:\n{output[-4000:]}"
        assert "--reference_cache_dir" in output and "is not visible from" in output and "(process 1)" in output, output[-4000:]
        assert "trainable parameters" not in output
    assert not list((tmp_path / "node0_cache").glob(".mcmdpo-shared-folder-check-*"))


@pytest.mark.parametrize(
    "launch, message",
    [
        ({"NNODES": "2", "MASTER_ADDR": "127.0.0.1"}, "NNODES=2 needs NODE_RANK"),
        ({"NNODES": "2", "NODE_RANK": "0"}, "NNODES=2 needs MASTER_ADDR"),
        ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "127.0.0.1"}, "NODE_RANK 2 is not below NNODES 2"),
        ({"NNODES": "two"}, "NNODES must be a whole number"),
        ({"NODE_RANK": "1"}, "NODE_RANK 1 without NNODES"),
        ({"HOSTFILE": "/nonexistent/hostfile"}, "HOSTFILE /nonexistent/hostfile: no such file"),
        ({"HOSTFILE": "HOSTFILE_PATH", "NODE_RANK": "1"}, "needs MASTER_ADDR"),
    ],
)
def test_launch_settings_that_cannot_work_stop_before_anything_starts(tmp_path, launch, message):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=8\nnode-b slots=8\n")
    launch = {name: str(hostfile) if value == "HOSTFILE_PATH" else value for name, value in launch.items()}
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "sft.sh")], capture_output=True, text=True, timeout=60,
                            env=stage_script_env(OUTPUT_DIR=str(tmp_path / "out"), **launch))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "deepspeed" not in result.stderr and "torchrun" not in result.stderr


@pytest.mark.parametrize("stage", ["sft", "dpo", "mcmdpo"])
def test_each_stage_has_a_slurm_example_that_starts_one_launcher_per_node(stage):
    example = REPO_ROOT / "scripts" / "slurm" / f"{stage}.sbatch"
    assert subprocess.run(["bash", "-n", str(example)]).returncode == 0
    text = example.read_text()
    assert "#SBATCH --ntasks-per-node=1" in text and "export NNODES=$SLURM_JOB_NUM_NODES" in text
    assert f"NODE_RANK=$SLURM_NODEID exec bash scripts/{stage}.sh" in text
