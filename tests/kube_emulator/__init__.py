"""An HTTP-level Kubernetes API emulator for the fast integration tier.

Real worker processes talk to it with the real ``kubernetes`` client through a kubeconfig
it writes; the test drives it from the pytest thread: it moves Job and Pod status (there
is no controller), sets pod logs, injects API faults and counts the requests made. It is
built on kmock's ``KubernetesEmulator`` and ``Server``, with a thin handler in front that
serves jobs, pods and namespaces the way the real API server does (see ``_handler``).

Not a control plane: nothing schedules pods or runs the Job controller, garbage collection
happens at once, and only the behaviours in ``test_emulator.py`` are checked. End-to-end
tests run against the real control plane instead.
"""

from ._emulator import DEFAULT_TOKEN, DEFAULT_USER, KubeEmulator
from ._handler import RecordedRequest

__all__ = ["DEFAULT_TOKEN", "DEFAULT_USER", "KubeEmulator", "RecordedRequest"]
