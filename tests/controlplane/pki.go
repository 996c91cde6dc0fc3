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
)

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
	SAKeyPEM []byte
	SAPubPEM []byte
	Dir      string
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
	}
	for name, data := range files {
		if err := os.WriteFile(p.path(name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}
