package main

// Reset: bring the running cluster back to exactly a seed's state, fast.
// `run` applies its seed with the same code, and `controlplane reset` asks
// the running `run` process (over DIR/control.sock) to do it, so that the
// stand-ins are paused and calico-kube-controllers is stopped and restarted
// around the changes when it would otherwise fight them.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const managedByLabel = "app.kubernetes.io/managed-by=kubectl-calico-harden"
const testRBACLabel = "calico-harden-test=true"

var zeroGrace = metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}

// parallel runs fns concurrently and joins their errors.
func parallel(fns ...func() error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(fns))
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (cp *controlPlane) resetTo(ctx context.Context, seedName string) error {
	seed, err := seedByName(seedName)
	if err != nil {
		return err
	}
	// Records the running lab adds to its seed (the flow-log path's pod).
	seed.Pods = append(seed.Pods, cp.extraPods...)
	if seed.Native != cp.native {
		return fmt.Errorf("seed %s needs a control plane started with --seed %s (projectcalico.org/v3 is served %s here)",
			seedName, map[bool]string{true: "native", false: "lab"}[seed.Native], cp.apiMode())
	}
	c := cp.seeder
	cp.emu.mu.Lock()
	defer cp.emu.mu.Unlock()
	restart, err := cp.stopKubeControllersIfNeeded(ctx, seed)
	if err != nil {
		return err
	}
	start := time.Now()
	timed := func(what string, fn func() error) func() error {
		return func() error {
			err := fn()
			if d := time.Since(start); d > time.Second {
				logf("reset: %s took %v", what, d.Round(time.Millisecond))
			}
			return err
		}
	}
	err = parallel(
		timed("calico", func() error { return c.resetCalico(ctx, seed) }),
		timed("labelled", func() error { return c.resetLabelled(ctx) }),
		timed("nodes", func() error { return c.resetNodes(ctx, seed) }),
		timed("kubernetes endpoints", func() error { return c.ensureKubernetesEndpoints(ctx) }),
		timed("namespaces+pods", func() error {
			if err := c.resetNamespaces(ctx, seed); err != nil {
				return err
			}
			return c.resetPods(ctx, seed)
		}),
	)
	if err != nil {
		return err
	}
	if restart {
		if err := c.startKubeControllers(ctx, cp.kubeControllers, kubeControllersEnv(cp.dir, nil)); err != nil {
			return err
		}
		logf("reset: calico-kube-controllers restarted in %v", time.Since(start).Round(time.Millisecond))
	}
	return cp.emu.syncLocked(ctx)
}

func (cp *controlPlane) apiMode() string {
	if cp.native {
		return "as CRDs (emulated native mode)"
	}
	return "by calico-apiserver"
}

// stopKubeControllersIfNeeded stops calico-kube-controllers when what it
// runs with or has made would fight the reset (host endpoints, autoCreate or
// an environment override), so that it starts again on the seed's state.
// It reports whether kube-controllers must be (re)started afterwards.
func (cp *controlPlane) stopKubeControllersIfNeeded(ctx context.Context, seed *seedState) (bool, error) {
	kc := cp.kubeControllers
	if kc == nil {
		return false, nil
	}
	if !seed.KubeControllers {
		kc.stop()
		cp.kubeControllersEnv = nil
		return false, nil
	}
	dirty := !kc.running() || len(cp.kubeControllersEnv) > 0
	if !dirty {
		kcc, err := cp.seeder.dyn.Resource(kccGVR).Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			return false, fmt.Errorf("reading KubeControllersConfiguration: %w", err)
		}
		running, _, _ := unstructured.NestedString(kcc.Object, "status", "runningConfig", "controllers", "node", "hostEndpoint", "autoCreate")
		dirty = running != "Disabled"
	}
	if !dirty {
		heps, err := cp.seeder.dyn.Resource(cp.seeder.resource("HostEndpoint").GVR).List(ctx, metav1.ListOptions{Limit: 1})
		if err != nil {
			return false, fmt.Errorf("listing host endpoints: %w", err)
		}
		dirty = len(heps.Items) > 0
	}
	if dirty {
		kc.stop()
		cp.kubeControllersEnv = nil
	}
	return dirty, nil
}

