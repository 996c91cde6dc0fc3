package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

// auditPolicy logs write verbs of kubeconfig users at Request level (so the
// request body is there too) and nothing else. The apiserver's own identity,
// the seeder (used by `run`'s setup and by `reset`) and the emulator are
// excluded, so DIR/audit.log holds only what kubeconfig users did.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  users: ["system:apiserver", "` + seederUser + `", "` + emulatorUser + `"]
- level: None
  userGroups: ["system:nodes", "system:serviceaccounts"]
- level: Request
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
`

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// redirectOutput points this process's stdout and stderr (and so klog, etcd's
// zap logger and any panic) at DIR/controlplane.log.
func redirectOutput(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, "controlplane.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if err := syscall.Dup3(int(f.Fd()), 1, 0); err != nil {
		return err
	}
	return syscall.Dup3(int(f.Fd()), 2, 0)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s controlplane: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func startEtcd(dir string) (*embed.Etcd, string, error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	cfg := embed.NewConfig()
	cfg.Name = "controlplane"
	cfg.Dir = filepath.Join(dir, "etcd")
	clientURL, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(clientPort))
	peerURL, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(peerPort))
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	// A throw-away test datastore: durability does not matter, speed does.
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		return nil, "", errors.New("etcd did not become ready within 60s")
	}
	return e, clientURL.String(), nil
}

type readyInfo struct {
	PID        int    `json:"pid"`
	OwnerPID   int    `json:"owner_pid"`
	Server     string `json:"server"`
	Kubeconfig string `json:"kubeconfig"`
	Seed       string `json:"seed"`
	Socket     string `json:"socket"`
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory (required)")
	seedName := fs.String("seed", "lab", "seed: lab, native or empty")
	ownerPID := fs.Int("owner-pid", 0, "exit when this process is gone")
	crdDir := fs.String("calico-crd-dir", "", "directory with Calico's crd.projectcalico.org_*.yaml (required)")
	_ = fs.Parse(args)
	if *dir == "" || *crdDir == "" {
		return errors.New("--dir and --calico-crd-dir are required")
	}
	if _, err := seedByName(*seedName); err != nil {
		return err
	}
	absDir, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(absDir, 0o755); err != nil {
		return err
	}
	for _, stale := range []string{"ready", "pid", "audit.log", "control.sock", "etcd", "kubecache"} {
		_ = os.RemoveAll(filepath.Join(absDir, stale))
	}
	if err := redirectOutput(absDir); err != nil {
		return err
	}
	start := time.Now()
	logf("starting in %s (seed %s, owner pid %d)", absDir, *seedName, *ownerPID)
	if err := writeFileAtomic(filepath.Join(absDir, "pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}

	// Detached like nohup: a closing terminal does not stop us.
	signal.Ignore(syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if *ownerPID > 0 {
		go watchOwner(ctx, *ownerPID, cancel)
	}

	err = runControlPlane(ctx, cancel, absDir, *seedName, *crdDir, *ownerPID, start)
	_ = os.Remove(filepath.Join(absDir, "ready"))
	_ = os.Remove(filepath.Join(absDir, "pid"))
	_ = os.Remove(filepath.Join(absDir, "control.sock"))
	if err != nil {
		logf("exiting with error: %v", err)
	} else {
		logf("stopped cleanly")
	}
	klog.Flush()
	return err
}

func watchOwner(ctx context.Context, pid int, cancel context.CancelFunc) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				logf("owner process %d is gone: shutting down", pid)
				cancel()
				return
			}
		}
	}
}

func runControlPlane(ctx context.Context, cancel context.CancelFunc, dir, seedName, crdDir string, ownerPID int, start time.Time) error {
	crds, err := loadCalicoCRDs(crdDir)
	if err != nil {
		return err
	}
	p, err := newPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	etcd, etcdURL, err := startEtcd(dir)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer func() {
		etcd.Close()
		logf("etcd stopped")
	}()
	logf("etcd ready at %s after %v", etcdURL, time.Since(start).Round(time.Millisecond))

	port, err := freePort()
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	if err := seedKubernetesEndpoints(ctx, etcdURL, port); err != nil {
		return fmt.Errorf("kubernetes endpoints: %w", err)
	}
	policyPath := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policyPath, []byte(auditPolicy), 0o644); err != nil {
		return err
	}
	apiCtx, apiCancel := context.WithCancel(context.Background())
	defer apiCancel()
	apiDone := make(chan error, 1)
	go func() {
		apiDone <- runAPIServer(apiCtx, apiServerArgs(dir, p, etcdURL, port, policyPath))
	}()
	stopAPIServer := func() {
		apiCancel()
		select {
		case err := <-apiDone:
			if err != nil {
				logf("kube-apiserver stopped: %v", err)
			} else {
				logf("kube-apiserver stopped")
			}
		case <-time.After(15 * time.Second):
			logf("kube-apiserver did not stop within 15s; stopping etcd anyway")
		}
	}

	seederCfg := restConfig(server, p, &p.Seeder)
	if err := waitHealthy(ctx, seederCfg, apiDone); err != nil {
		stopAPIServer()
		return err
	}
	logf("kube-apiserver ready at %s after %v", server, time.Since(start).Round(time.Millisecond))

	c, err := newClients(seederCfg)
	if err != nil {
		stopAPIServer()
		return err
	}
	if err := installCRDs(ctx, c, crds); err != nil {
		stopAPIServer()
		return fmt.Errorf("installing Calico CRDs: %w", err)
	}
	logf("Calico CRDs established as projectcalico.org/v3 after %v", time.Since(start).Round(time.Millisecond))

	emuClients, err := newClients(restConfig(server, p, &p.Emulator))
	if err != nil {
		stopAPIServer()
		return err
	}
	emuClients.calico = c.calico
	emu := newEmulator(emuClients)
	if err := c.resetTo(ctx, seedName, emu); err != nil {
		stopAPIServer()
		return fmt.Errorf("applying seed %s: %w", seedName, err)
	}
	logf("seed %s applied after %v", seedName, time.Since(start).Round(time.Millisecond))

	if err := writeKubeconfigs(dir, server, p); err != nil {
		stopAPIServer()
		return err
	}
	go emu.run(ctx)
	sock := filepath.Join(dir, "control.sock")
	if err := serveControlSocket(ctx, sock, c, emu); err != nil {
		stopAPIServer()
		return err
	}

	info, _ := json.MarshalIndent(readyInfo{
		PID: os.Getpid(), OwnerPID: ownerPID, Server: server, Kubeconfig: filepath.Join(dir, "kubeconfig"), Seed: seedName, Socket: sock,
	}, "", "  ")
	if err := writeFileAtomic(filepath.Join(dir, "ready"), append(info, '\n'), 0o644); err != nil {
		stopAPIServer()
		return err
	}
	logf("ready after %v", time.Since(start).Round(time.Millisecond))

	select {
	case <-ctx.Done():
		logf("shutting down")
		_ = os.Remove(filepath.Join(dir, "ready"))
		stopAPIServer()
		return nil
	case err := <-apiDone:
		cancel()
		return fmt.Errorf("kube-apiserver exited: %v", err)
	}
}

func restConfig(server string, p *pki, id *keyPair) *rest.Config {
	return &rest.Config{
		Host: server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   p.CA.CertPEM,
			CertData: id.CertPEM,
			KeyData:  id.KeyPEM,
		},
		QPS:   1000,
		Burst: 2000,
	}
}
