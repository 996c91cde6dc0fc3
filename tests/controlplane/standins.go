package main

// Stand-ins for the two bits of the kubelet and kube-controller-manager that
// tests would otherwise hang on (neither runs here): pods being deleted
// gracefully are removed (the kubelet would confirm their termination), and
// terminating namespaces are emptied and finalized (the namespace
// controller). Calico's behaviour is never emulated here: host endpoints come
// from the real calico-kube-controllers (calico_components.go).
//
// It uses its own identity (calico-harden-emulator), excluded from the audit
// log. Watches trigger a sync; a 2 s resync is the fallback. reset holds mu
// while it changes the cluster and syncs before releasing it.

import (
	"context"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	kf := informers.NewSharedInformerFactory(e.c.cs, 0)
	_, _ = kf.Core().V1().Pods().Informer().AddEventHandler(terminating)
	_, _ = kf.Core().V1().Namespaces().Informer().AddEventHandler(terminating)
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
	return e.syncTerminating(ctx)
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
