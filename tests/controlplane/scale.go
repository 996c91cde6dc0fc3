package main

// scale-seed adds a large cluster on top of the running seed, for the plugin's scale test:
// N nodes (with InternalIPs in 127.0.0.0/8), P pods spread over 20 namespaces and those nodes,
// and G GlobalNetworkPolicies with realistic selectors. It writes as the seeder identity, which
// the audit log excludes; `reset` removes everything it made.

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/clientcmd"
)

const scaleNamespaces = 20

// runBounded runs fn(0..n-1) on `workers` goroutines and returns the first error.
func runBounded(n, workers int, fn func(i int) error) error {
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

func cmdScaleSeed(args []string) error {
	fs := flag.NewFlagSet("scale-seed", flag.ExitOnError)
	dir := fs.String("dir", "", "the running control plane's directory")
	nodes := fs.Int("nodes", 2000, "nodes to add")
	pods := fs.Int("pods", 20000, "pods to add")
	policies := fs.Int("policies", 1000, "GlobalNetworkPolicies to add")
	_ = fs.Parse(args)
	if *dir == "" {
		return fmt.Errorf("--dir is required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(*dir, "kubeconfig-internal"))
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 5000, 10000
	c, err := newClients(cfg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	start := time.Now()
	const workers = 64

	for i := 0; i < scaleNamespaces; i++ {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-%02d", i), Labels: map[string]string{"tier": fmt.Sprintf("t%d", i%4)}}}
		if _, err := c.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return err
		}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns.Name}}
		if _, err := c.cs.CoreV1().ServiceAccounts(ns.Name).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	err = runBounded(*nodes, workers, func(i int) error {
		name := fmt.Sprintf("scale-node-%04d", i)
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"kubernetes.io/os": "linux", "kubernetes.io/hostname": name, "kubernetes.io/arch": "amd64",
			"topology.kubernetes.io/zone": fmt.Sprintf("zone-%d", i%3),
		}}}
		created, err := c.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("127.1.%d.%d", i/250, i%250+1)}}
		_, err = c.cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("nodes: %w", err)
	}
	fmt.Printf("nodes: %d in %s\n", *nodes, time.Since(start).Round(time.Millisecond))

	podStart := time.Now()
	err = runBounded(*pods, workers, func(i int) error {
		ns := fmt.Sprintf("scale-%02d", i%scaleNamespaces)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%05d", i), Namespace: ns, Labels: map[string]string{
				"app": fmt.Sprintf("app-%d", i%50), "role": []string{"web", "api", "worker", "db"}[i%4],
			}},
			Spec: corev1.PodSpec{
				NodeName:   fmt.Sprintf("scale-node-%04d", i%max(*nodes, 1)),
				Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}},
			},
		}
		_, err := c.cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("pods: %w", err)
	}
	fmt.Printf("pods: %d in %s\n", *pods, time.Since(podStart).Round(time.Millisecond))

	gnp := schema.GroupVersionResource{Group: calicoGroup, Version: calicoVersion, Resource: "globalnetworkpolicies"}
	polStart := time.Now()
	err = runBounded(*policies, workers, func(i int) error {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "projectcalico.org/v3",
			"kind":       "GlobalNetworkPolicy",
			"metadata":   map[string]any{"name": fmt.Sprintf("scale-policy-%04d", i)},
			"spec": map[string]any{
				"order":    int64(2000 + i),
				"selector": fmt.Sprintf("app == 'app-%d' && role in {'web', 'api'}", i%50),
				"types":    []any{"Ingress", "Egress"},
				"ingress": []any{map[string]any{
					"action": "Allow", "protocol": "TCP",
					"source":      map[string]any{"selector": fmt.Sprintf("role == '%s'", []string{"web", "api", "worker", "db"}[i%4])},
					"destination": map[string]any{"ports": []any{int64(8000 + i%100)}},
				}},
				"egress": []any{map[string]any{
					"action": "Allow", "protocol": "TCP",
					"destination": map[string]any{"nets": []any{fmt.Sprintf("10.%d.0.0/16", i%250)}},
				}},
			},
		}}
		_, err := c.dyn.Resource(gnp).Create(ctx, obj, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("policies: %w", err)
	}
	fmt.Printf("policies: %d in %s\n", *policies, time.Since(polStart).Round(time.Millisecond))
	fmt.Printf("scale seed done in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}
