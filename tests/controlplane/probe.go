package main

// `controlplane probe`: one NEW connection through the dataplane lab, as the
// lab's Felix instances let it through or not.
//
//	controlplane probe --dir DIR --from SRC --to DST --port tcp/N|udp/N [--timeout 1s]
//
// SRC and DST are node/NAME, pod/NAMESPACE/NAME or an IP address (a node's or
// a pod's, or any other: it is then an address of the outside namespace,
// beyond the nodes). At the destination a listener is opened for the
// duration, unless a server already listens there (such as the API server's
// forwarder on 10.0.0.1:6443). TCP: allowed when the handshake completes.
// UDP: a request and its echoed reply; where the port belongs to the kernel
// (Felix's vxlan.calico owns UDP 4789 on every node) nothing can answer, so
// the probe counts its datagram in the destination's iptables `security`
// INPUT chain, which the kernel runs after Felix's filter rules. Prints
// `allowed` or `denied`; exits 0, 1, or 2 on error.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type probeEnd struct {
	label string
	netns string
	ip    string
}

func cmdProbe(args []string) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	dir := fs.String("dir", "", "state directory of a dataplane lab (required)")
	from := fs.String("from", "", "source: node/NAME, pod/NAMESPACE/NAME or an IP")
	to := fs.String("to", "", "destination: node/NAME, pod/NAMESPACE/NAME or an IP")
	port := fs.String("port", "", "tcp/N or udp/N")
	timeout := fs.Duration("timeout", time.Second, "how long to wait before calling it denied")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	allowed, err := probe(*dir, *from, *to, *port, *timeout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "probe: %v\n", err)
		return 2
	}
	if allowed {
		fmt.Println("allowed")
		return 0
	}
	fmt.Println("denied")
	return 1
}

func probe(dir, from, to, port string, timeout time.Duration) (bool, error) {
	if dir == "" || from == "" || to == "" || port == "" {
		return false, errors.New("--dir, --from, --to and --port are required")
	}
	proto, number, ok := strings.Cut(port, "/")
	n, err := strconv.Atoi(number)
	if !ok || (proto != "tcp" && proto != "udp") || err != nil || n < 1 || n > 65535 {
		return false, fmt.Errorf("--port %q: want tcp/N or udp/N with N in 1..65535", port)
	}
	if err := dataplanePrerequisites(); err != nil {
		return false, err
	}
	lab, err := loadDataplane(dir)
	if err != nil {
		return false, err
	}
	src, err := lab.resolve(from)
	if err != nil {
		return false, fmt.Errorf("--from: %w", err)
	}
	dst, err := lab.resolve(to)
	if err != nil {
		return false, fmt.Errorf("--to: %w", err)
	}
	if src.netns == dst.netns {
		return false, fmt.Errorf("%s and %s are the same network namespace: the traffic would not cross any policy", from, to)
	}
	if proto == "tcp" {
		return probeTCP(src, dst, n, timeout)
	}
	return probeUDP(src, dst, n, timeout)
}

// resolve finds where an endpoint of the lab lives.
func (lab *dataplaneLab) resolve(spec string) (probeEnd, error) {
	if name, ok := strings.CutPrefix(spec, "node/"); ok {
		if n := lab.node(name); n != nil {
			return probeEnd{label: spec, netns: n.Netns, ip: n.IP}, nil
		}
		return probeEnd{}, fmt.Errorf("no node %q in the lab", name)
	}
	if rest, ok := strings.CutPrefix(spec, "pod/"); ok {
		ns, name, _ := strings.Cut(rest, "/")
		for _, p := range lab.Pods {
			if p.Namespace == ns && p.Name == name {
				return probeEnd{label: spec, netns: p.Netns, ip: p.IP}, nil
			}
		}
		return probeEnd{}, fmt.Errorf("no pod %q in the lab", rest)
	}
	ip := net.ParseIP(spec)
	if ip == nil || ip.To4() == nil {
		return probeEnd{}, fmt.Errorf("%q is not node/NAME, pod/NAMESPACE/NAME or an IPv4 address", spec)
	}
	for _, n := range lab.Nodes {
		if n.IP == spec {
			return probeEnd{label: spec, netns: n.Netns, ip: n.IP}, nil
		}
	}
	for _, p := range lab.Pods {
		if p.IP == spec && !p.HostNetwork {
			return probeEnd{label: spec, netns: p.Netns, ip: p.IP}, nil
		}
	}
	if ip.IsLoopback() || ip.IsUnspecified() || ip.IsMulticast() {
		return probeEnd{}, fmt.Errorf("%s cannot stand for a machine outside the lab", spec)
	}
	if err := lab.ensureOutsideAddress(spec); err != nil {
		return probeEnd{}, err
	}
	return probeEnd{label: spec, netns: lab.Outside.Netns, ip: spec}, nil
}

