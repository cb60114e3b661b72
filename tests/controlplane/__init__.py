"""A real Kubernetes control plane for tests: etcd + kube-apiserver on loopback (see build.sh)."""
