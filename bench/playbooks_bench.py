"""Playbook timings on the local testbeds, through remediator.runner (real ansible-runner runs).

    PYTHONPATH=. python bench/playbooks_bench.py [--repeats N]

Measures, each N times: a one-task playbook (the runner's own overhead); restart_service.yml on
a healthy service (a no-op run); fault (kill -9 of the demo service under supervisord) to healed
(the service answers HTTP again) through restart_service.yml; and, where Slurm runs, slurm_drain.yml
moving a running job from node1 to node2 (drain start → job running on node2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleetmedic.transport import wait_until  # noqa: E402
from fleetmedic_demo.testbed import DemoService, SlurmCluster, free_port_block, slurm_missing_reason  # noqa: E402
from remediator.runner import PlaybookRun, run_playbook  # noqa: E402

PLAYBOOKS = ROOT / "playbooks"
NOOP = "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: hi}\n"


def free_port() -> int:
    return free_port_block(1)  # below the ephemeral range: no client socket takes it before the bind


def row(name: str, samples: list[float]) -> str:
    return f"{name:52s} {len(samples):3d} {min(samples):8.2f} {statistics.median(samples):8.2f} {max(samples):8.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fm-bench-") as tmp:
        tmp = Path(tmp)
        artifacts = tmp / "artifacts"
        noop_dir = tmp / "noop"
        noop_dir.mkdir()
        (noop_dir / "noop.yml").write_text(NOOP)

        def play(books, name, extra_vars):
            result = run_playbook(
                PlaybookRun(name, extra_vars, timeout_s=120), playbooks_dir=books, artifacts_dir=artifacts
            )
            if result.status != "succeeded":
                raise RuntimeError(f"{name} {result.status}: {result.summary}")
            return result

        rows.append(
            row(
                "one-task playbook (runner overhead)",
                [play(noop_dir, "noop.yml", {}).duration_s for _ in range(args.repeats)],
            )
        )

        with DemoService(tmp / "sv", port=free_port()) as demo:
            wait_until(lambda: demo.answer() is not None, 10, what="demo answering")
            noop_runs, heal_runs, heal_play = [], [], []
            for _ in range(args.repeats):
                noop_runs.append(play(PLAYBOOKS, "restart_service.yml", demo.restart_vars()).duration_s)
                demo.kill9()
                t_fault = time.monotonic()
                wait_until(lambda: demo.answer() is None, 10, what="demo down")
                result = play(PLAYBOOKS, "restart_service.yml", demo.restart_vars())
                wait_until(lambda: demo.answer() is not None, 30, what="demo answering again")
                heal_runs.append(time.monotonic() - t_fault)
                heal_play.append(result.duration_s)
            rows.append(row("restart_service.yml, service healthy (no-op run)", noop_runs))
            rows.append(row("restart_service.yml, service killed (playbook run)", heal_play))
            rows.append(row("fault (kill -9) → healed (HTTP 200) via the playbook", heal_runs))

        missing = slurm_missing_reason()
        if missing is None:
            import os

            with SlurmCluster(tmp / "slurm") as slurm:
                os.environ["SLURM_CONF"] = str(slurm.conf)
                drains, moves = [], []
                for _ in range(args.repeats):
                    job = slurm.submit("node1")
                    wait_until(
                        lambda job=job: (
                            slurm.job(job).get("NodeList") == "node1" and slurm.job(job)["JobState"] == "RUNNING"
                        ),
                        30,
                        what="job on node1",
                    )
                    t0 = time.monotonic()
                    drains.append(play(PLAYBOOKS, "slurm_drain.yml", {"node": "node1", "reason": "bench"}).duration_s)
                    wait_until(
                        lambda job=job: (
                            slurm.job(job).get("NodeList") == "node2" and slurm.job(job)["JobState"] == "RUNNING"
                        ),
                        30,
                        interval_s=0.05,
                        what="job on node2",
                    )
                    moves.append(time.monotonic() - t0)
                    slurm.run("scancel", "--full", "--signal=KILL", job)
                    play(PLAYBOOKS, "slurm_resume.yml", {"node": "node1"})
                    wait_until(
                        lambda: (
                            not slurm.run("squeue", "-h").strip()
                            and all(slurm.node(n)["State"] == "IDLE" for n in ("node1", "node2"))
                        ),
                        30,
                        what="cluster idle",
                    )
                rows.append(row("slurm_drain.yml (drain node1 + requeue its job)", drains))
                rows.append(row("drain start → job running on node2", moves))
        else:
            rows.append(f"{'slurm: skipped':52s} ({missing})")

    print(f"{'measurement (seconds)':52s} {'n':>3s} {'min':>8s} {'median':>8s} {'max':>8s}")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
