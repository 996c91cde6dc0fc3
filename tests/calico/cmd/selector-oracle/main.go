// Command selectororacle evaluates Calico label selectors with Calico's own
// Go implementation (libcalico-go/lib/selector). It is the reference oracle
// for the Rust differential test in tests/e2e/selector_differential.rs.
//
// Input: one JSON object per line on stdin:
//
//	{"selector": "...", "labels": {"k": "v", ...}}
//
// Output: one JSON object per line on stdout, in the same order:
//
//	{"ok": bool, "canonical": "...", "matches": bool}
//
// ok is false when the selector fails to parse (canonical is then empty and
// matches false). A panic inside Calico's parser is reported as ok=false with
// a "panic" field so the differential test can flag it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/projectcalico/calico/libcalico-go/lib/selector"
	"github.com/sirupsen/logrus"
)

type request struct {
	Selector string            `json:"selector"`
	Labels   map[string]string `json:"labels"`
}

type response struct {
	OK        bool   `json:"ok"`
	Canonical string `json:"canonical"`
	Matches   bool   `json:"matches"`
	Error     string `json:"error,omitempty"`
	Panic     string `json:"panic,omitempty"`
}

func evaluate(req request) (resp response) {
	defer func() {
		if r := recover(); r != nil {
			resp = response{Panic: fmt.Sprint(r)}
		}
	}()
	sel, err := selector.Parse(req.Selector)
	if err != nil {
		return response{Error: err.Error()}
	}
	labels := req.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	return response{OK: true, Canonical: sel.String(), Matches: sel.Evaluate(labels)}
}

func main() {
	logrus.SetLevel(logrus.ErrorLevel)
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	defer out.Flush()
	dec := json.NewDecoder(in)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			if err == io.EOF {
				return
			}
			out.Flush()
			fmt.Fprintln(os.Stderr, "selectororacle: bad input:", err)
			os.Exit(2)
		}
		if err := enc.Encode(evaluate(req)); err != nil {
			fmt.Fprintln(os.Stderr, "selectororacle: write:", err)
			os.Exit(2)
		}
	}
}
