package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/component-base/version"
	"k8s.io/utils/ptr"
)

const (
	fakeNodeLabel = "localcluster.kubectl-gitops.dev/fake-node"
	// readyAnnotation set to "false" on a Pod keeps it Running but not Ready, so tests can make
	// chosen Pods (for example every Pod of a canary Deployment) fail their readiness gate.
	readyAnnotation  = "localcluster.kubectl-gitops.dev/ready"
	leaseDuration    = 40
	leaseRenewPeriod = 10 * time.Second
	podWorkers       = 4
)

// fakeNodes plays the kubelet for a few Nodes: it keeps them Ready by renewing their Leases, and
// gives every Pod bound to them a running, ready status (or finalises it when it is deleted).
type fakeNodes struct {
	client kubernetes.Interface
	names  map[string]int
	queue  workqueue.TypedRateLimitingInterface[string]

	mu     sync.Mutex
	nextIP map[string]int
}

func newFakeNodes(client kubernetes.Interface, count int) *fakeNodes {
	names := make(map[string]int, count)
	for i := 0; i < count; i++ {
		names[fmt.Sprintf("fake-node-%d", i)] = i
	}
	return &fakeNodes{
		client: client,
		names:  names,
		queue:  workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		nextIP: map[string]int{},
	}
}

func (f *fakeNodes) run(ctx context.Context) error {
	defer f.queue.ShutDown()
	for name, index := range f.names {
		if err := f.registerNode(ctx, name, index); err != nil {
			return fmt.Errorf("node %s: %w", name, err)
		}
	}
	go wait.UntilWithContext(ctx, f.renewLeases, leaseRenewPeriod)

	factory := informers.NewSharedInformerFactory(f.client, 10*time.Minute)
	pods := factory.Core().V1().Pods()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			f.queue.Add(key)
		}
	}
	if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	for i := 0; i < podWorkers; i++ {
		go func() {
			for f.processNext(ctx, pods.Lister()) {
			}
		}()
	}
	<-ctx.Done()
	return nil
}

func (f *fakeNodes) registerNode(ctx context.Context, name string, index int) error {
	quantity := resource.MustParse
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              quantity("16"),
		corev1.ResourceMemory:           quantity("64Gi"),
		corev1.ResourcePods:             quantity("110"),
		corev1.ResourceEphemeralStorage: quantity("100Gi"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				fakeNodeLabel:            "true",
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: fmt.Sprintf("10.244.%d.0/24", index)},
	}
	existing, err := f.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		existing, err = f.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	now := metav1.Now()
	existing.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		// No kubelet listens anywhere: a loopback address makes `kubectl logs` fail fast.
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: name},
		},
		Conditions: []corev1.NodeCondition{
			nodeCondition(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", now),
			nodeCondition(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", now),
			nodeCondition(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", now),
			nodeCondition(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", now),
		},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion:          version.Get().GitVersion,
			OSImage:                 "localcluster fake node",
			OperatingSystem:         "linux",
			Architecture:            "amd64",
			ContainerRuntimeVersion: "fake://localcluster",
		},
	}
	if _, err := f.client.CoreV1().Nodes().UpdateStatus(ctx, existing, metav1.UpdateOptions{}); err != nil {
		return err
	}
	return f.renewLease(ctx, existing)
}

func nodeCondition(t corev1.NodeConditionType, s corev1.ConditionStatus, reason string, now metav1.Time) corev1.NodeCondition {
	return corev1.NodeCondition{Type: t, Status: s, Reason: reason, LastHeartbeatTime: now, LastTransitionTime: now}
}

func (f *fakeNodes) renewLeases(ctx context.Context) {
	for name := range f.names {
		node, err := f.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			err = f.renewLease(ctx, node)
		}
		if err != nil && ctx.Err() == nil {
			logf("renewing the lease of %s: %v", name, err)
		}
	}
}

func (f *fakeNodes) renewLease(ctx context.Context, node *corev1.Node) error {
	leases := f.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, node.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: node.Name,
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
				}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(node.Name),
				LeaseDurationSeconds: ptr.To[int32](leaseDuration),
				RenewTime:            &now,
			},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}

func (f *fakeNodes) processNext(ctx context.Context, lister corelisters.PodLister) bool {
	key, shutdown := f.queue.Get()
	if shutdown {
		return false
	}
	defer f.queue.Done(key)
	if err := f.syncPod(ctx, key, lister); err != nil {
		if ctx.Err() == nil && !apierrors.IsNotFound(err) {
			f.queue.AddRateLimited(key)
		}
		return true
	}
	f.queue.Forget(key)
	return true
}

