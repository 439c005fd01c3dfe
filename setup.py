"""Build hook: ship the repo's playbooks/, deploy/ and schemas/ inside the package.

They are top-level folders of the repo (playbook authors and operators work in them there),
but an installed fleetmedic needs them too: the remediator's default playbooks directory, the
broker's pinned pom, the testbed scripts, the unit files and manifests, the JSON Schemas. They
are copied into ``fleetmedic/_bundled/`` of the build; `fleetmedic.resources.bundled` finds
them there, or in the checkout when running from source. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("playbooks", "deploy", "schemas")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "target")


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        here = Path(__file__).resolve().parent
        for name in BUNDLED:
            source = here / name
            if not source.is_dir():
                raise SystemExit(f"setup.py: {source} is missing (an sdist without it cannot build a wheel)")
            target = Path(self.build_lib) / "fleetmedic" / "_bundled" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=IGNORE)


setup(cmdclass={"build_py": BuildPyWithData})
