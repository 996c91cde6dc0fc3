package main

// Flow logs in the dataplane lab (`run --calico-goldmane BIN
// --calico-flows-api BIN`, with --calico-felix): the real Goldmane of Calico
// v3.31.0 receives the real flow logs of every lab Felix, and the plugin
// reads them the way it does on a real cluster: through kube-apiserver's
// service proxy to Service calico-system/whisker, port 8081, path
// /whisker-backend/flows (where the whisker pod's nginx serves
// whisker-backend's HTTP API).
//
//   - Goldmane runs in the control node's namespace (as a host-networked pod
//     would), gRPC on :7443 with mutual TLS, certificates from the lab CA;
//     every Felix dials 10.0.0.1:7443 with its own client certificate
//     (FELIX_FLOWLOGSGOLDMANESERVER; Felix presents its Typha client
//     certificate to Goldmane, which is why the FELIX_TYPHA* TLS settings are
//     set although the lab has no Typha) and flushes every
//     flowLogsFlushSeconds, instead of 300 s, so a test sees a flow seconds
//     after it was made.
//   - whisker-backend cannot be built here (its HTTP module is not on the Go
//     module proxy at this release), so tests/calico/cmd/flows-api answers its
//     `GET /flows` from Goldmane's real Flows API, in the same namespace on
//     10.0.0.1:8081.
//   - kube-apiserver's service proxy dials an endpoint of the Service, which
//     must be a Pod's IP; the Pod `whisker-lab` (host-networked on control,
//     so 10.0.0.1) is a record kept by every reset. It carries no `k8s-app`
//     label, so the plugin's critical-flow checks see the lab as a cluster
//     without Whisker, as before.
//   - kube-apiserver runs in the root namespace, which is linked to nothing in
//     the lab. It reaches the lab the way API servers reach pod networks
//     behind Konnectivity: an egress selector (`cluster`) sends its dials to
//     an HTTP CONNECT proxy on DIR/egress.sock, which dials inside the
//     control node's namespace; loopback destinations (calico-apiserver
//     behind the aggregator) are dialled where they are, in the root
//     namespace.

import (
	"bufio"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	goldmanePort        = 7443
	whiskerPort         = 8081
	whiskerPodName      = "whisker-lab"
	flowLogsFlushSecond = "2"
	egressSocket        = "egress.sock"
)

// flowLogBinaries are the programs of the lab's flow-log path.
type flowLogBinaries struct {
	Goldmane string
	FlowsAPI string
}

func (b flowLogBinaries) enabled() bool { return b.Goldmane != "" && b.FlowsAPI != "" }

// goldmaneFiles are the paths of the flow-log path's certificates and keys.
type goldmaneFiles struct {
	CA, ServerCert, ServerKey, FelixCert, FelixKey, APICert, APIKey string
}

// writeGoldmaneCerts issues Goldmane's serving certificate (its Service
// names and the control node's addresses) and client certificates for Felix
// and the flows API, from the lab CA. Keys are written 0600 and never logged.
func writeGoldmaneCerts(p *pki) (goldmaneFiles, error) {
	f := goldmaneFiles{
		CA: p.path("ca.crt"), ServerCert: p.path("goldmane.crt"), ServerKey: p.path("goldmane.key"),
		FelixCert: p.path("goldmane-felix.crt"), FelixKey: p.path("goldmane-felix.key"),
		APICert: p.path("goldmane-flows-api.crt"), APIKey: p.path("goldmane-flows-api.key"),
	}
	server, err := newKeyPair(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "goldmane"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"goldmane", "goldmane.calico-system", "goldmane.calico-system.svc"},
		IPAddresses: []net.IP{net.ParseIP(labControlNodeIP), net.ParseIP("127.0.0.1")},
	}, &p.CA)
	if err != nil {
		return f, err
	}
	felix, err := clientCert(&p.CA, "calico-node")
	if err != nil {
		return f, err
	}
	api, err := clientCert(&p.CA, "whisker-backend")
	if err != nil {
		return f, err
	}
	for path, data := range map[string][]byte{
		f.ServerCert: server.CertPEM, f.ServerKey: server.KeyPEM,
		f.FelixCert: felix.CertPEM, f.FelixKey: felix.KeyPEM,
		f.APICert: api.CertPEM, f.APIKey: api.KeyPEM,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return f, err
		}
	}
	return f, nil
}

