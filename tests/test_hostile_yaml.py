"""Deeply nested YAML is a clear configuration error, not a crash (found by the fuzz suite, issue 13)."""

import pytest

from detectors.config import load_config
from fleetmedic.yamlfile import ConfigFileError
from remediator.policy import load_policy


@pytest.mark.parametrize("loader", [load_config, load_policy])
def test_deeply_nested_yaml_is_a_config_error(tmp_path, loader):
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 5000)  # before: RecursionError out of the loader
    with pytest.raises(ConfigFileError, match="nested too deeply"):
        loader(path)
