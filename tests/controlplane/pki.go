package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Client identities. The seeder and emulator identities are excluded from the
// audit log, so that DIR/audit.log only holds what kubeconfig users did.
const (
	adminUser    = "calico-harden-admin"
	limitedUser  = "limited-user"
	seederUser   = "calico-harden-seeder"
	emulatorUser = "calico-harden-emulator"
	// Calico's own components, excluded from the audit log like any
	// controller: what they write follows from what users did.
	calicoAPIServerUser  = "calico-apiserver"
	kubeControllersUser  = "calico-kube-controllers"
	frontProxyClientName = "front-proxy-client"
)

// calicoAPIServiceHost is the name kube-apiserver's aggregator dials for
// calico-apiserver: the ExternalName of Service calico-api, always loopback.
const calicoAPIServiceHost = "localhost"

type keyPair struct {
	CertPEM []byte
	KeyPEM  []byte
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
}

type pki struct {
	CA       keyPair
	Serving  keyPair
	Admin    keyPair
	Limited  keyPair
	Seeder   keyPair
	Emulator keyPair
	// The aggregation layer: kube-apiserver proxies projectcalico.org/v3 to
	// calico-apiserver with FrontProxyClient (signed by FrontProxyCA, which
	// calico-apiserver trusts through the extension-apiserver-authentication
	// ConfigMap), and calico-apiserver serves with CalicoServing.
	FrontProxyCA     keyPair
	FrontProxyClient keyPair
	CalicoServing    keyPair
	CalicoAPIServer  keyPair
	KubeControllers  keyPair
	SAKeyPEM         []byte
	SAPubPEM         []byte
	Dir              string
}

func (p *pki) path(name string) string { return filepath.Join(p.Dir, name) }

var serial int64 = 1

func newKeyPair(tmpl *x509.Certificate, parent *keyPair) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	serial++
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano() + serial)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(10 * 365 * 24 * time.Hour)
	parentCert, parentKey := tmpl, key
	if parent != nil {
		parentCert, parentKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, parentKey)
	if err != nil {
		return keyPair{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return keyPair{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		cert:    cert,
		key:     key,
	}, nil
}

func clientCert(ca *keyPair, cn string, groups ...string) (keyPair, error) {
	return newKeyPair(&x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: groups},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca)
}

// newPKI creates a CA, the apiserver's serving certificate, client
// certificates for every identity and the service-account signing key, and
// writes them to dir.
func newPKI(dir string) (*pki, error) {
	p := &pki{Dir: dir}
	var err error
	if p.CA, err = newKeyPair(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "calico-harden-test-ca"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
	}, nil); err != nil {
		return nil, err
	}
	if p.Serving, err = newKeyPair(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
	}, &p.CA); err != nil {
		return nil, err
	}
	if p.Admin, err = clientCert(&p.CA, adminUser, "system:masters"); err != nil {
		return nil, err
	}
	if p.Limited, err = clientCert(&p.CA, limitedUser); err != nil {
		return nil, err
	}
	if p.Seeder, err = clientCert(&p.CA, seederUser, "system:masters"); err != nil {
		return nil, err
	}
	if p.Emulator, err = clientCert(&p.CA, emulatorUser, "system:masters"); err != nil {
		return nil, err
	}
	if err := p.addCalicoIdentities(); err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	saDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	p.SAKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saDER})
	p.SAPubPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"ca.crt":        p.CA.CertPEM,
		"ca.key":        p.CA.KeyPEM,
		"apiserver.crt": p.Serving.CertPEM,
		"apiserver.key": p.Serving.KeyPEM,
		"sa.key":        p.SAKeyPEM,
		"sa.pub":        p.SAPubPEM,
		// kube-apiserver reads these three from files.
		"front-proxy-ca.crt":     p.FrontProxyCA.CertPEM,
		"front-proxy-client.crt": p.FrontProxyClient.CertPEM,
		"front-proxy-client.key": p.FrontProxyClient.KeyPEM,
		"calico-apiserver.crt":   p.CalicoServing.CertPEM,
		"calico-apiserver.key":   p.CalicoServing.KeyPEM,
	}
	for name, data := range files {
		if err := os.WriteFile(p.path(name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// addCalicoIdentities creates what the aggregation layer and Calico's
// components need: a front-proxy CA and client certificate, calico-apiserver's
// serving certificate (for the Service name the aggregator verifies), and
// client identities for calico-apiserver and calico-kube-controllers.
func (p *pki) addCalicoIdentities() error {
	var err error
	if p.FrontProxyCA, err = newKeyPair(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "calico-harden-test-front-proxy-ca"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
	}, nil); err != nil {
		return err
	}
	if p.FrontProxyClient, err = clientCert(&p.FrontProxyCA, frontProxyClientName); err != nil {
		return err
	}
	dnsNames := []string{calicoAPIServiceHost}
	for _, ns := range []string{"calico-apiserver", "calico-system"} {
		dnsNames = append(dnsNames, "calico-api."+ns+".svc", "calico-api."+ns+".svc.cluster.local")
	}
	if p.CalicoServing, err = newKeyPair(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "calico-api"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dnsNames,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}, &p.CA); err != nil {
		return err
	}
	if p.CalicoAPIServer, err = clientCert(&p.CA, calicoAPIServerUser, "system:masters"); err != nil {
		return err
	}
	p.KubeControllers, err = clientCert(&p.CA, kubeControllersUser, "system:masters")
	return err
}
