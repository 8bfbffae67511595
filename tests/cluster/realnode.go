package main

// Real nodes: a kubelet, containerd (Debian's, with runc and the CNI bridge) and kube-proxy per
// node, each node in its own network, mount, PID and UTS namespaces, joined to the control plane
// beside the fake nodes.
//
// Network: the cluster creates one bridge on the host (clusterBridge, hostAddress). Each node's
// namespace has eth0 on that bridge (the node's InternalIP) and its own CNI bridge for its pods
// (podCIDR(i)). The host routes the pod and service ranges to the nodes over the cluster's bridge
// and forwards nothing itself; kube-proxy's rules, the CNI's bridges and every pod network live
// inside the node namespaces and vanish with them. The apiserver listens on loopback only; a
// proxy on hostAddress gives pods and nodes a way to it, published as the `kubernetes` Service.
//
// Host state: the node's fixed paths (/var/lib/kubelet, /run/containerd, /var/lib/cni,
// /var/log/containers, ...) are bind mounts from the state directory inside the node's private
// mount namespace, so the host never sees them. What is left on the host — the bridge, the
// kubelet's cgroup roots, the kernel settings the kubelet tunes, mount point directories the
// cluster had to create — is recorded in DIR/host-state.json before it is changed and undone at
// stop, also by `localcluster stop` after a crash.

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

const (
	clusterBridge = "lcbr0"
	hostAddress   = "10.250.0.1"
	bridgePrefix  = 24
	clusterCIDR   = "10.244.0.0/16"
	pauseImage    = "localcluster.local/pause:1"
	sampleImage   = "localcluster.local/sample-app:1"
	// RealNodeLabel marks the real nodes, so suites can select them.
	realNodeLabel = "localcluster.dev/real-node"
)

// nodeMounts are the fixed paths a kubelet and containerd use that are not configurable, or not
// in every place; each is a bind mount of DIR/nodes/NAME/<key> inside the node's mount namespace.
var nodeMounts = []struct{ sub, target string }{
	{"kubelet", "/var/lib/kubelet"},
	{"containerd", "/var/lib/containerd"},
	{"run-containerd", "/run/containerd"},
	{"cni", "/var/lib/cni"},
	{"cni-conf", "/etc/cni/net.d"},
	{"log-containers", "/var/log/containers"},
	{"log-pods", "/var/log/pods"},
}

// kernelTunables are the settings the kubelet changes at start (setupKernelTunables): they are
// restored at stop.
var kernelTunables = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

func realNodeName(i int) string { return fmt.Sprintf("real-%d", i) }
func nodeAddress(i int) string  { return fmt.Sprintf("10.250.0.%d", 10+i) }
func podCIDR(i int) string      { return fmt.Sprintf("10.244.%d.0/24", i) }
func podGateway(i int) string   { return fmt.Sprintf("10.244.%d.1", i) }
func nodesDir(dir string) string {
	return filepath.Join(dir, "nodes")
}
func hostStateFile(dir string) string { return filepath.Join(dir, "host-state.json") }

// hostState is what the cluster changed on the host, written before the change.
type hostState struct {
	Bridge       string            `json:"bridge,omitempty"`
	Cgroups      []string          `json:"cgroups,omitempty"`
	Sysctls      map[string]string `json:"sysctls,omitempty"`
	CreatedPaths []string          `json:"createdPaths,omitempty"`
	mu           sync.Mutex
	dir          string
}

func (h *hostState) save() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(hostStateFile(h.dir), data)
}

