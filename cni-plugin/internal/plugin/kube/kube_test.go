package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"

	"ambit.dev/cni-plugin/internal/plugin"
	"ambit.dev/pkg/enrol"
)

func TestLookup(t *testing.T) {
	ambient := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{enrol.LabelDataplaneMode: enrol.DataplaneModeAmbient}}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-1", Labels: map[string]string{"app": "cart"}, Annotations: map[string]string{"a": "b"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init"}},
			Containers:     []corev1.Container{{Name: "app"}, {Name: "istio-proxy"}},
		},
	}
	tests := []struct {
		name    string
		objects []runtime.Object
		wantNS  enrol.Namespace
		wantErr string
	}{
		{name: "namespace and pod", objects: []runtime.Object{ambient, pod}, wantNS: enrol.Namespace{Labels: ambient.Labels}},
		{name: "namespace missing counts as unlabelled", objects: []runtime.Object{pod}},
		{name: "pod missing is an error", objects: []runtime.Object{ambient}, wantErr: `getting pod shop/cart-1 from the API server with the kubeconfig /kc`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewPodLookupFromClient(fake.NewClientset(tt.objects...), "/kc")
			ns, p, err := l.Lookup(context.Background(), "shop", "cart-1")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := enrol.Pod{Namespace: "shop", Labels: pod.Labels, Annotations: pod.Annotations,
				Containers: []string{"app", "istio-proxy"}, InitContainers: []string{"init"}}
			if !reflect.DeepEqual(ns, tt.wantNS) || !reflect.DeepEqual(p, want) {
				t.Errorf("Lookup = %+v, %+v; want %+v, %+v", ns, p, tt.wantNS, want)
			}
		})
	}
}

func TestNewPodLookupBadKubeconfig(t *testing.T) {
	_, err := NewPodLookup(t.TempDir() + "/missing")
	if err == nil || !strings.Contains(err.Error(), "cannot use the kubeconfig") {
		t.Fatalf("err = %v, want one naming the kubeconfig", err)
	}
}

func TestExitCode(t *testing.T) {
	pods := schema.GroupResource{Resource: "pods"}
	tests := []struct {
		name string
		err  error
		want int
	}{
		{name: "success", err: nil, want: 0},
		{name: "usage", err: fmt.Errorf("parsing: %w", usagef("--name is required")), want: plugin.LookupExitUsage},
		{name: "pod not found", err: fmt.Errorf("getting pod shop/cart-1: %w", apierrors.NewNotFound(pods, "cart-1")), want: plugin.LookupExitNotFound},
		{name: "unauthorized", err: fmt.Errorf("getting pod: %w", apierrors.NewUnauthorized("bad token")), want: plugin.LookupExitAPI},
		{name: "forbidden", err: apierrors.NewForbidden(pods, "cart-1", errors.New("rbac")), want: plugin.LookupExitAPI},
		{name: "IPv4 connection refused", err: &url.Error{Op: "Get", URL: "https://10.96.0.1:443/api/v1/namespaces/shop", Err: syscall.ECONNREFUSED}, want: plugin.LookupExitAPI},
		{name: "IPv6 connection refused", err: &url.Error{Op: "Get", URL: "https://[fd00:96::1]:443/api/v1/namespaces/shop", Err: syscall.ECONNREFUSED}, want: plugin.LookupExitAPI},
		{name: "timeout", err: context.DeadlineExceeded, want: plugin.LookupExitAPI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ExitCode(tt.err); got != tt.want {
				t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

// fakeAPI serves namespace shop (labelled nsLabels) and, when pod is set,
// pod shop/cart-1 on a loopback listener of network ("tcp4" or "tcp6"); a
// non-zero status answers every request with that status. It returns a
// kubeconfig for it.
func fakeAPI(t *testing.T, network string, nsLabels map[string]string, pod bool, status int) string {
	t.Helper()
	addr := map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network]
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listening on %s loopback: %v", network, err)
	}
	writeStatus := func(w http.ResponseWriter, code int, reason metav1.StatusReason) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: string(reason)})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/shop", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(corev1.Namespace{TypeMeta: metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: nsLabels}})
	})
	mux.HandleFunc("GET /api/v1/namespaces/shop/pods/cart-1", func(w http.ResponseWriter, _ *http.Request) {
		if !pod {
			writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: "cart-1", Namespace: "shop"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}})
	})
	var h http.Handler = mux
	if status != 0 {
		h = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeStatus(w, status, metav1.StatusReasonUnauthorized)
		})
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return writeKubeconfig(t, "http://"+ln.Addr().String())
}

