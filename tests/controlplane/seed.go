package main

// Seeds: the states `run` starts in and `reset` restores. The lab's
// addresses are those of a small kubeadm/k3s cluster (nodes 10.0.0.0/24, pods
// 192.168.0.0/16, services 10.96.0.0/12); nothing here ever sends traffic to
// them: the servers themselves listen on loopback only.

import (
	"encoding/json"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

const (
	seedLabel       = "calico-harden-test/seed"
	seedHashAnnot   = "calico-harden-test/seed-hash"
	calicoVersionV  = "v3.31.0"
	kubeletVersion  = "v1.33.5+k3s1"
	createdByLabel  = "projectcalico.org/created-by"
	createdByKCC    = "calico-kube-controllers"
	envOverrideAnno = "calico-harden-test/env-override-autocreate"
)

// systemNamespaces are never deleted by reset. calico-apiserver's holds
// Service calico-api, through which the aggregation layer reaches it.
var systemNamespaces = map[string]bool{"default": true, "kube-system": true, "kube-public": true, "kube-node-lease": true,
	calicoAPIServerNamespace: true}

type seedState struct {
	Name string
	// Native: projectcalico.org/v3 served as CRDs by kube-apiserver (the
	// emulated Calico 3.32 mode); otherwise by the real calico-apiserver.
	Native bool
	// KubeControllers: the real calico-kube-controllers runs (not in the
	// native and empty seeds).
	KubeControllers bool
	Namespaces      []string
	// ServiceAccounts by namespace (each seed namespace also gets "default").
	ServiceAccounts map[string][]string
	Nodes           []*corev1.Node
	Pods            []*corev1.Pod
	Calico          []*unstructured.Unstructured
	// ClusterInformation is read-only through calico-apiserver: calico-node's
	// start-up writes it in Calico's storage (crd.projectcalico.org/v1), and
	// so does the seeder in the aggregated mode.
	ClusterInformation map[string]any
}

type nodeSpec struct {
	name, ip, podCIDR, vxlanTunnelIP string
	control                          bool
}

// labControlNodeIP is where the lab's API server is published (see
// kubernetes_endpoints.go).
const labControlNodeIP = "10.0.0.1"

var labNodes = []nodeSpec{
	{"control", labControlNodeIP, "192.168.0.0/24", "192.168.0.1", true},
	{"node1", "10.0.0.2", "192.168.1.0/24", "192.168.1.1", false},
	{"node2", "10.0.0.3", "192.168.2.0/24", "192.168.2.1", false},
}

func nodeIP(name string) string {
	for _, n := range labNodes {
		if n.name == name {
			return n.ip
		}
	}
	panic(name)
}

func seedByName(name string) (*seedState, error) {
	switch name {
	case "lab":
		return labSeed(true), nil
	case "native":
		return labSeed(false), nil
	case "empty":
		return &seedState{Name: "empty", Calico: builtinTiers()}, nil
	}
	if release, ok := releaseFamilies[name]; ok {
		return familySeed(name, release), nil
	}
	return nil, fmt.Errorf("unknown seed %q (want lab, native, empty or a release family: calico-3.28, calico-3.30, calico-3.31, calico-3.32-native)", name)
}

// calicoRelease is how a Calico release family lays out what the plugin reads,
// as a scenario on the lab: the processes behind projectcalico.org stay the
// real v3.31.0 calico-apiserver and kube-controllers (or the emulated native
// mode); only the recorded version, the pods and the tiers differ.
type calicoRelease struct {
	version string
	// apiserverNamespace: where the operator runs calico-apiserver; "" when
	// projectcalico.org/v3 is served as CRDs (no calico-apiserver at all).
	apiserverNamespace string
	// flowLogs: Goldmane and Whisker run (operator installs from 3.30).
	flowLogs bool
	// webhooks: calico-webhooks pods serve the admission webhooks (3.32 native).
	webhooks bool
	// tiers the release creates (native mode only: in the aggregated mode the
	// real calico-apiserver creates its own).
	tiers []tierSpec
}

type tierSpec struct {
	name          string
	order         float64
	defaultAction string
}

// releaseFamilies: one seed per family. 3.28 has no flow logs and no
// ClusterNetworkPolicy tiers; 3.30 adds Goldmane and Whisker; 3.31 moves
// calico-apiserver to calico-system; 3.32 can serve v3 as CRDs, with
// admission webhooks and the kube-admin / kube-baseline tiers.
var releaseFamilies = map[string]calicoRelease{
	"calico-3.28": {version: "v3.28.2", apiserverNamespace: "calico-apiserver"},
	"calico-3.30": {version: "v3.30.3", apiserverNamespace: "calico-apiserver", flowLogs: true},
	"calico-3.31": {version: calicoVersionV, apiserverNamespace: "calico-system", flowLogs: true},
	"calico-3.32-native": {version: "v3.32.0", flowLogs: true, webhooks: true, tiers: []tierSpec{
		{"kube-admin", 1_000, "Pass"}, {"default", 1_000_000, "Deny"}, {"kube-baseline", 10_000_000, "Pass"},
	}},
}

// labRelease is the lab: v3.31.0 with calico-apiserver where it ran up to 3.30.
var labRelease = calicoRelease{version: calicoVersionV, apiserverNamespace: calicoAPIServerNamespace}

func familySeed(name string, r calicoRelease) *seedState {
	s := releaseSeed(r)
	s.Name = name
	return s
}

func makeNode(n nodeSpec) *corev1.Node {
	labels := map[string]string{
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
		"kubernetes.io/hostname": n.name,
	}
	if n.control {
		labels["node-role.kubernetes.io/control-plane"] = ""
		labels["node-role.kubernetes.io/master"] = "true"
	}
	t := metav1.Unix(1767225600, 0) // fixed: 2026-01-01T00:00:00Z
	// What calico-node writes on start-up; kube-controllers puts these
	// addresses into a host endpoint's expectedIPs.
	annotations := map[string]string{
		"projectcalico.org/IPv4Address":         n.ip + "/24",
		"projectcalico.org/IPv4VXLANTunnelAddr": n.vxlanTunnelIP,
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: labels, Annotations: annotations},
		Spec:       corev1.NodeSpec{PodCIDR: n.podCIDR, PodCIDRs: []string{n.podCIDR}},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: n.ip},
				{Type: corev1.NodeHostName, Address: n.name},
			},
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi"), corev1.ResourcePods: resource.MustParse("110"),
			},
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi"), corev1.ResourcePods: resource.MustParse("110"),
			},
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				Message: "kubelet is posting ready status", LastHeartbeatTime: t, LastTransitionTime: t,
			}},
			NodeInfo: corev1.NodeSystemInfo{
				KubeletVersion: kubeletVersion, OSImage: "Debian GNU/Linux 13 (trixie)", OperatingSystem: "linux",
				Architecture: "amd64", ContainerRuntimeVersion: "containerd://2.1.4-k3s1", KernelVersion: "6.12.0-1-amd64",
			},
		},
	}
}

