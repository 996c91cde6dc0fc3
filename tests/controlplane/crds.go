package main

// Calico's CRDs, served as projectcalico.org/v3.
//
// The only Calico source this project can fetch is the Go module
// github.com/projectcalico/calico at a pinned pseudo-version (see README.md);
// github.com/projectcalico/api, which holds the native projectcalico.org/v3
// CRD manifests of Calico 3.32+, is not available. So we take Calico's own
// CRD manifests, libcalico-go/config/crd/crd.projectcalico.org_*.yaml (group
// crd.projectcalico.org, version v1), straight from that module in the Go
// module cache (the caller passes --calico-crd-dir; nothing is copied into
// this repository) and install them RE-GROUPED: spec.group becomes
// projectcalico.org, metadata.name becomes <plural>.projectcalico.org and the
// version v1 becomes v3. Calico's schema is kept as it is. The result is
// what clients see on a cluster where Calico serves projectcalico.org/v3 (via
// calico-apiserver, or as CRDs on Calico 3.32+), validated by Calico's own
// OpenAPI schema. Differences from the real v3 API: no Tier kind (not in this
// Calico version's CRDs), no Profile kind (never a CRD; calico-apiserver
// synthesises it), no defaulting or cross-field validation done by
// calico-apiserver's Go code, and no short names.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

const (
	calicoGroup   = "projectcalico.org"
	calicoVersion = "v3"
)

// requiredKinds must be present in the CRD directory.
var requiredKinds = []string{
	"GlobalNetworkPolicy", "NetworkPolicy", "HostEndpoint", "KubeControllersConfiguration",
	"FelixConfiguration", "ClusterInformation", "GlobalNetworkSet", "NetworkSet", "IPPool",
	"BGPConfiguration",
}

type calicoResource struct {
	Kind       string
	GVR        schema.GroupVersionResource
	Namespaced bool
}

func loadCalicoCRDs(dir string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	files, err := filepath.Glob(filepath.Join(dir, "crd.projectcalico.org_*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no crd.projectcalico.org_*.yaml in %s", dir)
	}
	sort.Strings(files)
	var out []*apiextensionsv1.CustomResourceDefinition
	kinds := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(data, crd); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if crd.Spec.Group != "crd.projectcalico.org" {
			return nil, fmt.Errorf("%s: unexpected group %q", f, crd.Spec.Group)
		}
		regroup(crd)
		kinds[crd.Spec.Names.Kind] = true
		out = append(out, crd)
	}
	for _, k := range requiredKinds {
		if !kinds[k] {
			return nil, fmt.Errorf("Calico CRD for kind %s not found in %s", k, dir)
		}
	}
	return out, nil
}

// regroup turns a crd.projectcalico.org/v1 CRD into a projectcalico.org/v3
// one, keeping Calico's schema.
func regroup(crd *apiextensionsv1.CustomResourceDefinition) {
	crd.Spec.Group = calicoGroup
	crd.ObjectMeta = metav1.ObjectMeta{
		Name: crd.Spec.Names.Plural + "." + calicoGroup,
		Labels: map[string]string{
			"calico-harden-test/origin": "crd.projectcalico.org-v1-regrouped",
		},
	}
	for i := range crd.Spec.Versions {
		if crd.Spec.Versions[i].Name == "v1" {
			crd.Spec.Versions[i].Name = calicoVersion
		}
	}
	crd.Status = apiextensionsv1.CustomResourceDefinitionStatus{}
}

func resourcesOf(crds []*apiextensionsv1.CustomResourceDefinition) []calicoResource {
	var out []calicoResource
	for _, crd := range crds {
		out = append(out, calicoResource{
			Kind:       crd.Spec.Names.Kind,
			GVR:        schema.GroupVersionResource{Group: calicoGroup, Version: calicoVersion, Resource: crd.Spec.Names.Plural},
			Namespaced: crd.Spec.Scope == apiextensionsv1.NamespaceScoped,
		})
	}
	return out
}

// installCRDs creates the CRDs, then waits until each is Established and
// discovery serves projectcalico.org/v3 with every resource.
func installCRDs(ctx context.Context, c *clients, crds []*apiextensionsv1.CustomResourceDefinition) error {
	api := c.ext.ApiextensionsV1().CustomResourceDefinitions()
	for _, crd := range crds {
		if _, err := api.Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %s: %w", crd.Name, err)
		}
	}
	c.calico = resourcesOf(crds)
	deadline := time.Now().Add(60 * time.Second)
	for {
		pending := []string{}
		list, err := api.List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		established := map[string]bool{}
		for _, crd := range list.Items {
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					established[crd.Name] = true
				}
			}
		}
		for _, crd := range crds {
			if !established[crd.Name] {
				pending = append(pending, crd.Name)
			}
		}
		if len(pending) == 0 {
			served := map[string]bool{}
			if rl, err := c.cs.Discovery().ServerResourcesForGroupVersion(calicoGroup + "/" + calicoVersion); err == nil {
				for _, r := range rl.APIResources {
					served[r.Name] = true
				}
			}
			for _, r := range c.calico {
				if !served[r.GVR.Resource] {
					pending = append(pending, "discovery:"+r.GVR.Resource)
				}
			}
			if len(pending) == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not established/served within 60s: %s", strings.Join(pending, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