func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	data := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, server)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T, network string) string {
	t.Helper()
	ln, err := net.Listen(network, map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network])
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestRun(t *testing.T) {
	ambient := map[string]string{enrol.LabelDataplaneMode: enrol.DataplaneModeAmbient}
	podArgs := []string{"--namespace", "shop", "--name", "cart-1", "--timeout", "20s"}
	tests := []struct {
		name       string
		kubeconfig func(t *testing.T) string // nil: no --kubeconfig
		args       []string
		code       int
		stdout     *plugin.LookupResult
		stderrHas  string
	}{
		{name: "IPv4 ambient namespace", kubeconfig: func(t *testing.T) string { return fakeAPI(t, "tcp4", ambient, true, 0) }, args: podArgs,
			stdout: &plugin.LookupResult{Enrolled: true, Reason: `namespace "shop" is labelled ambit.dev/dataplane-mode=ambient`}},
		{name: "IPv6 unlabelled namespace", kubeconfig: func(t *testing.T) string { return fakeAPI(t, "tcp6", nil, true, 0) }, args: podArgs,
			stdout: &plugin.LookupResult{Enrolled: false}},
		{name: "pod not found", kubeconfig: func(t *testing.T) string { return fakeAPI(t, "tcp4", ambient, false, 0) }, args: podArgs,
			code: plugin.LookupExitNotFound, stderrHas: "getting pod shop/cart-1"},
		{name: "unauthorized", kubeconfig: func(t *testing.T) string { return fakeAPI(t, "tcp6", ambient, true, http.StatusUnauthorized) }, args: podArgs,
			code: plugin.LookupExitAPI, stderrHas: "Unauthorized"},
		{name: "IPv4 API unreachable", kubeconfig: func(t *testing.T) string { return writeKubeconfig(t, "http://"+closedAddr(t, "tcp4")) }, args: podArgs,
			code: plugin.LookupExitAPI, stderrHas: "connection refused"},
		{name: "IPv6 API unreachable", kubeconfig: func(t *testing.T) string { return writeKubeconfig(t, "http://"+closedAddr(t, "tcp6")) }, args: podArgs,
			code: plugin.LookupExitAPI, stderrHas: "connection refused"},
		{name: "missing kubeconfig", kubeconfig: func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing") }, args: podArgs,
			code: plugin.LookupExitUsage, stderrHas: "cannot use the kubeconfig"},
		{name: "no pod name", kubeconfig: func(t *testing.T) string { return "/kc" }, args: []string{"--namespace", "shop"},
			code: plugin.LookupExitUsage, stderrHas: "--name are required"},
		{name: "no kubeconfig", args: podArgs, code: plugin.LookupExitUsage, stderrHas: "--kubeconfig, --namespace and --name are required"},
		{name: "unknown flag", args: []string{"--pod", "x"}, code: plugin.LookupExitUsage, stderrHas: "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.kubeconfig != nil {
				args = append([]string{"--kubeconfig", tt.kubeconfig(t)}, args...)
			}
			var stdout, stderr bytes.Buffer
			code := Run(context.Background(), args, &stdout, &stderr)
			if code != tt.code {
				t.Fatalf("Run = %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout.String(), stderr.String())
			}
			if tt.stdout == nil {
				if stdout.Len() != 0 {
					t.Errorf("stdout = %q, want nothing", stdout.String())
				}
				if !strings.Contains(stderr.String(), tt.stderrHas) {
					t.Errorf("stderr %q does not say %q", stderr.String(), tt.stderrHas)
				}
				return
			}
			if !strings.HasSuffix(stdout.String(), "}\n") || strings.Count(stdout.String(), "\n") != 1 {
				t.Errorf("stdout %q is not one JSON line", stdout.String())
			}
			var got plugin.LookupResult
			if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got.Enrolled != tt.stdout.Enrolled || (tt.stdout.Reason != "" && got.Reason != tt.stdout.Reason) || got.Reason == "" {
				t.Errorf("result = %+v, want %+v", got, *tt.stdout)
			}
		})
	}
}