type podSpec struct {
	ns, name, node, ip string
	hostNetwork        bool
	labels             map[string]string
	sa, image          string
	ports              []corev1.ContainerPort
	privileged         bool
}

func tcp(name string, port int32) corev1.ContainerPort {
	return corev1.ContainerPort{Name: name, ContainerPort: port, Protocol: corev1.ProtocolTCP}
}

func makePod(p podSpec) *corev1.Pod {
	ip := p.ip
	if p.hostNetwork {
		ip = nodeIP(p.node)
	}
	c := corev1.Container{Name: p.labels["k8s-app"], Image: p.image, Ports: p.ports}
	if c.Name == "" {
		c.Name = p.labels["app"]
	}
	if p.privileged {
		priv := true
		c.SecurityContext = &corev1.SecurityContext{Privileged: &priv}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name, Labels: p.labels},
		Spec: corev1.PodSpec{
			NodeName:           p.node,
			HostNetwork:        p.hostNetwork,
			ServiceAccountName: p.sa,
			Containers:         []corev1.Container{c},
		},
	}
	t := metav1.Unix(1767225600, 0)
	ready := []corev1.PodCondition{}
	for _, ct := range []corev1.PodConditionType{corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		ready = append(ready, corev1.PodCondition{Type: ct, Status: corev1.ConditionTrue, LastTransitionTime: t})
	}
	pod.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		Conditions: ready,
		HostIP:     nodeIP(p.node),
		HostIPs:    []corev1.HostIP{{IP: nodeIP(p.node)}},
		PodIP:      ip,
		PodIPs:     []corev1.PodIP{{IP: ip}},
		StartTime:  &t,
		QOSClass:   corev1.PodQOSBestEffort,
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: c.Name, Image: p.image, ImageID: p.image, Ready: true, Started: ptr(true),
			ContainerID: "containerd://" + fmt.Sprintf("%064x", hash(p.ns+"/"+p.name)),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: t}},
		}},
	}
	return pod
}

