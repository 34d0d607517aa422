// Command xds benchmarks workload discovery: how long a pod change takes to
// reach every connected ztunnel, how many bytes each change pushes, and how
// much memory the control plane needs, at several cluster sizes and client
// counts. It prints a markdown table.
//
// The control plane runs in a child process (this binary with -child), so
// that its RSS is measured alone: a fake clientset (the in-process
// apiserver) holding the cluster, the real internal/kube controller with
// its informers, and the real internal/xds server on a loopback gRPC port.
// The parent runs N simulated ztunnels, each a delta ADS client on its own
// gRPC connection that subscribes to Address with a wildcard and ACKs every
// response. For each change the parent tells the child to update one pod's
// "version" label (which changes that Workload's canonical_revision) and
// measures the time until all N clients have received it. Changes are
// made one at a time.
//
//	go run ./bench/xds -pods 1000,10000,50000 -services 1000 -clients 10,100 -changes 100
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/controlplane/internal/kube"
	"ambit.dev/controlplane/internal/xds"
)

var cpuProfile, memProfile string

const (
	namespaces = 10
	nodes      = 100
)

func main() {
	child := flag.Bool("child", false, "run as the control-plane child process (internal)")
	podsFlag := flag.String("pods", "1000,10000,50000", "comma-separated pod counts")
	services := flag.Int("services", 1000, "number of Services")
	clientsFlag := flag.String("clients", "10,100", "comma-separated numbers of simulated ztunnels")
	changes := flag.Int("changes", 100, "pod changes measured per configuration")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the control plane (the child) to this file (.<pods> appended)")
	flag.StringVar(&memProfile, "memprofile", "", "write a heap profile of the control plane (the child) at the end to this file (.<pods> appended)")
	flag.Parse()
	if *child {
		if err := runChild(*podsFlag, *services); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		return
	}
	pods, err := ints(*podsFlag)
	if err == nil {
		var clients []int
		if clients, err = ints(*clientsFlag); err == nil {
			err = runParent(pods, clients, *services, *changes)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// result is one row of the table.
type result struct {
	pods, services, clients int
	initialSync             time.Duration
	p50, p99, max           time.Duration
	bytesPerClient          float64
	rssMiB, baseMiB         float64
	hwmMiB, floorMiB        float64
}

func runParent(podCounts, clientCounts []int, services, changes int) error {
	var results []result
	for _, p := range podCounts {
		rs, err := runCluster(p, services, clientCounts, changes)
		if err != nil {
			return fmt.Errorf("%d pods: %w", p, err)
		}
		results = append(results, rs...)
	}
	fmt.Printf("\n%d changes per row, made one at a time; latency = pod update in the apiserver until all clients have the new Workload.\n\n", changes)
	fmt.Println("| pods | services | clients | initial sync (all clients) | p50 | p99 | max | bytes per change per client | RSS | RSS after GC | peak RSS | fake apiserver alone |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range results {
		fmt.Printf("| %d | %d | %d | %s | %s | %s | %s | %.0f B | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB |\n",
			r.pods, r.services, r.clients, round(r.initialSync), round(r.p50), round(r.p99), round(r.max),
			r.bytesPerClient, r.rssMiB, r.floorMiB, r.hwmMiB, r.baseMiB)
	}
	return nil
}

func round(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

// childProc is the control plane under test.
type childProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	addr string
}

func (c *childProc) ask(cmd string) (string, error) {
	if _, err := fmt.Fprintln(c.in, cmd); err != nil {
		return "", err
	}
	if !c.out.Scan() {
		return "", fmt.Errorf("child exited (%v) after %q", c.out.Err(), cmd)
	}
	return c.out.Text(), nil
}

func runCluster(pods, services int, clientCounts []int, changes int) ([]result, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-child", "-pods", strconv.Itoa(pods), "-services", strconv.Itoa(services))
	if cpuProfile != "" {
		cmd.Args = append(cmd.Args, "-cpuprofile", fmt.Sprintf("%s.%d", cpuProfile, pods))
	}
	if memProfile != "" {
		cmd.Args = append(cmd.Args, "-memprofile", fmt.Sprintf("%s.%d", memProfile, pods))
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &childProc{cmd: cmd, in: in, out: bufio.NewScanner(outPipe)}
	defer func() {
		_, _ = fmt.Fprintln(in, "quit")
		_ = in.Close()
		_ = cmd.Wait()
	}()
	if !c.out.Scan() {
		return nil, fmt.Errorf("child did not start: %v", c.out.Err())
	}
	fields := strings.Fields(c.out.Text()) // "listening <addr> <baseline MiB> <resources>"
	if len(fields) != 4 || fields[0] != "listening" {
		return nil, fmt.Errorf("child said %q", c.out.Text())
	}
	c.addr = fields[1]
	base, _ := strconv.ParseFloat(fields[2], 64)
	total, _ := strconv.Atoi(fields[3])
	fmt.Fprintf(os.Stderr, "cluster: %d pods, %d services, %d Address resources\n", pods, services, total)

	var out []result
	seq := 0
	for _, n := range clientCounts {
		r, err := measure(c, n, total, changes, &seq)
		if err != nil {
			return nil, fmt.Errorf("%d clients: %w", n, err)
		}
		r.pods, r.services, r.baseMiB = pods, services, base
		out = append(out, r)
		fmt.Fprintf(os.Stderr, "  %d clients: p50 %s p99 %s\n", n, r.p50, r.p99)
	}
	return out, nil
}

// tracker records when every client has seen each change.
type tracker struct {
	mu      sync.Mutex
	clients int
	seen    map[int]int
	done    map[int]chan struct{}
	bytes   int64
}

func (t *tracker) expect(seq int) chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := make(chan struct{})
	t.done[seq] = ch
	if t.seen[seq] >= t.clients {
		close(ch)
	}
	return ch
}

func (t *tracker) arrived(seq int, bytes int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.bytes += int64(bytes)
	t.seen[seq]++
	if t.seen[seq] == t.clients {
		if ch, ok := t.done[seq]; ok {
			close(ch)
		}
	}
}

func measure(c *childProc, n, total, changes int, seq *int) (result, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := &tracker{clients: n, seen: map[int]int{}, done: map[int]chan struct{}{}}
	synced := make(chan error, n)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	start := time.Now()
	// Connect at most 10 clients at a time: every initial response holds
	// the whole cluster.
	sem := make(chan struct{}, 10)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			err := runClient(ctx, c.addr, i, total, tr, func(err error) {
				<-sem
				synced <- err
			})
			if err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "client %d: %v\n", i, err)
			}
		})
	}
	for range n {
		if err := <-synced; err != nil {
			return result{}, err
		}
	}
	r := result{clients: n, initialSync: time.Since(start)}

	// Warm up one change (and make sure the informers watch).
	measureOne := func() (time.Duration, error) {
		*seq++
		done := tr.expect(*seq)
		t0 := time.Now()
		if ans, err := c.ask(fmt.Sprintf("change %d", *seq)); err != nil || ans != "ok" {
			return 0, fmt.Errorf("change %d: %q %v", *seq, ans, err)
		}
		select {
		case <-done:
			return time.Since(t0), nil
		case <-time.After(2 * time.Minute):
			return 0, fmt.Errorf("change %d did not reach all %d clients", *seq, n)
		}
	}
	if _, err := measureOne(); err != nil {
		return result{}, err
	}
	tr.mu.Lock()
	tr.bytes = 0
	tr.mu.Unlock()
	lat := make([]time.Duration, 0, changes)
	for range changes {
		d, err := measureOne()
		if err != nil {
			return result{}, err
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)
	r.p50 = lat[len(lat)/2]
	r.p99 = lat[int(math.Ceil(float64(len(lat))*0.99))-1]
	r.max = lat[len(lat)-1]
	tr.mu.Lock()
	r.bytesPerClient = float64(tr.bytes) / float64(changes) / float64(n)
	tr.mu.Unlock()

	ans, err := c.ask("rss")
	if err != nil {
		return result{}, err
	}
	if _, err := fmt.Sscanf(ans, "rss %f %f %f", &r.rssMiB, &r.hwmMiB, &r.floorMiB); err != nil {
		return result{}, fmt.Errorf("child said %q", ans)
	}
	return r, nil
}