// felixFlowLogEnv points a Felix at the lab's Goldmane.
func felixFlowLogEnv(f goldmaneFiles) []string {
	return []string{
		fmt.Sprintf("FELIX_FLOWLOGSGOLDMANESERVER=%s:%d", labControlNodeIP, goldmanePort),
		"FELIX_FLOWLOGSFLUSHINTERVAL=" + flowLogsFlushSecond,
		"FELIX_TYPHACAFILE=" + f.CA,
		"FELIX_TYPHACERTFILE=" + f.FelixCert,
		"FELIX_TYPHAKEYFILE=" + f.FelixKey,
		// Felix refuses Typha TLS files without a name to verify Typha by;
		// the lab has no Typha, so it is never used.
		"FELIX_TYPHACN=calico-typha",
	}
}

// startFlowLogs starts Goldmane and the flows API in the control node's
// namespace and waits until both accept connections.
func startFlowLogs(ctx context.Context, dir string, lab *dataplaneLab, bins flowLogBinaries, f goldmaneFiles,
	supervise func(*supervised)) error {
	control := lab.node("control")
	goldmane := newSupervised(dir, "goldmane", "ip", []string{"netns", "exec", control.Netns, bins.Goldmane}, nil)
	goldmane.start([]string{
		fmt.Sprintf("PORT=%d", goldmanePort),
		"SERVER_CERT_PATH=" + f.ServerCert, "SERVER_KEY_PATH=" + f.ServerKey, "CA_CERT_PATH=" + f.CA,
		// Its health server would take 8080 on the control node; the lab
		// waits on the gRPC port instead.
		"HEALTH_ENABLED=false",
		"LOG_LEVEL=info",
	})
	supervise(goldmane)
	api := newSupervised(dir, "flows-api", "ip", []string{"netns", "exec", control.Netns, bins.FlowsAPI}, nil)
	api.start([]string{
		fmt.Sprintf("LISTEN=%s:%d", labControlNodeIP, whiskerPort),
		fmt.Sprintf("GOLDMANE_HOST=127.0.0.1:%d", goldmanePort),
		"TLS_CERT_PATH=" + f.APICert, "TLS_KEY_PATH=" + f.APIKey, "CA_CERT_PATH=" + f.CA,
	})
	supervise(api)
	for _, port := range []int{goldmanePort, whiskerPort} {
		if err := waitListening(ctx, control.Netns, fmt.Sprintf("%s:%d", labControlNodeIP, port), 30*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// waitListening dials addr from inside ns until it accepts.
func waitListening(ctx context.Context, ns, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := inNetns(ns, func() error {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				conn.Close()
			}
			return err
		})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not listen within %v: %v", addr, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// whiskerPod is the record behind Service whisker's endpoint.
func whiskerPod() *corev1.Pod {
	pod := makePod(podSpec{ns: "calico-system", name: whiskerPodName, node: "control", hostNetwork: true, sa: "default",
		labels: map[string]string{"app.kubernetes.io/name": "whisker"}, image: "quay.io/calico/whisker-backend:" + calicoVersionV,
		ports: []corev1.ContainerPort{tcp("whisker", whiskerPort)}})
	pod.Spec.Containers[0].Name = "whisker-backend"
	pod.Status.ContainerStatuses[0].Name = "whisker-backend"
	return pod
}

// ensureWhiskerService writes Service calico-system/whisker (port 8081, as
// the Tigera operator names it) and its Endpoints, pointing at the record
// pod; reset leaves Services and Endpoints alone.
func (c *clients) ensureWhiskerService(ctx context.Context) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "calico-system", Name: "whisker"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: whiskerPort, Protocol: corev1.ProtocolTCP}},
			Selector: map[string]string{"app.kubernetes.io/name": "whisker"}},
	}
	if _, err := c.cs.CoreV1().Services("calico-system").Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("Service calico-system/whisker: %w", err)
	}
	ep := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "calico-system", Name: "whisker"},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: labControlNodeIP, NodeName: ptr("control"),
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "calico-system", Name: whiskerPodName}}},
			Ports: []corev1.EndpointPort{{Port: whiskerPort, Protocol: corev1.ProtocolTCP}},
		}},
	}
	if _, err := c.cs.CoreV1().Endpoints("calico-system").Create(ctx, ep, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("Endpoints calico-system/whisker: %w", err)
	}
	return nil
}

