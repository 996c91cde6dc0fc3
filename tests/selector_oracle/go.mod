module calico-harden/selectororacle

// Calico's selector package only needs logrus and libcalico-go/lib/hash, so the calico
// module's `replace github.com/projectcalico/api => ./api` (which does not apply to
// dependents) is never needed for building. Plain `go mod tidy` fails because it also walks
// the tests of Calico's packages, which import projectcalico/api; use `go mod tidy -e`.

go 1.23.8

require (
	github.com/projectcalico/calico v1.11.0-cni-plugin.0.20250813170300-a0db560f0520
	github.com/sirupsen/logrus v1.9.3
)

require golang.org/x/sys v0.33.0 // indirect
