package csi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

const testToken = "sa-token-for-tests"

// apiServer serves one Node the way the Kubernetes API server does: GET
// returns it, PATCH applies an RFC 6902 JSON patch to its taints (a
// failed test op is 422 Invalid), every other call is refused. It checks
// the bearer token and the patch's content type on every request.
type apiServer struct {
	t *testing.T

	mu          sync.Mutex
	node        corev1.Node
	unavailable int                // requests to answer 503 first
	beforePatch func(*corev1.Node) // another writer, between a GET and a PATCH
	forbid      bool               // the service account may not patch nodes
	gets        int
	patchCalls  int                // PATCH requests, refused ones too
	patches     [][]map[string]any // the patches applied or tested
}

func newAPIServer(t *testing.T, taints ...corev1.Taint) (*apiServer, *httptest.Server) {
	a := &apiServer{t: t}
	a.node.APIVersion, a.node.Kind = "v1", "Node"
	a.node.Name = "node-1"
	a.node.Spec.Taints = taints
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return a, srv
}

func (a *apiServer) status(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"},
		Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg})
}

func (a *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if got := r.Header.Get("Authorization"); got != "Bearer "+testToken {
		a.t.Errorf("%s %s: Authorization %q", r.Method, r.URL.Path, got)
		a.status(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized")
		return
	}
	if a.unavailable > 0 {
		a.unavailable--
		a.status(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "the server is currently unable to handle the request")
		return
	}
	if r.URL.Path != "/api/v1/nodes/node-1" {
		a.status(w, http.StatusNotFound, metav1.StatusReasonNotFound, "nodes not found")
		return
	}
	switch r.Method {
	case http.MethodGet:
		a.gets++
	case http.MethodPatch:
		a.patchCalls++
		if a.forbid {
			a.status(w, http.StatusForbidden, metav1.StatusReasonForbidden, `nodes "node-1" is forbidden`)
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json-patch+json" {
			a.t.Errorf("PATCH Content-Type %q", ct)
			a.status(w, http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType, ct)
			return
		}
		if fm := r.URL.Query().Get("fieldManager"); fm != "modelfs-csi" {
			a.t.Errorf("PATCH fieldManager %q", fm)
		}
		body, _ := io.ReadAll(r.Body)
		var ops []map[string]any
		if err := json.Unmarshal(body, &ops); err != nil {
			a.status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
			return
		}
		a.patches = append(a.patches, ops)
		if a.beforePatch != nil {
			a.beforePatch(&a.node)
			a.beforePatch = nil
		}
		for _, op := range ops {
			if op["path"] != "/spec/taints" {
				a.t.Errorf("patch touches %v", op["path"])
			}
			raw, _ := json.Marshal(op["value"])
			var taints []corev1.Taint
			if err := json.Unmarshal(raw, &taints); err != nil {
				a.status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
				return
			}
			switch op["op"] {
			case "test":
				have, _ := json.Marshal(a.node.Spec.Taints)
				want, _ := json.Marshal(taints)
				if string(have) != string(want) {
					a.status(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, "the server rejected our request due to an error in our request: testing value /spec/taints failed")
					return
				}
			case "replace":
				a.node.Spec.Taints = taints
			default:
				a.t.Errorf("patch op %v", op["op"])
			}
		}
	default:
		a.status(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, r.Method)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(a.node)
}

func (a *apiServer) taints() []corev1.Taint {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.node.Spec.Taints)
}

func testNodes(t *testing.T, url string) Nodes {
	t.Helper()
	nodes, err := NodesFor(&rest.Config{Host: url, BearerToken: testToken})
	if err != nil {
		t.Fatal(err)
	}
	return nodes
}

var (
	startupTaint = corev1.Taint{Key: StartupTaintKey, Value: "true", Effect: corev1.TaintEffectNoExecute}
	gpuTaint     = corev1.Taint{Key: "nvidia.com/gpu", Value: "present", Effect: corev1.TaintEffectNoSchedule, TimeAdded: &metav1.Time{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	fastBackoff  = taintBackoff{initial: time.Millisecond, max: 10 * time.Millisecond}
)

func taintKeys(ts []corev1.Taint) []string {
	var keys []string
	for _, t := range ts {
		keys = append(keys, t.Key+":"+string(t.Effect))
	}
	return keys
}

// TestRemoveStartupTaint: the taint goes, the node's other taints stay,
// and an API server that is briefly unavailable is waited out.
func TestRemoveStartupTaint(t *testing.T) {
	a, srv := newAPIServer(t, gpuTaint, startupTaint)
	a.unavailable = 3
	if err := removeStartupTaint(context.Background(), testNodes(t, srv.URL), "node-1", fastBackoff, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got := taintKeys(a.taints()); !slices.Equal(got, []string{"nvidia.com/gpu:NoSchedule"}) {
		t.Fatalf("taints after removal: %v", got)
	}
	if len(a.patches) != 1 || len(a.patches[0]) != 2 || a.patches[0][0]["op"] != "test" || a.patches[0][1]["op"] != "replace" {
		t.Fatalf("patches %v, want one test-and-replace", a.patches)
	}
	// Already gone: nothing to patch.
	if err := removeStartupTaint(context.Background(), testNodes(t, srv.URL), "node-1", fastBackoff, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if len(a.patches) != 1 {
		t.Fatalf("a node without the taint was patched: %v", a.patches)
	}
}

// TestRemoveStartupTaintConcurrentWriter: a taint another writer adds
// between the plugin's read and its patch is not lost.
func TestRemoveStartupTaintConcurrentWriter(t *testing.T) {
	a, srv := newAPIServer(t, startupTaint)
	cordon := corev1.Taint{Key: "node.kubernetes.io/unschedulable", Effect: corev1.TaintEffectNoSchedule}
	a.beforePatch = func(n *corev1.Node) { n.Spec.Taints = append(n.Spec.Taints, cordon) }
	if err := removeStartupTaint(context.Background(), testNodes(t, srv.URL), "node-1", fastBackoff, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got := taintKeys(a.taints()); !slices.Equal(got, []string{"node.kubernetes.io/unschedulable:NoSchedule"}) {
		t.Fatalf("taints: %v, want the cordon's only", got)
	}
	if a.gets != 2 || len(a.patches) != 2 {
		t.Fatalf("%d gets and %d patches, want the node read again after the failed test", a.gets, len(a.patches))
	}
}

// TestRemoveStartupTaintForbidden: missing RBAC is reported at once, not
// retried for ever.
func TestRemoveStartupTaintForbidden(t *testing.T) {
	a, srv := newAPIServer(t, startupTaint)
	a.forbid = true
	err := removeStartupTaint(context.Background(), testNodes(t, srv.URL), "node-1", fastBackoff, slog.New(slog.DiscardHandler))
	if err == nil || !containsAll(err.Error(), StartupTaintKey, "forbidden") {
		t.Fatalf("err = %v", err)
	}
	if a.patchCalls != 1 {
		t.Fatalf("%d patch calls, want 1", a.patchCalls)
	}
}

// TestDriverRemovesTaintOnRegistration: a serving plugin removes the
// taint once kubelet registers it (NodeGetInfo), not before.
func TestDriverRemovesTaintOnRegistration(t *testing.T) {
	a, srv := newAPIServer(t, startupTaint, gpuTaint)
	d, err := New(Options{NodeID: "node-1", Bin: "/bin/false", StateDir: t.TempDir(), MemoryHeadroom: -1,
		Nodes: testNodes(t, srv.URL), RegistrationWait: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	d.taintBackoff = fastBackoff
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.untaintWhenRegistered(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if got := len(a.taints()); got != 2 {
		t.Fatalf("taints changed before registration: %d", got)
	}
	if _, err := d.NodeGetInfo(ctx, nil); err != nil {
		t.Fatal(err)
	}
	<-done // returns once the taint is gone (or the removal failed)
	if got := taintKeys(a.taints()); !slices.Equal(got, []string{"nvidia.com/gpu:NoSchedule"}) {
		t.Fatalf("taints after registration: %v", got)
	}
	if _, err := d.NodeGetInfo(ctx, nil); err != nil {
		t.Fatal("a second NodeGetInfo:", err)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
