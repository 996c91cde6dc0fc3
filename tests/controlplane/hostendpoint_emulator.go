package main

// EMULATION of calico-kube-controllers' node controller (HostEndpoint
// auto-creation). The real calico-kube-controllers writes
// crd.projectcalico.org/v1 objects through libcalico-go and cannot run
// against this test server, which serves Calico's kinds as
// projectcalico.org/v3 CRDs (see crds.go). This file does what the real
// controller does, as far as kubectl-calico-harden can observe it:
//
//   - It reports its effective configuration in KubeControllersConfiguration
//     `default` status.runningConfig (a copy of spec).
//   - The annotation calico-harden-test/env-override-autocreate:
//     Enabled|Disabled on that object stands for the AUTO_HOST_ENDPOINTS
//     environment variable of kube-controllers: runningConfig then shows that
//     value (and status.environmentVars the variable), and HostEndpoint
//     creation follows runningConfig, not spec.
//   - When the effective autoCreate is Enabled it keeps one HostEndpoint
//     `<node>-auto-hep` per Node (labels = node labels +
//     projectcalico.org/created-by: calico-kube-controllers, node,
//     interfaceName "*", expectedIPs = the node's InternalIPs, profiles
//     [projectcalico-default-allow]), reverting edits and deleting those of
//     nodes that are gone. When Disabled (or the object is absent) it deletes
//     every HostEndpoint carrying the created-by label.
//
// It also emulates two bits of kubelet / kube-controller-manager that the
// tests would otherwise hang on: pods being deleted gracefully are removed
// (the kubelet would confirm termination), and terminating namespaces are
// emptied and finalized (the namespace controller).
//
// It uses its own identity (calico-harden-emulator), excluded from the audit
// log. Watches trigger a sync; a 2 s resync is the fallback. reset holds mu
// while it changes the cluster and syncs before releasing it.

import (
	"context"
	"reflect"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

type emulator struct {
	c       *clients
	mu      sync.Mutex
	trigger chan struct{}
}

func newEmulator(c *clients) *emulator {
	return &emulator{c: c, trigger: make(chan struct{}, 1)}
}

func (e *emulator) kick() {
	select {
	case e.trigger <- struct{}{}:
	default:
	}
}

func (e *emulator) run(ctx context.Context) {
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { e.kick() },
		UpdateFunc: func(any, any) { e.kick() },
		DeleteFunc: func(any) { e.kick() },
	}
	terminating := cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) {
			if m, ok := o.(metav1.Object); ok && m.GetDeletionTimestamp() != nil {
				e.kick()
			}
		},
		UpdateFunc: func(_, o any) {
			if m, ok := o.(metav1.Object); ok && m.GetDeletionTimestamp() != nil {
				e.kick()
			}
		},
	}
	df := dynamicinformer.NewDynamicSharedInformerFactory(e.c.dyn, 0)
	_, _ = df.ForResource(e.c.resource("KubeControllersConfiguration").GVR).Informer().AddEventHandler(handler)
	_, _ = df.ForResource(e.c.resource("HostEndpoint").GVR).Informer().AddEventHandler(handler)
	kf := informers.NewSharedInformerFactory(e.c.cs, 0)
	_, _ = kf.Core().V1().Nodes().Informer().AddEventHandler(handler)
	_, _ = kf.Core().V1().Pods().Informer().AddEventHandler(terminating)
	_, _ = kf.Core().V1().Namespaces().Informer().AddEventHandler(terminating)
	df.Start(ctx.Done())
	kf.Start(ctx.Done())

	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.trigger:
		case <-t.C:
		}
		e.mu.Lock()
		if err := e.syncLocked(ctx); err != nil && ctx.Err() == nil && !apierrors.IsConflict(err) {
			logf("emulator: %v", err)
		}
		e.mu.Unlock()
	}
}

// syncLocked does one full reconciliation. e.mu must be held.
func (e *emulator) syncLocked(ctx context.Context) error {
	if err := e.syncTerminating(ctx); err != nil {
		return err
	}
	return e.syncHostEndpoints(ctx)
}

