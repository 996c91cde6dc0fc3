package main

import (
	"sync"

	apiextclientset "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

type clients struct {
	cfg    *rest.Config
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	ext    apiextclientset.Interface
	calico []calicoResource

	storedMu   sync.Mutex
	storedSeed map[string]storedSeedObject
}

func newClients(cfg *rest.Config) (*clients, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ext, err := apiextclientset.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &clients{cfg: cfg, cs: cs, dyn: dyn, ext: ext}, nil
}

func (c *clients) resource(kind string) calicoResource {
	for _, r := range c.calico {
		if r.Kind == kind {
			return r
		}
	}
	panic("unknown Calico kind " + kind)
}