// setKubeControllersEnv restarts calico-kube-controllers with the given
// environment overrides (NAME=value), as editing its Deployment would.
func (cp *controlPlane) setKubeControllersEnv(ctx context.Context, overrides []string) error {
	if cp.kubeControllers == nil {
		return fmt.Errorf("calico-kube-controllers does not run with the %s seed", map[bool]string{true: "native", false: "empty"}[cp.native])
	}
	cp.emu.mu.Lock()
	defer cp.emu.mu.Unlock()
	cp.kubeControllers.stop()
	cp.kubeControllersEnv = overrides
	return cp.seeder.startKubeControllers(ctx, cp.kubeControllers, kubeControllersEnv(cp.dir, overrides))
}

// resetCalico deletes every projectcalico.org/v3 object that is not in the
// seed and makes the seed's objects exactly as the seed has them. Tiers go
// last (calico-apiserver refuses to delete a tier that still has policies),
// and the tiers Calico creates itself are kept as they are.
func (c *clients) resetCalico(ctx context.Context, seed *seedState) error {
	var tiers, others []calicoResource
	for _, r := range c.calico {
		if r.Kind == "Tier" {
			tiers = append(tiers, r)
		} else {
			others = append(others, r)
		}
	}
	if err := c.resetCalicoKinds(ctx, seed, others); err != nil {
		return err
	}
	if err := c.resetCalicoKinds(ctx, seed, tiers); err != nil {
		return err
	}
	if seed.ClusterInformation != nil && !seed.Native {
		return c.ensureClusterInformation(ctx, seed.ClusterInformation)
	}
	return nil
}

func (c *clients) resetCalicoKinds(ctx context.Context, seed *seedState, kinds []calicoResource) error {
	fns := []func() error{}
	for _, r := range kinds {
		if !r.Deletable && !r.Writable {
			continue // read-only or synthesised (ClusterInformation, Profile)
		}
		desired := map[string]*unstructured.Unstructured{}
		for _, o := range seed.Calico {
			if o.GetKind() == r.Kind {
				desired[o.GetNamespace()+"/"+o.GetName()] = o
			}
		}
		if len(desired) == 0 && !seed.Native {
			// Nothing of this kind in the seed: empty Calico's storage in one request.
			// Through calico-apiserver each delete is a request of its own, and it
			// writes to its storage at 50 requests/s (libcalico-go's default QPS): a
			// thousand policies of the scale test would take 20 s.
			storage := schema.GroupVersionResource{Group: calicoStorageGroup, Version: "v1", Resource: r.GVR.Resource}
			fns = append(fns, func() error {
				err := c.dyn.Resource(storage).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
				if apierrors.IsNotFound(err) {
					return c.deleteEach(ctx, r.GVR)
				}
				return err
			})
			continue
		}
		fns = append(fns, func() error {
			list, err := c.dyn.Resource(r.GVR).List(ctx, metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("listing %s: %w", r.GVR.Resource, err)
			}
			existing := map[string]*unstructured.Unstructured{}
			dels := []func() error{}
			for i := range list.Items {
				o := &list.Items[i]
				key := o.GetNamespace() + "/" + o.GetName()
				existing[key] = o
				if desired[key] == nil {
					dels = append(dels, func() error {
						return ignoreNotFound(c.dyn.Resource(r.GVR).Namespace(o.GetNamespace()).Delete(ctx, o.GetName(), metav1.DeleteOptions{}))
					})
				}
			}
			for key, d := range desired {
				if r.Kind == "Tier" && existing[key] != nil {
					continue // Calico's own tiers: kept as Calico made them
				}
				dels = append(dels, func() error { return c.ensureUnstructured(ctx, r.GVR, d, existing[key]) })
			}
			return parallel(dels...)
		})
	}
	return parallel(fns...)
}

// deleteEach deletes every object of a kind, one request each.
func (c *clients) deleteEach(ctx context.Context, gvr schema.GroupVersionResource) error {
	list, err := c.dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing %s: %w", gvr.Resource, err)
	}
	dels := []func() error{}
	for i := range list.Items {
		o := &list.Items[i]
		dels = append(dels, func() error {
			return ignoreNotFound(c.dyn.Resource(gvr).Namespace(o.GetNamespace()).Delete(ctx, o.GetName(), metav1.DeleteOptions{}))
		})
	}
	return parallel(dels...)
}

