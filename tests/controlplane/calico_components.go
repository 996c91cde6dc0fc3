package main

// Calico v3.31.0's own calico-apiserver and calico-kube-controllers, built
// from Calico's Go modules (tests/calico), run as supervised child processes:
//
//   - calico-apiserver serves projectcalico.org/v3 behind kube-apiserver's
//     aggregation layer (APIService v3.projectcalico.org → Service calico-api,
//     an ExternalName for loopback, on calico-apiserver's port), storing into
//     Calico's crd.projectcalico.org/v1 CRDs, with Calico's own defaulting,
//     validation and tiered-policy authorization. It writes its own audit log
//     (DIR/calico-apiserver-audit.log), since kube-apiserver only proxies
//     these requests and does not see their bodies.
//   - calico-kube-controllers runs the node controller (host endpoint
//     auto-creation, status.runningConfig of KubeControllersConfiguration
//     `default`) with the Kubernetes datastore. Environment variables, such as
//     AUTO_HOST_ENDPOINTS, are set through the control socket, the way a user
//     would edit its Deployment.

import (
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// calicoBinaries are the programs built from tests/calico.
type calicoBinaries struct {
	APIServer       string
	KubeControllers string
	// Felix, when set, runs the dataplane lab (dataplane.go).
	Felix string
}

var apiServiceGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// calicoAPIServerNamespace is where the lab runs calico-apiserver (the Tigera
// operator's namespace for it up to Calico 3.30; the lab keeps it).
const calicoAPIServerNamespace = "calico-apiserver"

func newCalicoAPIServer(dir string, bins calicoBinaries, port int, p *pki, policyPath string) *supervised {
	kubeconfig := filepath.Join(dir, "kubeconfig-calico-apiserver")
	args := []string{
		"--secure-port=" + strconv.Itoa(port),
		"--bind-address=127.0.0.1",
		"--tls-cert-file=" + p.path("calico-apiserver.crt"),
		"--tls-private-key-file=" + p.path("calico-apiserver.key"),
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--audit-policy-file=" + policyPath,
		"--audit-log-path=" + filepath.Join(dir, "calico-apiserver-audit.log"),
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--audit-log-maxage=0",
		"--audit-log-maxbackup=0",
		"--audit-log-maxsize=0",
		// The tests change RBAC between commands (least privilege, rule by rule): without
		// these, calico-apiserver would answer from its 10 s cache of delegated
		// authorization decisions and a test would see the previous role.
		"--authorization-webhook-cache-authorized-ttl=0s",
		"--authorization-webhook-cache-unauthorized-ttl=0s",
		// Nothing in the lab uses ValidatingAdmissionPolicies; the watch costs CPU.
		"--enable-validating-admission-policy=false",
		"--v=0",
	}
	env := []string{"DATASTORE_TYPE=kubernetes", "KUBECONFIG=" + kubeconfig, "LOG_LEVEL=info"}
	return newSupervised(dir, "calico-apiserver", bins.APIServer, args, env)
}

func newKubeControllers(dir string, bins calicoBinaries) *supervised {
	args := []string{"-status-file", filepath.Join(dir, "kube-controllers-status.json")}
	return newSupervised(dir, "calico-kube-controllers", bins.KubeControllers, args, nil)
}

// kubeControllersEnv is calico-kube-controllers' environment: the datastore,
// the node controller only, and the overrides asked for (NAME=value).
func kubeControllersEnv(dir string, overrides []string) []string {
	env := []string{
		"DATASTORE_TYPE=kubernetes",
		"KUBECONFIG=" + filepath.Join(dir, "kubeconfig-kube-controllers"),
		"ENABLED_CONTROLLERS=node",
		"LOG_LEVEL=info",
	}
	return append(env, overrides...)
}

// registerCalicoAPIService points v3.projectcalico.org at calico-apiserver:
// Service calico-api (an ExternalName for loopback, since nothing here routes
// ClusterIPs) and the APIService with the CA that signed calico-apiserver's
// serving certificate, as the Tigera operator would register it.
func (c *clients) registerCalicoAPIService(ctx context.Context, p *pki, port int) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "calico-api", Namespace: calicoAPIServerNamespace,
			Labels: map[string]string{"k8s-app": "calico-apiserver"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: calicoAPIServiceHost,
			Ports: []corev1.ServicePort{{Name: "apiserver", Port: int32(port), Protocol: corev1.ProtocolTCP}}},
	}
	if err := c.ensureNamespace(ctx, calicoAPIServerNamespace); err != nil {
		return err
	}
	if _, err := c.cs.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating Service calico-api: %w", err)
	}
	apiService := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]any{"name": "v3.projectcalico.org"},
		"spec": map[string]any{
			"group": calicoGroup, "version": calicoVersion,
			"groupPriorityMinimum": int64(1500), "versionPriority": int64(200),
			"caBundle": base64.StdEncoding.EncodeToString(p.CA.CertPEM),
			"service":  map[string]any{"name": "calico-api", "namespace": calicoAPIServerNamespace, "port": int64(port)},
		},
	}}
	if _, err := c.dyn.Resource(apiServiceGVR).Create(ctx, apiService, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating APIService v3.projectcalico.org: %w", err)
	}
	return nil
}

