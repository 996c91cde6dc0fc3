// Command flows-api answers `GET /flows` the way Calico v3.31.0's
// whisker-backend does, from the real Goldmane over its real gRPC Flows API
// (goldmane/pkg/client, mutual TLS). It stands in for whisker-backend in the
// dataplane lab only because whisker-backend's HTTP framework,
// github.com/projectcalico/calico/lib/httpmachinery, is a module of its own
// that the Go module proxy does not serve at this release (`go mod download
// .../lib/httpmachinery@v0.0.0-20251021213802-b1f3c43f8437` fails), so
// whisker-backend cannot be built from this module.
//
// What it keeps of whisker-backend (whisker-backend/pkg/handlers/v1 and
// pkg/apis/v1): the path (also under /whisker-backend/, where the whisker
// pod's nginx serves it), the query parameters startTimeGte and startTimeLt
// (seconds; negative = relative to now, as Goldmane reads them), the list
// envelope `{"items": [...], "total": {...}}` the Whisker UI reads, and each
// item's fields and their JSON names (FlowResponse, PolicyTrace, PolicyHit;
// enums as their proto names). What it leaves out: `filters`, `sortBy`,
// `watch` (streaming) and `/flows-filter-hints`; the plugin uses none of them.
//
// Environment: LISTEN (host:port), GOLDMANE_HOST, TLS_CERT_PATH, TLS_KEY_PATH,
// CA_CERT_PATH (whisker-backend's names for the Goldmane client's mTLS).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"

	"github.com/projectcalico/calico/goldmane/pkg/client"
	"github.com/projectcalico/calico/goldmane/proto"
)

type policyHit struct {
	Kind        string     `json:"kind"`
	Name        string     `json:"name"`
	Namespace   string     `json:"namespace"`
	Tier        string     `json:"tier"`
	Action      string     `json:"action"`
	PolicyIndex int64      `json:"policy_index"`
	RuleIndex   int64      `json:"rule_index"`
	Trigger     *policyHit `json:"trigger"`
}

type policyTrace struct {
	Enforced []*policyHit `json:"enforced"`
	Pending  []*policyHit `json:"pending"`
}

type flowResponse struct {
	StartTime       time.Time   `json:"start_time"`
	EndTime         time.Time   `json:"end_time"`
	Action          string      `json:"action"`
	SourceName      string      `json:"source_name"`
	SourceNamespace string      `json:"source_namespace"`
	SourceLabels    string      `json:"source_labels"`
	DestName        string      `json:"dest_name"`
	DestNamespace   string      `json:"dest_namespace"`
	DestLabels      string      `json:"dest_labels"`
	Protocol        string      `json:"protocol"`
	DestPort        int64       `json:"dest_port"`
	Reporter        string      `json:"reporter"`
	Policies        policyTrace `json:"policies"`
	PacketsIn       int64       `json:"packets_in"`
	PacketsOut      int64       `json:"packets_out"`
	BytesIn         int64       `json:"bytes_in"`
	BytesOut        int64       `json:"bytes_out"`
}

type listResponse struct {
	Items []flowResponse `json:"items"`
	Total struct {
		TotalPages int `json:"totalPages"`
	} `json:"total"`
}

func toHit(h *proto.PolicyHit) *policyHit {
	if h == nil {
		return nil
	}
	return &policyHit{Kind: h.Kind.String(), Name: h.Name, Namespace: h.Namespace, Tier: h.Tier, Action: h.Action.String(),
		PolicyIndex: h.PolicyIndex, RuleIndex: h.RuleIndex, Trigger: toHit(h.Trigger)}
}

// toFlow is whisker-backend's protoToFlow (names of the "pub"/"pvt"
// aggregated networks and "-" namespaces as whisker-backend spells them).
func toFlow(f *proto.Flow) flowResponse {
	trace := policyTrace{}
	if p := f.Key.Policies; p != nil {
		for _, h := range p.EnforcedPolicies {
			trace.Enforced = append(trace.Enforced, toHit(h))
		}
		for _, h := range p.PendingPolicies {
			trace.Pending = append(trace.Pending, toHit(h))
		}
	}
	name := func(n string) string {
		switch n {
		case "pub":
			return "PUBLIC NETWORK"
		case "pvt":
			return "PRIVATE NETWORK"
		}
		return n
	}
	return flowResponse{
		StartTime: time.Unix(f.StartTime, 0), EndTime: time.Unix(f.EndTime, 0), Action: f.Key.Action.String(),
		SourceName: name(f.Key.SourceName), SourceNamespace: f.Key.SourceNamespace, SourceLabels: strings.Join(f.SourceLabels, " | "),
		DestName: name(f.Key.DestName), DestNamespace: f.Key.DestNamespace, DestLabels: strings.Join(f.DestLabels, " | "),
		Protocol: f.Key.Proto, DestPort: f.Key.DestPort, Reporter: f.Key.Reporter.String(), Policies: trace,
		PacketsIn: f.PacketsIn, PacketsOut: f.PacketsOut, BytesIn: f.BytesIn, BytesOut: f.BytesOut,
	}
}

func queryInt(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	return strconv.ParseInt(v, 10, 64)
}

func main() {
	creds, err := client.ClientCredentials(os.Getenv("TLS_CERT_PATH"), os.Getenv("TLS_KEY_PATH"), os.Getenv("CA_CERT_PATH"))
	if err != nil {
		logrus.WithError(err).Fatal("goldmane client credentials")
	}
	flows, err := client.NewFlowsAPIClient(os.Getenv("GOLDMANE_HOST"), grpc.WithTransportCredentials(creds))
	if err != nil {
		logrus.WithError(err).Fatal("goldmane client")
	}
	list := func(w http.ResponseWriter, r *http.Request) {
		gte, err1 := queryInt(r, "startTimeGte")
		lt, err2 := queryInt(r, "startTimeLt")
		if err1 != nil || err2 != nil {
			http.Error(w, "startTimeGte and startTimeLt are integers", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		meta, results, err := flows.List(ctx, &proto.FlowListRequest{StartTimeGte: gte, StartTimeLt: lt})
		if err != nil {
			logrus.WithError(err).Error("failed to list flows")
			http.Error(w, "Internal Server Error", http.StatusInternalServerError)
			return
		}
		rsp := listResponse{Items: []flowResponse{}}
		rsp.Total.TotalPages = int(meta.GetTotalPages())
		for _, f := range results {
			rsp.Items = append(rsp.Items, toFlow(f.Flow))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rsp)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /flows", list)
	mux.HandleFunc("GET /whisker-backend/flows", list)
	addr := os.Getenv("LISTEN")
	fmt.Printf("flows-api listening on %s, Goldmane at %s\n", addr, os.Getenv("GOLDMANE_HOST"))
	if err := http.ListenAndServe(addr, mux); err != nil {
		logrus.WithError(err).Fatal("serve")
	}
}