func emptyToNil(v any) any {
	switch t := v.(type) {
	case map[string]any:
		if len(t) == 0 {
			return nil
		}
	case map[string]string:
		if len(t) == 0 {
			return nil
		}
	case []any:
		if len(t) == 0 {
			return nil
		}
	}
	return v
}

func sameField(a, b map[string]any, fields ...string) bool {
	va, _, _ := unstructured.NestedFieldNoCopy(a, fields...)
	vb, _, _ := unstructured.NestedFieldNoCopy(b, fields...)
	return reflect.DeepEqual(emptyToNil(va), emptyToNil(vb))
}

// ensureUnstructured creates desired, or updates existing so that its labels,
// annotations and spec (and status, where the seed has one) equal desired's
// as the server stored them: calico-apiserver fills in defaults, so what it
// answered to the last write of desired is what later resets compare with.
func (c *clients) ensureUnstructured(ctx context.Context, gvr schema.GroupVersionResource, desired, existing *unstructured.Unstructured) error {
	ri := c.dyn.Resource(gvr).Namespace(desired.GetNamespace())
	key := gvr.Resource + "/" + desired.GetNamespace() + "/" + desired.GetName()
	want := c.stored(key, desired)
	if existing != nil && sameObject(existing.Object, want.Object, desired.Object["status"] != nil) {
		return nil
	}
	var answer *unstructured.Unstructured
	var err error
	if existing == nil {
		answer, err = ri.Create(ctx, desired.DeepCopy(), metav1.CreateOptions{})
	} else {
		u := desired.DeepCopy()
		u.SetResourceVersion(existing.GetResourceVersion())
		answer, err = ri.Update(ctx, u, metav1.UpdateOptions{})
	}
	if err == nil {
		c.remember(key, desired, answer)
	}
	return err
}

func sameObject(a, b map[string]any, withStatus bool) bool {
	return sameField(a, b, "metadata", "labels") && sameField(a, b, "metadata", "annotations") &&
		sameField(a, b, "spec") && (!withStatus || sameField(a, b, "status"))
}

type storedSeedObject struct {
	seedHash string
	answer   *unstructured.Unstructured
}

// stored is the server's answer to the last write of desired, or desired.
func (c *clients) stored(key string, desired *unstructured.Unstructured) *unstructured.Unstructured {
	c.storedMu.Lock()
	defer c.storedMu.Unlock()
	if s, ok := c.storedSeed[key]; ok && s.seedHash == seedHash(desired.Object) {
		return s.answer
	}
	return desired
}

func (c *clients) remember(key string, desired, answer *unstructured.Unstructured) {
	c.storedMu.Lock()
	defer c.storedMu.Unlock()
	if c.storedSeed == nil {
		c.storedSeed = map[string]storedSeedObject{}
	}
	c.storedSeed[key] = storedSeedObject{seedHash: seedHash(desired.Object), answer: answer}
}

// resetLabelled deletes the plugin's ConfigMaps and the tests' RBAC objects.
func (c *clients) resetLabelled(ctx context.Context) error {
	cms, err := c.cs.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{LabelSelector: managedByLabel})
	if err != nil {
		return err
	}
	fns := []func() error{
		func() error {
			return c.cs.RbacV1().ClusterRoleBindings().DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: testRBACLabel})
		},
		func() error {
			return c.cs.RbacV1().ClusterRoles().DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: testRBACLabel})
		},
	}
	for _, cm := range cms.Items {
		fns = append(fns, func() error {
			return ignoreNotFound(c.cs.CoreV1().ConfigMaps(cm.Namespace).Delete(ctx, cm.Name, metav1.DeleteOptions{}))
		})
	}
	return parallel(fns...)
}

func seedHash(v any) string {
	data, _ := json.Marshal(v)
	return fmt.Sprintf("%016x", hash(string(data)))
}

