"""The emulator's own tests use the emulator fixtures and the real control plane to compare;
both are registered once for the whole suite by tests/conftest.py (`pytest_plugins`)."""