func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE)
}

func probeTCP(src, dst probeEnd, port int, timeout time.Duration) (bool, error) {
	addr := net.JoinHostPort(dst.ip, strconv.Itoa(port))
	var listener net.Listener
	err := inNetns(dst.netns, func() (err error) {
		listener, err = net.Listen("tcp", addr)
		return err
	})
	switch {
	case err == nil:
		defer listener.Close()
		go func() {
			for {
				c, err := listener.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	case isAddrInUse(err):
		// A server is already there (the API server's forwarder, a probe
		// running in parallel).
	default:
		return false, fmt.Errorf("listening at %s in %s: %w", addr, dst.label, err)
	}
	var conn net.Conn
	err = inNetns(src.netns, func() (err error) {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src.ip)}}
		conn, err = d.Dial("tcp", addr)
		return err
	})
	if err == nil {
		conn.Close()
		return true, nil
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return false, nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return false, fmt.Errorf("%s refused the connection: the packet got through, but nothing listened", addr)
	}
	return false, fmt.Errorf("connecting from %s to %s: %w", src.label, addr, err)
}

func probeUDP(src, dst probeEnd, port int, timeout time.Duration) (bool, error) {
	addr := &net.UDPAddr{IP: net.ParseIP(dst.ip), Port: port}
	var server net.PacketConn
	err := inNetns(dst.netns, func() (err error) {
		server, err = net.ListenPacket("udp", addr.String())
		return err
	})
	switch {
	case err == nil:
		defer server.Close()
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := server.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = server.WriteTo(buf[:n], from)
			}
		}()
	case isAddrInUse(err):
		return probeUDPCounted(src, dst, addr, timeout)
	default:
		return false, fmt.Errorf("listening at %s in %s: %w", addr, dst.label, err)
	}
	var conn *net.UDPConn
	if err := inNetns(src.netns, func() (err error) {
		conn, err = net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src.ip)}, addr)
		return err
	}); err != nil {
		return false, err
	}
	defer conn.Close()
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	if _, err := conn.Write(nonce); err != nil {
		return false, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err == nil {
		return bytes.Equal(buf[:n], nonce), nil
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return false, nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return false, fmt.Errorf("%s answered port unreachable: the packet got through, but nothing listened", addr)
	}
	return false, err
}

// probeUDPCounted sends one datagram to a port a kernel socket owns and
// reports whether the destination's filter rules let it through, by the
// packet counter of a rule in the `security` table's INPUT chain (run after
// `filter`), matching this probe's source port only.
func probeUDPCounted(src, dst probeEnd, addr *net.UDPAddr, timeout time.Duration) (bool, error) {
	var conn *net.UDPConn
	if err := inNetns(src.netns, func() (err error) {
		conn, err = net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src.ip)}, addr)
		return err
	}); err != nil {
		return false, err
	}
	defer conn.Close()
	srcPort := conn.LocalAddr().(*net.UDPAddr).Port
	tag := make([]byte, 6)
	_, _ = rand.Read(tag)
	comment := "calico-harden-probe-" + hex.EncodeToString(tag)
	rule := []string{"-p", "udp", "-s", src.ip, "--sport", strconv.Itoa(srcPort), "-d", dst.ip,
		"--dport", strconv.Itoa(addr.Port), "-m", "comment", "--comment", comment, "-j", "ACCEPT"}
	if err := inNs(dst.netns, "iptables", append([]string{"-w", "-t", "security", "-I", "INPUT"}, rule...)...); err != nil {
		return false, err
	}
	defer func() {
		_ = inNs(dst.netns, "iptables", append([]string{"-w", "-t", "security", "-D", "INPUT"}, rule...)...)
	}()
	payload := make([]byte, 16)
	_, _ = rand.Read(payload)
	if _, err := conn.Write(payload); err != nil {
		return false, err
	}
	counter := regexp.MustCompile(`^\[(\d+):\d+\].*` + comment)
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", dst.netns, "iptables-save", "-c", "-t", "security").Output()
		cancel()
		if err != nil {
			return false, fmt.Errorf("reading counters in %s: %w", dst.label, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if m := counter.FindStringSubmatch(line); m != nil && m[1] != "0" {
				return true, nil
			}
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}
