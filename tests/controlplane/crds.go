package main

// Calico's CRDs.
//
// Calico v3.31.0's own CRD manifests, libcalico-go/config/crd/*.yaml, are
// read from the Calico Go module in the module cache (the caller passes
// --calico-crd-dir; nothing is copied into this repository):
//
//   - crd.projectcalico.org/v1 (Calico's storage kinds in the Kubernetes
//     datastore) and policy.networking.k8s.io (AdminNetworkPolicy and
//     BaselineAdminNetworkPolicy) are installed as they are. In the
//     aggregated mode (seeds lab and empty) calico-apiserver and
//     calico-kube-controllers store into them.
//   - The native mode (seed native) stands for Calico 3.32+ serving
//     projectcalico.org/v3 as CRDs, which the Go module proxy does not serve:
//     it is EMULATED by installing the same v1 manifests RE-GROUPED (group
//     projectcalico.org, version v3, Calico's schema unchanged). No Calico code
//     runs behind it: no defaulting, no cross-field validation, no Tier or
//     Profile kinds.

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
	calicoGroup        = "projectcalico.org"
	calicoVersion      = "v3"
	calicoStorageGroup = "crd.projectcalico.org"
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
	// Deletable and Writable: calico-apiserver serves some kinds read-only
	// (ClusterInformation) or synthesises them (Profile).
	Deletable bool
	Writable  bool
}

func loadCalicoCRDs(dir string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
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
		if crd.Spec.Group != calicoStorageGroup && crd.Spec.Group != "policy.networking.k8s.io" {
			return nil, fmt.Errorf("%s: unexpected group %q", f, crd.Spec.Group)
		}
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

// regrouped returns projectcalico.org/v3 copies of the crd.projectcalico.org/v1
// CRDs, keeping Calico's schema: the emulated native mode.
func regrouped(crds []*apiextensionsv1.CustomResourceDefinition) []*apiextensionsv1.CustomResourceDefinition {
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, crd := range crds {
		if crd.Spec.Group == calicoStorageGroup {
			c := crd.DeepCopy()
			regroup(c)
			out = append(out, c)
		}
	}
	return out
}

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
			Deletable:  true,
			Writable:   true,
		})
	}
	return out
}

// installCRDs creates the CRDs, then waits until each is Established and
// served by discovery.
func installCRDs(ctx context.Context, c *clients, crds []*apiextensionsv1.CustomResourceDefinition) error {
	api := c.ext.ApiextensionsV1().CustomResourceDefinitions()
	for _, crd := range crds {
		if _, err := api.Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %s: %w", crd.Name, err)
		}
	}
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
			pending = c.notYetDiscovered(crds)
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

func (c *clients) notYetDiscovered(crds []*apiextensionsv1.CustomResourceDefinition) []string {
	served := map[string]bool{}
	var pending []string
	for _, crd := range crds {
		for _, v := range crd.Spec.Versions {
			gv := crd.Spec.Group + "/" + v.Name
			if _, seen := served[gv]; !seen {
				served[gv] = false
				if rl, err := c.cs.Discovery().ServerResourcesForGroupVersion(gv); err == nil {
					for _, r := range rl.APIResources {
						served[gv+"/"+r.Name] = true
					}
				}
			}
			if !served[gv+"/"+crd.Spec.Names.Plural] {
				pending = append(pending, "discovery:"+gv+"/"+crd.Spec.Names.Plural)
			}
		}
	}
	return pending
}
