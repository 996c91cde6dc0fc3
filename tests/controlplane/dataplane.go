package main

// The dataplane lab (`run --calico-felix BIN`, seed lab only, root): the
// lab's nodes and pods as network namespaces wired like a small cluster, one
// real calico-felix per node programming iptables from the same API server,
// so that policies are enforced on real packets.
//
//   - an underlay namespace holds bridge br0: the nodes' "switch";
//   - each node is a namespace with eth0 = its InternalIP/24 on br0, a
//     default route via the outside namespace, and a route to every other
//     node's podCIDR via that node (what CrossSubnet VXLAN does between nodes
//     of one subnet: plain routing);
//   - each pod that is not host-networked is a namespace with eth0 = its pod
//     IP/32 and a default route via 169.254.1.1, veth'd to its node as
//     Calico's CNI plugin does it, the node side named as Felix derives it
//     from the Pod (`cali` + sha1(namespace.pod)[:11]), with proxy ARP;
//     host-networked pods are their node's namespace;
//   - an outside namespace (10.0.0.254 on br0) stands for everything beyond
//     the nodes: addresses such as an operator's or an upstream resolver's
//     are added to it when a probe needs them;
//   - the API server is published at 10.0.0.1:6443 inside the control node:
//     a forwarder listening there relays to the real kube-apiserver on
//     127.0.0.1, so node → API server traffic, Felix's own included, crosses
//     the nodes' host endpoints as in a real cluster.
//
// Nothing here is linked to the root namespace: no interface, route or
// iptables rule is added outside the lab's namespaces, so no packet can leave
// the machine. Every namespace is named PREFIX-..., PREFIX derived from the
// state directory; start-up deletes leftovers of the same directory (a crash)
// and shutdown, or `dataplane-down`, deletes them all.

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	labOutsideIP     = "10.0.0.254"
	labNodePrefixLen = 24
	felixHealthPort  = 9099
	dataplaneFile    = "dataplane.json"
)

// dataplaneLab is what DIR/dataplane.json holds: how to find each node and
// pod of the lab (`controlplane probe` reads it).
type dataplaneLab struct {
	Prefix   string        `json:"prefix"`
	Underlay string        `json:"underlay"`
	Outside  labEndpointNS `json:"outside"`
	Nodes    []labNodeNS   `json:"nodes"`
	Pods     []labPodNS    `json:"pods"`
	// APIServer is the published address (the forwarder's).
	APIServer string `json:"apiserver"`
}

type labEndpointNS struct {
	Netns string `json:"netns"`
	IP    string `json:"ip"`
}

type labNodeNS struct {
	Name string `json:"name"`
	labEndpointNS
	PodCIDR string `json:"podCIDR"`
}

type labPodNS struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	Node        string `json:"node"`
	HostNetwork bool   `json:"hostNetwork"`
	// Interface is the node-side veth (empty for host-networked pods).
	Interface string `json:"interface,omitempty"`
	labEndpointNS
}

// dataplanePrefix names a state directory's namespaces: short enough that
// `ip netns list` stays readable, distinct per directory.
func dataplanePrefix(dir string) string {
	return fmt.Sprintf("chl%06x", hash(dir)&0xffffff)
}

// vethNameForWorkload is the node-side interface name Felix expects for a
// pod (libcalico-go's defaultWorkloadEndpointConverter.VethNameForWorkload
// with the default prefix "cali").
func vethNameForWorkload(namespace, pod string) string {
	sum := sha1.Sum([]byte(namespace + "." + pod))
	return "cali" + hex.EncodeToString(sum[:])[:11]
}

// planDataplane lays the lab seed out as namespaces (no side effects).
func planDataplane(dir string, seed *seedState) *dataplaneLab {
	prefix := dataplanePrefix(dir)
	lab := &dataplaneLab{
		Prefix:    prefix,
		Underlay:  prefix + "-underlay",
		Outside:   labEndpointNS{Netns: prefix + "-outside", IP: labOutsideIP},
		APIServer: fmt.Sprintf("%s:%d", labControlNodeIP, labAPIServerPort),
	}
	nodeNS := map[string]string{}
	for _, n := range labNodes {
		ns := prefix + "-node-" + n.name
		nodeNS[n.name] = ns
		lab.Nodes = append(lab.Nodes, labNodeNS{Name: n.name, labEndpointNS: labEndpointNS{Netns: ns, IP: n.ip}, PodCIDR: n.podCIDR})
	}
	for i, p := range seed.Pods {
		pod := labPodNS{Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork}
		pod.IP = p.Status.PodIP
		if p.Spec.HostNetwork {
			pod.Netns = nodeNS[p.Spec.NodeName]
		} else {
			pod.Netns = fmt.Sprintf("%s-pod%02d", prefix, i)
			pod.Interface = vethNameForWorkload(p.Namespace, p.Name)
		}
		lab.Pods = append(lab.Pods, pod)
	}
	return lab
}

