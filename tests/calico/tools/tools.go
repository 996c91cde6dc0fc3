//go:build tools

// Package tools pins the Calico v3.31.0 programs the test bed builds, so that
// `go mod tidy` keeps their dependencies in go.sum.
package tools

import (
	_ "github.com/projectcalico/calico/apiserver/cmd/apiserver"
	_ "github.com/projectcalico/calico/felix/cmd/calico-felix"
	_ "github.com/projectcalico/calico/goldmane/cmd"
	_ "github.com/projectcalico/calico/kube-controllers/cmd/kube-controllers"
)