// egressSelectorConfig sends kube-apiserver's `cluster` dials (service and
// pod proxies, webhooks, the aggregator) to the CONNECT proxy on sock.
func egressSelectorConfig(dir, sock string) (string, error) {
	path := filepath.Join(dir, "egress-selector.yaml")
	config := fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %s
`, sock)
	return path, os.WriteFile(path, []byte(config), 0o644)
}

// egressProxy is the lab's stand-in for a Konnectivity server: HTTP CONNECT
// on a unix socket, dialling into the control node's namespace once the lab
// exists.
type egressProxy struct {
	listener net.Listener
	mu       sync.Mutex
	labNetns string
}

func startEgressProxy(dir string) (*egressProxy, string, error) {
	sock := filepath.Join(dir, egressSocket)
	_ = os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, "", fmt.Errorf("egress proxy: %w", err)
	}
	p := &egressProxy{listener: l}
	go p.serve()
	return p, sock, nil
}

// dialInto makes later non-loopback dials start in the named namespace.
func (p *egressProxy) dialInto(netns string) {
	p.mu.Lock()
	p.labNetns = netns
	p.mu.Unlock()
}

func (p *egressProxy) close() { _ = p.listener.Close() }

func (p *egressProxy) serve() {
	for {
		conn, err := p.listener.Accept()
		if err != nil {
			return
		}
		go p.handle(conn)
	}
}

func (p *egressProxy) handle(conn net.Conn) {
	defer conn.Close()
	reader := bufio.NewReader(conn)
	req, err := http.ReadRequest(reader)
	if err != nil || req.Method != http.MethodConnect {
		_, _ = io.WriteString(conn, "HTTP/1.1 400 Bad Request\r\n\r\n")
		return
	}
	upstream, err := p.dial(req.Host)
	if err != nil {
		_, _ = fmt.Fprintf(conn, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n\r\n%s", len(err.Error()), err.Error())
		return
	}
	defer upstream.Close()
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(upstream, reader); done <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, upstream); done <- struct{}{} }()
	<-done
}

func (p *egressProxy) dial(hostPort string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(host)
	p.mu.Lock()
	netns := p.labNetns
	p.mu.Unlock()
	if host == "localhost" || (ip != nil && ip.IsLoopback()) || netns == "" {
		return net.DialTimeout("tcp", hostPort, 5*time.Second)
	}
	var conn net.Conn
	err = inNetns(netns, func() (err error) {
		conn, err = net.DialTimeout("tcp", hostPort, 5*time.Second)
		return err
	})
	if err != nil {
		return nil, errors.New("dialling " + hostPort + " in the lab: " + strings.TrimSpace(err.Error()))
	}
	return conn, nil
}

// startLabFlowLogs brings up the flow-log path once the lab's network and
// Felix run: Goldmane and the flows API in the control node, the egress
// proxy dialling into it, and the whisker records (the pod through a reset,
// so that every later reset keeps it).
func startLabFlowLogs(ctx context.Context, cp *controlPlane, lab *dataplaneLab, egress *egressProxy, bins flowLogBinaries,
	f goldmaneFiles, supervise func(*supervised)) error {
	start := time.Now()
	if err := startFlowLogs(ctx, cp.dir, lab, bins, f, supervise); err != nil {
		return err
	}
	egress.dialInto(lab.node("control").Netns)
	cp.extraPods = []*corev1.Pod{whiskerPod()}
	if err := cp.resetTo(ctx, "lab"); err != nil {
		return err
	}
	if err := cp.seeder.ensureWhiskerService(ctx); err != nil {
		return err
	}
	logf("flow logs: Goldmane and the flows API ready after %v", time.Since(start).Round(time.Millisecond))
	return nil
}