func ptr[T any](v T) *T { return &v }

func hash(s string) uint64 {
	var h uint64 = 1469598103934665603
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

func labSeed(withCalicoAPIServer bool) *seedState {
	if !withCalicoAPIServer {
		s := releaseSeed(calicoRelease{version: calicoVersionV})
		s.Name = "native"
		return s
	}
	s := releaseSeed(labRelease)
	s.Name = "lab"
	return s
}

func releaseSeed(r calicoRelease) *seedState {
	withCalicoAPIServer := r.apiserverNamespace != ""
	s := &seedState{Name: "lab", KubeControllers: true}
	if !withCalicoAPIServer {
		s.Name, s.Native, s.KubeControllers = "native", true, false
	}
	s.Namespaces = []string{"calico-system", "calico-apiserver", "tigera-operator", "app-frontend", "app-backend"}
	s.ServiceAccounts = map[string][]string{
		"kube-system":      {"coredns"},
		"calico-system":    {"calico-node", "calico-typha", "calico-kube-controllers"},
		"calico-apiserver": {"calico-apiserver"},
		"tigera-operator":  {"tigera-operator"},
	}
	if r.apiserverNamespace == "calico-system" {
		// 3.31 operator installs: the calico-apiserver namespace is gone (the
		// lab keeps it only for the aggregation layer's Service calico-api).
		s.Namespaces = []string{"calico-system", "tigera-operator", "app-frontend", "app-backend"}
		s.ServiceAccounts["calico-system"] = append(s.ServiceAccounts["calico-system"], "calico-apiserver")
	}
	if r.flowLogs {
		s.ServiceAccounts["calico-system"] = append(s.ServiceAccounts["calico-system"], "goldmane", "whisker")
	}
	if r.webhooks {
		s.ServiceAccounts["calico-system"] = append(s.ServiceAccounts["calico-system"], "calico-webhooks")
	}
	for _, n := range labNodes {
		s.Nodes = append(s.Nodes, makeNode(n))
	}
	l := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	pods := []podSpec{
		{ns: "kube-system", name: "coredns-7c65d6cfc9-4xk2p", node: "control", ip: "192.168.0.2", sa: "coredns",
			labels: l("k8s-app", "kube-dns", "pod-template-hash", "7c65d6cfc9"), image: "rancher/mirrored-coredns-coredns:1.12.3",
			ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}, tcp("dns-tcp", 53), tcp("metrics", 9153)}},
		{ns: "kube-system", name: "coredns-7c65d6cfc9-9qz7m", node: "node1", ip: "192.168.1.2", sa: "coredns",
			labels: l("k8s-app", "kube-dns", "pod-template-hash", "7c65d6cfc9"), image: "rancher/mirrored-coredns-coredns:1.12.3",
			ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}, tcp("dns-tcp", 53), tcp("metrics", 9153)}},
		{ns: "calico-system", name: "calico-typha-6b9f8d7c5d-h2x9w", node: "node1", hostNetwork: true, sa: "calico-typha",
			labels: l("k8s-app", "calico-typha", "app.kubernetes.io/name", "calico-typha", "pod-template-hash", "6b9f8d7c5d"),
			image:  "quay.io/calico/typha:" + r.version, ports: []corev1.ContainerPort{tcp("calico-typha", 5473)}},
		{ns: "calico-system", name: "calico-kube-controllers-5c8d7b9f6-qw8rt", node: "control", ip: "192.168.0.3", sa: "calico-kube-controllers",
			labels: l("k8s-app", "calico-kube-controllers", "app.kubernetes.io/name", "calico-kube-controllers", "pod-template-hash", "5c8d7b9f6"),
			image:  "quay.io/calico/kube-controllers:" + r.version},
		{ns: "tigera-operator", name: "tigera-operator-7d9f6c8b5-m4kzp", node: "control", hostNetwork: true, sa: "tigera-operator",
			labels: l("k8s-app", "tigera-operator", "name", "tigera-operator", "pod-template-hash", "7d9f6c8b5"),
			image:  "quay.io/tigera/operator:v1.40.0"},
		{ns: "app-frontend", name: "frontend-5f7c9d8b6-2kqvx", node: "node1", ip: "192.168.1.4", sa: "default",
			labels: l("app", "frontend", "pod-template-hash", "5f7c9d8b6"), image: "nginx:1.29", ports: []corev1.ContainerPort{tcp("http", 8080)}},
		{ns: "app-frontend", name: "frontend-5f7c9d8b6-7hj4s", node: "node2", ip: "192.168.2.3", sa: "default",
			labels: l("app", "frontend", "pod-template-hash", "5f7c9d8b6"), image: "nginx:1.29", ports: []corev1.ContainerPort{tcp("http", 8080)}},
		{ns: "app-backend", name: "backend-6d8b7c9f5-5rtwz", node: "node1", ip: "192.168.1.5", sa: "default",
			labels: l("app", "backend", "pod-template-hash", "6d8b7c9f5"), image: "busybox:1.37", ports: []corev1.ContainerPort{tcp("api", 9090)}},
		{ns: "app-backend", name: "backend-6d8b7c9f5-x9mlc", node: "node2", ip: "192.168.2.4", sa: "default",
			labels: l("app", "backend", "pod-template-hash", "6d8b7c9f5"), image: "busybox:1.37", ports: []corev1.ContainerPort{tcp("api", 9090)}},
	}
	for i, n := range []string{"control", "node1", "node2"} {
		pods = append(pods, podSpec{ns: "calico-system", name: "calico-node-" + []string{"7xq2d", "kz9fw", "tb4lh"}[i], node: n,
			hostNetwork: true, sa: "calico-node", privileged: true,
			labels: l("k8s-app", "calico-node", "app.kubernetes.io/name", "calico-node", "controller-revision-hash", "6f94c8d7b9", "pod-template-generation", "1"),
			image:  "quay.io/calico/node:" + r.version, ports: []corev1.ContainerPort{tcp("felix-health", 9099)}})
	}
	if withCalicoAPIServer {
		for i, n := range []string{"node1", "node2"} {
			pods = append(pods, podSpec{ns: r.apiserverNamespace, name: "calico-apiserver-84d5b8c6f9-" + []string{"gq7vn", "w2rkd"}[i], node: n,
				ip: []string{"192.168.1.3", "192.168.2.2"}[i], sa: "calico-apiserver",
				labels: l("k8s-app", "calico-apiserver", "apiserver", "true", "app.kubernetes.io/name", "calico-apiserver", "pod-template-hash", "84d5b8c6f9"),
				image:  "quay.io/calico/apiserver:" + r.version, ports: []corev1.ContainerPort{tcp("apiserver", 5443)}})
		}
	}
	pods = append(pods, releaseComponentPods(r)...)
	for _, p := range pods {
		s.Pods = append(s.Pods, makePod(p))
	}
	sort.Slice(s.Pods, func(i, j int) bool {
		return s.Pods[i].Namespace+"/"+s.Pods[i].Name < s.Pods[j].Namespace+"/"+s.Pods[j].Name
	})

	kcc := map[string]any{"spec": kccSpec("Disabled")}
	if s.Native {
		// No kube-controllers in the emulated mode: the status it would write.
		kcc["status"] = map[string]any{"runningConfig": kccSpec("Disabled")}
	}
	s.Calico = []*unstructured.Unstructured{
		calicoObj("KubeControllersConfiguration", "default", kcc),
		calicoObj("FelixConfiguration", "default", map[string]any{"spec": map[string]any{}}),
		calicoObj("IPPool", "default-ipv4-ippool", map[string]any{"spec": map[string]any{
			"cidr": "192.168.0.0/16", "blockSize": 26, "ipipMode": "Never", "vxlanMode": "CrossSubnet",
			"natOutgoing": true, "nodeSelector": "all()", "allowedUses": []any{"Workload", "Tunnel"},
		}}),
	}
	s.ClusterInformation = map[string]any{
		"calicoVersion":  r.version,
		"clusterGUID":    "9d3c1f6e0b2a4c8d9e7f1a2b3c4d5e6f",
		"clusterType":    "typha,kdd,k8s,operator,bgp",
		"datastoreReady": true,
		"variant":        "Calico",
	}
	if s.Native {
		s.Calico = append(s.Calico, calicoObj("ClusterInformation", "default", map[string]any{"spec": s.ClusterInformation}))
		for _, t := range r.tiers {
			s.Calico = append(s.Calico, calicoObj("Tier", t.name, map[string]any{"spec": map[string]any{
				"order": t.order, "defaultAction": t.defaultAction,
			}}))
		}
	} else {
		s.Calico = append(s.Calico, builtinTiers()...)
	}
	return s
}