func (e *emulator) syncTerminating(ctx context.Context) error {
	pods, err := e.c.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return err
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			if err := ignoreNotFound(e.c.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, zeroGrace)); err != nil {
				return err
			}
		}
	}
	nss, err := e.c.cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return err
	}
	for _, ns := range nss.Items {
		if ns.DeletionTimestamp != nil {
			if err := e.c.purgeNamespace(ctx, ns.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *emulator) syncHostEndpoints(ctx context.Context) error {
	kccGVR := e.c.resource("KubeControllersConfiguration").GVR
	hepGVR := e.c.resource("HostEndpoint").GVR
	autoCreate := "Disabled"
	kcc, err := e.c.dyn.Resource(kccGVR).Get(ctx, "default", metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return err
	default:
		spec, _, _ := unstructured.NestedMap(kcc.Object, "spec")
		running := spec
		if running == nil {
			running = map[string]any{}
		}
		override := kcc.GetAnnotations()[envOverrideAnno]
		status := map[string]any{}
		if override == "Enabled" || override == "Disabled" {
			running = runtimeDeepCopy(running)
			_ = unstructured.SetNestedField(running, override, "controllers", "node", "hostEndpoint", "autoCreate")
			env := "disabled"
			if override == "Enabled" {
				env = "enabled"
			}
			status["environmentVars"] = map[string]any{"AUTO_HOST_ENDPOINTS": env}
		}
		status["runningConfig"] = running
		if v, ok, _ := unstructured.NestedString(running, "controllers", "node", "hostEndpoint", "autoCreate"); ok && v == "Enabled" {
			autoCreate = "Enabled"
		}
		cur, _, _ := unstructured.NestedMap(kcc.Object, "status")
		if !reflect.DeepEqual(cur, status) {
			u := kcc.DeepCopy()
			u.Object["status"] = status
			if _, err := e.c.dyn.Resource(kccGVR).Update(ctx, u, metav1.UpdateOptions{}); err != nil {
				return err
			}
		}
	}

	heps, err := e.c.dyn.Resource(hepGVR).List(ctx, metav1.ListOptions{LabelSelector: createdByLabel + "=" + createdByKCC})
	if err != nil {
		return err
	}
	existing := map[string]*unstructured.Unstructured{}
	for i := range heps.Items {
		existing[heps.Items[i].GetName()] = &heps.Items[i]
	}
	desired := map[string]*unstructured.Unstructured{}
	if autoCreate == "Enabled" {
		nodes, err := e.c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for i := range nodes.Items {
			h := autoHEP(&nodes.Items[i])
			desired[h.GetName()] = h
		}
	}
	for name, h := range desired {
		if err := e.c.ensureUnstructured(ctx, hepGVR, h, existing[name]); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	for name := range existing {
		if desired[name] == nil {
			if err := ignoreNotFound(e.c.dyn.Resource(hepGVR).Delete(ctx, name, metav1.DeleteOptions{})); err != nil {
				return err
			}
		}
	}
	return nil
}

func runtimeDeepCopy(m map[string]any) map[string]any {
	return (&unstructured.Unstructured{Object: m}).DeepCopy().Object
}

// autoHEP is the HostEndpoint calico-kube-controllers creates for a node.
func autoHEP(n *corev1.Node) *unstructured.Unstructured {
	labels := map[string]any{}
	for k, v := range n.Labels {
		labels[k] = v
	}
	labels[createdByLabel] = createdByKCC
	ips := []string{}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ips = append(ips, a.Address)
		}
	}
	sort.Strings(ips)
	ipList := []any{}
	for _, ip := range ips {
		ipList = append(ipList, ip)
	}
	return &unstructured.Unstructured{Object: normalize(map[string]any{
		"apiVersion": calicoGroup + "/" + calicoVersion,
		"kind":       "HostEndpoint",
		"metadata":   map[string]any{"name": n.Name + "-auto-hep", "labels": labels},
		"spec": map[string]any{
			"node":          n.Name,
			"interfaceName": "*",
			"expectedIPs":   ipList,
			"profiles":      []any{"projectcalico-default-allow"},
		},
	})}
}
