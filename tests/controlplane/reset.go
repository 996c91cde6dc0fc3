package main

// Reset: bring the running cluster back to exactly a seed's state, fast.
// `run` applies its seed with the same code, and `controlplane reset` asks
// the running `run` process (over DIR/control.sock) to do it, so that the
// HostEndpoint emulator is paused while the cluster changes under it.

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

func (c *clients) resetTo(ctx context.Context, seedName string, emu *emulator) error {
	seed, err := seedByName(seedName)
	if err != nil {
		return err
	}
	emu.mu.Lock()
	defer emu.mu.Unlock()
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
	// Leave the emulator consistent with the seed before anyone looks.
	return emu.syncLocked(ctx)
}

// resetCalico deletes every projectcalico.org/v3 object that is not in the
// seed and makes the seed's objects exactly as the seed has them.
func (c *clients) resetCalico(ctx context.Context, seed *seedState) error {
	fns := []func() error{}
	for _, r := range c.calico {
		desired := map[string]*unstructured.Unstructured{}
		for _, o := range seed.Calico {
			if o.GetKind() == r.Kind {
				desired[o.GetNamespace()+"/"+o.GetName()] = o
			}
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
				dels = append(dels, func() error { return c.ensureUnstructured(ctx, r.GVR, d, existing[key]) })
			}
			return parallel(dels...)
		})
	}
	return parallel(fns...)
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
// annotations, spec and status equal desired's.
func (c *clients) ensureUnstructured(ctx context.Context, gvr schema.GroupVersionResource, desired, existing *unstructured.Unstructured) error {
	ri := c.dyn.Resource(gvr).Namespace(desired.GetNamespace())
	if existing == nil {
		_, err := ri.Create(ctx, desired.DeepCopy(), metav1.CreateOptions{})
		return err
	}
	if sameField(existing.Object, desired.Object, "metadata", "labels") &&
		sameField(existing.Object, desired.Object, "metadata", "annotations") &&
		sameField(existing.Object, desired.Object, "spec") &&
		sameField(existing.Object, desired.Object, "status") {
		return nil
	}
	u := desired.DeepCopy()
	u.SetResourceVersion(existing.GetResourceVersion())
	_, err := ri.Update(ctx, u, metav1.UpdateOptions{})
	return err
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
		h := seedHash(n)
		want.Annotations = map[string]string{seedHashAnnot: h}
		cur := existing[n.Name]
		if cur != nil && cur.Annotations[seedHashAnnot] == h && reflect.DeepEqual(cur.Labels, want.Labels) &&
			len(cur.Annotations) == 1 && reflect.DeepEqual(cur.Status.Addresses, want.Status.Addresses) &&
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

// serveControlSocket answers `reset SEED` and `ping` on a unix socket.
func serveControlSocket(ctx context.Context, path string, c *clients, emu *emulator) error {
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
			go handleControl(ctx, conn, c, emu)
		}
	}()
	return nil
}

func handleControl(ctx context.Context, conn net.Conn, c *clients, emu *emulator) {
	defer conn.Close()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return
	}
	fields := strings.Fields(line)
	switch {
	case len(fields) == 1 && fields[0] == "ping":
		fmt.Fprintf(conn, "ok pong\n")
	case len(fields) == 2 && fields[0] == "reset":
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if err := c.resetTo(rctx, fields[1], emu); err != nil {
			logf("reset to %s failed: %v", fields[1], err)
			fmt.Fprintf(conn, "error %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
			return
		}
		d := time.Since(start)
		logf("reset to %s in %v", fields[1], d.Round(time.Millisecond))
		fmt.Fprintf(conn, "ok %d\n", d.Milliseconds())
	default:
		fmt.Fprintf(conn, "error unknown command %q\n", strings.TrimSpace(line))
	}
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
	_ = conn.SetDeadline(time.Now().Add(90 * time.Second))
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
