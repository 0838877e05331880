"""`k8s_control_plane` is registered for the whole suite by tests/conftest.py (`pytest_plugins`),
so every test directory shares one control plane per session."""