func (lab *dataplaneLab) node(name string) *labNodeNS {
	for i := range lab.Nodes {
		if lab.Nodes[i].Name == name {
			return &lab.Nodes[i]
		}
	}
	return nil
}

// build creates the namespaces, links, addresses and routes.
func (lab *dataplaneLab) build() error {
	names := []string{lab.Underlay, lab.Outside.Netns}
	for _, n := range lab.Nodes {
		names = append(names, n.Netns)
	}
	for _, p := range lab.Pods {
		if !p.HostNetwork {
			names = append(names, p.Netns)
		}
	}
	for _, ns := range names {
		if err := ipCmd("netns", "add", ns); err != nil {
			return err
		}
		if err := ipCmd("-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"-n", lab.Underlay, "link", "add", "br0", "type", "bridge"},
		{"-n", lab.Underlay, "link", "set", "br0", "up"},
	}
	// Each node (and the outside) gets eth0 on the bridge.
	attach := func(ns, port, cidr string) {
		steps = append(steps,
			[]string{"-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", lab.Underlay},
			[]string{"-n", lab.Underlay, "link", "set", port, "master", "br0", "up"},
			[]string{"-n", ns, "addr", "add", cidr, "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
		)
	}
	attach(lab.Outside.Netns, "outside", fmt.Sprintf("%s/%d", labOutsideIP, labNodePrefixLen))
	for _, n := range lab.Nodes {
		attach(n.Netns, "n-"+n.Name, fmt.Sprintf("%s/%d", n.IP, labNodePrefixLen))
		steps = append(steps, []string{"-n", n.Netns, "route", "add", "default", "via", labOutsideIP, "dev", "eth0"})
		steps = append(steps, []string{"-n", lab.Outside.Netns, "route", "add", n.PodCIDR, "via", n.IP, "dev", "eth0"})
		for _, other := range lab.Nodes {
			if other.Name != n.Name {
				steps = append(steps, []string{"-n", n.Netns, "route", "add", other.PodCIDR, "via", other.IP, "dev", "eth0"})
			}
		}
	}
	for _, p := range lab.Pods {
		if p.HostNetwork {
			continue
		}
		node := lab.node(p.Node)
		if node == nil {
			return fmt.Errorf("pod %s/%s is on unknown node %q", p.Namespace, p.Name, p.Node)
		}
		steps = append(steps,
			[]string{"-n", node.Netns, "link", "add", p.Interface, "type", "veth", "peer", "name", "eth0", "netns", p.Netns},
			[]string{"-n", p.Netns, "addr", "add", p.IP + "/32", "dev", "eth0"},
			[]string{"-n", p.Netns, "link", "set", "eth0", "up"},
			[]string{"-n", p.Netns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
			[]string{"-n", p.Netns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
			[]string{"-n", node.Netns, "link", "set", p.Interface, "up"},
			[]string{"-n", node.Netns, "route", "add", p.IP, "dev", p.Interface, "scope", "link"},
		)
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return err
		}
	}
	// What Calico's CNI plugin sets on the node side of a pod's veth; Felix
	// sets the same once it sees the workload endpoint.
	for _, n := range lab.Nodes {
		sysctls := []string{"-q", "-w", "net.ipv4.ip_forward=1"}
		for _, p := range lab.Pods {
			if !p.HostNetwork && p.Node == n.Name {
				sysctls = append(sysctls, "net.ipv4.conf."+p.Interface+".proxy_arp=1",
					"net.ipv4.neigh."+p.Interface+".proxy_delay=0")
			}
		}
		if err := inNs(n.Netns, "sysctl", sysctls...); err != nil {
			return err
		}
	}
	return nil
}

// ensureOutsideAddress makes ip a local address of the outside namespace (an
// operator's machine, an upstream resolver), unless it already belongs to the
// lab or is there.
func (lab *dataplaneLab) ensureOutsideAddress(ip string) error {
	err := ipCmd("-n", lab.Outside.Netns, "addr", "add", ip+"/32", "dev", "lo")
	if err != nil && !strings.Contains(err.Error(), "File exists") && !strings.Contains(err.Error(), "already assigned") {
		return err
	}
	return nil
}

func (lab *dataplaneLab) save(dir string) error {
	data, err := json.MarshalIndent(lab, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, dataplaneFile), append(data, '\n'), 0o644)
}

func loadDataplane(dir string) (*dataplaneLab, error) {
	data, err := os.ReadFile(filepath.Join(dir, dataplaneFile))
	if err != nil {
		return nil, fmt.Errorf("no dataplane lab in %s (start it with `cargo xtask cluster up --dataplane`): %w", dir, err)
	}
	lab := &dataplaneLab{}
	if err := json.Unmarshal(data, lab); err != nil {
		return nil, fmt.Errorf("%s: %w", dataplaneFile, err)
	}
	return lab, nil
}

// dataplanePrerequisites names what the dataplane lab needs and is missing.
func dataplanePrerequisites() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces and iptables)")
	}
	for _, tool := range []string{"ip", "iptables", "iptables-save", "ipset", "conntrack", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the dataplane lab needs %s (Debian: apt-get install iptables ipset conntrack iproute2 procps)", strings.Join(missing, ", "))
	}
	return nil
}