func (c *clients) ensureNamespace(ctx context.Context, name string) error {
	_, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// waitCalicoAPI waits until discovery serves projectcalico.org/v3 with the
// kinds the plugin uses, through calico-apiserver, then records every
// resource that can be listed and deleted (reset's worklist).
func (c *clients) waitCalicoAPI(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		resources, err := c.servedCalicoResources()
		if err == nil {
			missing := missingKinds(resources)
			if len(missing) == 0 {
				c.calico = resources
				return nil
			}
			err = fmt.Errorf("not served yet: %s", strings.Join(missing, ", "))
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("projectcalico.org/v3 not served by calico-apiserver within %v: %v", timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *clients) servedCalicoResources() ([]calicoResource, error) {
	rl, err := c.cs.Discovery().ServerResourcesForGroupVersion(calicoGroup + "/" + calicoVersion)
	if err != nil {
		return nil, err
	}
	var out []calicoResource
	for _, r := range rl.APIResources {
		if strings.Contains(r.Name, "/") || !contains(r.Verbs, "list") {
			continue
		}
		// Discovery lists every verb for these, but calico-apiserver answers
		// MethodNotSupported: ClusterInformation is read-only, profiles are
		// synthesised from namespaces and service accounts.
		readOnly := r.Kind == "ClusterInformation" || r.Kind == "Profile"
		out = append(out, calicoResource{
			Kind:       r.Kind,
			GVR:        schema.GroupVersionResource{Group: calicoGroup, Version: calicoVersion, Resource: r.Name},
			Namespaced: r.Namespaced,
			Deletable:  !readOnly && contains(r.Verbs, "delete"),
			Writable:   !readOnly && contains(r.Verbs, "create") && contains(r.Verbs, "update"),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind < out[j].Kind })
	return out, nil
}

func missingKinds(served []calicoResource) []string {
	have := map[string]bool{}
	for _, r := range served {
		have[r.Kind] = true
	}
	var missing []string
	for _, k := range append([]string{"Tier"}, requiredKinds...) {
		if !have[k] {
			missing = append(missing, k)
		}
	}
	return missing
}

var kccGVR = schema.GroupVersionResource{Group: calicoGroup, Version: calicoVersion, Resource: "kubecontrollersconfigurations"}

// kubeControllersReport is what calico-kube-controllers last wrote to
// KubeControllersConfiguration `default`.
func (c *clients) kubeControllersReport(ctx context.Context) (rv string, running bool, err error) {
	kcc, err := c.dyn.Resource(kccGVR).Get(ctx, "default", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	_, running, _ = unstructured.NestedMap(kcc.Object, "status", "runningConfig")
	return kcc.GetResourceVersion(), running, nil
}

// startKubeControllers (re)starts calico-kube-controllers and waits until it
// has written its running configuration: the first thing it does once it is
// connected and has read its configuration.
func (c *clients) startKubeControllers(ctx context.Context, kc *supervised, env []string) error {
	before, _, err := c.kubeControllersReport(ctx)
	if err != nil {
		return err
	}
	kc.start(env)
	// Normally well under a second; generous for a machine loaded with parallel builds.
	deadline := time.Now().Add(150 * time.Second)
	for {
		rv, running, err := c.kubeControllersReport(ctx)
		if err == nil && running && rv != before {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("calico-kube-controllers did not report its running configuration within 150s (see %s)", kc.log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var clusterInformationStorageGVR = schema.GroupVersionResource{Group: calicoStorageGroup, Version: "v1", Resource: "clusterinformations"}

// ensureClusterInformation writes ClusterInformation `default` in Calico's
// storage, as calico-node's start-up does (calico-apiserver serves it
// read-only).
func (c *clients) ensureClusterInformation(ctx context.Context, spec map[string]any) error {
	ri := c.dyn.Resource(clusterInformationStorageGVR)
	want := &unstructured.Unstructured{Object: normalize(map[string]any{
		"apiVersion": calicoStorageGroup + "/v1", "kind": "ClusterInformation",
		"metadata": map[string]any{"name": "default"}, "spec": spec,
	})}
	cur, err := ri.Get(ctx, "default", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = ri.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if sameField(cur.Object, want.Object, "spec") {
		return nil
	}
	cur.Object["spec"] = want.Object["spec"]
	_, err = ri.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}
