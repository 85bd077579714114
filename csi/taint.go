package csi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// StartupTaintKey is the taint node pools carry until the plugin is ready
// on the node: pods that need modelfs volumes do not tolerate it, so they
// are not scheduled onto a node where their mount would fail. The plugin
// removes it, whatever its effect, once kubelet has registered it.
const StartupTaintKey = "modelfs.io/agent-not-ready"

// Nodes is the part of the Kubernetes API the plugin uses to remove its
// startup taint from its own Node. Taints are passed as the API server's
// JSON, untouched, so that a patch's test op compares exactly what was
// read.
type Nodes interface {
	Taints(ctx context.Context, node string) ([]json.RawMessage, error)
	PatchNode(ctx context.Context, node string, jsonPatch []byte) error
}

// InClusterNodes is the Node API of the cluster the plugin runs in, as its
// service account sees it (in-cluster config: the pod's token, reread as
// kubelet rotates it, and the cluster's CA).
func InClusterNodes() (Nodes, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("in-cluster Kubernetes config: %w", err)
	}
	return NodesFor(cfg)
}

// NodesFor is the Node API of the cluster cfg reaches. It uses client-go's
// transport (TLS, credentials) with two plain JSON calls: client-go's typed
// clients register every API group's types and would double the binary.
func NodesFor(cfg *rest.Config) (Nodes, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "modelfs-csi"
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	base, err := url.Parse(strings.TrimSuffix(cfg.Host, "/"))
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("kubernetes API server %q: not a URL", cfg.Host)
	}
	return &nodeAPI{hc: hc, base: base.String(), ua: cfg.UserAgent}, nil
}

type nodeAPI struct {
	hc   *http.Client
	base string
	ua   string
}

// apiError is an API server's refusal, from its Status reply.
type apiError struct {
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (e *apiError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("API server: %d %s", e.Code, e.Reason)
	}
	return fmt.Sprintf("API server: %d %s: %s", e.Code, e.Reason, e.Message)
}

// permanent reports refusals a retry will not change: no such Node (the
// node id is not its name), or no right to patch it (RBAC).
func (e *apiError) permanent() bool {
	return e.Code == http.StatusNotFound || e.Code == http.StatusForbidden || e.Code == http.StatusUnauthorized
}

func (n *nodeAPI) do(ctx context.Context, method, node, contentType string, body []byte) ([]byte, error) {
	u := n.base + "/api/v1/nodes/" + url.PathEscape(node)
	if method == http.MethodPatch {
		u += "?fieldManager=modelfs-csi"
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", n.ua)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s node %s: %w", method, node, err)
	}
	defer resp.Body.Close()
	// A Node is a few KiB; its status lists images, which can be many.
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s node %s: %w", method, node, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &apiError{}
		if json.Unmarshal(b, e) != nil || e.Code == 0 {
			e = &apiError{Code: resp.StatusCode, Reason: http.StatusText(resp.StatusCode)}
		}
		return nil, fmt.Errorf("%s node %s: %w", method, node, e)
	}
	return b, nil
}

func (n *nodeAPI) Taints(ctx context.Context, node string) ([]json.RawMessage, error) {
	b, err := n.do(ctx, http.MethodGet, node, "", nil)
	if err != nil {
		return nil, err
	}
	var obj struct {
		Spec struct {
			Taints []json.RawMessage `json:"taints"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("reading node %s: %w", node, err)
	}
	return obj.Spec.Taints, nil
}

func (n *nodeAPI) PatchNode(ctx context.Context, node string, jsonPatch []byte) error {
	_, err := n.do(ctx, http.MethodPatch, node, "application/json-patch+json", jsonPatch)
	return err
}

// taintBackoff spaces the tries of the taint removal: the API server may be
// briefly away (an upgrade, a blip) when a node boots.
type taintBackoff struct {
	initial, max time.Duration
}

var defaultTaintBackoff = taintBackoff{initial: 500 * time.Millisecond, max: 30 * time.Second}

// removeStartupTaint removes every taint with key StartupTaintKey from
// node, retrying until it is gone or ctx ends. A JSON patch that first
// tests the taints it read keeps another writer's change to them (a
// cordon, an autoscaler's taint) from being lost: if they changed, the
// node is read again.
func removeStartupTaint(ctx context.Context, nodes Nodes, node string, backoff taintBackoff, log *slog.Logger) error {
	wait := backoff.initial
	for try := 1; ; try++ {
		done, err := removeTaintOnce(ctx, nodes, node)
		if err == nil {
			if done {
				log.Info("removed the startup taint from the node", "node", node, "taint", StartupTaintKey)
			}
			return nil
		}
		if ae := (*apiError)(nil); errors.As(err, &ae) && ae.permanent() {
			// Not worth retrying: the node id is not a Node's name, or
			// the service account may not patch nodes (RBAC).
			return fmt.Errorf("removing startup taint %s from node %s: %w", StartupTaintKey, node, err)
		}
		log.Warn("removing the startup taint failed; retrying", "node", node, "try", try, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("removing startup taint %s from node %s: %w", StartupTaintKey, node, errors.Join(ctx.Err(), err))
		case <-t.C:
		}
		wait = min(2*wait, backoff.max)
	}
}

// jsonPatchOp is one operation of an RFC 6902 JSON patch.
type jsonPatchOp struct {
	Op    string            `json:"op"`
	Path  string            `json:"path"`
	Value []json.RawMessage `json:"value"`
}

// removeTaintOnce patches the taint away; it reports whether there was one.
func removeTaintOnce(ctx context.Context, nodes Nodes, node string) (bool, error) {
	taints, err := nodes.Taints(ctx, node)
	if err != nil {
		return false, err
	}
	keep := make([]json.RawMessage, 0, len(taints))
	for _, raw := range taints {
		var t struct {
			Key string `json:"key"`
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			return false, fmt.Errorf("reading node %s's taints: %w", node, err)
		}
		if t.Key != StartupTaintKey {
			keep = append(keep, raw)
		}
	}
	if len(keep) == len(taints) {
		return false, nil
	}
	patch, err := json.Marshal([]jsonPatchOp{
		{Op: "test", Path: "/spec/taints", Value: taints},
		{Op: "replace", Path: "/spec/taints", Value: keep},
	})
	if err != nil {
		return false, err
	}
	return true, nodes.PatchNode(ctx, node, patch)
}
