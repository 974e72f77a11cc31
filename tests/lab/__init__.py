"""Test harness for real components: etcd, network namespaces, dockerd
hosts and an image registry, all made per test run and removed afterwards
(see common.py)."""

from .common import LabError, LabProcess, RUN, lab_name
from .dockerd import DockerHost
from .etcd import EtcdCluster, EtcdServer
from .images import import_busybox
from .netns import Lab

__all__ = ["DockerHost", "EtcdCluster", "EtcdServer", "Lab", "LabError", "LabProcess", "RUN",
           "import_busybox", "lab_name"]
