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
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

// auditPolicy logs write verbs of kubeconfig users at Request level (so the
// request body is there too) and nothing else. The control plane's own
// identities (the apiserver, the seeder used by `run`'s setup and by `reset`,
// the kubelet stand-in, Calico's components) are excluded, so the audit logs
// hold only what kubeconfig users did. kube-apiserver only proxies
// projectcalico.org/v3 to calico-apiserver and never sees those request
// bodies: in the aggregated mode it leaves that group to calico-apiserver's
// own audit log (same policy, DIR/calico-apiserver-audit.log).
func auditPolicy(skipCalicoGroup bool) string {
	skip := ""
	if skipCalicoGroup {
		skip = `- level: None
  resources: [{group: "` + calicoGroup + `"}]
`
	}
	return `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  users: ["system:apiserver", "` + seederUser + `", "` + emulatorUser + `", "` + calicoAPIServerUser + `", "` + kubeControllersUser + `"]
- level: None
  userGroups: ["system:nodes", "system:serviceaccounts"]
` + skip + `- level: Request
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
`
}

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
	crdDir := fs.String("calico-crd-dir", "", "directory with Calico's CRD manifests (required)")
	var bins calicoBinaries
	var flowLogBins flowLogBinaries
	fs.StringVar(&bins.APIServer, "calico-apiserver", "", "calico-apiserver binary (required unless --seed native)")
	fs.StringVar(&bins.KubeControllers, "calico-kube-controllers", "", "calico-kube-controllers binary (required unless --seed native)")
	fs.StringVar(&bins.Felix, "calico-felix", "", "calico-felix binary: run the dataplane lab (seed lab, root; see dataplane.go)")
	fs.StringVar(&flowLogBins.Goldmane, "calico-goldmane", "", "Goldmane binary: flow logs in the dataplane lab (with --calico-flows-api; see goldmane.go)")
	fs.StringVar(&flowLogBins.FlowsAPI, "calico-flows-api", "", "flows-api binary (tests/calico/cmd/flows-api)")
	_ = fs.Parse(args)
	if *dir == "" || *crdDir == "" {
		return errors.New("--dir and --calico-crd-dir are required")
	}
	if *seedName != "native" && (bins.APIServer == "" || bins.KubeControllers == "") {
		return errors.New("--calico-apiserver and --calico-kube-controllers are required (built from tests/calico)")
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
	for _, stale := range []string{"ready", "pid", "audit.log", "calico-apiserver-audit.log", "calico-apiserver.log",
		"calico-kube-controllers.log", "control.sock", "etcd", "kubecache"} {
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

	if flowLogBins.enabled() && bins.Felix == "" {
		return errors.New("--calico-goldmane needs the dataplane lab (--calico-felix)")
	}
	err = runControlPlane(ctx, cancel, absDir, *seedName, *crdDir, bins, flowLogBins, *ownerPID, start)
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

// controlPlane is the running bed: the seeder's clients, Calico's supervised
// components (aggregated mode only) and the stand-ins.
type controlPlane struct {
	dir    string
	native bool
	seeder *clients
	emu    *emulator
	// kubeControllers is nil in the native mode.
	kubeControllers *supervised
	// kubeControllersEnv holds the overrides set through the control socket
	// (NAME=value), cleared by reset.
	kubeControllersEnv []string
	// extraPods are pod records every reset keeps besides the seed's.
	extraPods []*corev1.Pod
}

func runControlPlane(ctx context.Context, cancel context.CancelFunc, dir, seedName, crdDir string, bins calicoBinaries,
	flowLogBins flowLogBinaries, ownerPID int, start time.Time) error {
	seed, err := seedByName(seedName)
	if err != nil {
		return err
	}
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
	policyPath := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policyPath, []byte(auditPolicy(!seed.Native)), 0o644); err != nil {
		return err
	}
	apiArgs := apiServerArgs(dir, p, etcdURL, port, policyPath)
	var egress *egressProxy
	if flowLogBins.enabled() {
		// Before kube-apiserver starts: its egress selector is read once.
		var sock string
		if egress, sock, err = startEgressProxy(dir); err != nil {
			return err
		}
		defer egress.close()
		config, err := egressSelectorConfig(dir, sock)
		if err != nil {
			return err
		}
		apiArgs = append(apiArgs, "--egress-selector-config-file="+config)
	}
	apiCtx, apiCancel := context.WithCancel(context.Background())
	defer apiCancel()
	apiDone := make(chan error, 1)
	go func() {
		apiDone <- runAPIServer(apiCtx, apiArgs)
	}()
	// Calico's components stop before kube-apiserver, so they exit quietly.
	componentsDone := make(chan struct{})
	var components sync.WaitGroup
	stopAll := func() {
		close(componentsDone)
		components.Wait()
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
	supervise := func(s *supervised) {
		components.Add(1)
		go func() {
			defer components.Done()
			s.run(componentsDone)
		}()
	}

	seederCfg := restConfig(server, p, &p.Seeder)
	if err := waitHealthy(ctx, seederCfg, apiDone); err != nil {
		stopAll()
		return err
	}
	logf("kube-apiserver ready at %s after %v", server, time.Since(start).Round(time.Millisecond))

	cp, err := setUp(ctx, dir, seed, crds, bins, p, server, supervise, start)
	if err != nil {
		stopAll()
		return err
	}
	if err := writeKubeconfigs(dir, server, p); err != nil {
		stopAll()
		return err
	}
	if bins.Felix != "" {
		var felixFlowLogs []string
		var goldmaneCerts goldmaneFiles
		if flowLogBins.enabled() {
			if goldmaneCerts, err = writeGoldmaneCerts(p); err != nil {
				stopAll()
				return fmt.Errorf("goldmane certificates: %w", err)
			}
			felixFlowLogs = felixFlowLogEnv(goldmaneCerts)
		}
		dp, err := startDataplane(ctx, dir, seed, bins.Felix, p, port, supervise, felixFlowLogs...)
		if dp != nil {
			// Deferred: runs after stopAll has stopped Felix.
			defer dp.teardown()
		}
		if err != nil {
			stopAll()
			return fmt.Errorf("dataplane lab: %w", err)
		}
		if flowLogBins.enabled() {
			if err := startLabFlowLogs(ctx, cp, dp.lab, egress, flowLogBins, goldmaneCerts, supervise); err != nil {
				stopAll()
				return fmt.Errorf("flow logs: %w", err)
			}
		}
	}
	go cp.emu.run(ctx)
	sock := filepath.Join(dir, "control.sock")
	if err := serveControlSocket(ctx, sock, cp); err != nil {
		stopAll()
		return err
	}

	info, _ := json.MarshalIndent(readyInfo{
		PID: os.Getpid(), OwnerPID: ownerPID, Server: server, Kubeconfig: filepath.Join(dir, "kubeconfig"), Seed: seedName, Socket: sock,
	}, "", "  ")
	if err := writeFileAtomic(filepath.Join(dir, "ready"), append(info, '\n'), 0o644); err != nil {
		stopAll()
		return err
	}
	logf("ready after %v", time.Since(start).Round(time.Millisecond))

	select {
	case <-ctx.Done():
		logf("shutting down")
		_ = os.Remove(filepath.Join(dir, "ready"))
		stopAll()
		return nil
	case err := <-apiDone:
		cancel()
		close(componentsDone)
		components.Wait()
		return fmt.Errorf("kube-apiserver exited: %v", err)
	}
}

// setUp brings a healthy kube-apiserver to the seed: the kubernetes
// endpoints, Calico's CRDs, in the aggregated mode calico-apiserver (and
// calico-kube-controllers once the seed is in place), then the seed itself.
func setUp(ctx context.Context, dir string, seed *seedState, crds []*apiextensionsv1.CustomResourceDefinition, bins calicoBinaries,
	p *pki, server string, supervise func(*supervised), start time.Time) (*controlPlane, error) {
	c, err := newClients(restConfig(server, p, &p.Seeder))
	if err != nil {
		return nil, err
	}
	if err := c.ensureKubernetesEndpoints(ctx); err != nil {
		return nil, fmt.Errorf("kubernetes endpoints: %w", err)
	}
	cp := &controlPlane{dir: dir, native: seed.Native, seeder: c}
	if seed.Native {
		served := regrouped(crds)
		if err := installCRDs(ctx, c, served); err != nil {
			return nil, fmt.Errorf("installing Calico CRDs re-grouped as projectcalico.org/v3: %w", err)
		}
		c.calico = resourcesOf(served)
		logf("Calico CRDs served as projectcalico.org/v3 (emulated native mode) after %v", time.Since(start).Round(time.Millisecond))
	} else {
		if err := cp.startCalicoAPIServer(ctx, crds, bins, p, supervise); err != nil {
			return nil, err
		}
		logf("calico-apiserver serving projectcalico.org/v3 after %v", time.Since(start).Round(time.Millisecond))
		cp.kubeControllers = newKubeControllers(dir, bins)
		supervise(cp.kubeControllers)
	}
	emuClients, err := newClients(restConfig(server, p, &p.Emulator))
	if err != nil {
		return nil, err
	}
	emuClients.calico = c.calico
	cp.emu = newEmulator(emuClients)
	if err := cp.resetTo(ctx, seed.Name); err != nil {
		return nil, fmt.Errorf("applying seed %s: %w", seed.Name, err)
	}
	logf("seed %s applied after %v", seed.Name, time.Since(start).Round(time.Millisecond))
	return cp, nil
}

// startCalicoAPIServer installs Calico's storage CRDs, writes
// ClusterInformation as calico-node's start-up would, starts calico-apiserver
// and registers it with the aggregation layer.
func (cp *controlPlane) startCalicoAPIServer(ctx context.Context, crds []*apiextensionsv1.CustomResourceDefinition, bins calicoBinaries,
	p *pki, supervise func(*supervised)) error {
	c := cp.seeder
	if err := installCRDs(ctx, c, crds); err != nil {
		return fmt.Errorf("installing Calico CRDs: %w", err)
	}
	lab, _ := seedByName("lab")
	if err := c.ensureClusterInformation(ctx, lab.ClusterInformation); err != nil {
		return fmt.Errorf("ClusterInformation: %w", err)
	}
	if err := writeComponentKubeconfigs(cp.dir, restConfig(c.cfg.Host, p, nil), p); err != nil {
		return err
	}
	calicoPolicy := filepath.Join(cp.dir, "calico-apiserver-audit-policy.yaml")
	if err := os.WriteFile(calicoPolicy, []byte(auditPolicy(false)), 0o644); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	apiserver := newCalicoAPIServer(cp.dir, bins, port, p, calicoPolicy)
	apiserver.start(apiserver.env)
	supervise(apiserver)
	if err := c.registerCalicoAPIService(ctx, p, port); err != nil {
		return err
	}
	return c.waitCalicoAPI(ctx, 90*time.Second)
}

func restConfig(server string, p *pki, id *keyPair) *rest.Config {
	if id == nil {
		id = &keyPair{}
	}
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
