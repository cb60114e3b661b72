// Command etcd is etcd's own main (etcdmain.Main), built by ../../build.sh from the
// go.etcd.io/etcd/server/v3 module at the release Kubernetes' own go.mod names. Debian's etcd
// 3.4 lacks the watch progress notifications that client-go v0.35+ informers rely on.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