// restoreHost undoes what host-state.json records. It is safe to run twice.
func restoreHost(dir string) error {
	data, err := os.ReadFile(hostStateFile(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var h hostState
	if err := json.Unmarshal(data, &h); err != nil {
		return fmt.Errorf("%s: %w", hostStateFile(dir), err)
	}
	var problems []string
	if h.Bridge != "" {
		if out, err := exec.Command("ip", "link", "del", h.Bridge).CombinedOutput(); err != nil &&
			!strings.Contains(string(out), "Cannot find device") {
			problems = append(problems, fmt.Sprintf("ip link del %s: %s", h.Bridge, strings.TrimSpace(string(out))))
		}
	}
	// The containers' processes are gone once their PID namespace's init is; their cgroups may
	// take a moment longer to become empty.
	began := time.Now()
	deadline := began.Add(15 * time.Second)
	for _, root := range h.Cgroups {
		if err := removeCgroupTree(root, time.Until(deadline)); err != nil {
			problems = append(problems, err.Error())
		}
	}
	logf("removed the real nodes' cgroups in %s", time.Since(began).Round(time.Millisecond))
	keys := make([]string, 0, len(h.Sysctls))
	for k := range h.Sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := os.WriteFile("/proc/sys/"+k, []byte(h.Sysctls[k]), 0o644); err != nil {
			problems = append(problems, fmt.Sprintf("restore %s: %v", k, err))
		}
	}
	// Deepest first, and only if empty: the cluster created them as mount points.
	for i := len(h.CreatedPaths) - 1; i >= 0; i-- {
		if err := os.Remove(h.CreatedPaths[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			problems = append(problems, fmt.Sprintf("remove %s: %v", h.CreatedPaths[i], err))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("host state not fully restored: %s", strings.Join(problems, "; "))
	}
	return os.Remove(hostStateFile(dir))
}

// removeCgroupTree removes a cgroup directory and everything below it, deepest first, retrying
// until the deadline while tasks are still leaving.
func removeCgroupTree(root string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		var last error
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				last = fmt.Errorf("rmdir %s: %w", dirs[i], err)
			}
		}
		if last == nil || time.Now().After(deadline) {
			return last
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cgroupHierarchies lists the mounted cgroup hierarchies: the kubelet here runs on v1, and runc
// in hybrid mode also makes the containers' cgroups in the v2 one.
func cgroupHierarchies() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && (f[2] == "cgroup" || f[2] == "cgroup2") {
			out = append(out, f[1])
		}
	}
	return out, nil
}

// realNodes is the host side of the real nodes of one cluster.
type realNodes struct {
	dir      string
	count    int
	server   string // the apiserver on loopback
	port     int
	p        *pki
	state    *hostState
	proxy    net.Listener
	children *supervisor
}

// prepare makes the host ready for the nodes: the bridge, the apiserver proxy, certificates,
// cgroup roots, mount points and the sandbox image. It records each change before making it.
func (r *realNodes) prepare() error {
	for _, tool := range []string{"ip", "containerd", "ctr", "runc", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("real nodes need %s (run scripts/install-node-packages.sh): %w", tool, err)
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		return fmt.Errorf("real nodes need the CNI plugins in /usr/lib/cni (run scripts/install-node-packages.sh): %w", err)
	}
	if err := restoreHost(r.dir); err != nil {
		return fmt.Errorf("left over from an earlier run in %s: %w", r.dir, err)
	}
	if out, err := exec.Command("ip", "-o", "link", "show", clusterBridge).CombinedOutput(); err == nil {
		return fmt.Errorf("link %s exists (%s): another cluster with real nodes is running (its directory is the link's alias); stop it first",
			clusterBridge, strings.TrimSpace(string(out)))
	}
	r.state = &hostState{dir: r.dir, Sysctls: map[string]string{}}
	for _, k := range kernelTunables {
		v, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return err
		}
		r.state.Sysctls[k] = strings.TrimSpace(string(v))
	}
	r.state.Bridge = clusterBridge
	hierarchies, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for i := 0; i < r.count; i++ {
		for _, h := range hierarchies {
			r.state.Cgroups = append(r.state.Cgroups, filepath.Join(h, "localcluster-"+realNodeName(i)))
		}
	}
	for _, m := range nodeMounts {
		for p := m.target; p != "/"; p = filepath.Dir(p) {
			if !fileExists(p) {
				r.state.CreatedPaths = append([]string{p}, r.state.CreatedPaths...)
			}
		}
	}
	r.state.CreatedPaths = dedupe(r.state.CreatedPaths)
	if err := r.state.save(); err != nil {
		return err
	}

	for _, args := range [][]string{
		{"link", "add", clusterBridge, "type", "bridge"},
		// The alias names the owner in `ip link`, for whoever finds the bridge.
		{"link", "set", clusterBridge, "alias", "localcluster " + r.dir},
		{"addr", "add", fmt.Sprintf("%s/%d", hostAddress, bridgePrefix), "dev", clusterBridge},
		{"link", "set", clusterBridge, "up"},
	} {
		if err := run("ip", args...); err != nil {
			return err
		}
	}
	for _, p := range r.state.CreatedPaths {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	for _, root := range r.state.Cgroups {
		if err := os.MkdirAll(root, 0o755); err != nil {
			return err
		}
		// A new cpuset cgroup has no CPUs or memory nodes until given its parent's.
		if strings.HasSuffix(filepath.Dir(root), "cpuset") {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(filepath.Dir(root), f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(root, f), v, 0o644); err != nil {
					return err
				}
			}
		}
	}

	// Pods and nodes reach the apiserver through this proxy: the apiserver stays on loopback.
	l, err := net.Listen("tcp", net.JoinHostPort(hostAddress, strconv.Itoa(r.port)))
	if err != nil {
		return fmt.Errorf("apiserver proxy: %w", err)
	}
	r.proxy = l
	go serveProxy(l, net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)))

	if err := r.p.ensureNodes(r.count); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(nodesDir(r.dir), 0o755); err != nil {
		return err
	}
	for _, img := range []struct{ file, ref, binary, name, user string }{
		{"pause.oci.tar", pauseImage, "localcluster-pause", "pause", "65535:65535"},
		{"sample-app.oci.tar", sampleImage, "localcluster-sample-app", "sample-app", "65532:65532"},
	} {
		if _, err := writeSingleFileImage(filepath.Join(nodesDir(r.dir), img.file), img.ref,
			filepath.Join(filepath.Dir(self), img.binary), img.name, img.user); err != nil {
			return fmt.Errorf("image %s (is %s beside localcluster? run scripts/build-localcluster.sh): %w", img.ref, img.binary, err)
		}
	}
	return nil
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) < len(out[j]) })
	return out
}

