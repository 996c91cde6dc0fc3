package main

// faultproxy sits between the plugin and the test API server (loopback only) and injects one
// fault on the Nth request: an HTTP 500, 503, 429 with Retry-After, a response that never comes
// (after the request reached the server, the nastiest case), a reset connection, or a delay;
// or it hides projectcalico.org/v3 entirely, as a cluster without Calico's API looks.
// Every other request is passed through unchanged. It writes DIR-style files:
//
//	OUT/kubeconfig   the cluster's admin kubeconfig pointed at the proxy
//	OUT/requests.log one line per request: "<n> <method> <path>"
//	OUT/ready        written last
//
// The proxy terminates TLS with a certificate from the cluster's CA and talks to the API server
// with the admin identity, so the audit log shows the writes as the admin user's.

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

func cmdFaultProxy(args []string) error {
	fs := flag.NewFlagSet("faultproxy", flag.ExitOnError)
	dir := fs.String("dir", "", "the running control plane's directory")
	out := fs.String("out", "", "directory for the proxy's kubeconfig, request log and ready file")
	failAt := fs.Int64("fail-at", 0, "1-based number of the request to fault (0: none)")
	fault := fs.String("fault", "500", "500 | 503 | 429 | timeout | reset | delay | hide-calico")
	hold := fs.Duration("hold", 30*time.Second, "how long `timeout` and `delay` hold the request")
	ownerPID := fs.Int("owner-pid", 0, "exit when this process is gone")
	match := fs.String("match", "", "fault the first request whose \"METHOD URI\" contains this, instead of --fail-at")
	_ = fs.Parse(args)
	if *dir == "" || *out == "" {
		return fmt.Errorf("--dir and --out are required")
	}
	switch *fault {
	case "500", "503", "429", "timeout", "reset", "delay", "hide-calico":
	default:
		return fmt.Errorf("unknown --fault %q", *fault)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}

	cfg, err := clientcmd.LoadFromFile(filepath.Join(*dir, "kubeconfig"))
	if err != nil {
		return err
	}
	admin := cfg.AuthInfos["admin"]
	cluster := cfg.Clusters[cfg.Contexts["admin"].Cluster]
	upstream, err := url.Parse(cluster.Server)
	if err != nil {
		return err
	}
	clientCert, err := tls.X509KeyPair(admin.ClientCertificateData, admin.ClientKeyData)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cluster.CertificateAuthorityData)
	serving, err := servingCertFromCA(filepath.Join(*dir, "pki"))
	if err != nil {
		return err
	}

	proxy := httputil.NewSingleHostReverseProxy(upstream)
	proxy.Transport = &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientCert}},
		ForceAttemptHTTP2: false,
	}
	proxy.FlushInterval = -1

	logFile, err := os.Create(filepath.Join(*out, "requests.log"))
	if err != nil {
		return err
	}
	var logMu sync.Mutex
	var count atomic.Int64
	var matched atomic.Bool
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := count.Add(1)
		logMu.Lock()
		fmt.Fprintf(logFile, "%d %s %s\n", n, r.Method, r.URL.RequestURI())
		_ = logFile.Sync()
		logMu.Unlock()
		// A cluster that does not serve projectcalico.org/v3 at all, on every request.
		if *fault == "hide-calico" {
			p := r.URL.Path
			if strings.HasPrefix(p, "/apis/projectcalico.org") || strings.HasSuffix(p, "/apiservices/v3.projectcalico.org") {
				writeStatus(w, 404, "NotFound", "the server could not find the requested resource", 0)
				return
			}
		}
		line := r.Method + " " + r.URL.RequestURI()
		hit := n == *failAt
		if *match != "" {
			hit = strings.Contains(line, *match) && matched.CompareAndSwap(false, true)
		}
		if !hit {
			proxy.ServeHTTP(w, r)
			return
		}
		switch *fault {
		case "500", "503":
			code := 500
			if *fault == "503" {
				code = 503
			}
			writeStatus(w, code, "InternalError", "injected fault", 0)
		case "429":
			w.Header().Set("Retry-After", "1")
			writeStatus(w, 429, "TooManyRequests", "injected throttling", 1)
		case "timeout":
			// The request reaches the server; its answer never reaches the client.
			rec := &discardWriter{header: http.Header{}}
			proxy.ServeHTTP(rec, r)
			select {
			case <-time.After(*hold):
			case <-r.Context().Done():
			}
		case "delay":
			time.Sleep(*hold)
			proxy.ServeHTTP(w, r)
		case "reset":
			hj, ok := w.(http.Hijacker)
			if !ok {
				writeStatus(w, 500, "InternalError", "cannot hijack", 0)
				return
			}
			conn, _, err := hj.Hijack()
			if err == nil {
				if tcp, ok := conn.(*tls.Conn).NetConn().(*net.TCPConn); ok {
					_ = tcp.SetLinger(0)
				}
				_ = conn.Close()
			}
		}
	})

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	server := &http.Server{
		Handler: handler,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{serving},
			ClientAuth:   tls.RequestClientCert,
			NextProtos:   []string{"http/1.1"},
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = server.ServeTLS(listener, "", "") }()

	cluster.Server = "https://" + listener.Addr().String()
	if err := clientcmd.WriteToFile(*cfg, filepath.Join(*out, "kubeconfig")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "ready"), []byte(cluster.Server+"\n"), 0o644); err != nil {
		return err
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	ticker := time.NewTicker(500 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return server.Close()
		case <-ticker.C:
			if *ownerPID > 0 && syscall.Kill(*ownerPID, 0) != nil {
				return server.Close()
			}
		}
	}
}

type discardWriter struct{ header http.Header }

func (d *discardWriter) Header() http.Header         { return d.header }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

func writeStatus(w http.ResponseWriter, code int, reason, message string, retryAfter int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	details := ""
	if retryAfter > 0 {
		details = fmt.Sprintf(`,"details":{"retryAfterSeconds":%d}`, retryAfter)
	}
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":%q,"reason":%q,"code":%d%s}`,
		message, reason, code, details)
}

// servingCertFromCA issues a certificate for 127.0.0.1 from the cluster's CA, so clients that
// trust the cluster trust the proxy.
func servingCertFromCA(pkiDir string) (tls.Certificate, error) {
	caCertPEM, err := os.ReadFile(filepath.Join(pkiDir, "ca.crt"))
	if err != nil {
		return tls.Certificate{}, err
	}
	caKeyPEM, err := os.ReadFile(filepath.Join(pkiDir, "ca.key"))
	if err != nil {
		return tls.Certificate{}, err
	}
	ca, err := tls.X509KeyPair(caCertPEM, caKeyPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "calico-harden-fault-proxy"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:    []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	caKey, ok := ca.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return tls.Certificate{}, fmt.Errorf("the cluster CA key is not ECDSA")
	}
	kp, err := newKeyPair(tmpl, &keyPair{cert: caCert, key: caKey})
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
}