// runningDataplane is a built lab with its forwarder and Felix processes.
type runningDataplane struct {
	lab       *dataplaneLab
	dir       string
	forwarder net.Listener
	conns     sync.WaitGroup
}

// startDataplane builds the lab's network, publishes the API server at
// 10.0.0.1:6443 inside the control node, starts one supervised calico-felix
// per node and waits until every Felix reports ready (its dataplane is in
// sync with the datastore).
func startDataplane(ctx context.Context, dir string, seed *seedState, felixBin string, p *pki, apiPort int,
	supervise func(*supervised), felixExtraEnv ...string) (*runningDataplane, error) {
	if seed.Name != "lab" {
		return nil, fmt.Errorf("the dataplane lab runs the lab seed only (asked for %s)", seed.Name)
	}
	if err := dataplanePrerequisites(); err != nil {
		return nil, err
	}
	start := time.Now()
	lab := planDataplane(dir, seed)
	if stale := namespacesWithPrefix(lab.Prefix + "-"); len(stale) > 0 {
		logf("dataplane: deleting %d namespaces left by an earlier run", len(stale))
		if err := deleteNamespaces(stale); err != nil {
			return nil, err
		}
	}
	dp := &runningDataplane{lab: lab, dir: dir}
	if err := lab.build(); err != nil {
		dp.teardown()
		return nil, fmt.Errorf("building the dataplane lab: %w", err)
	}
	if err := lab.save(dir); err != nil {
		dp.teardown()
		return nil, err
	}
	logf("dataplane: %d nodes, %d pod namespaces after %v", len(lab.Nodes), len(lab.Pods), time.Since(start).Round(time.Millisecond))
	control := lab.node("control")
	if err := inNetns(control.Netns, func() (err error) {
		dp.forwarder, err = net.Listen("tcp", lab.APIServer)
		return err
	}); err != nil {
		dp.teardown()
		return nil, fmt.Errorf("publishing the API server at %s: %w", lab.APIServer, err)
	}
	go dp.forward(fmt.Sprintf("127.0.0.1:%d", apiPort))

	kubeconfig := filepath.Join(dir, "kubeconfig-felix")
	if err := writeFelixKubeconfig(kubeconfig, lab.APIServer, p); err != nil {
		dp.teardown()
		return nil, err
	}
	for _, n := range lab.Nodes {
		s := newSupervised(dir, "felix-"+n.Name, "ip", []string{"netns", "exec", n.Netns, felixBin}, nil)
		s.start(append(felixEnv(n.Name, kubeconfig), felixExtraEnv...))
		supervise(s)
	}
	if err := lab.waitFelixReady(ctx, 90*time.Second); err != nil {
		return dp, err
	}
	logf("dataplane: every Felix ready after %v", time.Since(start).Round(time.Millisecond))
	return dp, nil
}