func serveProxy(l net.Listener, target string) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(up, conn); done <- struct{}{} }()
			go func() { _, _ = io.Copy(conn, up); done <- struct{}{} }()
			<-done
		}()
	}
}

// publishAPIServer points the `kubernetes` Service at the proxy, so in-cluster clients work.
func publishAPIServer(ctx context.Context, client kubernetes.Interface, port int) error {
	ep := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: hostAddress}},
			Ports:     []corev1.EndpointPort{{Name: "https", Port: int32(port), Protocol: corev1.ProtocolTCP}},
		}},
	}
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := client.CoreV1().Endpoints("default").Create(ctx, ep, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			_, err = client.CoreV1().Endpoints("default").Update(ctx, ep, metav1.UpdateOptions{})
		}
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// start launches every node and wires its eth0 onto the cluster's bridge.
func (r *realNodes) start() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for i := 0; i < r.count; i++ {
		name := realNodeName(i)
		c, err := r.children.launchWith(name, os.O_TRUNC, &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS,
			Pdeathsig:  syscall.SIGKILL,
		}, self, "node", "--dir", r.dir, "--index", strconv.Itoa(i), "--count", strconv.Itoa(r.count),
			"--server", fmt.Sprintf("https://%s:%d", hostAddress, r.port))
		if err != nil {
			return err
		}
		r.children.children = append(r.children.children, c)
		hostEnd := fmt.Sprintf("lcv%d", i)
		for _, args := range [][]string{
			{"link", "add", hostEnd, "type", "veth", "peer", "name", "eth0", "netns", strconv.Itoa(c.cmd.Process.Pid)},
			{"link", "set", hostEnd, "master", clusterBridge},
			{"link", "set", hostEnd, "up"},
			{"route", "add", podCIDR(i), "via", nodeAddress(i)},
		} {
			if err := run("ip", args...); err != nil {
				return fmt.Errorf("node %s: %w", name, err)
			}
		}
	}
	// The host reaches Services through the first node's kube-proxy.
	return run("ip", "route", "add", serviceCIDR, "via", nodeAddress(0))
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (r *realNodes) close() error {
	if r.proxy != nil {
		r.proxy.Close()
	}
	return restoreHost(r.dir)
}

