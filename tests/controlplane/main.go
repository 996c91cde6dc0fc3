// Command controlplane is the test control plane of kubectl-calico-harden: an
// embedded etcd plus an in-process kube-apiserver, Calico's CRDs served as
// projectcalico.org/v3, seed data that looks like a small k3s+Calico lab
// cluster, and an emulation of calico-kube-controllers' HostEndpoint
// auto-creation. Nothing here ever sends traffic off the loopback interface.
//
// Subcommands:
//
//	controlplane run   --dir DIR --seed lab|native|empty --calico-crd-dir PATH [--owner-pid PID]
//	controlplane reset --dir DIR --seed lab|native|empty
//	controlplane faultproxy --dir DIR --out OUT --fail-at N --fault 500|503|429|timeout|reset|delay
//	controlplane scale-seed --dir DIR [--nodes N] [--pods N] [--policies N]
//	controlplane probe --dir DIR --from SRC --to DST --port tcp/N|udp/N (dataplane lab)
//	controlplane dataplane-down --dir DIR
//
// See README.md next to this file.
package main

import (
	"fmt"
	"os"
)

func usage() {
	fmt.Fprintf(os.Stderr, `usage:
  controlplane run   --dir DIR --seed lab|native|empty --calico-crd-dir PATH [--owner-pid PID]
  controlplane reset --dir DIR --seed lab|native|empty
  controlplane faultproxy --dir DIR --out OUT --fail-at N --fault 500|503|429|timeout|reset|delay|hide-calico [--match S] [--hold D] [--owner-pid PID]
  controlplane scale-seed --dir DIR [--nodes N] [--pods N] [--policies N]
  controlplane probe --dir DIR --from SRC --to DST --port tcp/N|udp/N [--timeout D]
  controlplane dataplane-down --dir DIR
`)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = cmdRun(os.Args[2:])
	case "reset":
		err = cmdReset(os.Args[2:])
	case "faultproxy":
		err = cmdFaultProxy(os.Args[2:])
	case "scale-seed":
		err = cmdScaleSeed(os.Args[2:])
	case "probe":
		os.Exit(cmdProbe(os.Args[2:]))
	case "dataplane-down":
		err = cmdDataplaneDown(os.Args[2:])
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "unknown subcommand %q\n", os.Args[1])
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "controlplane %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