func (c *clients) resetNodes(ctx context.Context, seed *seedState) error {
	list, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	existing := map[string]*corev1.Node{}
	for i := range list.Items {
		existing[list.Items[i].Name] = &list.Items[i]
	}
	desired := map[string]bool{}
	fns := []func() error{}
	for _, n := range seed.Nodes {
		desired[n.Name] = true
		want := n.DeepCopy()
		want.Annotations = map[string]string{seedHashAnnot: seedHash(n)}
		for k, v := range n.Annotations {
			want.Annotations[k] = v
		}
		cur := existing[n.Name]
		if cur != nil && reflect.DeepEqual(cur.Annotations, want.Annotations) && reflect.DeepEqual(cur.Labels, want.Labels) &&
			reflect.DeepEqual(cur.Status.Addresses, want.Status.Addresses) &&
			len(cur.Spec.Taints) == 0 && !cur.Spec.Unschedulable {
			continue
		}
		fns = append(fns, func() error {
			if cur != nil {
				if err := ignoreNotFound(c.cs.CoreV1().Nodes().Delete(ctx, cur.Name, zeroGrace)); err != nil {
					return err
				}
			}
			created, err := c.cs.CoreV1().Nodes().Create(ctx, want, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("creating node %s: %w", want.Name, err)
			}
			created.Status = want.Status
			_, err = c.cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
			return err
		})
	}
	for name := range existing {
		if !desired[name] {
			fns = append(fns, func() error { return ignoreNotFound(c.cs.CoreV1().Nodes().Delete(ctx, name, zeroGrace)) })
		}
	}
	return parallel(fns...)
}

// resetNamespaces makes the seed's namespaces and service accounts exist and
// deletes every other non-system namespace (emulating the namespace
// controller, which this control plane does not run).
func (c *clients) resetNamespaces(ctx context.Context, seed *seedState) error {
	list, err := c.cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, ns := range seed.Namespaces {
		want[ns] = true
	}
	existing := map[string]*corev1.Namespace{}
	fns := []func() error{}
	for i := range list.Items {
		ns := &list.Items[i]
		existing[ns.Name] = ns
		if systemNamespaces[ns.Name] {
			continue
		}
		if !want[ns.Name] || ns.DeletionTimestamp != nil {
			fns = append(fns, func() error { return c.purgeNamespace(ctx, ns.Name) })
		}
	}
	if err := parallel(fns...); err != nil {
		return err
	}
	fns = nil
	if len(seed.Namespaces) == 0 {
		return nil
	}
	for _, name := range append([]string{"default", "kube-system"}, seed.Namespaces...) {
		fns = append(fns, func() error {
			if ns := existing[name]; ns == nil || ns.DeletionTimestamp != nil {
				_, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
				if err != nil && !apierrors.IsAlreadyExists(err) {
					return err
				}
			}
			sas, err := c.cs.CoreV1().ServiceAccounts(name).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			have := map[string]bool{}
			for _, sa := range sas.Items {
				have[sa.Name] = true
			}
			for _, sa := range append([]string{"default"}, seed.ServiceAccounts[name]...) {
				if have[sa] {
					continue
				}
				_, err := c.cs.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
				if err != nil && !apierrors.IsAlreadyExists(err) {
					return err
				}
			}
			return nil
		})
	}
	return parallel(fns...)
}

// purgeNamespace deletes a namespace and everything in it, then finalizes
// it, as the namespace controller of kube-controller-manager would.
func (c *clients) purgeNamespace(ctx context.Context, name string) error {
	if err := ignoreNotFound(c.cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})); err != nil {
		return err
	}
	lists, err := c.cs.Discovery().ServerPreferredNamespacedResources()
	if err != nil && len(lists) == 0 {
		return err
	}
	fns := []func() error{}
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !contains(r.Verbs, "deletecollection") {
				continue
			}
			gvr := gv.WithResource(r.Name)
			fns = append(fns, func() error {
				err := c.dyn.Resource(gvr).Namespace(name).DeleteCollection(ctx, zeroGrace, metav1.ListOptions{})
				if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
					return nil
				}
				return err
			})
		}
	}
	if err := parallel(fns...); err != nil {
		return err
	}
	ns, err := c.cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return ignoreNotFound(err)
	}
	ns.Spec.Finalizers = nil
	_, err = c.cs.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{})
	if err := ignoreNotFound(err); err != nil {
		return err
	}
	// Wait until it is really gone, so that it can be re-created.
	for i := 0; i < 100; i++ {
		if _, err := c.cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("namespace %s still there after finalizing", name)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (c *clients) resetPods(ctx context.Context, seed *seedState) error {
	list, err := c.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	existing := map[string]*corev1.Pod{}
	for i := range list.Items {
		p := &list.Items[i]
		existing[p.Namespace+"/"+p.Name] = p
	}
	desired := map[string]bool{}
	fns := []func() error{}
	for _, p := range seed.Pods {
		key := p.Namespace + "/" + p.Name
		desired[key] = true
		want := p.DeepCopy()
		h := seedHash(p)
		want.Annotations = map[string]string{seedHashAnnot: h}
		cur := existing[key]
		if cur != nil && cur.DeletionTimestamp == nil && cur.Annotations[seedHashAnnot] == h && len(cur.Annotations) == 1 &&
			reflect.DeepEqual(cur.Labels, want.Labels) && cur.Status.PodIP == want.Status.PodIP && cur.Status.Phase == corev1.PodRunning &&
			sameImages(cur, want) {
			continue
		}
		fns = append(fns, func() error {
			if cur != nil {
				if err := ignoreNotFound(c.cs.CoreV1().Pods(cur.Namespace).Delete(ctx, cur.Name, zeroGrace)); err != nil {
					return err
				}
			}
			status := want.Status
			want.Status = corev1.PodStatus{}
			created, err := c.cs.CoreV1().Pods(want.Namespace).Create(ctx, want, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("creating pod %s: %w", key, err)
			}
			created.Status = status
			_, err = c.cs.CoreV1().Pods(want.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{})
			return err
		})
	}
	for key, p := range existing {
		if !desired[key] {
			fns = append(fns, func() error { return ignoreNotFound(c.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, zeroGrace)) })
		}
	}
	return parallel(fns...)
}

