"""`fleetmedic doctor`: check a deployment, say what is wrong and how to fix it.

Read-only, like `topics create --check`: it connects, lists, describes and pings, and changes
nothing. One `Finding` per check and problem, each `ok`, `warn` (works, but deserves a look),
`fail` (this deployment will not work as configured) or `skip` (not checked: a check it depends
on failed, or the role does not need it). The checks, in order:

- **broker**: the bootstrap list answers; the broker's version (as kafka-python's API-version
  probe reads it), the number of brokers and the controller.
- **topics**: every configured topic exists with the configured partitions, replication factor
  and settings (the same comparison as `fleetmedic topics create --check`).
- **acls**: the configured principal's ACLs (DescribeAcls) against what `--role` needs; a cluster
  without an authorizer answers "security disabled", reported as "no ACLs are enforced".
- **lag**: each consumer group's committed offsets against the end of its partitions.
- **ansible**: ansible-playbook and ansible-runner are installed (roles that run playbooks).
- **playbooks**: the playbooks directory exists and holds every playbook the policy names.
- **inventory**: every host of the Ansible inventory answers Ansible's own ping (SSH and Python,
  with the inventory's connection settings), with a timeout per host.

The modules: `findings` (what a check reports), `bus` (broker, topics, acls, lag),
`remediation` (ansible, playbooks, inventory), `runner` (`Doctor`, which runs them in order,
and the `fleetmedic doctor` command).

This package sits on top of the stages (it reads the remediator's policy); `fleetmedic doctor`
runs from the base install: the ansible checks report what is missing instead of failing.
"""
