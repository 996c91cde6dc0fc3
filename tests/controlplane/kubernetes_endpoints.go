package main

// The `kubernetes` Service's Endpoints and EndpointSlice.
//
// In a real cluster kube-apiserver's endpoint reconciler writes them with its
// advertise address and secure port: for the lab (a kubeadm/k3s-like cluster)
// that is the control node, 10.0.0.1, on 6443. This server only listens on a
// free loopback port (nothing here ever leaves the machine), so it runs with
// --endpoint-reconciler-type=none and we write the two objects the
// reconciler would have written, through the API as usual, pointing at the
// lab's control node. The plugin detects the API server's address and port
// from them, as it does on a real cluster.

import (
	"context"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// labAPIServerPort is the port the lab's API server is published on.
const labAPIServerPort = 6443

func kubernetesEndpoints() (*corev1.Endpoints, *discoveryv1.EndpointSlice) {
	port := int32(labAPIServerPort)
	name, proto := "https", corev1.ProtocolTCP
	ready := true
	addr := labControlNodeIP
	ep := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{
			Name: "kubernetes", Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelSkipMirror: "true"},
		},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: addr}},
			Ports:     []corev1.EndpointPort{{Name: name, Port: port, Protocol: proto}},
		}},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: "kubernetes", Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	return ep, slice
}

// ensureKubernetesEndpoints creates or restores both objects.
func (c *clients) ensureKubernetesEndpoints(ctx context.Context) error {
	ep, slice := kubernetesEndpoints()
	endpoints := c.cs.CoreV1().Endpoints("default")
	cur, err := endpoints.Get(ctx, ep.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := endpoints.Create(ctx, ep, metav1.CreateOptions{}); err != nil {
			return err
		}
	case err != nil:
		return err
	case !reflect.DeepEqual(cur.Subsets, ep.Subsets) || !reflect.DeepEqual(cur.Labels, ep.Labels):
		ep.ResourceVersion = cur.ResourceVersion
		if _, err := endpoints.Update(ctx, ep, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	slices := c.cs.DiscoveryV1().EndpointSlices("default")
	curSlice, err := slices.Get(ctx, slice.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = slices.Create(ctx, slice, metav1.CreateOptions{})
		return err
	case err != nil:
		return err
	case !reflect.DeepEqual(curSlice.Endpoints, slice.Endpoints) || !reflect.DeepEqual(curSlice.Ports, slice.Ports) ||
		!reflect.DeepEqual(curSlice.Labels, slice.Labels):
		slice.ResourceVersion = curSlice.ResourceVersion
		_, err = slices.Update(ctx, slice, metav1.UpdateOptions{})
		return err
	}
	return nil
}