// sameImages: tests change pod images (kubectl set image) to fake versions.
func sameImages(a, b *corev1.Pod) bool {
	if len(a.Spec.Containers) != len(b.Spec.Containers) {
		return false
	}
	for i := range a.Spec.Containers {
		if a.Spec.Containers[i].Image != b.Spec.Containers[i].Image {
			return false
		}
	}
	return true
}

// serveControlSocket answers `reset SEED`, `kube-controllers-env [NAME=value...]`
// and `ping` on a unix socket.
func serveControlSocket(ctx context.Context, path string, cp *controlPlane) error {
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go handleControl(ctx, conn, cp)
		}
	}()
	return nil
}

func handleControl(ctx context.Context, conn net.Conn, cp *controlPlane) {
	defer conn.Close()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return
	}
	fields := strings.Fields(line)
	if len(fields) == 0 {
		fmt.Fprintf(conn, "error empty command\n")
		return
	}
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 170*time.Second)
	defer cancel()
	switch {
	case len(fields) == 1 && fields[0] == "ping":
		fmt.Fprintf(conn, "ok pong\n")
		return
	case len(fields) == 2 && fields[0] == "reset":
		err = cp.resetTo(rctx, fields[1])
	case fields[0] == "kube-controllers-env":
		err = cp.setKubeControllersEnv(rctx, fields[1:])
	default:
		fmt.Fprintf(conn, "error unknown command %q\n", strings.TrimSpace(line))
		return
	}
	if err != nil {
		logf("%s failed: %v", strings.Join(fields, " "), err)
		fmt.Fprintf(conn, "error %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	d := time.Since(start)
	logf("%s in %v", strings.Join(fields, " "), d.Round(time.Millisecond))
	fmt.Fprintf(conn, "ok %d\n", d.Milliseconds())
}

// cmdReset asks the running control plane in DIR to reset to a seed.
func cmdReset(args []string) error {
	fs := flag.NewFlagSet("reset", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory of a running control plane (required)")
	seedName := fs.String("seed", "lab", "seed: lab, native or empty")
	_ = fs.Parse(args)
	if *dir == "" {
		return errors.New("--dir is required")
	}
	if _, err := seedByName(*seedName); err != nil {
		return err
	}
	conn, err := net.DialTimeout("unix", filepath.Join(*dir, "control.sock"), 5*time.Second)
	if err != nil {
		return fmt.Errorf("is the control plane in %s running? %w", *dir, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(180 * time.Second))
	fmt.Fprintf(conn, "reset %s\n", *seedName)
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	reply = strings.TrimSpace(reply)
	if !strings.HasPrefix(reply, "ok") {
		return errors.New(strings.TrimPrefix(reply, "error "))
	}
	fmt.Printf("reset to %s in %s ms\n", *seedName, strings.TrimPrefix(reply, "ok "))
	return nil
}
