package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	serviceCIDR  = "10.96.0.0/16"
	serviceIP    = "10.96.0.1"
	startTimeout = 3 * time.Minute
	stopTimeout  = 30 * time.Second
)

type options struct {
	dir       string
	nodes     int
	realNodes int
	watchPID  int
	down      time.Duration
}

func runCluster(verb string, args []string) int {
	fs := flag.NewFlagSet("localcluster "+verb, flag.ContinueOnError)
	var o options
	fs.StringVar(&o.dir, "dir", "", "state directory (required)")
	fs.IntVar(&o.nodes, "nodes", 3, "number of fake nodes")
	fs.IntVar(&o.realNodes, "real-nodes", 0, "number of real nodes (kubelet, containerd, kube-proxy; needs root)")
	fs.IntVar(&o.watchPID, "watch-pid", 0, "stop when the process with this PID exits (up only)")
	fs.DurationVar(&o.down, "down", 0, "how long the apiserver stays stopped (restart-apiserver only)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.dir == "" {
		fmt.Fprintf(os.Stderr, "localcluster %s: --dir is required\n", verb)
		return 2
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "localcluster %s: --dir %s: %v\n", verb, o.dir, err)
		return 2
	}
	o.dir = dir
	switch verb {
	case "start":
		err = start(o)
	case "stop":
		err = stop(o.dir)
	case "restart-apiserver":
		err = restartAPIServer(o)
	default:
		err = up(o)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "localcluster %s: %v\n", verb, err)
		return 1
	}
	return 0
}

func pidFile(dir string) string        { return filepath.Join(dir, "localcluster.pid") }
func readyFile(dir string) string      { return filepath.Join(dir, "ready") }
func kubeconfigFile(dir string) string { return filepath.Join(dir, "kubeconfig") }
func restartRequestFile(dir string) string {
	return filepath.Join(dir, "restart-apiserver.request")
}
func restartDoneFile(dir string) string { return filepath.Join(dir, "restart-apiserver.done") }