// runClient is one simulated ztunnel: a delta ADS client that subscribes to
// every Address, reports when it holds the whole set, and then reports
// every "bench-<seq>" revision it receives.
func runClient(ctx context.Context, addr string, id, total int, tr *tracker, onSync func(error)) error {
	synced := false
	markSynced := func(err error) {
		if !synced {
			synced = true
			onSync(err)
		}
	}
	defer markSynced(fmt.Errorf("client %d ended before it synced", id))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{
		Node:    &corev3.Node{Id: fmt.Sprintf("ztunnel~bench-%d", id)},
		TypeUrl: workloadv1alpha1.AddressTypeURL, ResourceNamesSubscribe: []string{"*"},
	}); err != nil {
		return err
	}
	held := 0
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if !synced {
			held += len(resp.GetResources()) - len(resp.GetRemovedResources())
			if held >= total {
				markSynced(nil)
			}
		} else {
			size := proto.Size(resp)
			for _, r := range resp.GetResources() {
				a := &workloadv1alpha1.Address{}
				if err := r.GetResource().UnmarshalTo(a); err != nil {
					return err
				}
				if s, ok := strings.CutPrefix(a.GetWorkload().GetCanonicalRevision(), "bench-"); ok {
					if n, err := strconv.Atoi(s); err == nil {
						tr.arrived(n, size)
						size = 0
					}
				}
			}
		}
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
	}
}

// --- child: the control plane under test ---

