package main

import (
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// writeKubeconfigs writes DIR/kubeconfig (contexts admin, current, and
// limited) and DIR/kubeconfig-internal (the seeder identity, which the audit
// policy excludes; for debugging and tools that must not show up in
// DIR/audit.log).
func writeKubeconfigs(dir, server string, p *pki) error {
	build := func(current string, users map[string]*keyPair) *clientcmdapi.Config {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["calico-harden"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: p.CA.CertPEM}
		for name, kp := range users {
			cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.CertPEM, ClientKeyData: kp.KeyPEM}
			cfg.Contexts[name] = &clientcmdapi.Context{Cluster: "calico-harden", AuthInfo: name}
		}
		cfg.CurrentContext = current
		return cfg
	}
	if err := clientcmd.WriteToFile(*build("admin", map[string]*keyPair{"admin": &p.Admin, "limited": &p.Limited}), filepath.Join(dir, "kubeconfig")); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*build("seeder", map[string]*keyPair{"seeder": &p.Seeder}), filepath.Join(dir, "kubeconfig-internal"))
}

// writeComponentKubeconfigs writes the kubeconfigs calico-apiserver and
// calico-kube-controllers use (their identities are excluded from the audit
// log, like any controller's).
func writeComponentKubeconfigs(dir string, cfg *rest.Config, p *pki) error {
	for file, kp := range map[string]*keyPair{
		"kubeconfig-calico-apiserver": &p.CalicoAPIServer,
		"kubeconfig-kube-controllers": &p.KubeControllers,
	} {
		c := clientcmdapi.NewConfig()
		c.Clusters["lab"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: p.CA.CertPEM}
		c.AuthInfos["component"] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.CertPEM, ClientKeyData: kp.KeyPEM}
		c.Contexts["component"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "component"}
		c.CurrentContext = "component"
		if err := clientcmd.WriteToFile(*c, filepath.Join(dir, file)); err != nil {
			return err
		}
	}
	return nil
}