// releaseComponentPods: the pods a release adds to the lab's, placed as its
// operator places them (calico-system; Goldmane's gRPC on 7443, the webhooks'
// HTTPS on 6443 behind Service calico-webhooks).
func releaseComponentPods(r calicoRelease) []podSpec {
	l := func(app string) map[string]string {
		return map[string]string{"k8s-app": app, "app.kubernetes.io/name": app, "pod-template-hash": "7d4c9b8f6"}
	}
	var pods []podSpec
	if r.flowLogs {
		pods = append(pods,
			podSpec{ns: "calico-system", name: "goldmane-7d4c9b8f6-r5tq2", node: "node2", ip: "192.168.2.5", sa: "goldmane",
				labels: l("goldmane"), image: "quay.io/calico/goldmane:" + r.version, ports: []corev1.ContainerPort{tcp("goldmane", 7443)}},
			podSpec{ns: "calico-system", name: "whisker-7d4c9b8f6-m8vkx", node: "node1", ip: "192.168.1.6", sa: "whisker",
				labels: l("whisker"), image: "quay.io/calico/whisker:" + r.version, ports: []corev1.ContainerPort{tcp("whisker", 8081)}})
	}
	if r.webhooks {
		pods = append(pods, podSpec{ns: "calico-system", name: "calico-webhooks-7d4c9b8f6-x2wpl", node: "node1", ip: "192.168.1.7",
			sa: "calico-webhooks", labels: l("calico-webhooks"), image: "quay.io/calico/webhooks:" + r.version,
			ports: []corev1.ContainerPort{tcp("webhooks", 6443)}})
	}
	return pods
}