// restartAPIServer asks the cluster running in dir to stop its kube-apiserver, keep it stopped
// for o.down, and start it again on the same address with the same state, and waits until it
// serves again. Everything else (etcd, controllers, fake nodes, clients) keeps running.
func restartAPIServer(o options) error {
	pid, alive := runningPID(o.dir)
	if !alive {
		return fmt.Errorf("no cluster is running in %s", o.dir)
	}
	nonce := strconv.FormatInt(time.Now().UnixNano(), 10)
	if err := writeAtomic(restartRequestFile(o.dir), []byte(nonce+" "+o.down.String()+"\n")); err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		return err
	}
	deadline := time.Now().Add(o.down + startTimeout)
	for time.Now().Before(deadline) {
		done, _ := os.ReadFile(restartDoneFile(o.dir))
		if fields := strings.Fields(string(done)); len(fields) >= 2 && fields[0] == nonce {
			if fields[1] != "ok" {
				return fmt.Errorf("the restarted kube-apiserver did not come up: %s", strings.Join(fields[1:], " "))
			}
			return nil
		}
		if syscall.Kill(pid, 0) != nil {
			return fmt.Errorf("the cluster (pid %d) exited during the restart; see %s", pid, filepath.Join(o.dir, "logs"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver did not serve again within %s", o.down+startTimeout)
}

// start runs `up` detached from the caller's session and returns once the cluster is ready.
func start(o options) error {
	if pid, alive := runningPID(o.dir); alive {
		return fmt.Errorf("a cluster (pid %d) is already running in %s; stop it first", pid, o.dir)
	}
	if err := os.MkdirAll(filepath.Join(o.dir, "logs"), 0o755); err != nil {
		return err
	}
	_ = os.Remove(readyFile(o.dir))
	logPath := filepath.Join(o.dir, "logs", "localcluster.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "up", "--dir", o.dir, "--nodes", strconv.Itoa(o.nodes), "--real-nodes", strconv.Itoa(o.realNodes))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(startTimeout)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("the cluster exited before it was ready (%v); see %s", err, logPath)
		case <-deadline:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("the cluster was not ready within %s; see %s", startTimeout, logPath)
		case <-time.After(200 * time.Millisecond):
			if fileExists(readyFile(o.dir)) {
				fmt.Println(kubeconfigFile(o.dir))
				return nil
			}
		}
	}
}

// stop signals the cluster running in dir and waits until its process has exited.
func stop(dir string) error {
	pid, alive := runningPID(dir)
	if !alive {
		_ = os.Remove(readyFile(dir))
		// A cluster that was killed could not undo its host changes itself.
		return restoreHost(dir)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline := time.Now().Add(stopTimeout)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil || zombie(pid) {
			return restoreHost(dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The children die with their parent (Pdeathsig), so killing the parent ends them all.
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if err := restoreHost(dir); err != nil {
		logf("%v", err)
	}
	return fmt.Errorf("pid %d did not stop within %s and was killed", pid, stopTimeout)
}

func runningPID(dir string) (int, bool) {
	data, err := os.ReadFile(pidFile(dir))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, syscall.Kill(pid, 0) == nil && !zombie(pid)
}

// zombie reports whether pid has exited but its parent (a test that started `up`) has not
// reaped it yet.
func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses, the state follows the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// up runs the whole control plane in the foreground until it is told to stop.
func up(o options) error {
	began := time.Now()
	for _, sub := range []string{"logs", "pki", "etcd"} {
		if err := os.MkdirAll(filepath.Join(o.dir, sub), 0o755); err != nil {
			return err
		}
	}
	if pid, alive := runningPID(o.dir); alive && pid != os.Getpid() {
		return fmt.Errorf("a cluster (pid %d) is already running in %s", pid, o.dir)
	}
	_ = os.Remove(readyFile(o.dir))
	_ = os.Remove(kubeconfigFile(o.dir))
	if err := os.WriteFile(pidFile(o.dir), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile(o.dir))
	defer os.Remove(readyFile(o.dir))

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if o.watchPID > 0 {
		go func() {
			for ctx.Err() == nil {
				if syscall.Kill(o.watchPID, 0) != nil {
					logf("watched pid %d exited; stopping", o.watchPID)
					cancel()
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
		}()
	}

	p := newPKI(filepath.Join(o.dir, "pki"))
	if err := p.ensure(); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}

	etcd, etcdURL, err := startEtcd(filepath.Join(o.dir, "etcd"), filepath.Join(o.dir, "logs", "etcd.log"))
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()
	logf("etcd serving at %s", etcdURL)

	port, err := freePort()
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	internalKubeconfig := filepath.Join(o.dir, "pki", "admin.kubeconfig")
	kc, err := p.kubeconfig(server)
	if err != nil {
		return err
	}
	if err := writeAtomic(internalKubeconfig, kc); err != nil {
		return err
	}

	kubeletClientCert, kubeletClientKey, err := p.ensureKubeletClient()
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	admissionConfig, err := p.ensureWebhookClient()
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	children := &supervisor{logDir: filepath.Join(o.dir, "logs"), died: make(chan string, 3+o.realNodes)}
	defer children.stopAll()
	apiserverArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(o.dir, "pki"),
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servingKey,
		"--client-ca-file=" + p.caCert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saPublic,
		"--service-account-signing-key-file=" + p.serviceAccountKey,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--endpoint-reconciler-type=none",
		"--authorization-mode=Node,RBAC",
		// Kubelets are reached by their InternalIP (real nodes' names do not resolve) over TLS
		// both ways, as in a real cluster.
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-certificate-authority=" + p.caCert,
		"--kubelet-client-certificate=" + kubeletClientCert,
		"--kubelet-client-key=" + kubeletClientKey,
		// Webhooks are called with a client certificate of their own, so a webhook can tell
		// the apiserver from any other caller.
		"--admission-control-config-file=" + admissionConfig,
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	}
	if err := children.spawn("kube-apiserver", apiserverArgs...); err != nil {
		return err
	}
	if err := waitHealthy(ctx, children, server, p); err != nil {
		return err
	}
	logf("kube-apiserver ready at %s after %s", server, time.Since(began).Round(time.Millisecond))

	controllerManagerKubeconfig := filepath.Join(o.dir, "pki", "controller-manager.kubeconfig")
	schedulerKubeconfig := filepath.Join(o.dir, "pki", "scheduler.kubeconfig")
	for _, c := range []struct{ path, cert, key string }{
		{controllerManagerKubeconfig, p.controllerManagerCert, p.controllerManagerKey},
		{schedulerKubeconfig, p.schedulerCert, p.schedulerKey},
	} {
		own, err := p.kubeconfigFor(server, c.cert, c.key)
		if err != nil {
			return err
		}
		if err := writeAtomic(c.path, own); err != nil {
			return err
		}
	}
	schedulerConfig := filepath.Join(o.dir, "pki", "scheduler.yaml")
	if err := os.WriteFile(schedulerConfig, []byte(fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %s
leaderElection:
  leaderElect: false
`, schedulerKubeconfig)), 0o644); err != nil {
		return err
	}
	if err := children.spawn("kube-controller-manager",
		"--kubeconfig="+controllerManagerKubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--root-ca-file="+p.caCert,
		"--service-account-private-key-file="+p.serviceAccountKey,
		"--service-cluster-ip-range="+serviceCIDR,
		"--use-service-account-credentials=true",
		"--profiling=false",
		"--v=1",
	); err != nil {
		return err
	}
	if err := children.spawn("kube-scheduler",
		"--config="+schedulerConfig,
		"--secure-port=0",
		"--profiling=false",
		"--v=1",
	); err != nil {
		return err
	}

	restConfig, err := clientcmd.BuildConfigFromFlags("", internalKubeconfig)
	if err != nil {
		return err
	}
	restConfig.QPS, restConfig.Burst = 200, 400
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	if o.realNodes > 0 {
		nodes := &realNodes{dir: o.dir, count: o.realNodes, port: port, p: p, children: children}
		defer func() {
			children.stopAll()
			if err := nodes.close(); err != nil {
				logf("%v", err)
			}
		}()
		if err := nodes.prepare(); err != nil {
			return fmt.Errorf("real nodes: %w", err)
		}
		if err := publishAPIServer(ctx, client, port); err != nil {
			return fmt.Errorf("publish the apiserver to pods: %w", err)
		}
		if err := nodes.start(); err != nil {
			return fmt.Errorf("real nodes: %w", err)
		}
	}
	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	agent := newFakeNodes(client, o.nodes)
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.run(agentCtx) }()

	if err := waitReady(ctx, children, client, o.nodes, o.realNodes); err != nil {
		return err
	}
	if err := writeAtomic(kubeconfigFile(o.dir), kc); err != nil {
		return err
	}
	if err := writeAtomic(readyFile(o.dir), []byte(server+"\n")); err != nil {
		return err
	}
	logf("cluster ready after %s; kubeconfig: %s", time.Since(began).Round(time.Millisecond), kubeconfigFile(o.dir))

	restarts := make(chan os.Signal, 1)
	signal.Notify(restarts, syscall.SIGUSR1)
	defer signal.Stop(restarts)
	for running := true; running; {
		select {
		case <-ctx.Done():
			logf("stopping")
			running = false
		case <-restarts:
			if err := restartRequested(ctx, o.dir, children, apiserverArgs, server, p); err != nil {
				return err
			}
		case name := <-children.died:
			return fmt.Errorf("%s exited unexpectedly; see %s", name, filepath.Join(o.dir, "logs", name+".log"))
		case err := <-agentDone:
			return fmt.Errorf("fake-node agent: %w", err)
		}
	}
	_ = os.Remove(readyFile(o.dir))
	stopAgent()
	began = time.Now()
	children.stopAll()
	logf("stopped the components in %s", time.Since(began).Round(time.Millisecond))
	return nil
}

// restartRequested answers a restart-apiserver request: the apiserver is stopped as a rolling
// update would stop it (SIGTERM), kept down for the requested time, started again with the same
// arguments, and the outcome is written for the requester. The cluster is not ready meanwhile.
func restartRequested(ctx context.Context, dir string, children *supervisor, args []string, server string, p *pki) error {
	request, err := os.ReadFile(restartRequestFile(dir))
	if err != nil {
		logf("SIGUSR1 without a restart request: %v", err)
		return nil
	}
	fields := strings.Fields(string(request))
	if len(fields) != 2 {
		logf("malformed restart request %q", request)
		return nil
	}
	down, err := time.ParseDuration(fields[1])
	if err != nil {
		logf("malformed restart request %q: %v", request, err)
		return nil
	}
	_ = os.Remove(readyFile(dir))
	logf("restarting kube-apiserver (down for %s)", down)
	children.stop("kube-apiserver")
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(down):
	}
	outcome := "ok"
	if err := children.respawn("kube-apiserver", args...); err != nil {
		outcome = err.Error()
	} else if err := waitHealthy(ctx, children, server, p); err != nil {
		outcome = err.Error()
	}
	if err := writeAtomic(restartDoneFile(dir), []byte(fields[0]+" "+outcome+"\n")); err != nil {
		return err
	}
	if outcome != "ok" {
		return fmt.Errorf("kube-apiserver did not come back: %s", outcome)
	}
	logf("kube-apiserver serving again at %s", server)
	return writeAtomic(readyFile(dir), []byte(server+"\n"))
}

func startEtcd(dataDir, logPath string) (*embed.Etcd, string, error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	clientURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	peerURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	cfg := embed.NewConfig()
	cfg.Name = "localcluster"
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// The peer URL changes on every start; a restarted member must not insist on the old one.
	cfg.ForceNewCluster = fileExists(filepath.Join(dataDir, "member"))
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{logPath}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		e.Close()
		return nil, "", errors.New("etcd was not ready within a minute")
	}
	return e, clientURL.String(), nil
}

// waitHealthy polls the apiserver's /readyz with the admin identity.
func waitHealthy(ctx context.Context, children *supervisor, server string, p *pki) error {
	cert, err := tls.LoadX509KeyPair(p.adminCert, p.adminKey)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(p.caCert)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	httpClient := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}},
	}
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case name := <-children.died:
			return fmt.Errorf("%s exited while starting; see %s", name, filepath.Join(children.logDir, name+".log"))
		case <-time.After(250 * time.Millisecond):
		}
		resp, err := httpClient.Get(server + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
	}
	return fmt.Errorf("kube-apiserver /readyz was not 200 within %s", startTimeout)
}

// waitReady returns once the controllers and fake nodes have done their first work: the system
// namespaces and the default ServiceAccount exist and every node is Ready and untainted.
func waitReady(ctx context.Context, children *supervisor, client kubernetes.Interface, nodes, real int) error {
	deadline := time.Now().Add(startTimeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case name := <-children.died:
			return fmt.Errorf("%s exited while starting; see %s", name, filepath.Join(children.logDir, name+".log"))
		case <-time.After(250 * time.Millisecond):
		}
		if last = notReadyReason(ctx, client, nodes); last == "" {
			last = realNodesNotReady(ctx, client, real)
		}
		if last == "" {
			return nil
		}
	}
	return fmt.Errorf("cluster not ready within %s: %s", startTimeout, last)
}

func notReadyReason(ctx context.Context, client kubernetes.Interface, nodes int) string {
	for _, ns := range []string{"default", "kube-system", "kube-node-lease", "kube-public"} {
		if _, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
			return "namespace " + ns + ": " + err.Error()
		}
	}
	if _, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
		return "serviceaccount default/default: " + err.Error()
	}
	list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: fakeNodeLabel + "=true"})
	if err != nil {
		return "nodes: " + err.Error()
	}
	ready := 0
	for _, n := range list.Items {
		if nodeReady(&n) && len(n.Spec.Taints) == 0 {
			ready++
		}
	}
	if ready < nodes {
		return fmt.Sprintf("%d of %d nodes Ready and untainted", ready, nodes)
	}
	return ""
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// supervisor runs the control-plane components as children of this process. Each child gets
// SIGKILL from the kernel if this process dies, so no component outlives the cluster.
type supervisor struct {
	logDir   string
	died     chan string
	children []*child
}

type child struct {
	name     string
	cmd      *exec.Cmd
	done     chan struct{}
	stopping atomic.Bool
}

func (s *supervisor) spawn(name string, args ...string) error {
	c, err := s.launch(name, os.O_TRUNC, args...)
	if err != nil {
		return err
	}
	s.children = append(s.children, c)
	return nil
}

// respawn starts a stopped child again in its place (so the stop order is kept), appending to
// its log.
func (s *supervisor) respawn(name string, args ...string) error {
	for i, old := range s.children {
		if old.name != name {
			continue
		}
		c, err := s.launch(name, os.O_APPEND, args...)
		if err != nil {
			return err
		}
		s.children[i] = c
		return nil
	}
	return fmt.Errorf("no child named %s", name)
}

// stop stops one child and waits until it has exited; it is not reported as died.
func (s *supervisor) stop(name string) {
	for _, c := range s.children {
		if c.name == name {
			c.terminate()
		}
	}
}

func (s *supervisor) launch(name string, mode int, args ...string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return s.launchWith(name, mode, &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}, append([]string{self, name}, args...)...)
}

// launchWith starts argv as a child named name with the given process attributes.
func (s *supervisor) launchWith(name string, mode int, attr *syscall.SysProcAttr, argv ...string) (*child, error) {
	logFile, err := os.OpenFile(filepath.Join(s.logDir, name+".log"), os.O_CREATE|os.O_WRONLY|mode, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(c.done)
		if !c.stopping.Load() {
			s.died <- name
		}
	}()
	return c, nil
}

// stopAll stops the children in reverse start order, so the apiserver outlives its clients.
func (s *supervisor) stopAll() {
	for i := len(s.children) - 1; i >= 0; i-- {
		s.children[i].terminate()
	}
}

// terminate sends SIGTERM, then SIGKILL after 10 s, and waits for the exit; once only.
func (c *child) terminate() {
	if c.stopping.Swap(true) {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s localcluster: %s\n", time.Now().Format(time.RFC3339), fmt.Sprintf(format, args...))
}
