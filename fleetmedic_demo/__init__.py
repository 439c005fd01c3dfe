"""The demo and the local targets it, the tests and the benchmarks drive: not a pipeline stage.

- `fleetmedic_demo.cli`: the `fleetmedic demo` command (what `make demo` runs).
- `fleetmedic_demo.demo`: the whole loop, fleet → detectors → remediator → playbooks.
- `fleetmedic_demo.demo_loop`: its closed-loop scenes on real targets, and their timelines.
- `fleetmedic_demo.demo_alertmanager`: the scene with a real Alertmanager.
- `fleetmedic_demo.testbed`: the local remediation targets (supervisord service, Slurm cluster,
  the three-host SSH testbed), driving the scripts of deploy/testbed/.

It sits beside the stages, above them: it may import any of them, and none of them imports it.
"""