func (f *fakeNodes) syncPod(ctx context.Context, key string, lister corelisters.PodLister) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := lister.Pods(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	nodeIndex, ours := f.names[pod.Spec.NodeName]
	if !ours {
		return nil
	}
	if pod.DeletionTimestamp != nil {
		// There is no container to stop: finalise at once, or Deployments and namespaces
		// waiting for the Pod to go would hang.
		err := f.client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	want := f.desiredStatus(pod, nodeIndex)
	if statusCurrent(&pod.Status, want) {
		return nil
	}
	updated := pod.DeepCopy()
	updated.Status = *want
	_, err = f.client.CoreV1().Pods(namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	return err
}

// desiredStatus is what a kubelet would report for the Pod once its containers run.
func (f *fakeNodes) desiredStatus(pod *corev1.Pod, nodeIndex int) *corev1.PodStatus {
	ready := pod.Annotations[readyAnnotation] != "false"
	status := pod.Status.DeepCopy()
	now := metav1.Now()
	status.Phase = corev1.PodRunning
	status.HostIP = "127.0.0.1"
	status.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	if status.PodIP == "" {
		status.PodIP = f.allocateIP(pod.Spec.NodeName, nodeIndex)
		status.PodIPs = []corev1.PodIP{{IP: status.PodIP}}
	}
	if status.StartTime == nil {
		status.StartTime = &now
	}
	readyStatus := corev1.ConditionFalse
	if ready {
		readyStatus = corev1.ConditionTrue
	}
	setPodCondition(status, corev1.PodReadyToStartContainers, corev1.ConditionTrue, now)
	setPodCondition(status, corev1.PodInitialized, corev1.ConditionTrue, now)
	setPodCondition(status, corev1.ContainersReady, readyStatus, now)
	setPodCondition(status, corev1.PodReady, readyStatus, now)
	setPodCondition(status, corev1.PodScheduled, corev1.ConditionTrue, now)

	status.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		status.InitContainerStatuses = append(status.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "fake://" + c.Image,
			ContainerID: fmt.Sprintf("fake://%s/%s", pod.UID, c.Name),
			Ready:       true,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: *status.StartTime, FinishedAt: *status.StartTime,
			}},
		})
	}
	previous := map[string]corev1.ContainerStatus{}
	for _, c := range pod.Status.ContainerStatuses {
		previous[c.Name] = c
	}
	status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		startedAt := *status.StartTime
		if p, ok := previous[c.Name]; ok && p.State.Running != nil {
			startedAt = p.State.Running.StartedAt
		}
		status.ContainerStatuses = append(status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "fake://" + c.Image,
			ContainerID: fmt.Sprintf("fake://%s/%s", pod.UID, c.Name),
			Ready:       ready,
			Started:     ptr.To(true),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: startedAt}},
		})
	}
	return status
}

func (f *fakeNodes) allocateIP(node string, nodeIndex int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.nextIP[node]%250 + 2
	f.nextIP[node] = n
	return fmt.Sprintf("10.244.%d.%d", nodeIndex, n)
}

func setPodCondition(status *corev1.PodStatus, t corev1.PodConditionType, s corev1.ConditionStatus, now metav1.Time) {
	for i := range status.Conditions {
		if status.Conditions[i].Type == t {
			if status.Conditions[i].Status != s {
				status.Conditions[i].Status = s
				status.Conditions[i].LastTransitionTime = now
			}
			return
		}
	}
	status.Conditions = append(status.Conditions, corev1.PodCondition{Type: t, Status: s, LastTransitionTime: now})
}

// statusCurrent reports whether the Pod already shows what desiredStatus computed, so that a
// Pod's own status update does not trigger another write.
func statusCurrent(have, want *corev1.PodStatus) bool {
	if have.Phase != want.Phase || have.PodIP == "" || len(have.ContainerStatuses) != len(want.ContainerStatuses) {
		return false
	}
	for _, w := range want.Conditions {
		found := false
		for _, h := range have.Conditions {
			if h.Type == w.Type {
				found = h.Status == w.Status
				break
			}
		}
		if !found {
			return false
		}
	}
	for i := range want.ContainerStatuses {
		h, w := have.ContainerStatuses[i], want.ContainerStatuses[i]
		if h.Name != w.Name || h.Image != w.Image || h.Ready != w.Ready || h.State.Running == nil {
			return false
		}
	}
	return true
}