// ensureNodes issues the certificates of the real nodes: kubelet client (system:node:NAME) and
// serving certificates, kube-proxy's client certificate, and the apiserver's kubelet client.
func (p *pki) ensureNodes(count int) error {
	ca, signer, err := p.loadCA()
	if err != nil {
		return err
	}
	leaf := func(cn string, orgs []string, usage x509.ExtKeyUsage, dns []string, ips []net.IP, base string) error {
		if fileExists(base+".key") && fileExists(base+".crt") {
			return nil
		}
		return issue(&x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: cn, Organization: orgs},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().AddDate(10, 0, 0),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     dns,
			IPAddresses:  ips,
		}, ca, signer, base+".crt", base+".key")
	}
	// A state directory from before real nodes existed has a serving certificate without the
	// address nodes reach the apiserver at.
	if servingPEM, err := os.ReadFile(p.servingCert); err == nil {
		if b, _ := pem.Decode(servingPEM); b != nil {
			if c, err := x509.ParseCertificate(b.Bytes); err == nil && c.VerifyHostname(hostAddress) != nil {
				if err := issue(&x509.Certificate{
					SerialNumber: serial(), Subject: c.Subject, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
					KeyUsage: c.KeyUsage, ExtKeyUsage: c.ExtKeyUsage, DNSNames: c.DNSNames,
					IPAddresses: append(c.IPAddresses, net.ParseIP(hostAddress)),
				}, ca, signer, p.servingCert, p.servingKey); err != nil {
					return err
				}
			}
		}
	}
	if err := leaf("system:kube-proxy", nil, x509.ExtKeyUsageClientAuth, nil, nil, filepath.Join(p.dir, "kube-proxy")); err != nil {
		return err
	}
	for i := 0; i < count; i++ {
		name := realNodeName(i)
		if err := leaf("system:node:"+name, []string{"system:nodes"}, x509.ExtKeyUsageClientAuth, nil, nil,
			filepath.Join(p.dir, "kubelet-client-"+name)); err != nil {
			return err
		}
		if err := leaf(name, nil, x509.ExtKeyUsageServerAuth, []string{name}, []net.IP{net.ParseIP(nodeAddress(i))},
			filepath.Join(p.dir, "kubelet-serving-"+name)); err != nil {
			return err
		}
	}
	return nil
}

// ensureKubeletClient issues the apiserver's client certificate for kubelets (logs, exec,
// port-forward): the kubelet authorizes it with a SubjectAccessReview like any other caller.
func (p *pki) ensureKubeletClient() (string, string, error) {
	base := filepath.Join(p.dir, "apiserver-kubelet-client")
	if fileExists(base+".key") && fileExists(base+".crt") {
		return base + ".crt", base + ".key", nil
	}
	ca, signer, err := p.loadCA()
	if err != nil {
		return "", "", err
	}
	err = issue(&x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, signer, base+".crt", base+".key")
	return base + ".crt", base + ".key", err
}

// WebhookClientName is the common name of the client certificate the apiserver presents to every
// admission webhook (its AdmissionConfiguration's kubeConfigFile), so that a webhook can answer
// the apiserver only (admission serve --client-ca-file CA --client-name kube-apiserver-webhook-client).
const WebhookClientName = "kube-apiserver-webhook-client"