func runChild(podsFlag string, services int) error {
	pods, err := strconv.Atoi(podsFlag)
	if err != nil {
		return fmt.Errorf("-pods %q: one number in -child mode", podsFlag)
	}
	client := fake.NewClientset(cluster(pods, services)...)
	watching := make(chan string, 16)
	client.PrependWatchReactor("*", func(action k8stesting.Action) (bool, watch.Interface, error) {
		w, err := client.Tracker().Watch(action.GetResource(), action.GetNamespace())
		watching <- action.GetResource().Resource
		return true, w, err
	})
	runtime.GC()
	debug.FreeOSMemory()
	baseRSS, _ := rss()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := xds.New(log, nil)
	if err != nil {
		return err
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(k8sruntime.NewScheme(), kube.PolicyListKinds())
	ctrl, err := kube.New(client, dyn, srv, kube.Config{RootNamespace: "ambit-system"}, log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { _ = ctrl.Run(ctx) })
	wg.Go(func() { _ = srv.Run(ctx) })
	<-ctrl.Synced()
	for range 5 { // the core informers (the fake dynamic client's watches are not counted)
		<-watching
	}
	srv.MarkReady()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	wg.Go(func() { _ = gs.Serve(lis) })
	defer gs.Stop()

	total := len(srv.Resources(workloadv1alpha1.AddressTypeURL))
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("listening %s %.1f %d\n", lis.Addr(), baseRSS, total)

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 2 && f[0] == "change":
			seq, _ := strconv.Atoi(f[1])
			i := (seq * 7919) % pods
			ns := fmt.Sprintf("bench-%d", i%namespaces)
			p, err := client.CoreV1().Pods(ns).Get(ctx, podName(i), metav1.GetOptions{})
			if err != nil {
				return err
			}
			p.Labels["version"] = "bench-" + f[1]
			if _, err := client.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
				return err
			}
			fmt.Println("ok")
		case len(f) == 1 && f[0] == "rss":
			cur, hwm := rss()
			// The floor: after the garbage and pooled buffers of the
			// initial syncs are collected and returned to the OS.
			runtime.GC()
			runtime.GC()
			debug.FreeOSMemory()
			floor, _ := rss()
			fmt.Printf("rss %.1f %.1f %.1f\n", cur, hwm, floor)
		case len(f) == 1 && f[0] == "quit":
			if memProfile != "" {
				runtime.GC()
				f, err := os.Create(memProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				return pprof.WriteHeapProfile(f)
			}
			return nil
		default:
			return fmt.Errorf("unknown command %q", in.Text())
		}
	}
	return in.Err()
}

// rss returns VmRSS and VmHWM of this process in MiB.
func rss() (cur, peak float64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			cur = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return cur, peak
}

func podName(i int) string { return fmt.Sprintf("pod-%d", i) }

// cluster returns the objects of a cluster with pods pods spread over
// services Services in 10 ambient namespaces on 100 nodes; pod i backs
// Service i%services.
func cluster(pods, services int) []kruntime.Object {
	var objs []kruntime.Object
	for n := range namespaces {
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("bench-%d", n), Labels: map[string]string{"ambit.dev/dataplane-mode": "ambient"}}})
	}
	for n := range nodes {
		objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", n)}})
	}
	members := make([][]*corev1.Pod, services)
	for i := range pods {
		svc := i % services
		ip := fmt.Sprintf("10.%d.%d.%d", 128+(i>>16), (i>>8)&255, i&255)
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: fmt.Sprintf("bench-%d", i%namespaces), Name: podName(i), UID: types.UID(fmt.Sprintf("uid-%d", i)),
				Labels: map[string]string{"app": fmt.Sprintf("svc-%d", svc), "version": "v1", "pod-template-hash": "5d8f9c7b6"},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet",
					Name: fmt.Sprintf("svc-%d-5d8f9c7b6", svc), UID: "rs", Controller: new(true)}},
			},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", i%nodes), ServiceAccountName: fmt.Sprintf("svc-%d", svc),
				Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:v1",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		}
		objs = append(objs, p)
		if svc%namespaces == i%namespaces {
			members[svc] = append(members[svc], p)
		}
	}
	for s := range services {
		ns := fmt.Sprintf("bench-%d", s%namespaces)
		name := fmt.Sprintf("svc-%d", s)
		objs = append(objs, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.96.%d.%d", s>>8, s&255), Ports: []corev1.ServicePort{{
				Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")}}},
		})
		for chunk := range slices.Chunk(members[s], 100) {
			sl := &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-%d", name, len(objs)),
					Labels: map[string]string{discoveryv1.LabelServiceName: name}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080)), Protocol: new(corev1.ProtocolTCP)}},
			}
			for _, p := range chunk {
				sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
					Addresses: []string{p.Status.PodIP}, Conditions: discoveryv1.EndpointConditions{Ready: new(true)},
					TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
				})
			}
			objs = append(objs, sl)
		}
	}
	return objs
}
