// Command localcluster runs a real Kubernetes control plane on the local machine for the
// kubectl-gitops test suites and demo: embedded etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler built from the Kubernetes sources, and a fake-node agent that makes Pods Running
// and Ready without a container runtime.
//
// It is a multi-call binary. The upstream component commands install a process-wide signal
// handler and share global registries, so each one runs as a child process of this same binary,
// selected by the first argument.
package main

import (
	"context"
	"fmt"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

const usage = `localcluster: a local Kubernetes control plane for kubectl-gitops tests

Usage:
  localcluster start --dir DIR [--nodes N] [--real-nodes M]
                                             start in the background; prints the kubeconfig path when ready
  localcluster stop  --dir DIR               stop the cluster started in DIR and wait until it is gone
  localcluster up    --dir DIR [--nodes N] [--real-nodes M] [--watch-pid PID]
                                             run in the foreground until SIGINT/SIGTERM (or PID exits)
  localcluster restart-apiserver --dir DIR [--down 5s]
                                             stop the running cluster's kube-apiserver (SIGTERM), keep it
                                             down that long, start it again at the same address and wait
                                             until it serves; etcd, controllers and nodes keep running

State (etcd data, certificates, logs, kubeconfig) lives in DIR:
  DIR/kubeconfig   admin kubeconfig, written once the cluster is ready
  DIR/ready        present while the cluster is ready
  DIR/logs/        one log per component

Fake nodes: Pods bound to a fake node become Running and Ready. A Pod annotated
  ` + readyAnnotation + `: "false"
stays Running but not Ready (the annotation may be changed on a live Pod).

Real nodes (--real-nodes, root only): real-0, real-1, ... run a kubelet, containerd (Debian's,
with runc and the CNI bridge; scripts/install-node-packages.sh) and kube-proxy, each in its own
network, mount and PID namespaces on the cluster's bridge ` + clusterBridge + ` (host ` + hostAddress + `). Pods there
run real containers: the sandbox image, 'localcluster.local/sample-app:1' (tests/cluster/sampleapp)
and images imported with
  localcluster import-image --dir DIR IMAGE.tar...
(no registry is reachable; use imagePullPolicy IfNotPresent or Never). Nodes are labelled
  ` + realNodeLabel + `=true
Everything the nodes change on the host is undone at stop.

Exit codes: 0 success, 1 the cluster failed to start or stop, 2 usage error.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-scheduler":
		cmd := scheduler.NewSchedulerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kubelet":
		cmd := kubelet.NewKubeletCommand(context.Background())
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-proxy":
		cmd := proxy.NewProxyCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "import-image":
		if len(args) < 3 || args[0] != "--dir" {
			fmt.Fprint(os.Stderr, "usage: localcluster import-image --dir DIR IMAGE.tar...\n")
			os.Exit(2)
		}
		if err := importImages(args[1], args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "localcluster import-image: %v\n", err)
			os.Exit(1)
		}
	case "node":
		os.Exit(runNode(args))
	case "up", "start", "stop", "restart-apiserver":
		os.Exit(runCluster(os.Args[1], args))
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "localcluster: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}