// ensureWebhookClient issues that certificate, signed by the cluster CA, and writes the
// AdmissionConfiguration that has the apiserver present it to every webhook ("*"), returning the
// configuration's path.
func (p *pki) ensureWebhookClient() (string, error) {
	base := filepath.Join(p.dir, "apiserver-webhook-client")
	if !fileExists(base+".key") || !fileExists(base+".crt") {
		ca, signer, err := p.loadCA()
		if err != nil {
			return "", err
		}
		if err := issue(&x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: WebhookClientName},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().AddDate(10, 0, 0),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, ca, signer, base+".crt", base+".key"); err != nil {
			return "", err
		}
	}
	kubeconfig := filepath.Join(p.dir, "webhook-client.kubeconfig")
	if err := writeAtomic(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
users:
- name: "*"
  user:
    client-certificate: %s
    client-key: %s
`, base+".crt", base+".key"))); err != nil {
		return "", err
	}
	config := filepath.Join(p.dir, "admission-config.yaml")
	plugin := func(name string) string {
		return fmt.Sprintf(`- name: %s
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: %s
`, name, kubeconfig)
	}
	err := writeAtomic(config, []byte(`apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
`+plugin("ValidatingAdmissionWebhook")+plugin("MutatingAdmissionWebhook")))
	return config, err
}

// loadCA reads the cluster CA's certificate and key.
func (p *pki) loadCA() (*x509.Certificate, crypto.Signer, error) {
	caPEM, err := os.ReadFile(p.caCert)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(p.caKey)
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(caPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("%s or %s is not PEM", p.caCert, p.caKey)
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s holds no signing key", p.caKey)
	}
	return ca, signer, nil
}

// runNode is the init process of one real node's namespaces (`localcluster node`): it mounts the
// node's private paths, configures its network once the host has given it eth0, runs containerd,
// the kubelet and kube-proxy, reaps orphans, and on SIGTERM stops them; its exit ends every
// process of the node, pods included, and with them the node's network.
func runNode(args []string) int {
	var dir, server string
	var index, count int
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "--dir":
			dir = args[i+1]
		case "--server":
			server = args[i+1]
		case "--index":
			index, _ = strconv.Atoi(args[i+1])
		case "--count":
			count, _ = strconv.Atoi(args[i+1])
		}
	}
	if err := node(dir, server, index, count); err != nil {
		fmt.Fprintf(os.Stderr, "%s localcluster node %s: %v\n", time.Now().Format(time.RFC3339), realNodeName(index), err)
		return 1
	}
	return 0
}

func node(dir, server string, index, count int) error {
	name := realNodeName(index)
	state := filepath.Join(nodesDir(dir), name)
	p := newPKI(filepath.Join(dir, "pki"))
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)

	if err := syscall.Sethostname([]byte(name)); err != nil {
		return err
	}
	// Nothing mounted here may reach the host's mount namespace.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	for _, m := range nodeMounts {
		src := filepath.Join(state, m.sub)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		if err := syscall.Mount(src, m.target, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", src, m.target, err)
		}
	}

	// The host moves eth0 in once this process exists.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := net.InterfaceByName("eth0"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("eth0 did not appear within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmds := [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", fmt.Sprintf("%s/%d", nodeAddress(index), bridgePrefix), "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		{"route", "add", "default", "via", hostAddress},
	}
	for j := 0; j < count; j++ {
		if j != index {
			cmds = append(cmds, []string{"route", "add", podCIDR(j), "via", nodeAddress(j)})
		}
	}
	for _, c := range cmds {
		if err := run("ip", c...); err != nil {
			return err
		}
	}
	// Per network namespace: forwarding between eth0 and the pods' bridge, and Service traffic
	// between pods on the same bridge seen by kube-proxy's rules.
	for k, v := range map[string]string{"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"} {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s in the node's network namespace: %w", k, err)
		}
	}

	conf := filepath.Join(state, "conf")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		return err
	}
	files := map[string]string{
		filepath.Join(conf, "containerd.toml"): containerdConfig,
		"/etc/cni/net.d/10-bridge.conflist":    fmt.Sprintf(cniConfig, podCIDR(index), podGateway(index)),
		filepath.Join(conf, "resolv.conf"):     "",
		filepath.Join(conf, "kubelet.yaml"): fmt.Sprintf(kubeletConfig, nodeAddress(index), "/localcluster-"+name,
			filepath.Join(p.dir, "kubelet-serving-"+name+".crt"), filepath.Join(p.dir, "kubelet-serving-"+name+".key"),
			p.caCert, podCIDR(index), filepath.Join(conf, "resolv.conf")),
		filepath.Join(conf, "kube-proxy.yaml"): fmt.Sprintf(kubeProxyConfig, filepath.Join(conf, "kube-proxy.kubeconfig"), name, clusterCIDR),
	}
	kubeletKC, err := p.kubeconfigFor(server, filepath.Join(p.dir, "kubelet-client-"+name+".crt"), filepath.Join(p.dir, "kubelet-client-"+name+".key"))
	if err != nil {
		return err
	}
	proxyKC, err := p.kubeconfigFor(server, filepath.Join(p.dir, "kube-proxy.crt"), filepath.Join(p.dir, "kube-proxy.key"))
	if err != nil {
		return err
	}
	files[filepath.Join(conf, "kubelet.kubeconfig")] = string(kubeletKC)
	files[filepath.Join(conf, "kube-proxy.kubeconfig")] = string(proxyKC)
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			return err
		}
	}

	logs := filepath.Join(dir, "logs")
	procs := map[int]string{}
	spawn := func(label string, argv ...string) (*exec.Cmd, error) {
		f, err := os.OpenFile(filepath.Join(logs, name+"-"+label+".log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		procs[cmd.Process.Pid] = label
		return cmd, nil
	}
	containerd, err := spawn("containerd", "containerd", "--config", filepath.Join(conf, "containerd.toml"))
	if err != nil {
		return err
	}
	sock := "/run/containerd/containerd.sock"
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not serve %s within 30s; see %s", sock, filepath.Join(logs, name+"-containerd.log"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, img := range []string{"pause.oci.tar", "sample-app.oci.tar"} {
		if out, err := exec.Command("ctr", "--address", sock, "-n", "k8s.io", "images", "import",
			filepath.Join(nodesDir(dir), img)).CombinedOutput(); err != nil {
			return fmt.Errorf("import %s: %v: %s", img, err, out)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	kubelet, err := spawn("kubelet", self, "kubelet",
		"--config="+filepath.Join(conf, "kubelet.yaml"),
		"--kubeconfig="+filepath.Join(conf, "kubelet.kubeconfig"),
		"--hostname-override="+name,
		"--node-ip="+nodeAddress(index),
		"--node-labels="+realNodeLabel+"=true",
		"--v=1")
	if err != nil {
		return err
	}
	proxy, err := spawn("kube-proxy", self, "kube-proxy", "--config="+filepath.Join(conf, "kube-proxy.yaml"), "--v=1")
	if err != nil {
		return err
	}

	// PID 1 of the node: reap every child, ours and orphaned ones alike.
	stopping := false
	for s := range signals {
		if s != syscall.SIGCHLD {
			if !stopping {
				stopping = true
				for _, c := range []*exec.Cmd{proxy, kubelet, containerd} {
					_ = c.Process.Signal(syscall.SIGTERM)
				}
				go func() {
					time.Sleep(10 * time.Second)
					os.Exit(0)
				}()
			}
			continue
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			if label, ok := procs[pid]; ok {
				delete(procs, pid)
				if !stopping {
					return fmt.Errorf("%s exited (%v); see %s", label, status, filepath.Join(logs, name+"-"+label+".log"))
				}
				if len(procs) == 0 {
					return nil
				}
			}
		}
	}
	return nil
}

const containerdConfig = `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "` + pauseImage + `"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
`

const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "localcluster",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "%s", "gateway": "%s"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
imageServiceEndpoint: unix:///run/containerd/containerd.sock
failSwapOn: false
makeIPTablesUtilChains: false
protectKernelDefaults: false
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s
authorization:
  mode: Webhook
podCIDR: %s
resolvConf: %s
maxPods: 40
serializeImagePulls: false
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 2s
`

const kubeProxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
hostnameOverride: %s
mode: iptables
clusterCIDR: %s
iptables:
  masqueradeAll: true
  minSyncPeriod: 0s
  syncPeriod: 30s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
nodePortAddresses: ["primary"]
`

// realNodeReady reports whether the named real node is Ready.
func realNodesNotReady(ctx context.Context, client kubernetes.Interface, count int) string {
	for i := 0; i < count; i++ {
		n, err := client.CoreV1().Nodes().Get(ctx, realNodeName(i), metav1.GetOptions{})
		if err != nil {
			return "node " + realNodeName(i) + ": " + err.Error()
		}
		if !nodeReady(n) {
			return "node " + realNodeName(i) + " not Ready"
		}
	}
	return ""
}

// importImages imports OCI or Docker image archives into the containerd of every real node of
// the cluster in dir (`localcluster import-image`).
func importImages(dir string, archives []string) error {
	socks, _ := filepath.Glob(filepath.Join(nodesDir(dir), "*", "run-containerd", "containerd.sock"))
	if len(socks) == 0 {
		return fmt.Errorf("no real node is running in %s (start the cluster with --real-nodes)", dir)
	}
	for _, sock := range socks {
		for _, a := range archives {
			if out, err := exec.Command("ctr", "--address", sock, "-n", "k8s.io", "images", "import", a).CombinedOutput(); err != nil {
				return fmt.Errorf("import %s into node %s: %v: %s", a, filepath.Base(filepath.Dir(filepath.Dir(sock))), err, strings.TrimSpace(string(out)))
			}
		}
	}
	return nil
}