// felixEnv is calico-node's Felix environment as the Tigera operator renders
// it for a Kubernetes-datastore cluster without Typha in reach, plus what a
// lab needs (no usage reports, logs to stdout).
func felixEnv(node, kubeconfig string) []string {
	return []string{
		"FELIX_DATASTORETYPE=kubernetes",
		"KUBECONFIG=" + kubeconfig,
		"FELIX_FELIXHOSTNAME=" + node,
		"NODENAME=" + node,
		// The operator sets these on calico-node.
		"FELIX_DEFAULTENDPOINTTOHOSTACTION=ACCEPT",
		"FELIX_HEALTHENABLED=true",
		fmt.Sprintf("FELIX_HEALTHPORT=%d", felixHealthPort),
		"FELIX_IPV6SUPPORT=false",
		// The lab's own choices: nftables-backed iptables (what Debian's
		// iptables is), no XDP, logs to stdout only, no usage reports.
		"FELIX_IPTABLESBACKEND=nft",
		"FELIX_XDPENABLED=false",
		"FELIX_LOGFILEPATH=none",
		"FELIX_LOGSEVERITYSYS=none",
		"FELIX_LOGSEVERITYSCREEN=info",
		"FELIX_USAGEREPORTINGENABLED=false",
		// Felix built without cgo has no libbpf: its clean-up of BPF
		// connect-time load balancing (only ever there in BPF mode) would
		// panic in the stub.
		"FELIX_DebugSkipCTLBCleanup=true",
	}
}

// writeFelixKubeconfig: Felix reaches the API server where a node would, at
// the published address, verifying the serving certificate by its
// `kubernetes` name. It uses calico-kube-controllers' identity, which the
// audit policy already leaves out.
func writeFelixKubeconfig(path, server string, p *pki) error {
	c := clientcmdapi.NewConfig()
	c.Clusters["lab"] = &clientcmdapi.Cluster{Server: "https://" + server, CertificateAuthorityData: p.CA.CertPEM, TLSServerName: "kubernetes"}
	c.AuthInfos["felix"] = &clientcmdapi.AuthInfo{ClientCertificateData: p.KubeControllers.CertPEM, ClientKeyData: p.KubeControllers.KeyPEM}
	c.Contexts["felix"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "felix"}
	c.CurrentContext = "felix"
	return clientcmd.WriteToFile(*c, path)
}

// forward relays each connection accepted at the published address to the
// real API server.
func (dp *runningDataplane) forward(upstream string) {
	for {
		conn, err := dp.forwarder.Accept()
		if err != nil {
			return
		}
		dp.conns.Add(1)
		go func() {
			defer dp.conns.Done()
			defer conn.Close()
			up, err := net.DialTimeout("tcp", upstream, 5*time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				if tcp, ok := dst.(*net.TCPConn); ok {
					_ = tcp.CloseWrite()
				}
				done <- struct{}{}
			}
			go pipe(up, conn)
			go pipe(conn, up)
			<-done
			<-done
		}()
	}
}

// waitFelixReady polls each Felix's readiness endpoint inside its node.
func (lab *dataplaneLab) waitFelixReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, n := range lab.Nodes {
		client := netnsHTTPClient(n.Netns)
		url := fmt.Sprintf("http://127.0.0.1:%d/readiness", felixHealthPort)
		for {
			resp, err := client.Get(url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				err = fmt.Errorf("readiness %s", resp.Status)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("Felix on %s not ready within %v: %v (see felix-%s.log)", n.Name, timeout, err, n.Name)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// netnsHTTPClient dials from inside a network namespace.
func netnsHTTPClient(ns string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
		err = inNetns(ns, func() error {
			var d net.Dialer
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// teardown stops the forwarder and deletes every namespace of the lab (call
// it after Felix has stopped).
func (dp *runningDataplane) teardown() {
	if dp.forwarder != nil {
		_ = dp.forwarder.Close()
	}
	if err := deleteNamespaces(namespacesWithPrefix(dp.lab.Prefix + "-")); err != nil {
		logf("dataplane: %v", err)
	} else {
		logf("dataplane: namespaces deleted")
	}
	_ = os.Remove(filepath.Join(dp.dir, dataplaneFile))
}

// cmdDataplaneDown deletes the namespaces of the lab in DIR (for `cluster
// down` after a crash or a SIGKILL; a clean shutdown does it itself).
func cmdDataplaneDown(args []string) error {
	if len(args) != 2 || args[0] != "--dir" {
		return errors.New("usage: controlplane dataplane-down --dir DIR")
	}
	dir, err := filepath.Abs(args[1])
	if err != nil {
		return err
	}
	prefix := dataplanePrefix(dir)
	if lab, err := loadDataplane(dir); err == nil {
		prefix = lab.Prefix
	}
	stale := namespacesWithPrefix(prefix + "-")
	_ = os.Remove(filepath.Join(dir, dataplaneFile))
	if len(stale) == 0 {
		return nil
	}
	fmt.Printf("deleting %d network namespaces of the dataplane lab (%s-*)\n", len(stale), prefix)
	return deleteNamespaces(stale)
}
