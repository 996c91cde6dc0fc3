package main

// The `kubernetes` Service's Endpoints and EndpointSlice.
//
// kube-apiserver maintains them itself (the lease endpoint reconciler) with
// its --advertise-address. This control plane advertises 127.0.0.1 so that
// nothing is ever sent off loopback, but API validation rejects loopback
// addresses in Endpoints and EndpointSlices ("may not be in the loopback
// range"), so the reconciler's own write fails. We therefore put exactly the
// two objects the reconciler would have written (same labels, same port
// name/protocol, the real secure port) straight into etcd BEFORE the
// apiserver starts. The reconciler then finds them correct on every pass and
// keeps them; it never needs to write. Nothing else bypasses validation.

import (
	"bytes"
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
)

func seedKubernetesEndpoints(ctx context.Context, etcdURL string, port int) error {
	now := metav1.NewTime(time.Now().UTC().Truncate(time.Second))
	p := int32(port)
	name, proto := "https", corev1.ProtocolTCP
	ready := true
	ep := &corev1.Endpoints{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Endpoints"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "kubernetes", Namespace: "default", CreationTimestamp: now,
			UID:    types.UID("00000000-0000-4000-8000-00000000e9d1"),
			Labels: map[string]string{discoveryv1.LabelSkipMirror: "true"},
		},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: "127.0.0.1"}},
			Ports:     []corev1.EndpointPort{{Name: name, Port: p, Protocol: proto}},
		}},
	}
	slice := &discoveryv1.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "kubernetes", Namespace: "default", CreationTimestamp: now,
			UID:    types.UID("00000000-0000-4000-8000-00000000e9d2"),
			Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"127.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &p, Protocol: &proto}},
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	ser := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	for key, obj := range map[string]runtime.Object{
		"/registry/services/endpoints/default/kubernetes": ep,
		"/registry/endpointslices/default/kubernetes":     slice,
	} {
		var buf bytes.Buffer
		if err := ser.Encode(obj, &buf); err != nil {
			return fmt.Errorf("encoding %s: %w", key, err)
		}
		if _, err := cli.Put(ctx, key, buf.String()); err != nil {
			return fmt.Errorf("writing %s: %w", key, err)
		}
	}
	return nil
}