// builtinTiers are the tiers Calico creates on start-up (libcalico-go's
// EnsureInitialized): reset keeps them and never rewrites them.
func builtinTiers() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, name := range []string{"default", "adminnetworkpolicy", "baselineadminnetworkpolicy"} {
		out = append(out, calicoObj("Tier", name, map[string]any{"metadata": map[string]any{"name": name}}))
	}
	return out
}

// kccSpec is KubeControllersConfiguration `default` as the Tigera operator
// writes it.
func kccSpec(autoCreate string) map[string]any {
	return map[string]any{
		"controllers": map[string]any{
			"node": map[string]any{
				"hostEndpoint":     map[string]any{"autoCreate": autoCreate},
				"reconcilerPeriod": "5m0s",
				"syncLabels":       "Enabled",
			},
			"policy":           map[string]any{"reconcilerPeriod": "5m0s"},
			"workloadEndpoint": map[string]any{"reconcilerPeriod": "5m0s"},
			"serviceAccount":   map[string]any{"reconcilerPeriod": "5m0s"},
			"namespace":        map[string]any{"reconcilerPeriod": "5m0s"},
		},
		"etcdV3CompactionPeriod": "10m0s",
		"healthChecks":           "Enabled",
		"logSeverityScreen":      "Info",
		// The operator's 9094 would make every lab's kube-controllers bind
		// :9094 on all interfaces; 0 turns the metrics server off.
		"prometheusMetricsPort": int64(0),
	}
}

func calicoObj(kind, name string, fields map[string]any) *unstructured.Unstructured {
	obj := map[string]any{
		"apiVersion": calicoGroup + "/" + calicoVersion,
		"kind":       kind,
		"metadata":   map[string]any{"name": name},
	}
	for k, v := range fields {
		obj[k] = v
	}
	return &unstructured.Unstructured{Object: normalize(obj)}
}

// normalize round-trips through JSON so numbers are int64/float64 as in
// objects read from the server, which makes DeepEqual comparisons work.
func normalize(obj map[string]any) map[string]any {
	data, err := json.Marshal(obj)
	if err != nil {
		panic(err)
	}
	out := map[string]any{}
	if err := utiljson.Unmarshal(data, &out); err != nil {
		panic(err)
	}
	return out
}
