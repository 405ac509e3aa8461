"""docs/cluster.md: the Kubernetes manifest parses and has the fields a worker fleet depends on, and every
`hpsearch slurm` option the page shows exists."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from hpsearch.cli import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"


def manifests() -> dict[str, dict]:
    """The YAML blocks' documents, by kind."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(), re.S | re.M)
    assert len(blocks) == 1, "one Kubernetes manifest"
    return {doc["kind"]: doc for doc in yaml.safe_load_all(blocks[0])}


def test_the_kubernetes_job_is_an_indexed_job_of_workers_with_the_storage_url_from_the_secret():
    docs = manifests()
    secret, job = docs["Secret"], docs["Job"]
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert isinstance(spec["parallelism"], int) and spec["parallelism"] == spec["completions"] >= 2
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    assert pod["terminationGracePeriodSeconds"] >= 30, "time for the worker to checkpoint and re-queue"
    (worker,) = pod["containers"]
    assert re.fullmatch(r"[\w.-]+(:\d+)?/[\w./-]+:[\w.-]+", worker["image"]), "an image with a tag"
    command = worker["command"]
    assert command[:2] == ["hpsearch", "worker"], "the worker itself, no shell in front (one SIGTERM)"
    study = command[command.index("--study") + 1]
    assert study == "fashion_mnist"
    env = {e["name"]: e for e in worker["env"]}
    ref = env["HPSEARCH_STORAGE"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert secret["stringData"][ref["key"]].startswith("postgresql+psycopg://")
    assert "value" not in env["HPSEARCH_STORAGE"], "the URL is not in the Job"
    artifacts = command[command.index("--artifacts") + 1]
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "persistentVolumeClaim" in volumes[mounts[artifacts]], "checkpoints on a volume every pod shares"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_page_creates_the_study_before_the_job_and_its_slurm_options_exist():
    text = DOC.read_text()
    create = text.index("**1. Create the study first**")
    assert create < text.index("```yaml"), "the create step comes before the Job"
    options = {opt for p in cli.commands["slurm"].params for opt in p.opts}
    commands = [re.sub(r'"[^"]*"', "", line) for line in text.splitlines()  # quoted: --extra's #SBATCH line
                if line.startswith(("hpsearch slurm", "    --"))]
    shown = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", "\n".join(commands)))
    assert shown and shown <= options, shown - options
